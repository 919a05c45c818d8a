"""Kaggle Dogs vs. Cats (2013, accuracy on hard labels) and its Redux edition (log loss on P(dog))."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.competitions.base import Competition, list_images
from competition.errors import CompetitionError
from competition.sample import save_image, synthetic_image, write_marker

CLASSES = ["cat", "dog"]  # index 1 is the positive class: the submission's label is P(dog)


@dataclass(frozen=True)
class DogsVsCats(Competition):
    name: str = "dogs-vs-cats"
    slug: str = "dogs-vs-cats-redux-kernels-edition"
    test_dir: str = "test1"
    metric: str = "log_loss"

    def classes(self, data_dir: Path) -> list[str]:
        return list(CLASSES)

    def read_train(self, data_dir: Path) -> pd.DataFrame:
        folder = self.check_data_dir(data_dir) / self.train_dir
        files = list_images(folder)
        labels = [p.name.split(".", 1)[0] for p in files]
        bad = [p.name for p, label in zip(files, labels) if label not in CLASSES or p.name.count(".") < 2]
        if bad:
            raise CompetitionError(
                f"{folder}: {len(bad)} file name(s) do not follow cat.N.jpg / dog.N.jpg, "
                f"the only way this competition gives labels: {', '.join(bad[:5])}. Rename or remove them."
            )
        if not files:
            raise CompetitionError(f"No images in {folder}: expected cat.N.jpg and dog.N.jpg.")
        return pd.DataFrame(
            {"id": [p.stem for p in files], "path": [f"{self.train_dir}/{p.name}" for p in files], "label": labels}
        )

    def submission_frame(
        self, ids: list, probs: np.ndarray, classes: list[str], hard: bool = False, clip: float = 0.0
    ) -> pd.DataFrame:
        p_dog = probs[:, classes.index("dog")]
        if hard:  # the 2013 competition: 1 = dog, 0 = cat, scored by accuracy
            return pd.DataFrame({"id": ids, "label": (p_dog >= 0.5).astype(int)})
        # Redux scores log loss: one confident mistake costs more than many right answers earn.
        return pd.DataFrame({"id": ids, "label": np.clip(p_dog, clip, 1 - clip)})

    def hard_labels(self, probs: np.ndarray, classes: list[str]) -> list:
        return (probs[:, classes.index("dog")] >= 0.5).astype(int).tolist()

    def write_sample(self, out: Path, n_train: int, n_test: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(n_train):
            label = i % 2
            size = (int(rng.integers(120, 200)), int(rng.integers(90, 150)))  # full-size images vary, like Kaggle's
            save_image(synthetic_image(rng, label, 2, size), out / "train" / f"{CLASSES[label]}.{i // 2}.jpg")
        for i in range(1, n_test + 1):
            size = (int(rng.integers(120, 200)), int(rng.integers(90, 150)))
            save_image(synthetic_image(rng, int(rng.integers(2)), 2, size), out / self.test_dir / f"{i}.jpg")
        pd.DataFrame({"id": range(1, n_test + 1), "label": 0}).to_csv(out / self.sample_submission, index=False)
        write_marker(out, self.name, n_train, n_test)


