"""Training under Accelerate on tiny generated data: outputs, multi-process, resume, precision, W&B, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from competition.checkpoint import load_checkpoint
from competition.competitions import get_competition
from competition.device import resolve_mixed_precision
from competition.errors import CompetitionError
from competition.folds import build_folds, write_folds
from competition.train import main as train_main
from tests.conftest import REPO
from tests.wandb_records import summarize_run

K = 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample data set, its fold file and a small config, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    get_competition("dogs-vs-cats").write_sample(data, n_train=48, n_test=8, seed=1)
    write_folds(build_folds(get_competition("dogs-vs-cats"), data, k=K, seed=0).frame, root / "folds.csv")
    config = {
        "data": {
            "competition": "dogs-vs-cats", "data_dir": str(data), "folds_csv": str(root / "folds.csv"),
            "image_size": 32, "resize": "pad_crop", "batch_size": 6, "num_workers": 0,
            "cache_dir": str(root / "cache"),
        },
        "model": {"name": "custom/resnet20"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "cosine", "warmup_epochs": 0.5},
        "trainer": {"epochs": 2, "mixed_precision": "no", "log_every": 1, "best_metric": "log_loss", "best_mode": "min"},
        "tracking": {"wandb": False},
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(config))
    return root


def run_args(ws: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ws / "exp.yaml"), f"trainer.output_dir={out}", *extra]


def launch(ws: Path, out: Path, *extra: str, processes: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    # --multi_gpu starts the processes with torchrun; on a CPU-only machine they form a gloo group.
    # (`--cpu --num_processes N` starts one process unless mpirun is configured: accelerate #2741.)
    mode = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "train.py"), *run_args(ws, out, *extra)]
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ws)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def metrics(fold_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_process_run_writes_every_output(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_main(run_args(workspace, tmp_path)) == 0
    run = tmp_path / "dogs-vs-cats" / "exp"
    printed = capsys.readouterr().out
    threads = torch.get_num_threads()
    assert f"device cpu ({threads} thread(s) per process), precision fp32" in printed and "1 process(es)" in printed
    assert f"CV over {K} fold(s) of exp" in printed
    frame = pd.read_csv(workspace / "folds.csv")
    for k in range(K):
        fold = run / f"fold{k}"
        assert {"best.safetensors", "config.yaml", "oof.csv", "metrics.jsonl", "summary.json", "state"} <= {
            p.name for p in fold.iterdir()
        }
        oof = pd.read_csv(fold / "oof.csv")
        assert sorted(oof["id"]) == sorted(frame.loc[frame["fold"] == k, "id"])  # this fold's images, once each
        assert np.allclose(oof[["prob_cat", "prob_dog"]].sum(1), 1, atol=1e-5)
        assert [r["epoch"] for r in metrics(fold)] == [1, 2]
        keys = load_file(str(fold / "best.safetensors")).keys()
        assert not any(key.startswith(("module.", "_orig_mod.")) for key in keys)
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof["id"]) == sorted(frame["id"])
    cv = json.loads((run / "cv.json").read_text())
    assert cv["folds"] == [f"fold{k}" for k in range(K)]
    assert set(cv["mean"]) >= {"accuracy", "log_loss", "f1_macro", "loss"} and cv["oof"]["images"] == 48
    # the best checkpoint is usable without the run's config
    model, meta = load_checkpoint(run / "fold0" / "best.safetensors")
    assert meta["model"] == "custom/resnet20" and meta["classes"] == ["cat", "dog"]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    # a finished run is not clobbered; resume skips finished folds
    assert train_main(run_args(workspace, tmp_path)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert train_main(run_args(workspace, tmp_path, "resume=true")) == 0
    assert "already finished: skipped" in capsys.readouterr().out


@pytest.mark.multiprocess
def test_two_processes_cover_validation_once_and_keep_the_lr_curve(workspace: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    launch(workspace, one, "--fold", "1", "trainer.epochs=3")
    result = launch(workspace, two, "--fold", "1", "trainer.epochs=3", processes=2)
    assert "2 process(es)" in result.stdout
    fold = two / "dogs-vs-cats" / "exp" / "fold1"
    oof = pd.read_csv(fold / "oof.csv")
    frame = pd.read_csv(workspace / "folds.csv")
    expected = frame.loc[frame["fold"] == 1, "id"]
    assert oof["id"].is_unique and sorted(oof["id"]) == sorted(expected)  # 16 images over 2×6-image batches
    lr_one = [r["lr"] for r in metrics(one / "dogs-vs-cats" / "exp" / "fold1")]
    lr_two = [r["lr"] for r in metrics(fold)]
    assert lr_two == pytest.approx(lr_one)  # the schedule follows epochs, not the process count
    assert lr_two[-1] == pytest.approx(0.0, abs=1e-9)  # cosine reached its end exactly at the last step
    assert len(load_file(str(fold / "best.safetensors"))) > 0


@pytest.mark.multiprocess
def test_kill_and_resume_ends_like_an_uninterrupted_run(workspace: Path, tmp_path: Path) -> None:
    extra = ("--fold", "0", "trainer.epochs=4", "trainer.ema=true", "trainer.ema_decay=0.9")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    launch(workspace, whole, *extra)

    cmd = [sys.executable, str(REPO / "train.py"), *run_args(workspace, broken, *extra)]
    proc = subprocess.Popen(cmd, cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    log = broken / "dogs-vs-cats" / "exp" / "fold0" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (log.parent / "state").is_dir() and time.time() < deadline:  # epoch 1 saved
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of epoch 2 (or later): no clean shutdown
    proc.wait()
    assert len(metrics(log.parent)) < 4, "the run finished before it could be killed"

    result = launch(workspace, broken, *extra, "--resume")
    assert "Resumed fold0" in result.stdout
    a = load_file(str(whole / "dogs-vs-cats" / "exp" / "fold0" / "best.safetensors"))
    b = load_file(str(log.parent / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = {"images_per_s", "epoch_seconds"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(metrics(log.parent)) == strip(metrics(whole / "dogs-vs-cats" / "exp" / "fold0"))


def test_wandb_offline_records_one_run_per_fold(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: nothing to log in with, so offline
    assert train_main(run_args(workspace, tmp_path, "--fold", "2", "tracking.wandb=true", "tracking.mode=auto")) == 0
    fold = tmp_path / "dogs-vs-cats" / "exp" / "fold2"
    run = summarize_run(fold)
    assert (run["name"], run["group"], run["job_type"]) == ("exp-fold2", "dogs-vs-cats/exp", "train")
    assert run["config"]["model"]["name"] == "custom/resnet20" and run["config"]["fold"] == 2
    steps = [row for row in run["history"] if "train/loss" in row]
    assert len(steps) >= 2 and all("train/lr" in row for row in steps)  # per-step loss and lr
    epochs = [row for row in run["history"] if "epoch/val_accuracy" in row]
    assert [row["epoch/epoch"] for row in epochs] == [1, 2] and all("epoch/images_per_s" in r for r in epochs)
    summary = json.loads((fold / "summary.json").read_text())
    assert run["summary"]["best/val_log_loss"] == pytest.approx(summary["best_score"])
    assert run["summary"]["oof_log_loss"] == pytest.approx(summary["best_score"])


def test_auto_precision_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import competition.device as device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert resolve_mixed_precision("auto") == "no"  # emulated bf16 on a CPU is far slower than fp32
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("no") == "no"
    with pytest.raises(CompetitionError, match="fp16 needs a CUDA GPU"):
        resolve_mixed_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("auto", use_cpu=True) == "bf16"  # the CPU with native bf16 again
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "fp16"  # pre-Ampere GPUs: fp16 with loss scaling
    assert resolve_mixed_precision("fp16") == "fp16"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["trainer.epoch=3"], "did you mean 'epochs'"),
        (["--fold", "7"], "Fold 7 is out of range"),
        (["model.name=custom/resnet19"], "resnet19"),
        (["trainer.mixed_precision=fp16"], "fp16 needs a CUDA GPU"),
    ],
)
def test_bad_input_is_named_and_leaves_no_run(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    assert train_main(run_args(workspace, tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "dogs-vs-cats").exists()


def test_fold_file_of_another_data_dir(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other"
    get_competition("dogs-vs-cats").write_sample(other, n_train=20, n_test=2, seed=5)
    (other / "train" / "cat.3.jpg").unlink()
    assert train_main(run_args(workspace, tmp_path / "runs", f"data.data_dir={other}")) == 2
    assert "made for another data directory" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_resume_with_another_model_is_refused(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fold = tmp_path / "dogs-vs-cats" / "exp" / "fold0"
    (fold / "state").mkdir(parents=True)
    assert train_main(run_args(workspace, tmp_path, "--fold", "0", "trainer.epochs=1")) == 2
    assert "unfinished run" in capsys.readouterr().err
    (fold / "state").rmdir()
    assert train_main(run_args(workspace, tmp_path, "--fold", "0", "trainer.epochs=1", "trainer.exp=exp")) == 0
    os.remove(fold / "summary.json")  # pretend it was killed after its last epoch
    assert train_main(run_args(workspace, tmp_path, "--fold", "0", "trainer.epochs=1", "model.name=custom/resnet32", "--resume")) == 2
    assert "trained with model.name='custom/resnet20'" in capsys.readouterr().err


def test_grad_accumulation_and_mixup_run(workspace: Path, tmp_path: Path) -> None:
    extra = ["--fold", "0", "trainer.epochs=1", "trainer.grad_accum_steps=2", "trainer.mixup_alpha=0.2",
             "trainer.cutmix_alpha=1.0", "trainer.label_smoothing=0.1", "trainer.clip_grad_norm=1.0",
             "scheduler.name=onecycle"]
    assert train_main(run_args(workspace, tmp_path, *extra)) == 0
    record = metrics(tmp_path / "dogs-vs-cats" / "exp" / "fold0")[0]
    # 32 images, batch 6, mixup's drop_last → 5 batches → 3 optimizer steps with accumulation 2
    assert record["step"] == 3


def test_class_weights_with_mixup_is_refused(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_main(run_args(workspace, tmp_path, "trainer.mixup_alpha=0.2", "trainer.class_weights=balanced")) == 2
    assert "class_weights cannot be combined" in capsys.readouterr().err


def test_out_of_memory_names_the_batch_size(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import competition.train as train_module

    real = train_module.create_model

    def exploding(*args, **kwargs):
        model = real(*args, **kwargs)

        def forward(x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model

    monkeypatch.setattr(train_module, "create_model", exploding)
    assert train_main(run_args(workspace, tmp_path, "--fold", "0")) == 2
    err = capsys.readouterr().err
    assert "Out of memory" in err and "data.batch_size=6" in err and "grad_accum_steps" in err
    fold = tmp_path / "dogs-vs-cats" / "exp" / "fold0"
    assert not (fold / "best.safetensors").exists() and not (fold / "summary.json").exists()


def test_in_memory_training_is_reproducible(workspace: Path, tmp_path: Path) -> None:
    extra = ["--fold", "1", "data.in_memory=true", "trainer.epochs=2"]
    assert train_main(run_args(workspace, tmp_path / "a", *extra)) == 0
    assert train_main(run_args(workspace, tmp_path / "b", *extra)) == 0
    a, b = (metrics(p / "dogs-vs-cats" / "exp" / "fold1") for p in (tmp_path / "a", tmp_path / "b"))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]  # seeded batch augmentation
    assert a[0]["step"] == 6  # 32 images in batches of 6


def test_in_memory_refuses_per_image_augmentations(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_main(run_args(workspace, tmp_path, "data.in_memory=true", "data.coarse_dropout=0.5")) == 2
    assert "in_memory=true augments whole batches" in capsys.readouterr().err


def test_extra_train_images_join_training_only(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """data.extra_train: another competition's cat and dog images train every fold; validation stays ours."""
    cifar = tmp_path / "cifar"
    get_competition("cifar-10").write_sample(cifar, n_train=40, n_test=2, seed=3)
    n_extra = int(pd.read_csv(cifar / "trainLabels.csv")["label"].isin(["cat", "dog"]).sum())
    extra = f"data.extra_train={{competition: cifar-10, data_dir: {cifar}, classes: {{cat: cat, dog: dog}}}}"
    assert train_main(run_args(workspace, tmp_path, "--fold", "0", "trainer.epochs=1", extra)) == 0
    printed = capsys.readouterr().out
    folds = pd.read_csv(workspace / "folds.csv")
    assert f"+ {n_extra} extra training images from cifar-10" in printed
    assert f"{(folds['fold'] != 0).sum() + n_extra} train / {(folds['fold'] == 0).sum()} validation images" in printed
    oof = pd.read_csv(tmp_path / "dogs-vs-cats" / "exp" / "fold0" / "oof.csv")
    assert sorted(oof["id"].astype(str)) == sorted(folds.loc[folds["fold"] == 0, "id"].astype(str))

    bad = f"data.extra_train={{competition: cifar-10, data_dir: {cifar}, classes: {{horse: dog, cat: lion}}}}"
    assert train_main(run_args(workspace, tmp_path / "bad", "--fold", "0", bad)) == 2
    assert "maps to lion, not among this competition's classes" in capsys.readouterr().err


def test_reuse_freed_cpu_memory_tunes_glibc_and_is_a_no_op_elsewhere(monkeypatch) -> None:
    import ctypes
    import platform

    from competition import device

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert device.reuse_freed_cpu_memory() is True  # mallopt accepted both thresholds

    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert device.reuse_freed_cpu_memory() is False
