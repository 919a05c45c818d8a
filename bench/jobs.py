"""The benchmark's measurements, each run in a fresh process: `python bench/jobs.py JOB SPEC_JSON OUT_JSON`.

A fresh process per measurement keeps them apart (no DataLoader workers, threads or allocator state left
over from the previous one) and lets the multi-process references run under the same launcher as
`train.py`. Every job reports per-repetition figures; bench.py takes the medians.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ itself, for seed_style

from competition.competitions import get_competition  # noqa: E402
from competition.config import Config, load_config  # noqa: E402
from competition.data import resolve_num_workers  # noqa: E402
from competition.device import resolve_mixed_precision  # noqa: E402
from competition.models import create_model  # noqa: E402

SEED_STYLE_WORKERS = 2  # the seed pipeline's own setting, kept unless a measurement overrides data.num_workers


def seed_workers(d) -> int:
    return SEED_STYLE_WORKERS if d.num_workers is None else d.num_workers

# ---------------------------------------------------------------------------------------------- helpers


def device_of(spec: dict) -> torch.device:
    if spec.get("device") == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_of(cfg: Config, device: torch.device, override: str | None = None) -> str:
    """What train.py resolves `trainer.mixed_precision` to on this device ("no" = fp32)."""
    return override or resolve_mixed_precision(cfg.trainer.mixed_precision, use_cpu=device.type != "cuda")


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def load_cfg(spec: dict) -> Config:
    return load_config(spec["config"], spec.get("overrides", []))


def n_classes(cfg: Config) -> int:
    return len(get_competition(cfg.data.competition).classes(Path(cfg.data.data_dir)))


def build_model(cfg: Config, device: torch.device, channels_last: bool | None = None, compile: bool | None = None):
    kwargs = dict(cfg.model.kwargs) | ({"drop_rate": cfg.model.drop_rate} if cfg.model.drop_rate else {})
    model = create_model(
        cfg.model.name, n_classes(cfg), pretrained=None,
        channels_last=cfg.model.channels_last if channels_last is None else channels_last,
        compile=cfg.model.compile if compile is None else compile, **kwargs,
    )
    return model.to(device)


def threads_info() -> dict:
    return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def train_frame(cfg: Config, data_dir: Path, limit: int | None):
    """(paths, targets) of the competition's training images in id order, the first `limit` if given."""
    competition = get_competition(cfg.data.competition)
    frame = competition.read_train(data_dir)
    classes = competition.classes(data_dir)
    if "id" in frame and frame["id"].map(lambda v: isinstance(v, (int, np.integer))).all():
        frame = frame.sort_values("id", kind="stable")
    if limit:
        frame = frame.head(limit)
    targets = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return frame["path"].tolist(), targets


# ---------------------------------------------------------------------------------------------- jobs


def job_loader(spec: dict) -> dict:
    """One side of the loader-only comparison: `epochs` passes over the same images, batch by batch."""
    from seed_style import seed_style_loader

    from competition.data import (
        ImageDataset,
        build_image_cache,
        build_transforms,
        cache_size,
        make_loader,
        normalize_batch,
    )

    cfg = load_cfg(spec)
    device = device_of(spec)
    data_dir = Path(cfg.data.data_dir)
    paths, targets = train_frame(cfg, data_dir, spec.get("limit"))
    d = cfg.data
    pin = device.type == "cuda"
    result: dict[str, Any] = {"images": len(paths), "batch_size": d.batch_size, "workers": resolve_num_workers(d.num_workers, device)} | threads_info()
    if spec["side"] == "cached":
        began = time.perf_counter()
        images = build_image_cache(data_dir, paths, cache_size(d), Path(d.cache_dir))
        result["cache_seconds"] = time.perf_counter() - began  # not part of any epoch below (warm cache)
        dataset = ImageDataset(images, targets, build_transforms(d, train=True), seed=cfg.trainer.seed)
        loader = make_loader(dataset, d.batch_size, True, False, resolve_num_workers(d.num_workers, device), cfg.trainer.seed, pin)

        def batches(epoch: int):
            dataset.set_epoch(epoch)
            for x, _, _ in loader:
                yield normalize_batch(x.to(device, non_blocking=pin), d.mean, d.std, cfg.model.channels_last)
    elif spec["side"] == "in-memory":  # data.in_memory=true: whole batches of one uint8 tensor, BatchAugment
        from competition.data import InMemoryBatches, images_to_tensor
        from competition.train import batch_augment

        began = time.perf_counter()
        images = build_image_cache(data_dir, paths, cache_size(d), Path(d.cache_dir))
        result["cache_seconds"] = time.perf_counter() - began
        result["workers"] = 0
        tensor = images_to_tensor(images, device)
        augment = batch_augment(cfg)
        loader = InMemoryBatches(tensor, targets, d.batch_size, True, False, cfg.trainer.seed)

        def batches(epoch: int):
            loader.set_epoch(epoch)
            generator = torch.Generator(device).manual_seed(cfg.trainer.seed * 100_003 + epoch)
            for x, _, _ in loader:
                yield normalize_batch(augment(x, generator), d.mean, d.std, cfg.model.channels_last)
    else:
        files = [data_dir / p for p in paths]
        loader = seed_style_loader(files, targets, d.image_size, d.mean, d.std, d.batch_size, seed_workers(d), pin)
        result["workers"] = seed_workers(d)

        def batches(epoch: int):
            for x, _ in loader:
                yield x.to(device, non_blocking=pin)

    epochs = []
    for epoch in range(spec["warmup"] + spec["repeats"]):
        began, seen = time.perf_counter(), 0
        for x in batches(epoch):
            seen += len(x)
        sync(device)
        seconds = time.perf_counter() - began
        epochs.append({"epoch": epoch + 1, "warmup": epoch < spec["warmup"], "seconds": seconds, "images_per_s": seen / seconds})
    result["epochs"] = epochs
    return result


