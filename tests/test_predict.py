"""Prediction: fold ensembles, TTA, OOF weights, validated submissions, multi-process, W&B, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from competition.checkpoint import load_checkpoint
from competition.cli import main as cli
from competition.competitions import get_competition
from competition.data import build_image_cache, normalize_batch
from competition.folds import build_folds, write_folds
from competition.predict import fit_weights
from competition.train import main as train_main
from tests.conftest import REPO
from tests.wandb_records import finished_records

EXPS = ("small", "other")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny experiments, two folds each, on a sample dogs-vs-cats data set."""
    root = tmp_path_factory.mktemp("predict")
    data = root / "data"
    get_competition("dogs-vs-cats").write_sample(data, n_train=24, n_test=11, seed=2)
    write_folds(build_folds(get_competition("dogs-vs-cats"), data, k=2, seed=0).frame, root / "folds.csv")
    base = {
        "data": {"competition": "dogs-vs-cats", "data_dir": str(data), "folds_csv": str(root / "folds.csv"),
                 "image_size": 32, "resize": "pad_crop", "batch_size": 6, "num_workers": 0,
                 "cache_dir": str(root / "cache")},
        "model": {"name": "custom/resnet20"},
        "trainer": {"epochs": 1, "mixed_precision": "no", "output_dir": str(root / "runs")},
        "tracking": {"wandb": False},
    }
    for exp, size in zip(EXPS, (32, 24)):
        config = base | {"data": base["data"] | {"image_size": size}}
        (root / f"{exp}.yaml").write_text(yaml.safe_dump(config))
        assert train_main(["--config", str(root / f"{exp}.yaml")]) == 0
    return root


def predict_args(root: Path, *extra: str) -> list[str]:
    return ["predict", "dogs-vs-cats", "--data", str(root / "data"), "--runs", str(root / "runs"),
            "--submissions", str(root / "subs"), "--cache-dir", str(root / "cache"), "--no-wandb", *extra]


def by_hand(root: Path, exp: str, flip: bool = False) -> np.ndarray:
    """P(class) of the test images from the exp's fold checkpoints, averaged: the arithmetic spelled out."""
    test = get_competition("dogs-vs-cats").read_test(root / "data")
    probs = []
    for fold in ("fold0", "fold1"):
        model, meta = load_checkpoint(root / "runs" / "dogs-vs-cats" / exp / fold / "best.safetensors")
        images = build_image_cache(root / "data", test["path"].tolist(), meta["image_size"], root / "cache")
        x = normalize_batch(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), meta["mean"], meta["std"])
        with torch.no_grad():
            p = model(x).softmax(1)
            if flip:
                p = (p + model(x.flip(3)).softmax(1)) / 2
        probs.append(p.numpy())
    return np.mean(probs, axis=0)


def test_ensemble_equals_hand_computation(trained: Path) -> None:
    assert cli(predict_args(trained, "--exps", *EXPS, "--name", "blend", "--clip", "0")) == 0
    sub = pd.read_csv(trained / "subs" / "dogs-vs-cats" / "blend.csv")
    expected = (by_hand(trained, "small") + by_hand(trained, "other")) / 2
    assert sub["id"].tolist() == list(range(1, 12))
    assert sub["label"].to_numpy() == pytest.approx(expected[:, 1], abs=2e-6)  # the CSV keeps 6 decimals
    res = (trained / "subs" / "dogs-vs-cats" / "res.csv").read_text().splitlines()
    assert res == [f"{i},{int(p >= 0.5)}" for i, p in zip(range(1, 12), expected[:, 1])]  # no header, one per image
    sidecar = json.loads((trained / "subs" / "dogs-vs-cats" / "blend.json").read_text())
    assert sidecar["experiments"] == list(EXPS) and sidecar["weights"] == {"small": 0.5, "other": 0.5}
    assert set(sidecar["checkpoints"]) == {f"{e}/fold{k}" for e in EXPS for k in (0, 1)}
    assert set(sidecar["cv"]) == set(EXPS) and sidecar["ensemble_oof"]["images"] == 24


