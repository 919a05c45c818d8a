"""Shared fixtures: tiny synthetic data sets in each competition's raw layout, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from competition.competitions import get_competition

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("COMPETITION_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def dogs_dir(tmp_path: Path) -> Path:
    out = tmp_path / "dogs-vs-cats"
    get_competition("dogs-vs-cats").write_sample(out, n_train=40, n_test=12, seed=0)
    return out


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    out = tmp_path / "cifar-10"
    get_competition("cifar-10").write_sample(out, n_train=100, n_test=15, seed=0)
    return out


@pytest.fixture
def imagefolder_dir(tmp_path: Path) -> Path:
    out = tmp_path / "imagefolder"
    get_competition("imagefolder").write_sample(out, n_train=30, n_test=6, seed=0)
    return out


def real_data(name: str) -> Path:
    path = REAL_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set COMPETITION_DATA)")
    return path
