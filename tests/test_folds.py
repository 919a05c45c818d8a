"""Fold files: stratified, balanced, deterministic, duplicate-aware, and never half-written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from competition.cli import main
from competition.competitions import get_competition
from competition.errors import CompetitionError
from competition.folds import assign_folds, build_folds, read_folds
from tests.conftest import real_data


def check_fold_invariants(df: pd.DataFrame, k: int) -> None:
    assert df["id"].is_unique
    sizes = df["fold"].value_counts()
    assert sorted(sizes.index) == list(range(k))
    assert sizes.max() - sizes.min() <= 1
    overall = df["label"].value_counts(normalize=True)
    for _, part in df.groupby("fold"):
        share = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() <= 0.01 + 1 / len(part)  # one image is the finest step


def test_folds_cli_writes_valid_file(cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "folds.csv"
    assert main(["folds", "cifar-10", "--data", str(cifar_dir), "--k", "5", "--out", str(out)]) == 0
    df = read_folds(out)
    assert list(df.columns) == ["id", "path", "label", "fold"]
    assert len(df) == 100
    check_fold_invariants(df, 5)
    printed = capsys.readouterr().out
    assert "100 images" in printed and "all" in printed  # the per-fold / per-class summary table


def test_folds_are_byte_identical_for_a_seed(dogs_dir: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    for out, seed in ((a, "1"), (b, "1"), (c, "2")):
        assert main(["folds", "dogs-vs-cats", "--data", str(dogs_dir), "--seed", seed, "--out", str(out)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize(("n", "k"), [(103, 5), (1000, 7), (57, 3)])
def test_assign_folds_invariants_on_unbalanced_labels(n: int, k: int) -> None:
    rng = np.random.default_rng(n)
    labels = pd.Series(rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1]))
    folds, _ = assign_folds(labels, k, seed=0)
    check_fold_invariants(pd.DataFrame({"id": range(n), "label": labels, "fold": folds}), k)


def test_groups_share_a_fold_and_balance_is_kept() -> None:
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.choice(["a", "b"], size=200))
    groups = np.arange(200)
    groups[[10, 50, 90]] = 10  # three copies of one image…
    groups[[11, 51]] = 11  # …and a pair
    labels[[50, 90]] = labels[10]
    labels[51] = labels[11]
    plain, _ = assign_folds(labels, 5, seed=3)
    folds, unmoved = assign_folds(labels, 5, seed=3, groups=groups)
    assert unmoved == 0
    assert len(set(folds[[10, 50, 90]])) == 1 and len(set(folds[[11, 51]])) == 1
    # per fold and class, the counts are exactly those of the ungrouped split
    count = lambda f: pd.crosstab(f, labels).to_numpy()  # noqa: E731
    assert (count(folds) == count(plain)).all()


def test_duplicate_images_are_found_and_kept_together(dogs_dir: Path) -> None:
    train = dogs_dir / "train"
    shutil.copy(train / "cat.0.jpg", train / "cat.100.jpg")  # exact copy
    Image.open(train / "dog.0.jpg").resize((90, 70)).save(train / "dog.100.jpg", quality=70)  # near copy
    report = build_folds(get_competition("dogs-vs-cats"), dogs_dir, k=3, seed=0, group_duplicates=True)
    df = report.frame.set_index("id")
    assert report.exact_duplicates == 1 and report.near_duplicates >= 1
    assert df.loc["cat.0", "fold"] == df.loc["cat.100", "fold"]
    assert df.loc["dog.0", "fold"] == df.loc["dog.100", "fold"]


def test_k_larger_than_smallest_class(dogs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "f.csv"
    assert main(["folds", "dogs-vs-cats", "--data", str(dogs_dir), "--k", "21", "--out", str(out)]) == 2
    assert "K=21 is larger than the smallest class" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


def test_bad_images_are_all_reported_and_nothing_written(dogs_dir: Path, tmp_path: Path) -> None:
    train = dogs_dir / "train"
    (train / "cat.1.jpg").write_bytes(b"")
    data = (train / "dog.2.jpg").read_bytes()
    (train / "dog.2.jpg").write_bytes(data[: len(data) // 2])
    (train / "cat.3.jpg").write_bytes(b"not an image at all")
    with pytest.raises(CompetitionError) as err:
        build_folds(get_competition("dogs-vs-cats"), dogs_dir)
    message = str(err.value)
    assert "3 unreadable image(s)" in message
    assert "cat.1.jpg: zero-byte file" in message and "dog.2.jpg" in message and "cat.3.jpg" in message
    out = tmp_path / "folds.csv"
    assert main(["folds", "dogs-vs-cats", "--data", str(dogs_dir), "--out", str(out)]) == 2
    assert not out.exists() and list(tmp_path.glob(".*tmp")) == []


def test_missing_data_dir_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "competition", "folds", "cifar-10", "--data", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Data directory for cifar-10 not found" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "folds").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dogs-vs-cats", "cifar-10"])
def test_folds_on_real_data(name: str, tmp_path: Path) -> None:
    data = real_data(name)
    out = tmp_path / f"{name}.csv"
    assert main(["folds", name, "--data", str(data), "--out", str(out)]) == 0
    df = read_folds(out)
    expected = {"dogs-vs-cats": 1602, "cifar-10": 50000}[name]
    assert len(df) == expected
    check_fold_invariants(df, 5)
    assert df["path"].map(lambda p: (data / p).is_file()).all()
