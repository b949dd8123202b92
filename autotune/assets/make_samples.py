"""Regenerate the sample images that autotune sends to the built-in models.

    python autotune/assets/make_samples.py [OUT_DIR]

``quick_sample.jpg`` (288 x 288): a small photo-like landscape for the quick classifier.
``drawing.jpg`` (1000 x 750): a child's marker drawing of a person on off-white paper, the
input the Animated Drawings detector expects. Both are drawn with PIL from fixed seeds, so the
files are the same on every run.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def _noise(rng: np.random.Generator, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian noise of shape (height, width, 1)."""
    width, height = size
    return rng.normal(0.0, sigma, (height, width, 1))


def make_quick_sample(size: int = 288) -> Image.Image:
    """A landscape: sky gradient, sun, two hills, a tree, and sensor noise."""
    rng = np.random.default_rng(7)
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([190, 215, 240])
    pixels = np.broadcast_to(sky, (size, size, 3)).copy()
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((200, 30, 250, 80), fill=(255, 236, 160))
    for top, colour in ((150, (96, 140, 72)), (190, (62, 110, 48))):
        points = [(x, top + 25 * math.sin(x / 37 + top)) for x in range(0, size + 8, 8)]
        draw.polygon([*points, (size, size), (0, size)], fill=colour)
    draw.rectangle((70, 150, 84, 215), fill=(92, 64, 40))
    draw.ellipse((40, 95, 115, 170), fill=(40, 96, 44))
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.asarray(image, dtype=np.float64) + _noise(rng, image.size, 6.0)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _paper(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Off-white paper: warm tint, fibres, uneven light from the top left."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    light = 1.0 - 0.10 * np.hypot(xx / width - 0.2, yy / height - 0.1)
    fibres = np.asarray(
        Image.fromarray((rng.random((height // 4, width // 4)) * 255).astype(np.uint8))
        .resize(size, Image.Resampling.BICUBIC)
        .filter(ImageFilter.GaussianBlur(1.5)),
        dtype=np.float64,
    )
    base = np.array([246.0, 241.0, 228.0]) * light[..., None]
    pixels = base + (fibres[..., None] - 128) * 0.06 + _noise(rng, size, 2.5)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _stroke(
    draw: ImageDraw.ImageDraw,
    rnd: random.Random,
    points: list[tuple[float, float]],
    colour: tuple[int, int, int],
    width: int = 11,
) -> None:
    """A marker stroke: a wobbly polyline with round caps and joints."""
    path: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        steps = max(2, int(math.hypot(x1 - x0, y1 - y0) / 12))
        for i in range(steps):
            t = i / steps
            path.append(
                (x0 + (x1 - x0) * t + rnd.gauss(0, 1.2), y0 + (y1 - y0) * t + rnd.gauss(0, 1.2))
            )
    path.append(points[-1])
    draw.line(path, fill=colour, width=width, joint="curve")
    for x, y in (path[0], path[-1]):
        draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=colour)


def _circle(cx: float, cy: float, r: float, n: int = 40) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n))
        for i in range(n + 1)
    ]


def make_drawing(size: tuple[int, int] = (1000, 750)) -> Image.Image:
    """A cartoon person drawn with markers, with a crayon-filled shirt, photographed on paper."""
    rng = np.random.default_rng(11)
    rnd = random.Random(11)
    image = _paper(rng, size)
    draw = ImageDraw.Draw(image)
    ink, red, blue = (30, 32, 40), (200, 50, 45), (40, 80, 170)
    # Crayon hatching inside the shirt, drawn before its outline.
    for y in range(265, 455, 7):
        draw.line(
            [(430 + rnd.uniform(-4, 4), y), (575 + rnd.uniform(-4, 4), y + 5)], fill=red, width=4
        )
    _stroke(draw, rnd, _circle(500, 180, 78), ink)  # head
    _stroke(draw, rnd, _circle(472, 165, 6, 12), ink, 9)  # eyes
    _stroke(draw, rnd, _circle(530, 165, 6, 12), ink, 9)
    _stroke(draw, rnd, [(465, 205), (485, 222), (515, 222), (535, 205)], ink, 8)  # smile
    _stroke(
        draw,
        rnd,
        [(425, 110), (445, 95), (470, 100), (500, 90), (530, 100), (560, 95), (578, 115)],
        ink,
    )
    _stroke(draw, rnd, [(440, 258), (560, 258), (580, 460), (420, 460), (440, 258)], ink)  # shirt
    _stroke(draw, rnd, [(442, 275), (360, 340), (300, 300)], ink)  # left arm, waving
    _stroke(draw, rnd, [(558, 275), (650, 360), (700, 430)], ink)  # right arm
    for cx, cy in ((288, 292), (708, 440)):  # hands
        _stroke(draw, rnd, _circle(cx, cy, 20, 20), ink, 9)
    _stroke(draw, rnd, [(460, 460), (440, 570), (430, 650)], blue, 13)  # legs
    _stroke(draw, rnd, [(540, 460), (565, 570), (580, 650)], blue, 13)
    _stroke(draw, rnd, [(430, 650), (385, 660)], ink, 14)  # shoes
    _stroke(draw, rnd, [(580, 650), (628, 662)], ink, 14)
    _stroke(draw, rnd, [(130, 690), (870, 685)], (60, 140, 60), 8)  # ground
    # A photo of a drawing: slight blur, camera noise, a shadow on the right edge.
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    pixels = np.asarray(image, dtype=np.float64) + _noise(rng, image.size, 3.0)
    shadow = np.clip((np.arange(size[0]) - 880) / 120.0, 0.0, 1.0) * 28
    pixels -= shadow[None, :, None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def main(out_dir: Path = HERE) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    make_quick_sample().save(out_dir / "quick_sample.jpg", quality=90)
    make_drawing().save(out_dir / "drawing.jpg", quality=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
