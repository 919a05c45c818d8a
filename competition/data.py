"""The input pipeline: a decoded-once image cache, uint8 augmentation, datasets, loaders and batch augmentation.

Full-size JPEGs cost milliseconds to decode; a 128×128 crop of a cached array costs microseconds. So every
image is decoded and resized once into a memory-mapped `.npy` that all folds, epochs, DataLoader workers
and processes share through the page cache, and samples travel as uint8 until `normalize_batch` turns a
whole batch into floats on the model's device.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import mmap
import os
import random
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from competition.competitions import Competition
from competition.device import available_cores
from competition.errors import CompetitionError
from competition.folds import read_folds
from competition.images import raise_for_bad

# Albumentations asks PyPI for a newer version on import; a training job (and each of its workers) must not.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

CACHE_VERSION = 1  # bump when the decoding below changes, so that old caches are not reused
CACHE_CHUNK = 256  # images per build task: amortises task overhead, still a live progress bar
REDUCING_GAP = 3.0  # PIL: box-reduce first when shrinking > 3×; as good as a full resample, faster
RRC_CACHE_RATIO = 1.15  # random_resized_crop caches a larger image so that zoomed-in crops keep detail
PREFETCH_FACTOR = 4  # batches queued per worker: hides the jitter of the main process
DROPOUT_HOLES = (1, 3)
DROPOUT_HOLE_FRACTION = (0.1, 0.3)  # of the image side
FLIP_P = 0.5
RRC_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of random resized crops (torchvision's and albumentations' default)
RRC_GROUP = 8  # in-memory random resized crops: images that share one crop size (positions and flips stay per image)
CUDA_MAX_WORKERS = 8  # beyond this, more DataLoader workers on a GPU machine only add start-up time
MISSING_LISTED = 5  # file names quoted in a fold-file mismatch error
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# ---------------------------------------------------------------------------------------------- image cache


def cache_size(data_cfg: Any) -> int:
    """Side of the cached images for this config."""
    if data_cfg.resize == "random_resized_crop":
        return round(data_cfg.image_size * RRC_CACHE_RATIO)
    return int(data_cfg.image_size)


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3) RGB; the aspect ratio is not kept, as with a plain Resize."""
    with Image.open(path) as image:
        # JPEG only (a no-op otherwise): libjpeg scales by 1/2..1/8 during the DCT, never below `size`.
        image.draft("RGB", (size, size))
        image = image.convert("RGB")  # grayscale, palette, RGBA and CMYK alike
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        return np.asarray(image)


def _decode_chunk(task: tuple[str, Path, list[str], int, int]) -> list[tuple[str, str]]:
    """Decode images into rows start.. of the cache file; returns the unreadable ones instead of stopping."""
    tmp, data_dir, paths, start, size = task
    out = np.lib.format.open_memmap(tmp, mode="r+")
    bad = []
    for offset, rel in enumerate(paths):
        path = data_dir / rel
        try:
            out[start + offset] = decode_image(path, size)
        except FileNotFoundError:
            bad.append((rel, "file not found"))
        except DECODE_ERRORS as e:
            bad.append((rel, "zero-byte file" if path.stat().st_size == 0 else f"unreadable image ({e})"))
    out.flush()
    return bad