def test_hflip_tta_averages_flipped_predictions(trained: Path) -> None:
    assert cli(predict_args(trained, "--exps", "small", "--tta", "hflip", "--clip", "0")) == 0
    sub = pd.read_csv(trained / "subs" / "dogs-vs-cats" / "small-tta.csv")
    assert sub["label"].to_numpy() == pytest.approx(by_hand(trained, "small", flip=True)[:, 1], abs=2e-6)
    assert not np.allclose(sub["label"], by_hand(trained, "small")[:, 1], atol=1e-4)  # TTA changed something


def test_hard_labels_and_clip(trained: Path) -> None:
    assert cli(predict_args(trained, "--exps", "small", "--hard", "--name", "hard")) == 0
    assert set(pd.read_csv(trained / "subs" / "dogs-vs-cats" / "hard.csv")["label"]) <= {0, 1}
    assert cli(predict_args(trained, "--exps", "small", "--clip", "0.2", "--name", "clipped")) == 0
    labels = pd.read_csv(trained / "subs" / "dogs-vs-cats" / "clipped.csv")["label"]
    assert labels.between(0.2, 0.8).all()


def test_oof_weights_favour_the_better_member() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 500)
    good = np.eye(3)[targets] * 0.8 + 0.2 / 3
    noise = rng.dirichlet(np.ones(3), 500)
    w = fit_weights([noise, good], targets)
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[1] > 0.9
    blend_loss = lambda v: -np.log((v[0] * noise + v[1] * good)[np.arange(500), targets]).mean()  # noqa: E731
    assert blend_loss(w) <= min(blend_loss([1, 0]), blend_loss([0, 1]), blend_loss([0.5, 0.5])) + 1e-6


