"""Each competition reads its raw Kaggle layout, and every malformed input is named precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.competitions import get_competition
from competition.competitions.base import natural_key
from competition.errors import CompetitionError


def test_dogs_vs_cats_reads_labels_from_file_names(dogs_dir: Path) -> None:
    comp = get_competition("dogs-vs-cats")
    df = comp.read_train(dogs_dir)
    assert list(df.columns) == ["id", "path", "label"]
    assert len(df) == 40 and set(df["label"]) == {"cat", "dog"}
    assert all(df["path"].str.startswith("train/")) and all((dogs_dir / p).is_file() for p in df["path"])
    assert all(p.split("/")[1].startswith(label) for p, label in zip(df["path"], df["label"]))
    test = comp.read_test(dogs_dir)
    assert test["id"].tolist() == list(range(1, 13))  # numeric, never 1, 10, 11, 12, 2, …
    assert test["path"].iloc[9] == "test1/10.jpg"


def test_cifar10_reads_labels_csv(cifar_dir: Path) -> None:
    comp = get_competition("cifar-10")
    df = comp.read_train(cifar_dir)
    labels = pd.read_csv(cifar_dir / "trainLabels.csv")
    assert df["id"].tolist() == labels["id"].tolist()
    assert df["label"].tolist() == labels["label"].tolist()
    assert df["path"].iloc[0] == "train/1.png"
    assert comp.classes(cifar_dir)[0] == "airplane" and len(comp.classes(cifar_dir)) == 10


def test_cifar10_accepts_jpg_layout(cifar_dir: Path) -> None:
    for p in (cifar_dir / "train").glob("*.png"):
        p.rename(p.with_suffix(".jpg"))
    assert get_competition("cifar-10").read_train(cifar_dir)["path"].iloc[0] == "train/1.jpg"


def test_imagefolder_classes_are_folders(imagefolder_dir: Path) -> None:
    comp = get_competition("imagefolder")
    assert comp.classes(imagefolder_dir) == ["circle", "square", "triangle"]
    df = comp.read_train(imagefolder_dir)
    assert df["id"].is_unique and len(df) == 30
    assert comp.read_sample_submission(imagefolder_dir)["id"].tolist() == list(range(1, 7))


def test_sample_is_labelled_as_sample(dogs_dir: Path) -> None:
    assert "SAMPLE" in (dogs_dir / "SAMPLE.txt").read_text()
    sub = pd.read_csv(dogs_dir / "sampleSubmission.csv")
    assert list(sub.columns) == ["id", "label"] and len(sub) == 12


def test_natural_order() -> None:
    names = ["10.png", "9.png", "100.png", "1.png"]
    assert sorted(names, key=natural_key) == ["1.png", "9.png", "10.png", "100.png"]


def test_unknown_competition_suggests() -> None:
    with pytest.raises(CompetitionError, match="dogs-vs-cats"):
        get_competition("dogs-vs-cat")


def test_missing_data_dir_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CompetitionError, match="kaggle competitions download -c dogs-vs-cats"):
        get_competition("dogs-vs-cats").read_train(tmp_path / "nope")


def test_dogs_vs_cats_bad_file_name(dogs_dir: Path) -> None:
    (dogs_dir / "train" / "cat.0.jpg").rename(dogs_dir / "train" / "bird.0.jpg")
    with pytest.raises(CompetitionError, match="bird.0.jpg"):
        get_competition("dogs-vs-cats").read_train(dogs_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("idx,label\n1,cat\n", "header must start with 'id,label'"),
        ("id,label\n1,cat\nx,dog\n", "row 3 is 'x'"),
        ("id,label\n1,cat\n2,unicorn\n", r"row 3 \('unicorn'\).*Valid classes: airplane"),
        ("id,label\n1,cat\n1,dog\n", "duplicate ids: row 2 \\(id 1\\), row 3 \\(id 1\\)"),
        ("id,label\n1,cat\n2,\n", "empty label at row 3"),
        ("id,label\n1,cat\n999,dog\n", "1 id\\(s\\) have no image.*999"),
    ],
)
def test_cifar10_bad_label_csv(cifar_dir: Path, content: str, message: str) -> None:
    (cifar_dir / "trainLabels.csv").write_text(content)
    with pytest.raises(CompetitionError, match=message) as err:
        get_competition("cifar-10").read_train(cifar_dir)
    assert "trainLabels.csv" in str(err.value)


def test_cifar10_missing_label_csv(cifar_dir: Path) -> None:
    (cifar_dir / "trainLabels.csv").unlink()
    with pytest.raises(CompetitionError, match="Label file not found"):
        get_competition("cifar-10").read_train(cifar_dir)


def test_submission_frames() -> None:
    probs = np.array([[0.9, 0.1], [0.0, 1.0]])
    comp = get_competition("dogs-vs-cats")
    soft = comp.submission_frame([1, 2], probs, ["cat", "dog"], clip=0.01)
    assert soft["label"].tolist() == pytest.approx([0.1, 0.99])
    hard = comp.submission_frame([1, 2], probs, ["cat", "dog"], hard=True)
    assert hard["label"].tolist() == [0, 1]
    cifar = get_competition("cifar-10")
    p = np.eye(10)[[3, 9]]
    assert cifar.submission_frame([1, 2], p, cifar.classes(Path())).label.tolist() == ["cat", "truck"]