def job_model_train(spec: dict) -> dict:
    """The model alone: forward + backward + optimizer step on one synthetic batch, train.py's model,
    optimizer, loss, batch and precision; under torchrun (WORLD_SIZE > 1) as plain DDP (gloo on CPU)."""
    import torch.distributed as dist

    from competition.optim import build_optimizer

    cfg = load_cfg(spec)
    device = device_of(spec)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = build_model(cfg, device, spec.get("channels_last"), spec.get("compile"))
    precision = precision_of(cfg, device, spec.get("precision"))
    optimizer = build_optimizer(model, cfg.optimizer)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    b, s = cfg.data.batch_size, cfg.data.image_size
    fmt = torch.channels_last if (spec.get("channels_last") or cfg.model.channels_last) else torch.contiguous_format
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, n_classes(cfg), (b,), device=device)
    model.train()

    def step() -> None:
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup = []  # the first step carries the process's one-off costs (kernel selection, first allocations)
    for _ in range(spec["warmup_steps"]):
        began = time.perf_counter()
        step()
        sync(device)
        warmup.append(time.perf_counter() - began)
    windows = []
    for _ in range(spec["repeats"]):
        if world > 1:
            dist.barrier()
        began = time.perf_counter()
        for _ in range(spec["steps"]):
            step()
        sync(device)
        seconds = torch.tensor(time.perf_counter() - began)
        if world > 1:
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        windows.append({"seconds": float(seconds), "images_per_s": world * b * spec["steps"] / float(seconds)})
    info = threads_info()
    if world > 1:
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, info)
        info = {"per_rank": everyone}
        dist.destroy_process_group()
    return {"processes": world, "batch_size": b, "image_size": s, "precision": precision, "warmup_seconds": warmup, "windows": windows} | info


def job_model_eval(spec: dict) -> dict:
    """The model alone in eval mode under no_grad: the same batch sizes as the prediction it is compared with."""
    cfg = load_cfg(spec)
    device = device_of(spec)
    torch.manual_seed(0)
    model = build_model(cfg, device, spec.get("channels_last"), spec.get("compile")).eval()
    precision = precision_of(cfg, device, spec.get("precision"))
    s = cfg.data.image_size
    inputs = [torch.randn(n, 3, s, s, device=device) for n in spec["batches"]]
    passes = []
    with torch.no_grad():
        for i in range(spec["warmup"] + spec["repeats"]):
            began = time.perf_counter()
            for x in inputs:
                with autocast(device, precision):
                    model(x)
            sync(device)
            seconds = time.perf_counter() - began
            passes.append({"warmup": i < spec["warmup"], "seconds": seconds, "images_per_s": sum(spec["batches"]) / seconds})
    return {"precision": precision, "batches": spec["batches"], "passes": passes} | threads_info()


