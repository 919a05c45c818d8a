"""What every competition knows: its raw layout, its classes, its labels and its submission format.

A competition module subclasses `Competition` and overrides the few methods whose layout differs;
`competition.competitions.get_competition(name)` finds it by name.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.errors import CompetitionError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SAMPLE_MARKER = "SAMPLE.txt"  # written into every synthetic data set so nobody mistakes it for real data
_NUMERIC = re.compile(r"^\d+$")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (hidden files skipped), numeric names in numeric order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=natural_key)


def natural_key(path: Path | str) -> tuple:
    """Sort key putting `9.png` before `10.png` (Kaggle ids are numbers, not strings)."""
    stem = Path(path).stem
    return (0, int(stem), "") if _NUMERIC.match(stem) else (1, 0, stem)


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise CompetitionError(f"{what} not found: {path}. {hint}")
    return path


def parse_id(value: str) -> int | str:
    """Kaggle ids are integers where they look like integers, so that they sort and match numerically."""
    return int(value) if _NUMERIC.match(value) else value


@dataclass(frozen=True)
class Competition(ABC):
    """A Kaggle image-classification competition in its raw download layout."""

    name: str
    slug: str  # `kaggle competitions submit <slug>`
    train_dir: str = "train"
    test_dir: str = "test"
    sample_submission: str = "sampleSubmission.csv"
    metric: str = "accuracy"

    # ---- layout ---------------------------------------------------------------------------------
    def check_data_dir(self, data_dir: Path) -> Path:
        data_dir = Path(data_dir)
        hint = (
            f"Download it with `kaggle competitions download -c {self.slug}` and unzip it there, "
            f"pass --data DIR (DATA=DIR for make), or write a synthetic sample with "
            f"`python -m competition sample {self.name} --out {data_dir}`."
        )
        require_dir(data_dir, f"Data directory for {self.name}", hint)
        require_dir(data_dir / self.train_dir, f"Training folder of {self.name}", hint)
        return data_dir

    @abstractmethod
    def classes(self, data_dir: Path) -> list[str]:
        """Class names in the order of the model's outputs."""

    @abstractmethod
    def read_train(self, data_dir: Path) -> pd.DataFrame:
        """Training images as a frame with columns id, path (relative to data_dir), label (class name)."""

    def read_test(self, data_dir: Path) -> pd.DataFrame:
        """Test images as a frame with columns id, path, in numeric id order."""
        data_dir = Path(data_dir)
        folder = require_dir(
            data_dir / self.test_dir, f"Test folder of {self.name}", "It holds the unlabelled images to predict."
        )
        files = list_images(folder)
        if not files:
            raise CompetitionError(f"No images in {folder}: expected files like 1.jpg, 2.jpg, …")
        return pd.DataFrame(
            {"id": [parse_id(p.stem) for p in files], "path": [f"{self.test_dir}/{p.name}" for p in files]}
        )

    def read_sample_submission(self, data_dir: Path) -> pd.DataFrame:
        path = Path(data_dir) / self.sample_submission
        if not path.is_file():
            raise CompetitionError(
                f"{path} not found: the submission format is checked against it. "
                f"It comes with the Kaggle download of {self.slug}."
            )
        return pd.read_csv(path)

    # ---- submission -----------------------------------------------------------------------------
    def submission_frame(
        self, ids: list, probs: np.ndarray, classes: list[str], hard: bool = False, clip: float = 0.0
    ) -> pd.DataFrame:
        """The default submission: `id,label` with the most probable class name."""
        return pd.DataFrame({"id": ids, "label": [classes[i] for i in probs.argmax(1)]})

    def hard_labels(self, probs: np.ndarray, classes: list[str]) -> list:
        """One hard label per image, as written to the origins' headerless `res.csv`."""
        return [classes[i] for i in probs.argmax(1)]

    # ---- sample ---------------------------------------------------------------------------------
    @abstractmethod
    def write_sample(self, out: Path, n_train: int, n_test: int, seed: int) -> None:
        """Write a small learnable synthetic data set in this competition's exact raw layout."""


def check_labels(df: pd.DataFrame, classes: list[str], source: Path) -> None:
    """Unknown class names and duplicate ids, each reported with its CSV row."""
    unknown = df[~df["label"].isin(classes)]
    if len(unknown):
        rows = ", ".join(f"row {i + 2} ({v!r})" for i, v in zip(unknown.index[:5], unknown["label"][:5]))
        raise CompetitionError(
            f"{source}: {len(unknown)} unknown class name(s): {rows}. Valid classes: {', '.join(classes)}."
        )
    dup = df[df["id"].duplicated(keep=False)]
    if len(dup):
        rows = ", ".join(f"row {i + 2} (id {v})" for i, v in zip(dup.index[:6], dup["id"][:6]))
        raise CompetitionError(f"{source}: duplicate ids: {rows}. Each image must appear once; remove the repeats.")
