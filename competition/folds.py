"""Stratified k-fold assignment, written once per competition and shared by every experiment.

Every experiment reads the same `folds/<competition>.csv`, so out-of-fold predictions of different
models line up image by image and can be ensembled and compared fairly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from competition.atomic import write_csv
from competition.competitions import Competition
from competition.errors import CompetitionError
from competition.images import duplicate_groups, raise_for_bad, scan_images

DEFAULT_K = 5
DEFAULT_SEED = 42
DEFAULT_HASH_DISTANCE = 4  # bits of 64: survives re-compression and resizing, rarely joins different photos


@dataclass
class FoldReport:
    frame: pd.DataFrame
    exact_duplicates: int
    near_duplicates: int
    unmoved: int  # group members that could not be moved into their group's fold
    seconds: float


def assign_folds(labels: pd.Series, k: int, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Fold per row, stratified by label; rows sharing a group end in one fold.

    Groups are honoured by swapping a group member with a same-label, ungrouped image of the target
    fold, so fold sizes (±1) and per-fold class counts stay exactly as StratifiedKFold made them.
    Returns the folds and the number of members that found no swap partner (almost always 0).
    """
    counts = labels.value_counts()
    if k < 2:
        raise CompetitionError(f"K must be at least 2 for k-fold cross-validation, got {k}.")
    if k > counts.min():
        raise CompetitionError(
            f"K={k} is larger than the smallest class ({counts.idxmin()!r}, {counts.min()} images): "
            f"some fold would have no {counts.idxmin()!r} to validate on. Use K ≤ {counts.min()}."
        )
    folds = np.empty(len(labels), dtype=int)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val] = fold
    if groups is None:
        return folds, 0
    label_values = labels.to_numpy()
    group_sizes = pd.Series(groups).value_counts()
    grouped = np.isin(groups, group_sizes.index[group_sizes > 1])
    free = {(f, lab): list(np.nonzero((folds == f) & (label_values == lab) & ~grouped)[0]) for f in range(k) for lab in counts.index}
    unmoved = 0
    for group in group_sizes.index[group_sizes > 1]:
        members = np.nonzero(groups == group)[0]
        target = folds[members[0]]
        for m in members[1:]:
            if folds[m] == target:
                continue
            partners = free[(target, label_values[m])]
            if not partners:
                unmoved += 1
                continue
            s = partners.pop()
            folds[s], folds[m] = folds[m], target
            free[(folds[s], label_values[s])].append(s)
    return folds, unmoved


def build_folds(
    competition: Competition,
    data_dir: Path,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
    group_duplicates: bool = False,
    hash_distance: int = DEFAULT_HASH_DISTANCE,
) -> FoldReport:
    """Read the training labels, check every image, and assign folds."""
    start = time.perf_counter()
    df = competition.read_train(Path(data_dir))
    scan = scan_images(Path(data_dir), df["path"].tolist(), with_hash=group_duplicates)
    raise_for_bad(scan.bad, Path(data_dir))
    groups, exact, near = None, 0, 0
    if group_duplicates:
        groups, exact, near = duplicate_groups(scan.phash, scan.md5, hash_distance)
    folds, unmoved = assign_folds(df["label"], k, seed, groups)
    df["fold"] = folds
    if groups is not None:
        df["group"] = groups
    return FoldReport(df, exact, near, unmoved, time.perf_counter() - start)


def write_folds(df: pd.DataFrame, path: Path) -> None:
    write_csv(df, path)


def read_folds(path: Path) -> pd.DataFrame:
    """A fold CSV, with its columns checked; ids that look numeric come back as integers."""
    if not Path(path).is_file():
        raise CompetitionError(f"Fold file not found: {path}. Create it with `make folds COMPETITION=… DATA=…`.")
    df = pd.read_csv(path, dtype={"id": str, "path": str, "label": str})
    missing = {"id", "path", "label", "fold"} - set(df.columns)
    if missing:
        raise CompetitionError(f"{path} lacks column(s) {sorted(missing)}; re-create it with `make folds`.")
    if df["id"].str.isdigit().all():
        df["id"] = df["id"].astype(int)
    return df


def summary_table(df: pd.DataFrame) -> str:
    """Images per fold and class, with each fold's share of every class."""
    table = pd.crosstab(df["fold"], df["label"], margins=True, margins_name="all")
    return table.to_string()
