"""Checking images before anything trains on them, and finding duplicates by perceptual hash."""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from competition.errors import CompetitionError

DRAFT_SIZE = (64, 64)  # JPEG decodes at 1/2..1/8 scale: the whole stream is still read, so truncation shows
CHUNK = 256


@dataclass(frozen=True)
class ScanResult:
    bad: list[tuple[str, str]]  # (relative path, reason), every bad file, not only the first
    phash: np.ndarray | None  # uint64 perceptual hashes, one per image, when asked for
    md5: list[str] | None


def _check_one(path: Path, with_hash: bool) -> tuple[str | None, int, str]:
    try:
        if path.stat().st_size == 0:
            return "zero-byte file", 0, ""
        with Image.open(path) as image:
            image.draft("RGB", DRAFT_SIZE)
            image.load()
            if not with_hash:
                return None, 0, ""
            phash = int(str(imagehash.phash(image)), 16)
        return None, phash, hashlib.md5(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "file not found", 0, ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"unreadable image ({e})", 0, ""


def _check_chunk(args: tuple[list[Path], bool]) -> list[tuple[str | None, int, str]]:
    paths, with_hash = args
    return [_check_one(p, with_hash) for p in paths]


def scan_images(root: Path, paths: list[str], with_hash: bool = False, workers: int | None = None) -> ScanResult:
    """Decode every image once (in parallel) and report all unreadable ones together."""
    root = Path(root)
    full = [root / p for p in paths]
    chunks = [(full[i : i + CHUNK], with_hash) for i in range(0, len(full), CHUNK)]
    workers = workers or min(len(chunks), os.cpu_count() or 1) or 1
    results: list[tuple[str | None, int, str]] = []
    bar = tqdm(total=len(full), desc="checking images", unit="img", disable=not sys.stderr.isatty(), leave=False)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for out in pool.map(_check_chunk, chunks):
                results.extend(out)
                bar.update(len(out))
    else:
        for chunk in chunks:
            results.extend(_check_chunk(chunk))
            bar.update(len(chunk[0]))
    bar.close()
    bad = [(p, reason) for p, (reason, _, _) in zip(paths, results) if reason]
    phash = np.array([h for _, h, _ in results], dtype=np.uint64) if with_hash else None
    md5 = [m for _, _, m in results] if with_hash else None
    return ScanResult(bad, phash, md5)


def raise_for_bad(bad: list[tuple[str, str]], root: Path, limit: int = 20) -> None:
    if not bad:
        return
    lines = "\n".join(f"  {root / p}: {reason}" for p, reason in bad[:limit])
    more = f"\n  … and {len(bad) - limit} more" if len(bad) > limit else ""
    raise CompetitionError(
        f"{len(bad)} unreadable image(s) under {root}:\n{lines}{more}\n"
        "Re-download or delete them (and their label rows), then run again."
    )


def duplicate_groups(phash: np.ndarray, md5: list[str], max_distance: int) -> tuple[np.ndarray, int, int]:
    """Group images whose files are identical or whose perceptual hashes differ in ≤ max_distance bits.

    Returns (group id per image, number of exact duplicates, number of near duplicates); an image with
    no duplicate is its own group. Pairs are found by all-pairs Hamming distance in blocks, which is
    exact and takes seconds for 50,000 hashes.
    """
    n = len(phash)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> bool:
        ri, rj = find(i), find(j)
        if ri == rj:
            return False
        parent[max(ri, rj)] = min(ri, rj)
        return True

    exact = 0
    first_by_md5: dict[str, int] = {}
    for i, digest in enumerate(md5):
        j = first_by_md5.setdefault(digest, i)
        if j != i and union(i, j):
            exact += 1
    near = 0
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n, block):
        rows = phash[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ phash[None, :])
        for a, b in zip(*np.nonzero(dist <= max_distance)):
            i = start + int(a)
            if i < b and union(i, int(b)):
                near += 1
    groups = np.array([find(i) for i in range(n)])
    return groups, exact, near
