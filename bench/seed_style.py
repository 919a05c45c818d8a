"""The seed-style reference: what the project started from, kept here only to measure against.

PIL opens and decodes the full-size file in `__getitem__` every time, torchvision resizes, flips, converts
and normalises per sample, and a plain DataLoader (no persistent workers) feeds a plain PyTorch loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


class SeedStyleDataset(Dataset):
    """(float32 (3, s, s) normalised tensor, target) straight from the image file."""

    def __init__(self, files: Sequence[Path], targets: Sequence[int], size: int, mean, std) -> None:
        self.files = [str(f) for f in files]
        self.targets = [int(t) for t in targets]
        self.transform = T.Compose(
            [T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            image = image.convert("RGB")
        return self.transform(image), self.targets[i]


def seed_style_loader(
    files: Sequence[Path], targets: Sequence[int], size: int, mean, std, batch_size: int, num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """The seed's DataLoader: shuffled, default settings otherwise (workers forked anew every epoch)."""
    return DataLoader(
        SeedStyleDataset(files, targets, size, mean, std), batch_size=batch_size, shuffle=True,
        num_workers=num_workers, pin_memory=pin_memory,
    )