def _cache_key(data_dir: Path, paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha1(f"{CACHE_VERSION}\0{data_dir}\0{size}\n".encode())
    missing = []
    for rel in paths:
        try:
            st = (data_dir / rel).stat()
        except FileNotFoundError:
            missing.append((rel, "file not found"))
            continue
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    raise_for_bad(missing, data_dir)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock: the second of two accelerate processes waits instead of decoding again."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process building {lock_path.with_suffix('.npy')}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build(data_dir: Path, paths: list[str], size: int, final: Path, workers: int | None) -> None:
    # We hold the lock, so temporaries of this cache are leftovers of killed builds.
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    try:
        # Header and full size on disk now (a sparse file); the workers fill in the rows.
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)).flush()
        tasks = [
            (str(tmp), data_dir, paths[i : i + CACHE_CHUNK], i, size)
            for i in range(0, len(paths), CACHE_CHUNK)
        ]
        workers = min(workers or _cpu_count(), len(tasks))
        bar = tqdm(
            total=len(paths), desc=f"caching images at {size}px", unit="img", disable=not sys.stderr.isatty()
        )
        bad: list[tuple[str, str]] = []
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for task, chunk_bad in zip(tasks, pool.map(_decode_chunk, tasks)):
                    bad.extend(chunk_bad)
                    bar.update(len(task[2]))
        else:
            for task in tasks:
                bad.extend(_decode_chunk(task))
                bar.update(len(task[2]))
        bar.close()
        raise_for_bad(bad, data_dir)  # all of them at once, before training rather than mid-epoch
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def build_image_cache(
    data_dir: Path, paths: list[str], size: int, cache_dir: Path, workers: int | None = None
) -> np.ndarray:
    """Images `paths` (relative to data_dir) as a read-only uint8 (N, size, size, 3) memory map.

    Decoded once and reused while the files, their sizes and mtimes, and `size` stay the same; any change
    gives a new key and so a new cache. Safe to call from several processes at once.
    """
    data_dir = Path(data_dir).resolve()
    paths = list(paths)
    if not paths:
        return np.empty((0, size, size, 3), dtype=np.uint8)
    key = _cache_key(data_dir, paths, size)
    final = Path(cache_dir) / f"{data_dir.name}-{size}px-{len(paths)}-{key[:16]}.npy"
    if not final.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(final.with_suffix(".lock")):
            if not final.is_file():  # another process may have finished it while we waited
                _build(data_dir, paths, size, final, workers)
    return np.load(final, mmap_mode="r")