def job_seed_train(spec: dict) -> dict:
    """The seed-style plain loop: PIL + torchvision loader, model, SGD, CrossEntropy, loss.item() per batch."""
    from seed_style import seed_style_loader

    from competition.data import load_fold_frame

    cfg = load_cfg(spec)
    device = device_of(spec)
    data_dir = Path(cfg.data.data_dir)
    frame, _ = load_fold_frame(get_competition(cfg.data.competition), data_dir, Path(cfg.data.folds_csv))
    rows = frame[frame["fold"] != int(spec["fold"])]
    d = cfg.data
    loader = seed_style_loader(
        [data_dir / p for p in rows["path"]], rows["target"].tolist(), d.image_size, d.mean, d.std,
        d.batch_size, seed_workers(d), device.type == "cuda",
    )
    torch.manual_seed(0)
    model = build_model(cfg, device, channels_last=False, compile=False)
    precision = precision_of(cfg, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=0.9, weight_decay=cfg.optimizer.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    limit = spec.get("limit")
    epochs = []
    for epoch in range(spec["warmup"] + spec["repeats"]):
        model.train()
        began, seen, running = time.perf_counter(), 0, 0.0  # the same window as train.py's images_per_s
        cut = spec.get("warmup_limit") or limit if epoch < spec["warmup"] else limit  # a short warm-up epoch
        for i, (x, y) in enumerate(loader):
            if cut and i >= cut:
                break
            x, y = x.to(device), y.to(device)
            with autocast(device, precision):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
            seen += len(x)
        sync(device)
        seconds = time.perf_counter() - began
        epochs.append({"epoch": epoch + 1, "warmup": epoch < spec["warmup"], "seconds": seconds, "images": seen, "images_per_s": seen / seconds})
    return {"images": len(rows), "batch_size": d.batch_size, "workers": seed_workers(d), "precision": precision, "epochs": epochs} | threads_info()


def job_predict(spec: dict) -> dict:
    """`competition.predict.predict` end to end, `repeats` times after a warm-up call (which builds the test
    cache); the prediction part is timed by wrapping `predict_images`, model loading included."""
    import competition.predict as P

    calls: list[dict] = []
    original_predict, original_load = P.predict_images, P.load_checkpoint

    def timed_load(*args, **kwargs):
        began = time.perf_counter()
        out = original_load(*args, **kwargs)
        calls[-1]["load_seconds"] += time.perf_counter() - began
        return out

    def timed_predict(accelerator, member, images, tta, batch_size):
        calls.append({"images": len(images), "load_seconds": 0.0})
        began = time.perf_counter()
        out = original_predict(accelerator, member, images, tta, batch_size)
        sync(accelerator.device)
        calls[-1]["seconds"] = time.perf_counter() - began
        return out

    P.predict_images, P.load_checkpoint = timed_predict, timed_load
    runs = []
    for i in range(spec["warmup"] + spec["repeats"]):
        calls.clear()
        began = time.perf_counter()
        P.predict(
            spec["competition"], spec["exps"], Path(spec["data_dir"]), tta="none", allow_missing=True,
            output_dir=Path(spec["runs_dir"]), submissions_dir=Path(spec["submissions_dir"]),
            cache_dir=Path(spec["cache_dir"]), batch_size=spec["batch_size"], track=False,
        )
        total = time.perf_counter() - began
        images = sum(c["images"] for c in calls)
        seconds = sum(c["seconds"] for c in calls)
        runs.append({
            "warmup": i < spec["warmup"], "images": images, "seconds": seconds, "images_per_s": images / seconds,
            "load_seconds": sum(c["load_seconds"] for c in calls), "call_seconds": total,
        })
    return {"batch_size": spec["batch_size"], "runs": runs} | threads_info()


def job_machine(spec: dict) -> dict:
    """This machine's matrix-product rate, and the model's FLOPs per image (training step and inference)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = device_of(spec)
    rates = {}
    n = spec["matmul_n"]
    dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if device.type == "cuda" else {})
    for name, dtype in dtypes.items():
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        times = []
        for i in range(spec["matmul_warmup"] + spec["matmul_repeats"]):
            sync(device)
            began = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            if i >= spec["matmul_warmup"]:
                times.append(time.perf_counter() - began)
        rates[name] = {"n": n, "gflops_runs": [2 * n**3 / t / 1e9 for t in times], "gflops": 2 * n**3 / statistics.median(times) / 1e9}
    flops = {}
    for key, overrides in spec["models"].items():
        cfg = load_config(overrides["config"], overrides.get("overrides", []))
        model = build_model(cfg, torch.device("cpu"), channels_last=False, compile=False)
        b, s = cfg.data.batch_size, cfg.data.image_size
        x, y = torch.randn(b, 3, s, s), torch.randint(0, n_classes(cfg), (b,))
        with FlopCounterMode(display=False) as counter:
            torch.nn.functional.cross_entropy(model.train()(x), y).backward()
        train = counter.get_total_flops() / b
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(x)
        flops[key] = {"train_flops_per_image": train, "eval_flops_per_image": counter.get_total_flops() / b, "batch_size": b, "image_size": s}
    return {"matmul": rates, "flops": flops} | threads_info()


JOBS = {
    "loader": job_loader,
    "model-train": job_model_train,
    "model-eval": job_model_eval,
    "seed-train": job_seed_train,
    "predict": job_predict,
    "machine": job_machine,
}


def main(argv: list[str]) -> int:
    name, spec_json, out = argv
    from competition.device import reuse_freed_cpu_memory

    reuse_freed_cpu_memory()  # every job, either side of a comparison: the same allocator as train.py and predict
    result = JOBS[name](json.loads(spec_json))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
