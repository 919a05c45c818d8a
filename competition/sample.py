"""Synthetic, learnable images so the demo and the tests run anywhere without a download.

Each class gets its own hue and its own shape drawn at a random place and scale on a noisy
background: easy enough for a small ResNet to learn in a few epochs, varied enough that
augmentation and validation behave as on real data.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from competition.atomic import write_text
from competition.competitions.base import SAMPLE_MARKER

SHAPES = ("ellipse", "rectangle", "triangle", "cross", "ring")


def synthetic_image(rng: np.random.Generator, class_index: int, n_classes: int, size: tuple[int, int]) -> Image.Image:
    w, h = size
    noise = rng.integers(40, 110, size=(h, w, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    hue = (class_index / n_classes + rng.normal(0, 0.02)) % 1.0
    color = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, rng.uniform(0.75, 1.0)))
    shape = SHAPES[class_index % len(SHAPES)]
    side = rng.uniform(0.45, 0.8) * min(w, h)
    x0 = rng.uniform(0, w - side)
    y0 = rng.uniform(0, h - side)
    box = (x0, y0, x0 + side, y0 + side)
    draw = ImageDraw.Draw(image)
    if shape == "ellipse":
        draw.ellipse(box, fill=color)
    elif shape == "rectangle":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x0, y0 + side), (x0 + side / 2, y0), (x0 + side, y0 + side)], fill=color)
    elif shape == "cross":
        t = side / 3
        draw.rectangle((x0 + t, y0, x0 + 2 * t, y0 + side), fill=color)
        draw.rectangle((x0, y0 + t, x0 + side, y0 + 2 * t), fill=color)
    else:
        draw.ellipse(box, outline=color, width=max(2, int(side / 6)))
    return image


def save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)


def write_marker(out: Path, competition: str, n_train: int, n_test: int) -> None:
    write_text(
        f"SAMPLE: synthetic images for the {competition} pipeline, written by "
        f"`python -m competition sample {competition}`.\n"
        f"{n_train} training and {n_test} test images of coloured shapes, in the competition's raw layout.\n"
        "Not real competition data: scores on it say only that the pipeline works.\n",
        out / SAMPLE_MARKER,
    )
