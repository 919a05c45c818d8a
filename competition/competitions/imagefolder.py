"""Any folder-per-class data set: `train/<class>/*.*` and `test/*.*`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.competitions.base import Competition, list_images
from competition.errors import CompetitionError
from competition.sample import save_image, synthetic_image, write_marker

SAMPLE_CLASSES = ["circle", "square", "triangle"]


@dataclass(frozen=True)
class ImageFolder(Competition):
    name: str = "imagefolder"
    slug: str = ""  # not a Kaggle competition: nothing to upload to

    def classes(self, data_dir: Path) -> list[str]:
        train = self.check_data_dir(data_dir) / self.train_dir
        classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            raise CompetitionError(
                f"{train} needs one sub-folder per class (train/<class>/*.jpg); found {len(classes)}."
            )
        return classes

    def read_train(self, data_dir: Path) -> pd.DataFrame:
        rows = []
        for label in self.classes(data_dir):
            for p in list_images(Path(data_dir) / self.train_dir / label):
                # ids must be unique across classes, so the class folder is part of the id
                rows.append({"id": f"{label}/{p.stem}", "path": f"{self.train_dir}/{label}/{p.name}", "label": label})
        if not rows:
            raise CompetitionError(f"No images under {Path(data_dir) / self.train_dir}/<class>/.")
        return pd.DataFrame(rows)

    def read_sample_submission(self, data_dir: Path) -> pd.DataFrame:
        path = Path(data_dir) / self.sample_submission
        if path.is_file():
            return pd.read_csv(path)
        # No Kaggle format to match: the submission is id,label over the test folder.
        return pd.DataFrame({"id": self.read_test(data_dir)["id"], "label": self.classes(data_dir)[0]})

    def write_sample(self, out: Path, n_train: int, n_test: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(n_train):
            c = i % len(SAMPLE_CLASSES)
            save_image(synthetic_image(rng, c, len(SAMPLE_CLASSES), (48, 48)), out / "train" / SAMPLE_CLASSES[c] / f"{i}.jpg")
        for i in range(1, n_test + 1):
            c = int(rng.integers(len(SAMPLE_CLASSES)))
            save_image(synthetic_image(rng, c, len(SAMPLE_CLASSES), (48, 48)), out / self.test_dir / f"{i}.jpg")
        write_marker(out, self.name, n_train, n_test)


