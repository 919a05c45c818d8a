"""Kaggle CIFAR-10 - Object Recognition in Images: 32×32 images, labels are class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.competitions.base import Competition, check_labels, list_images, parse_id
from competition.errors import CompetitionError
from competition.sample import save_image, synthetic_image, write_marker

# The standard CIFAR-10 order, so that class indices match every published CIFAR-10 model.
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_labels_csv(path: Path) -> pd.DataFrame:
    """An `id,label` CSV, with ids parsed as integers; any malformation named by file and row."""
    if not path.is_file():
        raise CompetitionError(f"Label file not found: {path}. It comes with the Kaggle download (id,label).")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CompetitionError(f"{path} is not a readable CSV: {e}") from e
    if list(df.columns[:2]) != ["id", "label"]:
        raise CompetitionError(f"{path}: header must start with 'id,label', found {','.join(map(str, df.columns))!r}.")
    for column in ("id", "label"):
        empty = df.index[df[column].str.strip() == ""]
        if len(empty):
            raise CompetitionError(f"{path}: empty {column} at row {empty[0] + 2}; every row needs an id and a label.")
    ids = df["id"].str.strip().map(parse_id)
    bad = [i for i, v in zip(df.index, ids) if not isinstance(v, int)]
    if bad:
        raise CompetitionError(f"{path}: id at row {bad[0] + 2} is {df['id'][bad[0]]!r}; ids must be whole numbers.")
    return pd.DataFrame({"id": ids.astype(int), "label": df["label"].str.strip()})


@dataclass(frozen=True)
class Cifar10(Competition):
    name: str = "cifar-10"
    slug: str = "cifar-10"
    labels_csv: str = "trainLabels.csv"

    def classes(self, data_dir: Path) -> list[str]:
        return list(CLASSES)

    def read_train(self, data_dir: Path) -> pd.DataFrame:
        data_dir = self.check_data_dir(data_dir)
        labels_path = data_dir / self.labels_csv
        df = read_labels_csv(labels_path)
        check_labels(df, CLASSES, labels_path)
        files = {int(p.stem): p.name for p in list_images(data_dir / self.train_dir) if p.stem.isdigit()}
        missing = [i for i in df["id"] if i not in files]
        if missing:
            raise CompetitionError(
                f"{labels_path}: {len(missing)} id(s) have no image in {data_dir / self.train_dir} "
                f"(first: {', '.join(map(str, missing[:5]))}). Unzip the full train folder or remove those rows."
            )
        df["path"] = [f"{self.train_dir}/{files[i]}" for i in df["id"]]
        return df[["id", "path", "label"]]

    def write_sample(self, out: Path, n_train: int, n_test: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        labels = [CLASSES[i % len(CLASSES)] for i in range(n_train)]
        rng.shuffle(labels)
        for i, label in enumerate(labels, start=1):
            save_image(synthetic_image(rng, CLASSES.index(label), len(CLASSES), (32, 32)), out / "train" / f"{i}.png")
        for i in range(1, n_test + 1):
            image = synthetic_image(rng, int(rng.integers(len(CLASSES))), len(CLASSES), (32, 32))
            save_image(image, out / self.test_dir / f"{i}.png")
        pd.DataFrame({"id": range(1, n_train + 1), "label": labels}).to_csv(out / self.labels_csv, index=False)
        pd.DataFrame({"id": range(1, n_test + 1), "label": CLASSES[3]}).to_csv(out / self.sample_submission, index=False)
        write_marker(out, self.name, n_train, n_test)
