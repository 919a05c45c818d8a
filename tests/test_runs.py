"""The runs leaderboard and the run report, on one real tiny training run and hand-made run directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from competition.competitions import get_competition
from competition.config import Config, load_config, save_config
from competition.errors import CompetitionError
from competition.folds import build_folds, write_folds
from competition.report import run_report_command, write_report
from competition.runs import collect_runs, format_runs_table, run_runs_command
from competition.train import main as train_main
from tests.wandb_records import summarize_run

EXP = "tiny"
FOLDS = 2
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/dogs-vs-cats/tiny: 2 folds × 2 epochs of custom/resnet20 on 24 sample images, trained once."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    competition = get_competition("dogs-vs-cats")
    competition.write_sample(data, n_train=24, n_test=4, seed=1)
    write_folds(build_folds(competition, data, k=FOLDS, seed=0).frame, root / "folds.csv")
    config = {
        "data": {
            "competition": "dogs-vs-cats", "data_dir": str(data), "folds_csv": str(root / "folds.csv"),
            "image_size": 32, "batch_size": 8, "num_workers": 0, "cache_dir": str(root / "cache"),
        },
        "model": {"name": "custom/resnet20"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "trainer": {"epochs": 2, "mixed_precision": "no", "best_metric": "log_loss", "best_mode": "min"},
        "tracking": {"wandb": False},
    }
    (root / f"{EXP}.yaml").write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(root / f"{EXP}.yaml"), f"trainer.output_dir={root / 'runs'}"]) == 0
    return root / "runs"


def copy_run(trained: Path, out: Path, exp: str = EXP) -> Path:
    """A private copy of the tiny run (tests edit theirs), without the resumable state nobody reads here."""
    dst = out / "dogs-vs-cats" / exp
    shutil.copytree(trained / "dogs-vs-cats" / EXP, dst, ignore=shutil.ignore_patterns("state", "wandb"))
    return dst


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def edit_json(path: Path, edit) -> None:
    data = read_json(path)
    edit(data)
    path.write_text(json.dumps(data))


def fake_multiclass_run(out: Path, exp: str, accuracy: float, n: int = 40, folds: int = 2) -> Path:
    """A finished cifar-10 run written by hand: about `accuracy` of the argmaxes right."""
    rng = np.random.default_rng(len(exp))
    run = out / "cifar-10" / exp
    cfg = Config()
    cfg.data.competition, cfg.data.image_size, cfg.model.name = "cifar-10", 32, "custom/resnet56"
    cfg.trainer.exp, cfg.trainer.epochs = exp, 2
    save_config(cfg, run / "config.yaml")
    labels = np.arange(n) % len(CIFAR_CLASSES)
    right = rng.random(n) < accuracy
    predicted = np.where(right, labels, (labels + 1 + rng.integers(0, 8, n)) % len(CIFAR_CLASSES))
    probs = np.full((n, len(CIFAR_CLASSES)), 0.4 / (len(CIFAR_CLASSES) - 1))
    probs[np.arange(n), predicted] = 0.6
    oof = pd.DataFrame({"id": np.arange(1, n + 1), "label": [CIFAR_CLASSES[i] for i in labels], "fold": np.arange(n) % folds})
    for c, name in enumerate(CIFAR_CLASSES):
        oof[f"prob_{name}"] = probs[:, c]
    oof.to_csv(run / "oof.csv", index=False)
    per_fold = {}
    for k in range(folds):
        fold = run / f"fold{k}"
        fold.mkdir()
        records = [
            {"epoch": e, "step": 5 * e, "lr": 0.1 / e, "train_loss": 2.0 / e, "images_per_s": 100.0, "epoch_seconds": 1.0,
             "val_loss": 1.8 / e, "val_accuracy": accuracy * e / 2, "val_log_loss": 1.8 / e, "val_f1_macro": accuracy / 2}
            for e in (1, 2)
        ]
        (fold / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        best = records[-1]
        (fold / "summary.json").write_text(json.dumps({
            "fold": k, "best_epoch": 2, "best_metric": "accuracy", "best_score": best["val_accuracy"], "epochs": 2,
            "seconds": 2.0, "images_per_s": 100.0, "processes": 2, "precision": "bf16", "device": "cuda", "best": best,
        }))
        per_fold[f"fold{k}"] = {key[4:]: v for key, v in best.items() if key.startswith("val_")}
    mean = {m: float(np.mean([s[m] for s in per_fold.values()])) for m in per_fold["fold0"]}
    cv = {"folds": list(per_fold), "per_fold": per_fold, "mean": mean, "std": dict.fromkeys(mean, 0.0),
          "oof": {"accuracy": float(right.mean()), "log_loss": 1.0, "f1_macro": 0.5, "images": n}}
    (run / "cv.json").write_text(json.dumps(cv))
    return run


# ---- the leaderboard ------------------------------------------------------------------------------
def test_table_shows_a_real_run(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run = copy_run(trained, out)
    (out / "dogs-vs-cats" / "notes").mkdir()  # not runs: skipped
    (out / "dogs-vs-cats" / ".tiny.tmp").mkdir()
    (out / "not-a-competition" / "x").mkdir(parents=True)
    (out / "not-a-competition" / "x" / "config.yaml").write_text("{}")
    df = collect_runs(out, submissions_dir=tmp_path / "submissions")
    assert len(df) == 1
    row = df.iloc[0]
    cv = read_json(run / "cv.json")
    summaries = [read_json(run / f"fold{k}" / "summary.json") for k in range(FOLDS)]
    assert (row["competition"], row["exp"], row["model"], row["image_size"], row["epochs"]) == (
        "dogs-vs-cats", EXP, "custom/resnet20", 32, 2
    )
    assert (row["folds_finished"], row["folds_unfinished"], row["best_metric"]) == (FOLDS, 0, "log_loss")
    assert row["cv_log_loss_mean"] == pytest.approx(cv["mean"]["log_loss"])
    assert row["cv_log_loss_std"] == pytest.approx(cv["std"]["log_loss"])
    assert row["cv_accuracy_mean"] == pytest.approx(cv["mean"]["accuracy"])
    assert row["oof_log_loss"] == pytest.approx(cv["oof"]["log_loss"])
    assert [row[f"fold{k}"] for k in range(FOLDS)] == pytest.approx([s["best_score"] for s in summaries])
    assert row["seconds"] == pytest.approx(sum(s["seconds"] for s in summaries))
    assert (row["processes"], row["precision"], row["device"]) == (1, "fp32", "cpu")
    assert row["submissions"] == []

    table = format_runs_table(df)
    line = next(li for li in table.splitlines() if f" {EXP} " in li)
    assert "custom/resnet20" in line and f" {FOLDS}/{FOLDS} " in line and "1×cpu fp32" in line
    mean, std = cv["mean"]["log_loss"], cv["std"]["log_loss"]
    assert f"{mean:.4f} ± {std:.4f}" in line
    assert "ranked by CV log_loss (lower is better)" in table


def test_unfinished_fold_counts_and_partial_scores(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "runs"
    run = copy_run(trained, out)
    (run / "fold1" / "summary.json").unlink()  # killed in its last epoch: cv.json still covers both folds
    cv = read_json(run / "cv.json")
    row = collect_runs(out, "dogs-vs-cats", tmp_path / "submissions").iloc[0]
    assert (row["folds_finished"], row["folds_unfinished"], row["unfinished"]) == (1, 1, ["fold1 2/2"])
    assert pd.isna(row["fold1"])
    expected = cv["per_fold"]["fold0"]["log_loss"]
    assert row["cv_log_loss_mean"] == pytest.approx(expected)  # the finished folds, not the stale cv.json
    assert pd.isna(row["oof_log_loss"])
    assert run_runs_command("dogs-vs-cats", out, tmp_path / "submissions") == 0
    printed = capsys.readouterr().out
    assert " 1/2 " in printed and "—" in printed and "unfinished: tiny fold1 2/2 epochs" in printed

    (run / "cv.json").unlink()
    (run / "oof.csv").unlink()
    (run / "fold0" / "summary.json").unlink()
    row = collect_runs(out, "dogs-vs-cats", tmp_path / "submissions").iloc[0]
    assert (row["folds_finished"], row["folds_unfinished"], row["model"]) == (0, 2, "custom/resnet20")
    assert EXP in format_runs_table(collect_runs(out))
    with pytest.raises(CompetitionError, match="finish training first"):
        write_report(run)


def test_submissions_are_linked_to_their_experiments(trained: Path, tmp_path: Path) -> None:
    out, subs = tmp_path / "runs", tmp_path / "submissions" / "dogs-vs-cats"
    copy_run(trained, out)
    subs.mkdir(parents=True)
    (subs / "blend.json").write_text(json.dumps({"experiments": [EXP, "other"], "uploads": [{"ref": 1}]}))
    (subs / "solo.json").write_text(json.dumps({"experiments": [EXP]}))
    (subs / "unrelated.json").write_text(json.dumps({"experiments": ["other"]}))
    (subs / "broken.json").write_text("{not json")
    (subs / "res.csv").write_text("1,1\n")
    df = collect_runs(out, submissions_dir=tmp_path / "submissions")
    assert df.iloc[0]["submissions"] == ["blend", "solo"] and df.iloc[0]["uploaded"] == ["blend"]
    table = format_runs_table(df)
    assert "blend↑, solo" in table and "unrelated" not in table


def test_table_ranks_by_each_competitions_metric(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    for exp, log_loss in (("worse", 0.9), ("better", 0.1), ("middle", 0.5)):
        edit_json(copy_run(trained, out, exp) / "cv.json", lambda cv, v=log_loss: cv["mean"].update(log_loss=v))
    fake_multiclass_run(out, "low", 0.3, folds=3)
    fake_multiclass_run(out, "high", 0.9, folds=3)
    table = format_runs_table(collect_runs(out, submissions_dir=tmp_path / "submissions"))
    rows = [li.split()[1] for li in table.splitlines() if li[:1].isdigit()]
    assert rows == ["high", "low", "better", "middle", "worse"]  # accuracy descending; log loss ascending
    assert "cifar-10: 2 experiment(s), ranked by CV accuracy (higher is better)" in table
    assert "2×cuda bf16" in table
    only_cifar = format_runs_table(collect_runs(out, "cifar-10", tmp_path / "submissions"))
    assert [li.split()[1] for li in only_cifar.splitlines() if li[:1].isdigit()] == ["high", "low"]
    cifar, dogs = table.split("\n\n")
    assert "fold2" in cifar and "fold2" not in dogs  # each leaderboard has the folds of its own runs


def test_no_runs_and_unknown_competition(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_runs_command(None, tmp_path / "runs") == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"No runs under {tmp_path / 'runs'}/: train one with make train")
    with pytest.raises(CompetitionError, match="Did you mean 'cifar-10'"):
        collect_runs(tmp_path / "runs", "cifar10")


# ---- the report -----------------------------------------------------------------------------------
def assert_pngs(paths: list[Path], names: list[str]) -> None:
    assert [p.name for p in paths] == names
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
            image.verify()
    assert not list(paths[0].parent.glob("*.tmp"))  # every temporary file renamed or removed


def test_report_of_a_binary_run(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = copy_run(trained, tmp_path / "runs")
    assert run_report_command(EXP, None, tmp_path / "runs", wandb=False) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    assert_pngs(paths, ["learning_curves.png", "confusion_matrix.png", "calibration.png"])
    assert all(p.parent == run / "report" for p in paths)
    assert not (run / "wandb").exists()


def test_report_of_a_multiclass_run(tmp_path: Path) -> None:
    run = fake_multiclass_run(tmp_path / "runs", "c10", 0.7)
    assert_pngs(write_report(run), ["learning_curves.png", "confusion_matrix.png"])


def test_report_finds_runs_by_name(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    copy_run(trained, out)
    fake_multiclass_run(out, "c10", 0.7)
    with pytest.raises(CompetitionError, match=r"No run 'nope'.*cifar-10/c10, dogs-vs-cats/tiny"):
        run_report_command("nope", None, out, wandb=False)
    with pytest.raises(CompetitionError, match=r"No run 'c10' under .*dogs-vs-cats/\. Experiments there: dogs-vs-cats/tiny"):
        run_report_command("c10", "dogs-vs-cats", out, wandb=False)
    fake_multiclass_run(out, EXP, 0.5)
    with pytest.raises(CompetitionError, match="several competitions"):
        run_report_command(EXP, None, out, wandb=False)
    assert run_report_command(EXP, "cifar-10", out, wandb=False) == 0


def test_report_logs_to_wandb_offline(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run = copy_run(trained, tmp_path / "runs")
    write_report(run, log_to_wandb=True)  # the run was trained with tracking.wandb=false: respected
    assert not (run / "wandb").exists()

    cfg = load_config(run / "config.yaml")
    cfg.tracking.wandb = True
    save_config(cfg, run / "config.yaml")
    paths = write_report(run, log_to_wandb=True)
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    logged = summarize_run(run)
    assert (logged["name"], logged["group"], logged["job_type"]) == (f"{EXP}-report", f"dogs-vs-cats/{EXP}", "report")
    images = {k.removesuffix("/_type") for row in logged["history"] for k, v in row.items() if v == "image-file"}
    assert images == {p.stem for p in paths}
    files = run.glob("wandb/offline-run-*/files/media/images/*.png")
    assert sorted(f.name.split("_0_")[0] for f in files) == sorted(images)