def images_to_tensor(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """A cache (N, H, W, 3) as one uint8 (N, 3, H, W) tensor in memory (for InMemoryBatches).

    Stored channels-last, as the cache is: no transpose to load, and batches gathered from it come out
    channels-last, the layout that uint8 resizing and the models' channels_last option want."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).to(device)


# ---------------------------------------------------------------------------------------------- transforms


def build_transforms(data_cfg: Any, train: bool) -> A.Compose:
    """uint8 HWC → uint8 HWC at image_size; an empty Compose (skipped by ImageDataset) when nothing is to do."""
    s, stored = int(data_cfg.image_size), cache_size(data_cfg)
    ops: list[A.BasicTransform] = []
    if train and data_cfg.resize == "random_resized_crop":
        ops.append(A.RandomResizedCrop(size=(s, s), scale=(data_cfg.scale_min, 1.0)))
    elif stored != s:
        ops.append(A.Resize(s, s, interpolation=cv2.INTER_AREA))
    if train and data_cfg.resize == "pad_crop":
        side = s + 2 * data_cfg.pad
        # Zero padding, as in the CIFAR ResNet recipe and BatchAugment: reflection would invent content
        # that the network could learn as a border artefact, and both pipelines must train alike.
        ops += [A.PadIfNeeded(side, side, border_mode=cv2.BORDER_CONSTANT, fill=0), A.RandomCrop(s, s)]
    if train and data_cfg.hflip:
        ops.append(A.HorizontalFlip(p=FLIP_P))
    if train and data_cfg.coarse_dropout > 0:
        ops.append(
            A.CoarseDropout(
                num_holes_range=DROPOUT_HOLES,
                hole_height_range=DROPOUT_HOLE_FRACTION,
                hole_width_range=DROPOUT_HOLE_FRACTION,
                fill=0,
                p=data_cfg.coarse_dropout,
            )
        )
    return A.Compose(ops)


def seed_transform(transform: Any, seed: int) -> None:
    """Make an albumentations pipeline's randomness a function of `seed`.

    Not `Compose(seed=...)` / `set_random_seed`: in albumentations 2.0.8 those give every transform its
    own generator with the same seed, so their draws move in step (HorizontalFlip and VerticalFlip at
    p=0.5 always fire together; HorizontalFlip and CoarseDropout make the same first decision).
    One shared pair of generators keeps the decisions independent.
    """
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def normalize_batch(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float32 (x/255 - mean)/std on x's device; mean and std in 0..1 units."""
    scale, shift = _affine(tuple(mean), tuple(std), x.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if x.device.type == "cpu":
        # One pass that reads uint8 and writes float into a fresh tensor: about 3× the convert-then-scale
        # chain on 2 cores at 128 px (the loader's largest cost after the crops).
        out = torch.empty(x.shape, dtype=torch.float32, memory_format=fmt)
        return torch.addcmul(shift, x, scale, out=out)
    # copy=True: a float input must not be normalised in place behind the caller's back.
    return x.to(dtype=torch.float32, memory_format=fmt, copy=True).mul_(scale).add_(shift)


@lru_cache(maxsize=16)
def _affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device: no host-to-device copy of six floats every batch.
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1 / (255 * s)).to(device), (-m / s).to(device)


# ---------------------------------------------------------------------------------------------- dataset


class ImageDataset(Dataset):
    """Items (uint8 (3, H, W) tensor, target or -1, position in this dataset) from cached images.

    `rows` selects a fold's rows of `images` without copying the memory map; `targets`, when given, is
    aligned with `images` (one per cached image), so a whole-frame target column can be passed as is.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray | None,
        transform: A.Compose | None,
        rows: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.seed = seed
        # Shared memory, so persistent workers see set_epoch() from the main process.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        row = i if self.rows is None else int(self.rows[i])
        image = self.images[row]
        t = self.transform
        if t is not None and getattr(t, "transforms", True):  # an empty Compose still costs ~2 µs
            # Each image's augmentation is a function of (seed, epoch, image) alone: the same whatever the
            # number of workers or processes, and the same after a resume as in an uninterrupted run.
            seed_transform(t, int(np.random.SeedSequence([self.seed, int(self._epoch[0]), row]).generate_state(1)[0]))
            image = t(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # also copies off the map
        return tensor, -1 if self.targets is None else int(self.targets[row]), i

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    # Pickled for spawned workers (macOS, or start method spawn): send the file name, not a gigabyte copy of the map.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.images, np.memmap) and isinstance(self.images.base, mmap.mmap):
            state["images"] = Path(self.images.filename)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["images"], Path):
            state["images"] = np.load(state["images"], mmap_mode="r")
        self.__dict__.update(state)


# ---------------------------------------------------------------------------------------------- fold frame


def _mismatch(competition: Competition, data_dir: Path, folds_csv: Path, what: str, items: list[str]) -> None:
    listed = ", ".join(items[:MISSING_LISTED]) + (", …" if len(items) > MISSING_LISTED else "")
    raise CompetitionError(
        f"{folds_csv}: {len(items)} {what} ({listed}): the fold file was made for another data directory; "
        f"re-run make folds COMPETITION={competition.name} DATA={data_dir}"
    )


EXTRA_TRAIN_KEYS = ("competition", "data_dir", "classes")


def load_extra_train(extra: dict, classes: list[str]) -> tuple[Path, list[str], np.ndarray] | None:
    """`data.extra_train` resolved: (data directory, image paths in it, targets in this competition's classes)."""
    if not extra:
        return None
    from competition.competitions import get_competition

    where = "data.extra_train"
    if set(extra) != set(EXTRA_TRAIN_KEYS):
        raise CompetitionError(f"{where} needs exactly the keys {', '.join(EXTRA_TRAIN_KEYS)}; got {', '.join(extra) or 'none'}.")
    mapping = extra["classes"]
    if not isinstance(mapping, dict) or not mapping:
        raise CompetitionError(f"{where}.classes must map their class names to ours, e.g. {{cat: cat, dog: dog}}.")
    unknown = sorted(set(map(str, mapping.values())) - set(classes))
    if unknown:
        raise CompetitionError(f"{where}.classes maps to {', '.join(unknown)}, not among this competition's classes {classes}.")
    other = get_competition(str(extra["competition"]))
    data_dir = Path(str(extra["data_dir"]))
    frame = other.read_train(data_dir)
    theirs = sorted(set(frame["label"]))
    absent = sorted(set(map(str, mapping)) - set(theirs))
    if absent:
        raise CompetitionError(f"{where}.classes names {', '.join(absent)}, not classes of {other.name} (they are {theirs}).")
    frame = frame[frame["label"].astype(str).isin(set(map(str, mapping)))]
    index = {c: i for i, c in enumerate(classes)}
    targets = np.array([index[str(mapping[label])] for label in frame["label"].astype(str)], dtype=np.int64)
    return data_dir, frame["path"].tolist(), targets


def load_fold_frame(
    competition: Competition, data_dir: Path, folds_csv: Path
) -> tuple[pd.DataFrame, list[str]]:
    """The fold file, checked against the data directory, with an integer `target` column; and the classes."""
    data_dir, folds_csv = Path(data_dir), Path(folds_csv)
    df = read_folds(folds_csv)
    classes = competition.classes(data_dir)
    unknown = df.index[~df["label"].isin(classes)]
    if len(unknown):
        rows = [f"row {i + 2} ({df['label'][i]!r})" for i in unknown]
        _mismatch(competition, data_dir, folds_csv, f"label(s) not among the classes {classes}", rows)
    if not pd.api.types.is_integer_dtype(df["fold"]):
        raise CompetitionError(
            f"{folds_csv}: the fold column must hold whole numbers; re-create it with make folds."
        )
    duplicated = df["path"][df["path"].duplicated()].tolist()
    if duplicated:
        raise CompetitionError(
            f"{folds_csv}: image(s) listed twice: {', '.join(duplicated[:MISSING_LISTED])}."
        )
    missing = [p for p in df["path"] if not (data_dir / p).is_file()]
    if missing:
        _mismatch(competition, data_dir, folds_csv, f"image(s) missing under {data_dir}", missing)
    train = competition.read_train(data_dir)
    absent = sorted(set(train["path"]) - set(df["path"]))
    if absent:
        _mismatch(competition, data_dir, folds_csv, "training image(s) not in the fold file", absent)
    label_of = dict(zip(train["path"], train["label"]))
    relabelled = [p for p, label in zip(df["path"], df["label"]) if label_of.get(p, label) != label]
    if relabelled:
        _mismatch(
            competition, data_dir, folds_csv, "image(s) whose label differs from the data's", relabelled
        )
    df["target"] = df["label"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    return df, classes


# ---------------------------------------------------------------------------------------------- loaders


def _seed_worker(worker_id: int) -> None:
    # Global RNGs of each worker (used by nothing of ours, but by user transforms) differ per worker.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def resolve_num_workers(num_workers: int | None, device: torch.device, processes: int = 1) -> int:
    """`data.num_workers`, with None resolved by what `make bench` measured (row 1).

    On a CPU the model and the workers share the same few cores, and a cached uint8 batch costs less to
    augment in the main process than to ship from a worker: 0. On CUDA the cores are otherwise idle:
    one worker per core left to each process, at most CUDA_MAX_WORKERS.
    """
    if num_workers is not None:
        return num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(CUDA_MAX_WORKERS, available_cores() // max(1, processes) - 1))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on `seed` (augmentation is seeded by the dataset)."""
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if workers else None,
        persistent_workers=workers,  # forking workers every epoch costs seconds on small folds
        prefetch_factor=PREFETCH_FACTOR if workers else None,
    )


# ---------------------------------------------------------------------------------------------- in-memory batches


class BatchAugment(torch.nn.Module):
    """Crop and flip a whole uint8 batch on its own device: zero-pad random crops (`pad`), or random
    resized crops (`scale_min`: area fraction in [scale_min, 1], aspect ratio in RRC_RATIO, bilinear;
    one crop size per RRC_GROUP images), then horizontal flips. Randomness comes from `generator` only."""

    def __init__(self, pad: int, hflip: bool, size: int, scale_min: float | None = None) -> None:
        super().__init__()
        self.pad, self.hflip, self.size, self.scale_min = pad, hflip, size, scale_min

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
        rng_device = generator.device if generator is not None else x.device
        if self.scale_min is not None:
            return self._resized_crop_flip(x, generator, rng_device)
        n, _, h, w = x.shape
        p, s = self.pad, self.size
        if h + 2 * p < s or w + 2 * p < s:
            raise ValueError(f"cannot crop {s}×{s} from {h}×{w} images padded by {p}")
        padded = F.pad(x, (p, p, p, p)) if p else x
        oy = torch.randint(0, h + 2 * p - s + 1, (n, 1), generator=generator, device=rng_device).to(x.device)
        ox = torch.randint(0, w + 2 * p - s + 1, (n, 1), generator=generator, device=rng_device).to(x.device)
        steps = torch.arange(s, device=x.device)
        rows, cols = oy + steps, ox + steps  # (n, s) each
        if self.hflip:
            flip = torch.rand(n, 1, generator=generator, device=rng_device).to(x.device) < FLIP_P
            cols = torch.where(flip, cols.flip(1), cols)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def _resized_crop_flip(self, x: torch.Tensor, generator: torch.Generator | None, rng_device) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.size
        groups = -(-n // RRC_GROUP)
        # Area and aspect ratio per group of RRC_GROUP images, position and flip per image: each group is one
        # batched uint8 bilinear resize instead of a resize call per image.
        area, ratio = torch.rand(2, groups, generator=generator, device=rng_device, dtype=torch.float64).tolist()
        fx, fy, flips = torch.rand(3, n, generator=generator, device=rng_device, dtype=torch.float64).tolist()
        lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
        nhwc = x.permute(0, 2, 3, 1)  # a channels-last batch (images_to_tensor) makes crop rows contiguous
        out = torch.empty((n, c, s, s), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        for g in range(groups):
            first, last = g * RRC_GROUP, min(n, (g + 1) * RRC_GROUP)
            a = (self.scale_min + (1 - self.scale_min) * area[g]) * h * w
            r = math.exp(lo + (hi - lo) * ratio[g])
            # torchvision retries a draw that does not fit; clamping to the image keeps one draw per group.
            cw, ch = min(w, max(1, round(math.sqrt(a * r)))), min(h, max(1, round(math.sqrt(a / r))))
            crops = torch.empty((last - first, ch, cw, c), dtype=x.dtype, device=x.device)
            for j, i in enumerate(range(first, last)):
                x0, y0 = int(fx[i] * (w - cw + 1)), int(fy[i] * (h - ch + 1))
                crop = nhwc[i, y0 : y0 + ch, x0 : x0 + cw]
                crops[j] = crop.flip(1) if self.hflip and flips[i] < FLIP_P else crop
            out[first:last] = F.interpolate(crops.permute(0, 3, 1, 2), size=(s, s), mode="bilinear", align_corners=False)
        return out  # channels-last: normalize_batch converts to the model's layout in the same pass


def take_rows(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """images[index] along dim 0, copying whole images: index_select copies blocks only from a contiguous
    layout, so a channels-last tensor is gathered as the NHWC array it is stored as (about 4× faster)."""
    if images.dim() == 4 and not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        return images.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return images.index_select(0, index)


class InMemoryBatches:
    """Whole batches of an in-memory uint8 NCHW tensor, as (images, targets, indices), sharded by rank.

    Each rank takes a contiguous slice of the epoch's permutation. With `pad` (default: when shuffling,
    i.e. training) the permutation wraps around so that every rank gets the same number of samples and
    steps; without it (evaluation) nothing is repeated and ranks may differ by one sample: gather once
    after the loop, using the yielded dataset indices to put predictions back in order.
    Targets are -1 when none are given.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | np.ndarray | None,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.images = images
        n = len(images)
        self.targets = (
            torch.full((n,), -1, dtype=torch.int64, device=images.device)
            if targets is None
            else torch.as_tensor(targets, dtype=torch.int64).to(images.device)
        )
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.pad = shuffle if pad is None else pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's dataset indices for the current epoch."""
        n, world = len(self.images), self.world_size
        # Seeded by (seed, epoch) as a pair, so that seed 1 epoch 0 and seed 0 epoch 1 differ.
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        )
        if self.pad:
            per_rank = -(-n // world)
            order = np.resize(order, per_rank * world)  # np.resize repeats from the start: the wrap
            mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        else:
            mine = order[self.rank * n // world : (self.rank + 1) * n // world]
        return torch.from_numpy(mine).to(self.images.device)

    def __len__(self) -> int:
        n, world = len(self.images), self.world_size
        count = -(-n // world) if self.pad else (self.rank + 1) * n // world - self.rank * n // world
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        idx = self.indices()
        for b in range(len(self)):
            batch = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield take_rows(self.images, batch), self.targets[batch], batch
