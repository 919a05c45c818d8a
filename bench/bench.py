"""Throughput of the competition pipeline on the real data, measured side by side with its references.

    make bench                                  # or: .venv/bin/python bench/bench.py [--quick] [--only loader,train]
    python bench/bench.py --data-root DIR --out DIR

Rows (each figure the median of >= 3 repetitions after a warm-up; every measurement in a fresh process):
  loader   1  loader only, one epoch: the cached pipeline vs the seed-style PIL + torchvision pipeline
  train    2  train.py end to end (its metrics.jsonl, epochs after the first) vs the model alone, 1 and 2 processes
  seed     3  train.py end to end vs the seed-style plain loop (PIL + torchvision loader, plain PyTorch loop)
  predict  4  competition.predict.predict (the prediction part, cache warm) vs the model alone in eval/no_grad
  flops    5  the model's achieved GFLOP/s as a fraction of this machine's fp32 matrix-product rate
  first    6  the first epoch (cold image cache built in a fresh cache folder) vs a later epoch
  precision 7 (CUDA only) the model alone at fp32/bf16/fp16, channels_last and torch.compile

Prints a table and writes it as JSON to <out>/bench-<timestamp>.json and <out>/latest.json.
Exits 0 whether or not the targets are met; non-zero only when a measurement itself failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JOBS = Path(__file__).resolve().parent / "jobs.py"
TRAIN_ENTRY = Path(__file__).resolve().parent / "train_entry.py"
DOGS_CONFIG = "configs/dogs-vs-cats/resnet18.yaml"
CIFAR_CONFIG = "configs/cifar-10/resnet20.yaml"
FOLD = 0
# DataLoader workers tried on each side of the loader row (CPU); the faster setting is the one compared.
LOADER_WORKERS = (0, 2)
# At the dogs config's batch of 64 a big GPU waits on kernel launches; 256 shows what the arithmetic gains.
PRECISION_BIG_BATCH = 256
ROWS = ("loader", "train", "seed", "predict", "flops", "first", "precision")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
JOB_TIMEOUT = 900  # seconds; a hung measurement must not hang `make bench`


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Budget:
    """How much work each row does: sized so that the whole run stays under 10 minutes on 2 CPU cores."""

    dogs_train: int | None  # None: all 1,602 training images; otherwise a class-balanced subset (--quick)
    dogs_test: int | None  # None: all 400 test images
    cifar_images: int  # the first N CIFAR-10 training images (by id) for the loader row
    loader_warmup: int
    loader_repeats: int
    train_epochs: int  # train.py, 1 process: epochs of `train_limit` batches (None: whole epochs)
    train_limit: int | None
    train2_epochs: int  # train.py, 2 processes
    train2_limit: int | None
    model_warmup: int  # the model alone: warm-up steps, then `model_repeats` windows of `model_steps` steps
    model_steps: int
    model2_steps: int  # the same with 2 processes (each step is twice the images)
    model_repeats: int
    threads_steps: int  # row 2c (informational): windows of this many steps at 1 thread
    seed_warmup: int  # seed-style loop: one short warm-up epoch, then epochs as long as train.py's
    seed_warmup_limit: int | None
    seed_repeats: int
    seed_limit: int | None  # batches per timed seed-style epoch (its rate is per image)
    predict_warmup: int
    predict_repeats: int
    matmul_n: int
    matmul_repeats: int


# On 2 CPU cores a ResNet-18 step at batch 64, 128px takes ~2 s (one whole epoch of fold 0 ~40 s). The train.py
# runs and the model alone use windows of a few batches: rates are per image, and more windows cancel the noise;
# the 1-process run's epochs of 10 batches make its first epoch (the whole cold cache included) a bound from above.
# The whole run takes ~8 minutes here, so that a fresh clone's install and the bench fit in 10 (the machine's own
# speed drifts by 10-20% over minutes).
FULL = Budget(
    dogs_train=None, dogs_test=None, cifar_images=3_000, loader_warmup=2, loader_repeats=5,
    train_epochs=3, train_limit=10, train2_epochs=3, train2_limit=3,
    model_warmup=1, model_steps=3, model2_steps=1, model_repeats=4, threads_steps=1,
    seed_warmup=1, seed_warmup_limit=2, seed_repeats=2, seed_limit=6, predict_warmup=1, predict_repeats=2,
    matmul_n=2048, matmul_repeats=10,
)
CUDA = dataclasses.replace(  # a GPU runs whole epochs in seconds
    FULL, train_limit=None, train2_limit=None, seed_limit=None, model_warmup=5, model_steps=20, model2_steps=20, matmul_n=8192,
)
QUICK = Budget(
    dogs_train=160, dogs_test=32, cifar_images=1_000, loader_warmup=1, loader_repeats=3,
    train_epochs=3, train_limit=2, train2_epochs=3, train2_limit=1,
    model_warmup=1, model_steps=2, model2_steps=1, model_repeats=3, threads_steps=1,
    seed_warmup=1, seed_warmup_limit=1, seed_repeats=3, seed_limit=2, predict_warmup=1, predict_repeats=3,
    matmul_n=1024, matmul_repeats=5,
)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def prec(precision: str) -> str:
    return "fp32" if precision == "no" else precision


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# ---------------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    import torch

    flags: set[str] = set()
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": model_name, "cores": cores, "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cpu_flags_absent": [f for f in CPU_FLAGS if f not in flags], "gpu": gpu,
        "gpus": torch.cuda.device_count() if gpu else 0, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process and its finished children).

    Their difference over a row is what other processes took from the machine meanwhile: a benchmark on
    a shared 2-core machine must say when its figures were measured beside someone else's job.
    """
    import resource

    busy = math.nan
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal …: user, nice, system, irq and softirq
        busy = (sum(fields[:3]) + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return busy, own


# ---------------------------------------------------------------------------------------------- the runs


def model_train_key(procs: int, threads: int | None, part: int | None, batch: int | None, variant: dict) -> str:
    """The memo key of one model-alone measurement (row 6 reads the 1-process run's warm-up from it)."""
    return f"model-train-{procs}-{threads}-{part}-{batch}-{json.dumps(variant, sort_keys=True)}"


class Bench:
    def __init__(self, args: argparse.Namespace, budget: Budget, machine: dict[str, Any]) -> None:
        self.args, self.budget, self.machine = args, budget, machine
        self.data_root = Path(args.data_root).resolve()
        self.work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="competition-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = "cuda" if machine["gpu"] else "cpu"
        self.cores = machine["cores"]
        self.memo: dict[str, Any] = {}
        self.bin = Path(sys.executable).parent
        self.job_count = 0
        self.rows: list[str] = []
        self.bracketed: set[int] = set()  # process counts whose reference halves ran before and after train.py
        # Tracking on (W&B offline) as in a real run; off only where wandb is not installed (said in the table).
        self.wandb = importlib.util.find_spec("wandb") is not None

    # ------------------------------------------------------------------ plumbing

    def env(self, procs: int) -> dict[str, str]:
        """Every measurement runs with the same threads per process: the cores split over the processes.

        `accelerate launch` would otherwise pass OMP_NUM_THREADS=1 to a single process (see row 2c).
        """
        env = dict(os.environ)
        if "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, self.cores // procs))
        env |= {
            "WANDB_MODE": "offline", "WANDB_SILENT": "true", "NO_ALBUMENTATIONS_UPDATE": "1",
            "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        return env

    def launch(self, procs: int) -> list[str]:
        accelerate = self.bin / "accelerate"
        cmd = [str(accelerate) if accelerate.exists() else "accelerate", "launch"]
        if procs > 1:
            cmd.append("--multi_gpu")  # on a CPU-only machine: N CPU processes through torchrun (gloo)
        return cmd + ["--num_processes", str(procs), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

    def run(self, cmd: list[str], procs: int, log_name: str, extra_env: dict[str, str] | None = None) -> float:
        log = self.work / "logs" / f"{log_name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        with open(log, "w") as handle:
            try:
                proc = subprocess.run(
                    cmd, cwd=ROOT, env=self.env(procs) | (extra_env or {}), stdout=handle, stderr=subprocess.STDOUT,
                    timeout=JOB_TIMEOUT,
                )
            except subprocess.TimeoutExpired as e:
                raise BenchError(f"{log_name} ran past {JOB_TIMEOUT}s; log: {log}") from e
        if proc.returncode:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
            raise BenchError(f"{log_name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        return time.perf_counter() - began

    def job(self, name: str, spec: dict, procs: int = 1) -> dict:
        self.job_count += 1
        out = self.work / "jobs" / f"{self.job_count:02d}-{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        spec = spec | {"device": self.device}
        args = [str(JOBS), name, json.dumps(spec), str(out)]
        cmd = [sys.executable, *args] if procs == 1 else [*self.launch(procs), *args]
        wall = self.run(cmd, procs, out.stem)
        return json.loads(out.read_text()) | {"wall_seconds": wall}

    def once(self, key: str, make):
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def config_resize(self, config: str) -> str:
        from competition.config import load_config

        return load_config(ROOT / config).data.resize

    # ------------------------------------------------------------------ data

    def dogs_dir(self) -> Path:
        return self.once("dogs_dir", self._dogs_dir)

    def _dogs_dir(self) -> Path:
        source = self.data_root / "dogs-vs-cats"
        if not (source / "train").is_dir():
            raise BenchError(f"no dogs-vs-cats data at {source} (pass --data-root DIR holding dogs-vs-cats/ and cifar-10/)")
        b = self.budget
        if b.dogs_train is None and b.dogs_test is None:
            return source
        # --quick: a class-balanced subset, as symbolic links in the Kaggle layout.
        import pandas as pd

        from competition.competitions.base import list_images

        target = self.work / "data" / "dogs-vs-cats"
        (target / "train").mkdir(parents=True, exist_ok=True)
        (target / "test1").mkdir(parents=True, exist_ok=True)
        train = list_images(source / "train")
        for label in ("cat", "dog"):
            for p in [p for p in train if p.name.startswith(label + ".")][: b.dogs_train // 2]:
                (target / "train" / p.name).symlink_to(p)
        test = list_images(source / "test1")[: b.dogs_test]
        for p in test:
            (target / "test1" / p.name).symlink_to(p)
        pd.DataFrame({"id": [int(p.stem) for p in test], "label": 0.5}).to_csv(target / "sampleSubmission.csv", index=False)
        return target

    def cifar_dir(self) -> Path:
        source = self.data_root / "cifar-10"
        if not (source / "train").is_dir():
            raise BenchError(f"no cifar-10 data at {source} (pass --data-root DIR holding dogs-vs-cats/ and cifar-10/)")
        return source

    def folds_csv(self) -> Path:
        return self.once("folds_csv", self._folds_csv)

    def _folds_csv(self) -> Path:
        from competition.competitions import get_competition
        from competition.folds import build_folds, write_folds

        out = self.work / "folds" / "dogs-vs-cats.csv"
        report = build_folds(get_competition("dogs-vs-cats"), self.dogs_dir(), k=5, seed=42)
        write_folds(report.frame, out)
        self.memo["folds_seconds"] = report.seconds
        return out

    def dogs_overrides(self, cache: str) -> list[str]:
        return [
            f"data.data_dir={self.dogs_dir()}", f"data.folds_csv={self.folds_csv()}",
            f"data.cache_dir={self.work / cache}", f"trainer.output_dir={self.work / 'runs'}",
        ]

    # ------------------------------------------------------------------ measurements

    def loader(self, competition: str, side: str, workers: int | None = None) -> dict:
        b = self.budget
        if competition == "dogs-vs-cats":
            config, overrides, limit = DOGS_CONFIG, [f"data.data_dir={self.dogs_dir()}"], None
        else:
            config, overrides, limit = CIFAR_CONFIG, [f"data.data_dir={self.cifar_dir()}"], b.cifar_images
        overrides += [f"data.cache_dir={self.work / 'cache-loader'}"]
        if workers is not None:
            overrides.append(f"data.num_workers={workers}")
        spec = {
            "config": config, "overrides": overrides, "side": side, "limit": limit, "warmup": b.loader_warmup,
            "repeats": b.loader_repeats,
        }
        return self.once(f"loader-{competition}-{side}-{workers}", lambda: self.job("loader", spec))

    def e2e(self, procs: int, bracket: bool = False) -> dict:
        """train.py on fold 0 of dogs-vs-cats with its real config, tracking on (W&B offline).

        With `bracket`, the model-alone reference (see `reference`) runs in two halves, just before and just
        after it: this machine's speed drifts by 10-20% over minutes, and bracketing makes both sides see it.
        """
        key = f"e2e-{procs}"
        if key not in self.memo and bracket:
            self.model_train(procs, part=0)
            self.bracketed.add(procs)
        return self.once(key, lambda: self._e2e(procs))

    def reference(self, procs: int) -> dict:
        """The model alone for `procs` processes: both halves' windows pooled."""
        halves = [self.model_train(procs, part=part) for part in (0, 1)]
        return halves[0] | {"windows": halves[0]["windows"] + halves[1]["windows"], "bracketed": procs in self.bracketed}

    def _e2e(self, procs: int) -> dict:
        b = self.budget
        epochs, limit = (b.train_epochs, b.train_limit) if procs == 1 else (b.train2_epochs, b.train2_limit)
        exp = f"bench-{procs}p"
        # The 1-process run comes first and finds the cache folder empty: its first epoch is the cold one.
        overrides = [
            *self.dogs_overrides("cache-train"), f"trainer.exp={exp}", f"trainer.epochs={epochs}",
            f"tracking.wandb={str(self.wandb).lower()}", "tracking.mode=offline",
            f"trainer.eval_every={epochs}",  # validate once, after the last epoch (outside images_per_s anyway)
        ] + ([f"trainer.limit_train_batches={limit}"] if limit else [])
        timings = self.work / f"timings-{exp}.jsonl"
        cmd = [*self.launch(procs), str(TRAIN_ENTRY), "--config", DOGS_CONFIG, "--fold", str(FOLD), *overrides]
        wall = self.run(cmd, procs, f"train-{exp}", {"BENCH_TIMINGS": str(timings)})
        fold_dir = self.work / "runs" / "dogs-vs-cats" / exp / f"fold{FOLD}"
        history = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        events = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
        cache = [e for e in events if e["event"] == "image_cache" and e["rank"] == 0]
        import pandas as pd

        return {
            "cache_images": cache[0]["images"] if cache else 0,
            "fold_train_images": int((pd.read_csv(self.folds_csv(), usecols=["fold"])["fold"] != FOLD).sum()),
            "command": " ".join(cmd[cmd.index(str(TRAIN_ENTRY)) :]).replace(str(TRAIN_ENTRY), "train.py"),
            "processes": procs, "epochs": history, "cache_seconds": cache[0]["seconds"] if cache else math.nan,
            "events": events, "wall_seconds": wall, "exp": exp,
        }

    def model_train(self, procs: int, threads: int | None = None, part: int | None = None, **variant) -> dict:
        """The model alone; `part` 0 or 1: one half of the reference's windows (see `e2e`)."""
        b = self.budget
        steps = b.threads_steps if threads is not None else b.model_steps if procs == 1 else b.model2_steps
        repeats = 3 if threads is not None else b.model_repeats if part is None else -(-b.model_repeats // 2)
        batch = variant.pop("batch_size", None)
        spec = {
            "config": DOGS_CONFIG, "warmup_steps": b.model_warmup,
            "overrides": [f"data.data_dir={self.dogs_dir()}"] + ([f"data.batch_size={batch}"] if batch else []),
            "steps": steps, "repeats": repeats, **variant,
        }
        key = model_train_key(procs, threads, part, batch, variant)
        if threads is None:
            return self.once(key, lambda: self.job("model-train", spec, procs))
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            return self.once(key, lambda: self.job("model-train", spec, procs))
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = saved

    def seed_train(self) -> dict:
        b = self.budget
        spec = {
            "config": DOGS_CONFIG, "overrides": self.dogs_overrides("cache-train"), "fold": FOLD,
            "warmup": b.seed_warmup, "warmup_limit": b.seed_warmup_limit, "repeats": b.seed_repeats,
            "limit": b.seed_limit,
        }
        return self.once("seed-train", lambda: self.job("seed-train", spec))

    def predict(self) -> dict:
        return self.once("predict", self._predict)

    def _predict(self) -> dict:
        from competition.competitions import get_competition
        from competition.predict import DEFAULT_BATCH

        self.e2e(1)  # its fold-0 checkpoint is the model predicted with
        images = len(get_competition("dogs-vs-cats").read_test(self.dogs_dir()))
        self.model_eval(images, DEFAULT_BATCH, part=0)  # the reference's halves bracket the prediction runs
        b = self.budget
        spec = {
            "competition": "dogs-vs-cats", "exps": ["bench-1p"], "data_dir": str(self.dogs_dir()),
            "runs_dir": str(self.work / "runs"), "submissions_dir": str(self.work / "submissions"),
            "cache_dir": str(self.work / "cache-predict"), "batch_size": DEFAULT_BATCH,
            "warmup": b.predict_warmup, "repeats": b.predict_repeats,
        }
        result = self.job("predict", spec)
        self.model_eval(images, DEFAULT_BATCH, part=1)
        return result

    def model_eval(self, images: int, batch_size: int, part: int) -> dict:
        """The model alone in eval mode over the same batches as the prediction; `part`: which half."""
        b = self.budget
        batches = [batch_size] * (images // batch_size) + ([images % batch_size] if images % batch_size else [])
        spec = {
            "config": DOGS_CONFIG, "overrides": [f"data.data_dir={self.dogs_dir()}"], "batches": batches,
            "warmup": b.predict_warmup, "repeats": -(-b.predict_repeats // 2),
        }
        return self.once(f"model-eval-{images}-{part}", lambda: self.job("model-eval", spec))

    def machine_rates(self) -> dict:
        b = self.budget
        spec = {
            "matmul_n": b.matmul_n, "matmul_warmup": 3, "matmul_repeats": b.matmul_repeats,
            "models": {"dogs-vs-cats": {"config": DOGS_CONFIG, "overrides": [f"data.data_dir={self.dogs_dir()}"]}},
        }
        return self.once("machine", lambda: self.job("machine", spec))


# ---------------------------------------------------------------------------------------------- rows


def figure(row: str, what: str, value: float, unit: str, reference: float | None = None, reference_what: str = "",
           target: float | None = None, mode: str = "min", samples: list | None = None,
           reference_samples: list | None = None, note: str = "") -> dict[str, Any]:
    """One line of the table; `mode` min: the ratio must be at least `target`, max: at most."""
    r = ratio(value, reference) if reference is not None else None
    passed = None
    if target is not None and r is not None:
        passed = bool(not math.isnan(r) and (r >= target if mode == "min" else r <= target))
    return {
        "row": row, "what": what, "value": value, "unit": unit, "reference": reference, "reference_what": reference_what,
        "ratio": r, "target": target, "target_mode": mode, "pass": passed, "samples": samples or [],
        "reference_samples": reference_samples or [], "note": note,
    }


def later(items: list[dict], key: str = "images_per_s", flag: str = "warmup") -> list[float]:
    return [x[key] for x in items if not x.get(flag)]


def fastest(runs: dict[int, dict]) -> int:
    """The worker count whose loader run had the highest median rate."""
    return max(runs, key=lambda w: median(later(runs[w]["epochs"])))


def loader_config(bench: Bench, competition: str):
    from competition.config import load_config

    return load_config(ROOT / (DOGS_CONFIG if competition == "dogs-vs-cats" else CIFAR_CONFIG)).data


def row_loader(bench: Bench) -> list[dict]:
    """Each side at its best measured worker count (0 or 2 on CPU): the tuning a user would pick by measuring.

    The project's side is the pipeline the competition's config runs: the memory-mapped cache through a
    DataLoader, or (data.in_memory, CIFAR-10's configs) one uint8 tensor cut into batches and augmented whole.
    """
    out = []
    choices = LOADER_WORKERS if bench.device == "cpu" else (LOADER_WORKERS[-1],)
    for row, competition, size, target, label in (
        ("1a", "dogs-vs-cats", 128, 10.0, "1,602 full-size JPEGs"),
        ("1b", "cifar-10", 32, 3.0, f"first {bench.budget.cifar_images:,} train images by id"),
    ):
        side = "in-memory" if loader_config(bench, competition).in_memory else "cached"
        ours = {w: bench.loader(competition, side, workers=w) for w in ((0,) if side == "in-memory" else choices)}
        seeds = {w: bench.loader(competition, "seed", workers=w) for w in choices}
        if competition == "dogs-vs-cats" and bench.budget.dogs_train is not None:
            label = f"{next(iter(ours.values()))['images']:,}-image subset (--quick)"
        w_ours, w_seed = fastest(ours), fastest(seeds)
        a, r = later(ours[w_ours]["epochs"]), later(seeds[w_seed]["epochs"])
        measured = "; ".join(
            f"{name} " + ", ".join(f"{w} workers {median(later(runs[w]['epochs'])):,.0f}" for w in runs)
            for name, runs in ((side, ours), ("seed-style", seeds))
        )
        what = "in-memory uint8 tensor + BatchAugment" if side == "in-memory" else "cached"
        out.append(figure(
            row, f"loader, {competition} {size}px, {label}: {what}, {w_ours} workers", median(a), "img/s", median(r),
            f"seed-style PIL+torchvision, {w_seed} workers", target, samples=a, reference_samples=r,
            note=f"batch {ours[w_ours]['batch_size']}; each side at its best worker count, measured (img/s): {measured}; "
                 f"cache built before timing ({ours[w_ours]['cache_seconds']:.1f}s)",
        ))
    return out


def e2e_rates(run: dict) -> list[float]:
    return [e["images_per_s"] for e in run["epochs"] if e["epoch"] >= 2]


def row_train(bench: Bench) -> list[dict]:
    out = []
    e1 = bench.e2e(1, bracket=True)
    m1 = bench.reference(1)
    a, r = e2e_rates(e1), later(m1["windows"], flag="-")
    out.append(figure(
        "2a", "train.py e2e, 1 process (epochs 2+ of metrics.jsonl)", median(a), "img/s", median(r),
        "model alone, synthetic" + bracket_label(m1), 0.90, samples=a, reference_samples=r,
        note=f"resnet18 128px batch 64 {prec(m1['precision'])}, OMP_NUM_THREADS={bench.env(1)['OMP_NUM_THREADS']} both sides; "
             f"{len(a)} epochs of {_epoch_images(e1)} images; W&B {'offline' if bench.wandb else 'OFF (not installed)'}; "
             f"validation only after the last epoch; run wall {e1['wall_seconds']:.0f}s ({_breakdown(e1)})",
    ))
    if bench.device == "cuda" and bench.machine["gpus"] < 2:
        out.append(figure("2b", "train.py e2e, 2 processes", math.nan, "img/s", note="n/a: one GPU"))
    else:
        e2 = bench.e2e(2, bracket=True)
        m2 = bench.reference(2)
        a, r = e2e_rates(e2), later(m2["windows"], flag="-")
        out.append(figure(
            "2b", "train.py e2e, 2 processes (accelerate --multi_gpu, torchrun+gloo)", median(a), "img/s", median(r),
            "model alone, 2-proc gloo DDP" + bracket_label(m2), 0.90, samples=a, reference_samples=r,
            note=f"global rate; batch 64 per process; OMP_NUM_THREADS={bench.env(2)['OMP_NUM_THREADS']} per process "
                 f"both sides; reference launched by the same `accelerate launch --multi_gpu`",
        ))
    if bench.device == "cpu" and bench.cores > 1 and "OMP_NUM_THREADS" not in os.environ:
        one = bench.model_train(1, threads=1)
        a, r = later(one["windows"], flag="-"), later(m1["windows"], flag="-")
        out.append(figure(
            "2c", "model alone at 1 thread (bare `accelerate launch` without --cpu)",
            median(a), "img/s", median(r), f"model alone at {bench.env(1)['OMP_NUM_THREADS']} threads",
            samples=a, reference_samples=r,
            note="informational: `accelerate launch` without --cpu sets OMP_NUM_THREADS=1; make train and make predict pass "
                 "--num_cpu_threads_per_process (cores / NPROC) on a machine without a GPU",
        ))
    return out


def bracket_label(reference: dict) -> str:
    return ", before+after" if reference.get("bracketed") else ""


def _breakdown(run: dict) -> str:
    events = [e for e in run["events"] if e["rank"] == 0]
    first = next((e["since_start"] for e in events if e["event"] == "image_cache"), math.nan)
    total = lambda name: sum(e["seconds"] for e in events if e["event"] == name)  # noqa: E731
    epochs = sum(e["epoch_seconds"] for e in run["epochs"])
    return (f"start-up to cache {first:.0f}s, cache {run['cache_seconds']:.1f}s, epochs {epochs:.0f}s, "
            f"validation {total('evaluate'):.1f}s, state saves {total('save_state'):.1f}s")


def _epoch_images(run: dict) -> str:
    rec = run["epochs"][-1]
    return f"{round(rec['images_per_s'] * rec['epoch_seconds']):,}"


def row_seed(bench: Bench) -> list[dict]:
    e1, seed = bench.e2e(1), bench.seed_train()
    a, r = e2e_rates(e1), later(seed["epochs"])
    return [figure(
        "3", "train.py e2e, 1 process", median(a), "img/s", median(r), "seed-style plain loop (PIL+torchvision)",
        samples=a, reference_samples=r,
        note=f"same model, batch {seed['batch_size']}, 128px, {seed['workers']} workers, {prec(seed['precision'])}; "
             f"seed epochs of {later(seed['epochs'], 'images')[0]:,} images",
    )]


def row_predict(bench: Bench) -> list[dict]:
    pred = bench.predict()
    timed = [x for x in pred["runs"] if not x["warmup"]]
    halves = [bench.model_eval(timed[0]["images"], pred["batch_size"], part) for part in (0, 1)]
    ref = halves[0]
    a, r = [x["images_per_s"] for x in timed], later(halves[0]["passes"]) + later(halves[1]["passes"])
    load = median([x["load_seconds"] for x in timed])
    return [figure(
        "4", f"predict e2e, {timed[0]['images']} test images (predict_images, cache warm)", median(a), "img/s",
        median(r), "model alone, eval+no_grad, before+after", 0.90, samples=a, reference_samples=r,
        note=f"batch {pred['batch_size']}, {prec(ref['precision'])}; includes checkpoint loading ({load:.2f}s of "
             f"{median([x['seconds'] for x in timed]):.2f}s); whole predict() call {median([x['call_seconds'] for x in timed]):.1f}s",
    )]


def row_flops(bench: Bench) -> list[dict]:
    mach = bench.machine_rates()
    if "e2e-1" in bench.memo or {"train", "seed", "first", "predict"} & set(bench.rows):
        bench.e2e(1, bracket=True)
    m1run = bench.reference(1)
    kind = "bf16" if m1run["precision"] in ("bf16", "fp16") and "bf16" in mach["matmul"] else "fp32"
    out = [figure(f"5a{'' if name == 'fp32' else chr(39)}", f"{name} torch.mm {mm['n']}² ({mach['torch_threads']} threads)",
                  mm["gflops"], "GFLOP/s", samples=mm["gflops_runs"]) for name, mm in mach["matmul"].items()]
    peak = mach["matmul"][kind]["gflops"]
    f = mach["flops"]["dogs-vs-cats"]
    per_image = f["train_flops_per_image"]
    m1 = median(later(m1run["windows"], flag="-"))
    out.append(figure(
        "5b", f"model alone training: {per_image / 1e9:.2f} GFLOP/image × {m1:.1f} img/s", per_image * m1 / 1e9, "GFLOP/s",
        peak, f"{kind} matmul rate",
        note=f"FlopCounterMode over one forward+backward (optimizer not counted); {prec(m1run['precision'])}",
    ))
    if "e2e-1" in bench.memo:
        e = median(e2e_rates(bench.e2e(1)))
        out.append(figure("5c", f"train.py e2e: {per_image / 1e9:.2f} GFLOP/image × {e:.1f} img/s", per_image * e / 1e9,
                          "GFLOP/s", peak, f"{kind} matmul rate"))
    if "predict" in bench.memo:
        timed = [x for x in bench.memo["predict"]["runs"] if not x["warmup"]]
        p = median([x["images_per_s"] for x in timed])
        ev = f["eval_flops_per_image"]
        out.append(figure("5d", f"predict e2e: {ev / 1e9:.2f} GFLOP/image × {p:.1f} img/s", ev * p / 1e9, "GFLOP/s",
                          peak, f"{kind} matmul rate"))
    return out


def row_first(bench: Bench) -> list[dict]:
    e1 = bench.e2e(1)
    first = e1["epochs"][0]["epoch_seconds"] + e1["cache_seconds"]
    rest = [e["epoch_seconds"] for e in e1["epochs"][1:]]
    note = (f"cache build {e1['cache_seconds']:.1f}s (all {e1['cache_images']:,} images) + epoch 1 "
            f"{e1['epochs'][0]['epoch_seconds']:.1f}s, fresh cache folder (the JPEG files may sit in the OS page cache)")
    limit = bench.budget.train_limit
    if limit:  # the cache holds every image while the epochs are cut short: say what a whole epoch would give
        full = e1["fold_train_images"] / median(e2e_rates(e1))
        extra = first - median(rest)
        note += (f"; epochs cut to {limit} batches: the cache build and the first epoch's one-off start-up are fixed "
                 f"costs, so this ratio bounds a whole epoch's from above ({e1['fold_train_images']:,} images ≈ "
                 f"{full:.0f}s: ≈{(full + extra) / full:.2f}× extrapolated)")
    m1 = bench.memo.get(model_train_key(1, None, 0, None, {}))
    if m1 and m1.get("warmup_seconds") and m1["windows"]:
        step = median([w["seconds"] / bench.budget.model_steps for w in m1["windows"]])
        note += (f"; for scale, the model alone's first step took {m1['warmup_seconds'][0]:.1f}s vs {step:.1f}s later "
                 f"(one-off kernel selection and allocations)")
    return [figure("6", "first epoch incl. cold image-cache build", first, "s", median(rest), "a later epoch (median)",
                   1.5, mode="max", samples=[first], reference_samples=rest, note=note)]


def row_precision(bench: Bench) -> list[dict]:
    """On CUDA: precision, channels_last and compile, at the dogs config's batch and at a GPU-sized one."""
    out = []
    for batch in (None, PRECISION_BIG_BATCH):
        at = f"batch {batch}" if batch else "config batch"
        base = median(later(bench.model_train(1, precision="no", batch_size=batch)["windows"], flag="-"))
        out.append(figure("7", f"model alone fp32, {at}", base, "img/s"))
        for name, variant in (
            ("bf16 autocast", {"precision": "bf16"}),
            ("fp16 autocast + GradScaler", {"precision": "fp16"}),
            ("bf16 + channels_last", {"precision": "bf16", "channels_last": True}),
            ("bf16 + channels_last + torch.compile", {"precision": "bf16", "channels_last": True, "compile": True}),
        ):
            rate = median(later(bench.model_train(1, batch_size=batch, **variant)["windows"], flag="-"))
            out.append(figure("7", f"model alone {name}, {at}", rate, "img/s", base, f"model alone fp32, {at}"))
    return out


ROW_FUNCS = {
    "loader": row_loader, "train": row_train, "seed": row_seed, "predict": row_predict, "flops": row_flops,
    "first": row_first, "precision": row_precision,
}


# ---------------------------------------------------------------------------------------------- output


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        return f"{value:.1f}s"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"competition bench — {result['started']} — {'QUICK (tiny settings, not the real figures)' if result['quick'] else 'full'}",
        f"machine: {m['cores']} cores, {m['cpu']}; flags: {' '.join(m['cpu_flags']) or 'none'}"
        f" (absent: {' '.join(m['cpu_flags_absent']) or 'none'}); GPU: {m['gpu'] or 'none'}; "
        f"torch {m['torch']}, python {m['python']}",
        f"threads: OMP_NUM_THREADS per process = cores / processes unless set (1 process: "
        f"{result['threads'][1]}, 2 processes: {result['threads'][2]}); data: {result['data_root']}",
        "",
    ]
    head = f"{'#':<4} {'measurement':<74} {'value':>10}  {'reference':<42} {'value':>10} {'ratio':>7} {'target':>7}  result"
    lines += [head, "-" * len(head)]
    for f in result["figures"]:
        unit = f["unit"]
        target = "—" if f["target"] is None else (("≥" if f["target_mode"] == "min" else "≤") + f"{f['target']:g}×")
        verdict = "—" if f["pass"] is None else ("PASS" if f["pass"] else "FAIL")
        r = "—" if f["ratio"] is None or math.isnan(f["ratio"]) else f"{f['ratio']:.2f}×"
        what = f["what"] if len(f["what"]) <= 74 else f["what"][:73] + "…"
        lines.append(
            f"{f['row']:<4} {what:<74} {fmt(f['value'], unit):>10}  {f['reference_what'][:42]:<42} "
            f"{fmt(f['reference'], unit) if f['reference'] is not None else '':>10} {r:>7} {target:>7}  {verdict}"
            + (f"   [{unit}]" if unit != "img/s" else "")
        )
        if f["note"]:
            lines.append(f"{'':<4}   {f['note']}")
        if len(f["samples"]) > 1 or len(f["reference_samples"]) > 1:
            lines.append(f"{'':<4}   samples: {' '.join(fmt(v, unit) for v in f['samples'])}"
                         + (f" | reference: {' '.join(fmt(v, unit) for v in f['reference_samples'])}" if f["reference_samples"] else ""))
    lines += ["", "elapsed per row (its own measurements, shared runs counted where first needed):"]
    lines.append("  " + ", ".join(f"{k} {v:.0f}s" for k, v in result["elapsed"].items()) + f"; total {result['total_seconds']:.0f}s")
    foreign = result["foreign_cpu_seconds"]
    capacity = m["cores"] * sum(result["elapsed"].values())
    share = sum(foreign.values()) / capacity if capacity else 0.0
    lines.append(
        f"other processes on this machine meanwhile: {sum(foreign.values()):.0f} CPU-s ({share:.0%} of its capacity)"
        + ("  WARNING: figures measured beside another job; run again on a quiet machine" if share > 0.05 else "")
        + ("  (" + ", ".join(f"{k} {v:.0f}" for k, v in foreign.items() if v >= 1) + ")" if share > 0.05 else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a few batches on a small subset")
    parser.add_argument("--only", default=",".join(r for r in ROWS if r != "precision"),
                        help=f"comma-separated rows among {','.join(ROWS)} (precision runs on CUDA only)")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"),
                        help="folder holding dogs-vs-cats/ and cifar-10/ (default ../shared/data)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the JSON results")
    parser.add_argument("--work", default=None, help="scratch folder (default: a fresh temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (runs, logs, caches)")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc)
    machine = machine_info()
    if machine["gpu"] and "precision" not in rows and args.only == parser.get_default("only"):
        rows.append("precision")
    bench = Bench(args, QUICK if args.quick else CUDA if machine["gpu"] else FULL, machine)
    bench.rows = rows
    print(f"bench: {', '.join(rows)} on {machine['cores']} cores{', ' + machine['gpu'] if machine['gpu'] else ''}; "
          f"scratch {bench.work}", flush=True)
    figures, elapsed, foreign, failed = [], {}, {}, []
    try:
        for row in ROWS:
            if row not in rows or (row == "precision" and bench.device != "cuda"):
                continue
            began, cpu_began = time.perf_counter(), cpu_seconds()
            try:
                new = ROW_FUNCS[row](bench)
            except BenchError as e:
                print(f"row {row} failed: {e}", file=sys.stderr, flush=True)
                failed.append(row)
                new = []
            elapsed[row] = time.perf_counter() - began
            cpu_now = cpu_seconds()
            foreign[row] = max(0.0, (cpu_now[0] - cpu_began[0]) - (cpu_now[1] - cpu_began[1]))
            figures += new
            for f in new:
                verdict = "" if f["pass"] is None else (" PASS" if f["pass"] else " FAIL")
                r = "" if f["ratio"] is None or math.isnan(f["ratio"]) else f" = {f['ratio']:.2f}× {f['reference_what']}"
                unit = "" if f["unit"] == "s" else " " + f["unit"]
                print(f"  [{f['row']}] {f['what'].strip()}: {fmt(f['value'], f['unit'])}{unit}{r}{verdict}", flush=True)
            print(f"row {row}: {elapsed[row]:.0f}s; other processes took {foreign[row]:.0f} CPU-s meanwhile", flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(bench.work, ignore_errors=True)

    result = {
        "started": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), "quick": args.quick, "rows": rows, "machine": machine,
        "data_root": str(bench.data_root), "budget": dataclasses.asdict(bench.budget),
        "threads": {1: bench.env(1)["OMP_NUM_THREADS"], 2: bench.env(2)["OMP_NUM_THREADS"]},
        "figures": figures, "elapsed": elapsed, "foreign_cpu_seconds": foreign, "failed": failed, "total_seconds": time.perf_counter() - started,
        "runs": {k: v for k, v in bench.memo.items() if isinstance(v, dict)},
    }
    table = render(result)
    result["table"] = table
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{stamp.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    text = json.dumps(result, indent=1, default=str)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    print(f"\nwrote {path} and {out / 'latest.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
