"""One-time cache of decoded images resized to the training resolution (uint8, memory-mapped).

Reused across folds, epochs and experiments. Invalidation rule: the cache file's name is a hash of
the image size and, for every image, its path, byte size and modification time; change any image
(or the size) and a new cache is built. Builds are atomic and serialised by a file lock, so two
trainers starting together build it once and never read a torn file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src.atomic import atomic_path
from src.data.images import MAX_PIXELS, load_rgb
from src.errors import PipelineError

CACHE_VERSION = 1  # bump when the decode/resize recipe changes


@dataclass
class ImageCache:
    """Decoded images [n, size, size, 3] uint8 and the rows that could not be read."""

    images: np.ndarray
    unreadable: dict[int, str]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (area filter when shrinking, cubic when enlarging)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrinking = image.shape[0] * image.shape[1] > size * size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def cache_key(paths: list[Path], size: int, max_pixels: int = MAX_PIXELS) -> str:
    # The pixel limit decides which images are unreadable: another limit is another cache (the default keeps the key).
    limit = "" if max_pixels == MAX_PIXELS else f":max{max_pixels}"
    digest = hashlib.sha1(f"v{CACHE_VERSION}:{size}{limit}".encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:20]


def load_or_build(
    paths: list[Path],
    size: int,
    cache_dir: Path | None,
    skip_unreadable: bool,
    quiet: bool = False,
    label: str = "images",
    max_pixels: int = MAX_PIXELS,
) -> ImageCache:
    """Decoded, resized images for `paths`, from `cache_dir` when present there (None = no disk cache); an image over
    `max_pixels` is unreadable."""
    if cache_dir is None:
        images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
        unreadable = _decode_into(images, paths, size, skip_unreadable, quiet, label, max_pixels)
        return ImageCache(images, unreadable)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, max_pixels)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (array_path.exists() and meta_path.exists()):
            # Decoded straight into the memory-mapped file: RAM stays flat however large the image set
            # (109,237 iMet images at 320 px are 34 GB).
            with atomic_path(array_path) as tmp:
                images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
                unreadable = _decode_into(images, paths, size, skip_unreadable, quiet, label, max_pixels)
                images.flush()
                del images
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps({"size": size, "count": len(paths), "unreadable": unreadable}))
    meta = json.loads(meta_path.read_text())
    unreadable = {int(row): reason for row, reason in meta["unreadable"].items()}
    if unreadable and not skip_unreadable:
        raise PipelineError(next(iter(unreadable.values())))
    return ImageCache(np.load(array_path, mmap_mode="r"), unreadable)


def _decode_into(
    images: np.ndarray,
    paths: list[Path],
    size: int,
    skip_unreadable: bool,
    quiet: bool,
    label: str,
    max_pixels: int = MAX_PIXELS,
) -> dict[int, str]:
    """Fill images[row] with each decoded, resized image; return {row: reason} for the unreadable ones."""
    unreadable: dict[int, str] = {}

    def decode(row: int) -> None:
        try:
            images[row] = resize_square(load_rgb(paths[row], max_pixels), size)
        except PipelineError as exc:
            unreadable[row] = str(exc)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(
            pool.map(decode, range(len(paths))),
            total=len(paths),
            desc=f"decode {label} @{size}px",
            disable=quiet,
            leave=False,
        ):
            pass
    if unreadable and not skip_unreadable:
        first = min(unreadable)
        raise PipelineError(unreadable[first])
    return unreadable


@dataclass
class CacheUsage:
    entries: int
    bytes: int
    in_use: int = 0  # entries being built right now (their lock is held), left alone by clear_cache


def cache_usage(cache_dir: Path) -> CacheUsage:
    """How many cached image sets `cache_dir` holds and their size on disk."""
    files = [path for path in Path(cache_dir).iterdir() if path.is_file()] if Path(cache_dir).is_dir() else []
    return CacheUsage(sum(path.suffix == ".npy" for path in files), sum(path.stat().st_size for path in files))


def clear_cache(cache_dir: Path) -> CacheUsage:
    """Delete every cached image set not being built at this moment (and temp files of killed builds).

    A process reading a deleted set keeps its memory map (the data lives until it closes it); the next
    run rebuilds the set. Sets whose lock is held (a build in progress) are skipped and counted.
    """
    cache_dir = Path(cache_dir)
    removed = CacheUsage(0, 0)
    if not cache_dir.is_dir():
        return removed
    keys = sorted({path.name.lstrip(".").split(".")[0] for path in cache_dir.iterdir() if path.is_file()})
    for key in keys:
        with open(cache_dir / f"{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                removed.in_use += 1
                continue
            removed.entries += (cache_dir / f"{key}.npy").exists()
            for path in [
                cache_dir / f"{key}.npy",
                cache_dir / f"{key}.json",
                *cache_dir.glob(f".{key}.*.tmp"),
                cache_dir / f"{key}.lock",
            ]:
                if path.exists():
                    removed.bytes += path.stat().st_size
                    path.unlink()
    return removed


def decode_table(
    paths: list[Path],
    size: int,
    cache_dir: Path,
    skip_unreadable: bool,
    quiet: bool,
    log,
    label: str,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, S, S, 3] uint8, boolean mask of readable rows) via the on-disk cache; skipped files are logged."""
    cache = load_or_build(paths, size, cache_dir, skip_unreadable, quiet, label, max_pixels)
    readable = np.ones(len(paths), dtype=bool)
    for row, reason in sorted(cache.unreadable.items()):
        readable[row] = False
        log(f"skipped unreadable image: {reason}")
    if cache.unreadable:
        log(f"skipped {len(cache.unreadable)} unreadable image(s) of {len(paths)} (data.skip_unreadable=true)")
    return cache.images, readable
