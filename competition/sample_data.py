"""`competition sample`: write a competition's synthetic sample atomically."""

from __future__ import annotations

from pathlib import Path

from competition.atomic import atomic_dir
from competition.competitions import Competition
from competition.competitions.base import SAMPLE_MARKER
from competition.errors import CompetitionError

# Enough images for 5 folds to train and validate meaningfully in a CPU minute.
DEFAULT_SIZES = {"dogs-vs-cats": (200, 40), "cifar-10": (500, 100), "imagefolder": (120, 30)}


def write_sample(
    competition: Competition, out: Path, n_train: int | None, n_test: int | None, seed: int = 0, force: bool = False
) -> tuple[int, int]:
    n_train = n_train or DEFAULT_SIZES[competition.name][0]
    n_test = n_test or DEFAULT_SIZES[competition.name][1]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / SAMPLE_MARKER).exists():
            raise CompetitionError(f"{out} exists and is not a sample: refusing to overwrite it. Choose another --out.")
        if not force:
            raise CompetitionError(f"{out} already holds a sample; pass --force to replace it.")
    with atomic_dir(out) as tmp:
        competition.write_sample(tmp, n_train, n_test, seed)
    return n_train, n_test
