"""Decode any image file (RGB, L, RGBA, P, CMYK, 16-bit) into an RGB uint8 array."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from src.errors import PipelineError

# Truncated files must fail loudly rather than decode as grey.
Image.LOAD_TRUNCATED_IMAGES = False
# The largest image decoded (10000 x 10000, about 300 MB as RGB): a larger one is a decompression bomb to a pipeline
# whose images are resized to a few hundred pixels, refused (or skipped with data.skip_unreadable) before decoding.
MAX_PIXELS = 100_000_000


def load_rgb(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return the image at `path` as an H x W x 3 uint8 array; PipelineError if missing, unreadable or over
    `max_pixels` (data.max_pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size  # read from the header: nothing is decoded yet
                if width * height > max_pixels:
                    raise PipelineError(
                        f"{path}: image is {width} x {height} = {width * height:,} pixels, more than {max_pixels:,} "
                        "(a decompression bomb?); shrink or remove it, raise data.max_pixels, or set "
                        "data.skip_unreadable=true"
                    )
                image = ImageOps.exif_transpose(image)
                return np.asarray(_to_rgb(image))
    except FileNotFoundError:
        raise PipelineError(f"{path}: image file is missing; restore it or remove its row from the labels") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise PipelineError(
            f"{path}: unreadable image ({exc}); replace the file or set data.skip_unreadable=true"
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as a viewer shows them, rather than arbitrary colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 / max(float(array.max()), 1.0)
        return Image.fromarray((array * scale).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")