def test_weights_oof_are_printed_and_recorded(trained: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(predict_args(trained, "--exps", *EXPS, "--weights", "oof", "--name", "fitted")) == 0
    out = capsys.readouterr().out
    assert "ensemble" in out and "weight" in out
    weights = json.loads((trained / "subs" / "dogs-vs-cats" / "fitted.json").read_text())["weights"]
    assert sum(weights.values()) == pytest.approx(1) and min(weights.values()) >= 0


@pytest.mark.multiprocess
def test_two_process_prediction_equals_one(trained: Path) -> None:
    assert cli(predict_args(trained, "--exps", "small", "--name", "single")) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "competition", *predict_args(trained, "--exps", "small", "--name", "double")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    one = pd.read_csv(trained / "subs" / "dogs-vs-cats" / "single.csv")
    two = pd.read_csv(trained / "subs" / "dogs-vs-cats" / "double.csv")
    assert one["id"].tolist() == two["id"].tolist()
    assert one["label"].to_numpy() == pytest.approx(two["label"].to_numpy(), abs=1e-6)


def test_predict_any_folder_writes_class_probabilities(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    shutil.copytree(trained / "data" / "test1", folder)
    out = tmp_path / "probs.csv"
    assert cli(predict_args(trained, "--exps", "small", "--images", str(folder), "--out", str(out))) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "prob_cat", "prob_dog"] and len(table) == 11
    assert table["image"].iloc[9] == "10.jpg"  # numeric order
    assert np.allclose(table[["prob_cat", "prob_dog"]].sum(1), 1, atol=1e-5)


def test_wandb_artifact_records_the_sidecar(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [a for a in predict_args(trained, "--exps", "small", "--name", "tracked") if a != "--no-wandb"]
    config = trained / "runs" / "dogs-vs-cats" / "small" / "fold0" / "config.yaml"
    assert yaml.safe_load(config.read_text())["tracking"]["wandb"] is False  # the run said no …
    for module in ("competition.predict", "competition.tracking"):  # … force the logging path
        monkeypatch.setattr(f"{module}.wandb_mode", lambda cfg: "offline")
    assert cli(args) == 0
    files = sorted((trained / "runs" / "dogs-vs-cats" / "small" / "predictions").glob("wandb/offline-run-*/run-*.wandb"))
    records = finished_records(files[-1])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.job_type == "predict" and run.run_group == "dogs-vs-cats/small"
    artifact = next(r.artifact for r in records if r.WhichOneof("record_type") == "artifact")
    assert artifact.type == "submission"
    assert json.loads(artifact.metadata)["experiments"] == ["small"]


def test_submit_dry_run(trained: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(predict_args(trained, "--exps", "small", "--name", "tosend")) == 0
    csv = trained / "subs" / "dogs-vs-cats" / "tosend.csv"
    assert cli(["submit", str(csv), "-m", "first try", "--data", str(trained / "data"), "--dry-run"]) == 0
    assert "dogs-vs-cats-redux-kernels-edition" in capsys.readouterr().out


def bad(trained: Path, capsys: pytest.CaptureFixture, *extra: str, data: Path | None = None) -> str:
    args = predict_args(trained, *extra, "--name", "bad")
    if data is not None:
        args[args.index("--data") + 1] = str(data)
    assert cli(args) == 2
    assert not (trained / "subs" / "dogs-vs-cats" / "bad.csv").exists()
    return capsys.readouterr().err


def test_unknown_experiment(trained: Path, capsys: pytest.CaptureFixture) -> None:
    err = bad(trained, capsys, "--exps", "nope")
    assert "Unknown experiment 'nope'" in err and "other, small" in err


def test_missing_fold_checkpoint(trained: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(trained / "runs", runs)
    (runs / "dogs-vs-cats" / "small" / "fold1" / "best.safetensors").unlink()
    args = predict_args(trained, "--exps", "small", "--name", "partial")
    args[args.index("--runs") + 1] = str(runs)
    assert cli(args) == 2
    assert "no best.safetensors for fold1" in capsys.readouterr().err
    assert cli([*args, "--allow-missing-folds"]) == 0
    assert json.loads((trained / "subs" / "dogs-vs-cats" / "partial.json").read_text())["folds"] == {"small": ["fold0"]}


def test_holdout_run_predicts_with_the_folds_it_planned(trained: Path, tmp_path: Path) -> None:
    """A run trained with trainer.folds=[0] (a holdout recipe) is complete with fold 0 alone."""
    from competition.config import load_config, save_config

    runs = tmp_path / "runs"
    shutil.copytree(trained / "runs", runs)
    run = runs / "dogs-vs-cats" / "small"
    shutil.rmtree(run / "fold1")
    cfg = load_config(run / "config.yaml")
    cfg.trainer.folds = [0]
    save_config(cfg, run / "config.yaml")
    args = predict_args(trained, "--exps", "small", "--name", "holdout")
    args[args.index("--runs") + 1] = str(runs)
    assert cli(args) == 0
    assert json.loads((trained / "subs" / "dogs-vs-cats" / "holdout.json").read_text())["folds"] == {"small": ["fold0"]}


def test_checkpoints_with_different_classes(trained: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    runs = tmp_path / "runs"
    shutil.copytree(trained / "runs", runs)
    path = runs / "dogs-vs-cats" / "other" / "fold0" / "best.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata=meta | {"classes": json.dumps(["dog", "wolf"])})
    args = predict_args(trained, "--exps", *EXPS, "--name", "bad")
    args[args.index("--runs") + 1] = str(runs)
    assert cli(args) == 2
    assert "disagree on the class list" in capsys.readouterr().err


def test_corrupt_test_image(trained: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    (data / "test1" / "3.jpg").write_bytes(b"")
    (data / "test1" / "5.jpg").write_bytes(b"garbage")
    err = bad(trained, capsys, "--exps", "small", "--cache-dir", str(tmp_path / "c"), data=data)
    assert "3.jpg" in err and "5.jpg" in err and "2 unreadable" in err


def test_test_folder_not_matching_sample(trained: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    (data / "test1" / "7.jpg").unlink()
    err = bad(trained, capsys, "--exps", "small", data=data)
    assert "does not match" in err and "1 id(s) without an image (e.g. 7)" in err
