"""The input pipeline: image cache, transforms, datasets, fold frame, loaders and in-memory batches."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from competition import data
from competition.competitions import get_competition
from competition.config import DataConfig
from competition.data import (
    RRC_CACHE_RATIO,
    BatchAugment,
    ImageDataset,
    InMemoryBatches,
    build_image_cache,
    build_transforms,
    cache_size,
    images_to_tensor,
    load_fold_frame,
    make_loader,
    normalize_batch,
    resolve_num_workers,
    seed_transform,
    take_rows,
)
from competition.errors import CompetitionError
from competition.folds import build_folds, write_folds

SIZE = 32
DOGS = get_competition("dogs-vs-cats")


def train_paths(data_dir: Path) -> list[str]:
    return DOGS.read_train(data_dir)["path"].tolist()


def pil_resized(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def cfg(**changes: object) -> DataConfig:
    return dataclasses.replace(DataConfig(image_size=SIZE), **changes)


# ---------------------------------------------------------------------------------------------- cache


def test_cache_matches_direct_decode_and_is_reused(
    dogs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, cache_dir = train_paths(dogs_dir), tmp_path / "cache"
    images = build_image_cache(dogs_dir, paths, SIZE, cache_dir)
    assert images.shape == (len(paths), SIZE, SIZE, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap) and not images.flags.writeable
    for i in (0, 7, len(paths) - 1):
        diff = np.abs(images[i].astype(int) - pil_resized(dogs_dir / paths[i], SIZE))
        assert diff.mean() < 3, paths[i]  # JPEG DCT downscaling differs from a full decode by a little

    (cached,) = cache_dir.glob("*.npy")
    mtime = cached.stat().st_mtime_ns

    def no_decoding(*args: object) -> np.ndarray:
        raise AssertionError("the cache was decoded again")

    monkeypatch.setattr(data, "decode_image", no_decoding)
    again = build_image_cache(dogs_dir, paths, SIZE, cache_dir)
    np.testing.assert_array_equal(again, images)
    assert list(cache_dir.glob("*.npy")) == [cached] and cached.stat().st_mtime_ns == mtime


def test_cache_rebuilt_when_an_image_or_the_size_changes(dogs_dir: Path, tmp_path: Path) -> None:
    paths, cache_dir = train_paths(dogs_dir), tmp_path / "cache"
    first = np.array(build_image_cache(dogs_dir, paths, SIZE, cache_dir))
    changed = dogs_dir / paths[3]
    Image.new("RGB", (150, 100), (255, 0, 0)).save(changed, quality=95)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse clock must not hide it

    second = build_image_cache(dogs_dir, paths, SIZE, cache_dir)
    assert len(list(cache_dir.glob("*.npy"))) == 2
    np.testing.assert_array_equal(np.delete(second, 3, axis=0), np.delete(first, 3, axis=0))
    assert np.abs(second[3].astype(int) - [255, 0, 0]).max() <= 2

    touched = dogs_dir / paths[0]  # same bytes, newer mtime: rebuilt, since size alone can miss an edit
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    build_image_cache(dogs_dir, paths, SIZE, cache_dir)
    assert len(list(cache_dir.glob("*.npy"))) == 3

    bigger = build_image_cache(dogs_dir, paths, SIZE + 8, cache_dir)
    assert bigger.shape[1:] == (SIZE + 8, SIZE + 8, 3)
    assert len(list(cache_dir.glob("*.npy"))) == 4


def test_cache_converts_grayscale_palette_and_alpha_to_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    images = {
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((40, 50), 255, np.uint8)]), "RGBA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "gray.jpg": Image.fromarray(rgb[..., 0], "L"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    cached = build_image_cache(tmp_path, list(images), SIZE, tmp_path / "cache")
    assert cached.shape == (len(images), SIZE, SIZE, 3)
    for row, name in zip(cached, images):
        assert np.abs(row.astype(int) - pil_resized(tmp_path / name, SIZE)).mean() < 1, name


def test_parallel_build_equals_serial(
    dogs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = train_paths(dogs_dir)
    serial = build_image_cache(dogs_dir, paths, SIZE, tmp_path / "serial", workers=1)
    monkeypatch.setattr(data, "CACHE_CHUNK", 6)  # several chunks, so that the process pool runs
    parallel = build_image_cache(dogs_dir, paths, SIZE, tmp_path / "parallel", workers=2)
    np.testing.assert_array_equal(parallel, serial)
    assert torch.equal(
        data.images_to_tensor(parallel), torch.from_numpy(np.array(serial)).permute(0, 3, 1, 2)
    )


def test_corrupt_images_all_reported_and_no_cache_left(
    dogs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, cache_dir = train_paths(dogs_dir), tmp_path / "cache"
    (dogs_dir / paths[2]).write_bytes(b"")
    jpeg = (dogs_dir / paths[25]).read_bytes()
    (dogs_dir / paths[25]).write_bytes(jpeg[: len(jpeg) // 2])
    monkeypatch.setattr(data, "CACHE_CHUNK", 16)  # the two bad files in different workers' chunks
    with pytest.raises(CompetitionError) as info:
        build_image_cache(dogs_dir, paths, SIZE, cache_dir, workers=2)
    message = str(info.value)
    assert "2 unreadable image(s)" in message
    assert f"{paths[2]}: zero-byte file" in message and f"{paths[25]}: unreadable image" in message
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_image_reported_before_decoding(dogs_dir: Path, tmp_path: Path) -> None:
    paths = train_paths(dogs_dir)
    with pytest.raises(CompetitionError, match="no-such.jpg: file not found"):
        build_image_cache(dogs_dir, [*paths, "train/no-such.jpg"], SIZE, tmp_path / "cache")


def _count_decodes(args: tuple[Path, list[str], Path, Path]) -> None:
    data_dir, paths, cache_dir, log = args
    decode = data.decode_image

    def logged(path: Path, size: int) -> np.ndarray:
        with open(log, "a") as f:
            f.write(f"{path}\n")
        return decode(path, size)

    data.decode_image = logged
    build_image_cache(data_dir, paths, SIZE, cache_dir, workers=1)


def test_concurrent_builders_decode_once(dogs_dir: Path, tmp_path: Path) -> None:
    paths, log = train_paths(dogs_dir), tmp_path / "decodes.txt"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_count_decodes, args=((dogs_dir, paths, tmp_path / "cache", log),))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(log.read_text().splitlines()) == len(paths)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_cache_size_per_policy() -> None:
    assert cache_size(cfg(resize="resize")) == SIZE
    assert cache_size(cfg(resize="pad_crop")) == SIZE
    assert cache_size(cfg(resize="random_resized_crop")) == round(SIZE * RRC_CACHE_RATIO) > SIZE


# ---------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("policy", ["resize", "random_resized_crop", "pad_crop"])
def test_every_policy_gives_image_size(policy: str) -> None:
    config = cfg(resize=policy, coarse_dropout=0.5)
    stored = cache_size(config)
    image = np.random.default_rng(0).integers(0, 255, (stored, stored, 3), dtype=np.uint8)
    for train in (True, False):
        out = build_transforms(config, train)(image=image)["image"]
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8


def test_eval_transform_is_empty_when_cache_matches() -> None:
    assert len(build_transforms(cfg(resize="pad_crop", hflip=True), train=False).transforms) == 0
    assert len(build_transforms(cfg(resize="random_resized_crop"), train=False).transforms) == 1
    assert len(build_transforms(cfg(hflip=False), train=True).transforms) == 0


def test_hflip_flips_about_half_and_seeding_repeats() -> None:
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    transform = build_transforms(cfg(hflip=True), train=True)

    def run(seed: int) -> list[bool]:
        seed_transform(transform, seed)
        flipped = []
        for _ in range(200):
            out = transform(image=image)["image"]
            assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
            flipped.append(np.array_equal(out, image[:, ::-1]))
        return flipped

    first = run(1)
    assert 60 < sum(first) < 140
    assert run(1) == first and run(2) != first


def test_seeded_augmentations_decide_independently() -> None:
    # Compose(seed=...) in albumentations 2.0.8 seeds each transform alike: flip and dropout would then
    # make the same first decision for every seed (and stay in step until dropout draws its holes).
    image = np.random.default_rng(0).integers(1, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    transform = build_transforms(cfg(hflip=True, coarse_dropout=0.5), train=True)
    disagree = 0
    for seed in range(40):
        seed_transform(transform, seed)
        out = transform(image=image)["image"]
        kept = (out != 0).all(-1)  # pixels outside the dropout holes
        disagree += np.array_equal(out[kept], image[:, ::-1][kept]) == kept.all()  # flipped xor dropped
    assert 8 < disagree < 32


def test_pad_crop_pads_with_zeros() -> None:
    image = np.full((SIZE, SIZE, 3), 200, dtype=np.uint8)
    transform = build_transforms(cfg(resize="pad_crop", pad=4, hflip=False), train=True)
    seed_transform(transform, 0)
    outs = [transform(image=image)["image"] for _ in range(20)]
    assert any((out == 0).any() for out in outs) and all(set(np.unique(out)) <= {0, 200} for out in outs)


def test_normalize_batch_matches_formula() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = normalize_batch(x, mean, std)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    last = normalize_batch(x, mean, std, channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last, expected, rtol=1e-5, atol=1e-5)
    floats = x.float()
    normalize_batch(floats, mean, std)
    assert torch.equal(floats, x.float())


# ---------------------------------------------------------------------------------------------- dataset


def test_dataset_items(dogs_dir: Path, tmp_path: Path) -> None:
    paths = train_paths(dogs_dir)
    images = build_image_cache(dogs_dir, paths, SIZE, tmp_path / "cache")
    targets = np.arange(len(paths)) % 2
    labelled = ImageDataset(images, targets, build_transforms(cfg(), train=True))
    image, target, index = labelled[3]
    assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
    assert isinstance(target, int) and target == 1 and index == 3

    rows = np.array([5, 2, 9])
    subset = ImageDataset(images, targets, build_transforms(cfg(), train=False), rows=rows)
    assert len(subset) == 3
    image, target, index = subset[1]
    assert torch.equal(image, torch.from_numpy(np.array(images[2])).permute(2, 0, 1)) and index == 1

    unlabelled = ImageDataset(images, None, None)
    assert unlabelled[0][1] == -1 and len(unlabelled) == len(paths)

    payload = pickle.dumps(subset)  # what spawned workers receive: the file name, not the pixels
    assert len(payload) < 10_000
    assert torch.equal(pickle.loads(payload)[1][0], image)


# ---------------------------------------------------------------------------------------------- fold frame


@pytest.fixture
def folds_csv(dogs_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "folds.csv"
    write_folds(build_folds(DOGS, dogs_dir, k=4).frame, path)
    return path


def test_fold_frame_adds_targets(dogs_dir: Path, folds_csv: Path) -> None:
    df, classes = load_fold_frame(DOGS, dogs_dir, folds_csv)
    assert classes == ["cat", "dog"] and len(df) == 40
    assert df["target"].dtype == np.int64
    assert (df["target"] == df["label"].map({"cat": 0, "dog": 1})).all()


def test_fold_frame_reports_all_missing_images(dogs_dir: Path, folds_csv: Path) -> None:
    gone = pd.read_csv(folds_csv)["path"][:7].tolist()
    for rel in gone:
        (dogs_dir / rel).unlink()
    with pytest.raises(CompetitionError) as info:
        load_fold_frame(DOGS, dogs_dir, folds_csv)
    message = str(info.value)
    assert "7 image(s) missing" in message and gone[0] in message
    assert "made for another data directory" in message and f"DATA={dogs_dir}" in message


def test_fold_frame_rejects_unknown_label(dogs_dir: Path, folds_csv: Path) -> None:
    df = pd.read_csv(folds_csv)
    df.loc[4, "label"] = "horse"
    df.to_csv(folds_csv, index=False)
    with pytest.raises(CompetitionError, match=r"row 6 \('horse'\)"):
        load_fold_frame(DOGS, dogs_dir, folds_csv)


def test_fold_frame_from_another_data_dir(folds_csv: Path, tmp_path: Path) -> None:
    other = tmp_path / "bigger"
    DOGS.write_sample(other, n_train=50, n_test=2, seed=1)  # the same 40 names and 10 more
    with pytest.raises(
        CompetitionError, match="10 training image.*not in the fold file.*another data directory"
    ):
        load_fold_frame(DOGS, other, folds_csv)


# ---------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_augmentation_is_seeded(dogs_dir: Path, tmp_path: Path, workers: int) -> None:
    paths = train_paths(dogs_dir)
    config = cfg(resize="random_resized_crop", hflip=True, coarse_dropout=0.5)
    images = build_image_cache(dogs_dir, paths, cache_size(config), tmp_path / "cache")

    def first_batches(seed: int, epoch: int = 0, num_workers: int = workers) -> list[torch.Tensor]:
        dataset = ImageDataset(images, None, build_transforms(config, train=True), seed=seed)
        dataset.set_epoch(epoch)
        loader = make_loader(dataset, 8, shuffle=True, drop_last=True, num_workers=num_workers, seed=seed)
        return [batch[0] for batch, _ in zip(loader, range(2))]

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], first_batches(7, epoch=1)[0])  # a new epoch, new augmentations
    # the same images whatever the number of workers: a resumed or re-launched run augments alike
    assert all(torch.equal(x, y) for x, y in zip(a, first_batches(7, num_workers=1 - min(workers, 1))))


def test_identical_images_augment_differently(tmp_path: Path) -> None:
    same = np.repeat(
        np.random.default_rng(0).integers(0, 255, (1, SIZE, SIZE, 3), dtype=np.uint8), 16, axis=0
    )
    dataset = ImageDataset(same, None, build_transforms(cfg(resize="pad_crop"), train=True))
    loader = make_loader(dataset, 8, shuffle=False, drop_last=False, num_workers=2, seed=0)
    first, second = (images for images, _, _ in loader)  # one batch from each worker
    assert not torch.equal(first, second)
    assert len({hash(x.numpy().tobytes()) for x in first}) > 1


def test_loader_without_workers_is_plain(dogs_dir: Path) -> None:
    loader = make_loader(ImageDataset(np.zeros((5, 4, 4, 3), np.uint8), None, None), 2, False, False, 0, 0)
    images, targets, indices = next(iter(loader))
    assert images.shape == (2, 3, 4, 4) and targets.tolist() == [-1, -1] and indices.tolist() == [0, 1]
    assert not loader.persistent_workers


# ---------------------------------------------------------------------------------------------- in-memory batches


def test_batch_augment_crops_shifted_windows() -> None:
    n, size, pad = 64, 8, 2
    x = torch.arange(n * 3 * size * size, dtype=torch.int64).view(n, 3, size, size).to(torch.float32) + 1
    out = BatchAugment(pad=pad, hflip=False, size=size)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = []
    for i in range(n):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + size, dx : dx + size])
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 5 and (pad, pad) in offsets


def test_batch_augment_flips_about_half_reproducibly() -> None:
    x = torch.randint(0, 256, (1000, 3, 6, 6), dtype=torch.uint8)
    augment = BatchAugment(pad=0, hflip=True, size=6)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 400 < int(flipped.sum()) < 600
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, augment(x, torch.Generator().manual_seed(2)))


def test_in_memory_batches_one_process() -> None:
    n = 103
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    targets = torch.arange(n) % 10
    batches = InMemoryBatches(images, targets, batch_size=10, shuffle=True, drop_last=False, seed=0)
    assert len(batches) == 11
    seen = []
    for imgs, tgts, idx in batches:
        assert torch.equal(imgs[:, 0, 0, 0].long(), idx) and torch.equal(tgts, idx % 10)
        seen += idx.tolist()
    assert sorted(seen) == list(range(n)) and seen != list(range(n))

    order = batches.indices().tolist()
    batches.set_epoch(1)
    assert batches.indices().tolist() != order
    batches.set_epoch(0)
    assert batches.indices().tolist() == order
    assert len(InMemoryBatches(images, None, 10, True, drop_last=True, seed=0)) == 10
    assert next(iter(InMemoryBatches(images, None, 10, False, False, 0)))[1].tolist() == [-1] * 10


def test_in_memory_batches_two_ranks() -> None:
    n = 101
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)

    def shards(**kwargs: object) -> list[list[int]]:
        return [
            [
                i
                for _, _, idx in InMemoryBatches(images, None, 16, rank=r, world_size=2, seed=3, **kwargs)
                for i in idx.tolist()
            ]
            for r in range(2)
        ]

    train = shards(shuffle=True, drop_last=False)
    assert len(train[0]) == len(train[1]) == 51 and set(train[0]) | set(train[1]) == set(range(n))
    evaluation = shards(shuffle=False, drop_last=False)
    assert sorted(evaluation[0] + evaluation[1]) == list(range(n))


def test_num_workers_auto_is_zero_on_cpu_and_bounded_on_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_num_workers(None, cpu) == 0  # the cache makes in-process loading cheaper than a worker's IPC
    assert resolve_num_workers(3, cpu) == 3 and resolve_num_workers(0, cuda) == 0  # an explicit value is kept
    one, eight = resolve_num_workers(None, cuda, processes=1), resolve_num_workers(None, cuda, processes=8)
    assert 1 <= eight <= one <= 8  # the cores are shared among the processes on one machine


def test_batch_random_resized_crop_is_seeded_and_keeps_content() -> None:
    n, side, size = 64, 40, 24  # 8 groups of RRC_GROUP images, each group its own crop size
    flat = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, side, side) * 10
    augment = BatchAugment(pad=0, hflip=True, size=size, scale_min=0.35)
    out = augment(flat.contiguous(), torch.Generator().manual_seed(0))
    assert out.shape == (n, 3, size, size) and out.dtype == torch.uint8
    assert torch.equal(out, flat[:, :, :size, :size])  # any crop of a flat image is that flat image
    ramp = torch.arange(side, dtype=torch.uint8).repeat(n, 3, side, 1) * 6  # brightness grows left to right
    a, b = (augment(ramp, torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(a, b)  # a function of the generator's seed
    other = augment(ramp, torch.Generator().manual_seed(2))
    assert not torch.equal(a, other)
    spans = (a[:, 0, 0, :].float().amax(1) - a[:, 0, 0, :].float().amin(1)) / 6
    assert spans.min() >= 0.5 * side * 0.35**0.5 * (3 / 4) ** 0.5 - 2  # each crop covers part of the ramp …
    assert len(set(spans.round().tolist())) > 3  # … of a random size
    flipped = (a[:, 0, 0, 0] > a[:, 0, 0, -1]).float().mean()
    assert 0.1 < flipped < 0.9  # some crops flipped, some not


def test_in_memory_images_stay_channels_last_and_gather_like_indexing() -> None:
    cache = np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)  # the cache's (N, H, W, 3)
    images = images_to_tensor(cache)
    assert images.shape == (7, 3, 5, 6) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(cache))  # same pixels, no transpose copy
    index = torch.tensor([4, 0, 4, 6])
    batch = take_rows(images, index)
    assert torch.equal(batch, images[index]) and batch.is_contiguous(memory_format=torch.channels_last)
    plain = images.contiguous()
    assert torch.equal(take_rows(plain, index), plain[index])
    cache[0] = 0
    assert images[0].any()  # a copy in memory, not a view of the (memory-mapped) cache
