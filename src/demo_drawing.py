"""What the demo competitions are drawn from and with: scikit-learn's real handwritten digits split into disjoint
train and test pools, crops of its two sample photos, and the few drawing steps the scenes are made of (a digit
upsampled to a stroke mask, jittered and alpha-blended onto a canvas of 0..1 floats). Pure functions of their
random generator: the same generator state draws the same pixels. Also the per-image random generators and the
file writers every format's `write_demo` (src/formats/) shares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

N_DIGITS = 10
# Fraction of each digit class held out for test images.
TEST_POOL_FRACTION = 0.25


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(image) for image in load_sample_images().images)


@dataclass(frozen=True)
class DigitPools:
    """Real 8x8 digits (0..1 floats) by class, split into disjoint train and test pools."""

    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]

    def pool(self, split: str) -> tuple[np.ndarray, ...]:
        return self.train if split == "train" else self.test


def digit_pools(seed: int) -> DigitPools:
    images, target = digits()
    rng = np.random.default_rng([seed, 0])
    train, test = [], []
    for digit in range(N_DIGITS):
        members = rng.permutation(np.flatnonzero(target == digit))
        n_test = int(round(len(members) * TEST_POOL_FRACTION))
        test.append(images[np.sort(members[:n_test])])
        train.append(images[np.sort(members[n_test:])])
    return DigitPools(train=tuple(train), test=tuple(test))


def pick_digit(pools: DigitPools, split: str, digit: int, rng: np.random.Generator) -> np.ndarray:
    pool = pools.pool(split)[digit]
    return pool[rng.integers(len(pool))]


def digit_mask(digit8: np.ndarray, size: int, bold: bool = False) -> np.ndarray:
    """An 8x8 digit -> a size x size stroke mask in 0..1 (one blank pixel of margin, bicubic upsampling)."""
    padded = np.pad(digit8, 1)
    image = Image.fromarray(np.round(padded * 255).astype(np.uint8), "L").resize((size, size), Image.BICUBIC)
    if bold:
        image = image.filter(ImageFilter.MaxFilter(3))
    return np.asarray(image, dtype=np.float32) / 255.0


def paste(canvas: np.ndarray, mask: np.ndarray, color, top: int, left: int) -> None:
    """Alpha-blend `color` through `mask` into `canvas` (H x W x 3) at (top, left), clamped inside."""
    height, width = canvas.shape[:2]
    size_y, size_x = mask.shape
    top = int(np.clip(top, 0, height - size_y))
    left = int(np.clip(left, 0, width - size_x))
    alpha = mask[..., None]
    region = canvas[top : top + size_y, left : left + size_x]
    region[:] = region * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha


def place_digit(
    canvas: np.ndarray,
    digit8: np.ndarray,
    size: int,
    top: int,
    left: int,
    color,
    rng: np.random.Generator,
    jitter: int = 2,
    bold: bool = False,
) -> None:
    """Draw a digit about `size` px at about (top, left), with light jitter in size, position and contrast."""
    size = max(6, int(round(size * rng.uniform(0.9, 1.1))))
    mask = digit_mask(digit8, size, bold=bold) * rng.uniform(0.8, 1.0)
    shift = rng.integers(-jitter, jitter + 1, size=2)
    paste(canvas, mask, color, top + int(shift[0]), left + int(shift[1]))


def photo_crop(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random square crop of one of scikit-learn's two sample photos, resized to height x width, 0..1 floats."""
    photo = photos()[rng.integers(len(photos()))]
    side = int(rng.integers(min(photo.size) // 4, min(photo.size) + 1))
    top = int(rng.integers(0, photo.height - side + 1))
    left = int(rng.integers(0, photo.width - side + 1))
    crop = photo.resize((width, height), Image.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(crop, dtype=np.float32) / 255.0


def bright_color(rng: np.random.Generator) -> np.ndarray:
    # Every channel >= 0.65 keeps the digit bright in grey too (luminance >= 0.65 vs backgrounds <= 0.45).
    return rng.uniform(0.65, 1.0, size=3).astype(np.float32)


def to_image(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8), "RGB")


def one_digit_image(
    pools: DigitPools,
    split: str,
    label: int,
    mode: str,
    rng: np.random.Generator,
    min_side: int = 24,
    max_side: int = 80,
) -> Image.Image:
    """One digit `label` centred on a photo crop or a dark plain background, min_side..max_side px a side, in
    PIL `mode` (RGBA: half-transparent background, opaque strokes)."""
    width = int(rng.integers(min_side, max_side + 1))
    height = int(np.clip(round(width * rng.uniform(0.75, 1.33)), min_side, max_side))
    if rng.random() < 0.5:
        canvas = photo_crop(rng, height, width) * 0.45
    else:
        canvas = np.empty((height, width, 3), dtype=np.float32)
        canvas[:] = rng.uniform(0.0, 0.35, size=3)
    side = int(min(width, height) * 0.8)
    digit8 = pick_digit(pools, split, label, rng)
    mask = digit_mask(digit8, side) * rng.uniform(0.85, 1.0)
    shift = rng.integers(-2, 3, size=2)
    top, left = (height - side) // 2 + int(shift[0]), (width - side) // 2 + int(shift[1])
    paste(canvas, mask, bright_color(rng), top, left)
    image = to_image(canvas)
    if mode == "RGBA":
        # Half-transparent background, opaque strokes; the RGB under the alpha is the full picture.
        alpha = np.full((height, width), 150, dtype=np.uint8)
        alpha[np.asarray(image.convert("L")) > 150] = 255
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha, "L"))
        return image
    return image.convert(mode)


# --------------------------------------------------------------------------------------------
# Per-image random generators and files, shared by every format's demo writer


def image_rng(seed: int, format_salt: int, split: str, index: int) -> np.random.Generator:
    """The generator of image `index` of `split`: image i is the same whatever n_train / n_test are."""
    return np.random.default_rng([seed, format_salt, 0 if split == "train" else 1, index])


def split_rng(seed: int, format_salt: int, split: str) -> np.random.Generator:
    """The generator of a whole split's draws (names, label order)."""
    return np.random.default_rng([seed, format_salt, 2 if split == "train" else 3])


def save_image(image: Image.Image, path: Path) -> None:
    """Save as JPEG (quality 92) when `path` ends in .jpg, else PNG; parent folders are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        image.save(path, format="JPEG", quality=92)
    else:
        image.save(path, format="PNG")


def hex_names(rng: np.random.Generator, count: int, n_chars: int) -> list[str]:
    """`count` distinct random lowercase hex names of `n_chars` characters."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = rng.bytes((n_chars + 1) // 2).hex()[:n_chars]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def write_lines(path: Path, lines: list[str]) -> None:
    """`lines` as a UTF-8 text file with '\\n' endings and a final newline."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def join_ids(ids) -> str:
    """Integer ids sorted and space-separated ('2 7 11')."""
    return " ".join(str(i) for i in sorted(ids))
