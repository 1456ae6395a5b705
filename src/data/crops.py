"""How a decoded image becomes the cached source (`data.resize`), and how a crop of `image_size` is cut from it at eval
time (`data.eval_crop`, N-crop TTA positions).

`squash` resizes to a square (today's recipe: aspect distorted), `short_side` keeps the aspect with the shorter side at
the cache size (variable-size sources, as iMet's winners cropped from), `pad` letterboxes onto a square canvas.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

ResizePolicy = Literal["squash", "short_side", "pad"]
EvalCrop = Literal["center", "resize"]
# Deterministic N-crop TTA positions, in order: the centre first so tta_crops: 1 is the plain centre crop.
CROP_POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = image.shape[0] * image.shape[1] > width * height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (area filter when shrinking, cubic when enlarging)."""
    return _resize(image, size, size)


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Keep the aspect: the shorter side becomes `size` (the longer one rounds to the nearest pixel)."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return _resize(image, max(size, round(width * scale)), max(size, round(height * scale)))


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Letterbox: the longer side becomes `size`, centred on a black size x size canvas."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = _resize(image, new_w, new_h)
    return canvas


RESIZERS = {"squash": resize_square, "short_side": resize_short_side, "pad": resize_pad}


def cached_source(image: np.ndarray, policy: ResizePolicy, size: int) -> np.ndarray:
    """The image as the cache stores it under `policy` at `size`."""
    return RESIZERS[policy](image, size)


def crop_at(image: np.ndarray, size: int, mode: EvalCrop = "center", position: str = "center") -> np.ndarray:
    """A size x size crop of `image` at `position` (one of CROP_POSITIONS).

    `center`: cut at the cached scale (as RandomCrop trains), enlarging first only a side shorter than `size`;
    `resize`: first scale the shorter side to `size` (the whole shorter side in view, as a full-scale
    RandomResizedCrop), then cut. An image already size x size is returned as is.
    """
    height, width = image.shape[:2]
    if height == size and width == size:
        return image
    if mode == "resize" or min(height, width) < size:
        image = resize_short_side(image, size)
        height, width = image.shape[:2]
    top = {"top": 0, "bottom": height - size}.get(position.split("_")[0], (height - size) // 2)
    left = {"left": 0, "right": width - size}.get(position.split("_")[-1], (width - size) // 2)
    return np.ascontiguousarray(image[top : top + size, left : left + size])
