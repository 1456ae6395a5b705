"""One-time cache of decoded images resized to the cache size (`CachePolicy`: data.resize, data.cache_size,
data.cache): raw uint8 memory-mapped squares by default, or a packed folder (src/data/packed.py) of images of any
shape, encoded or raw.

Reused across folds, epochs and experiments. Invalidation rule: the cache file's name is a hash of
the image size, the policy and, for every image, its path, byte size and modification time; change any image
(or the size or policy) and a new cache is built. Builds are atomic (a packed one resumable by chunk) and serialised
by a file lock, so two trainers starting together build it once and never read a torn file. The free disk is
checked before a build, and a full disk during one is one line, never a SIGBUS or a half-written file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from src.atomic import atomic_path
from src.data.crops import cached_source
from src.data.images import MAX_PIXELS, load_rgb
from src.data.packed import PackedImages, build_packed
from src.data.prebuilt import CacheSettings, PrebuiltImages, open_prebuilt
from src.errors import PipelineError

CACHE_VERSION = 1  # bump when the decode/resize recipe changes
# Bytes on disk of a packed image over its raw pixels, to check the free space before a build (typical of photos at
# a few hundred px: PNG keeps every pixel, JPEG/WebP at quality ~90-95 about a tenth); the build itself measures.
PACKED_RATIO = {"raw": 1.0, "png": 0.6, "jpeg": 0.15, "webp": 0.12}


@dataclass
class ImageCache:
    """Decoded images ([n, size, size, 3] uint8, or a PackedImages store of any sizes) and the unreadable rows."""

    images: np.ndarray | PackedImages
    unreadable: dict[int, str]


@dataclass(frozen=True)
class CachePolicy:
    """How images are cached: the resize policy, the cached side, raw or packed (or auto) and the packed codec.

    The default is today's cache: squashed to a raw square at the given size."""

    size: int
    resize: str = "squash"
    kind: str = "raw"
    codec: str = "jpeg"
    quality: int = 95
    budget_gb: float | None = None

    @classmethod
    def from_data(cls, data) -> CachePolicy:
        """The policy of a config's `data` section."""
        return cls(
            data.source_size, data.resize, data.cache, data.cache_format, data.cache_quality, data.cache_disk_budget_gb
        )

    @property
    def square(self) -> bool:
        return self.resize != "short_side"

    def tag(self, kind: str) -> str:
        """What the cache key adds for this policy ("" for the default raw squash, so existing caches stay valid)."""
        resize = "" if self.resize == "squash" else f":{self.resize}"
        return resize + ("" if kind == "raw" else f":{self.codec}{self.quality}")


def cache_key(paths: list[Path], size: int, max_pixels: int = MAX_PIXELS, policy_tag: str = "") -> str:
    # The pixel limit decides which images are unreadable: another limit is another cache (the default keeps the key).
    limit = "" if max_pixels == MAX_PIXELS else f":max{max_pixels}"
    digest = hashlib.sha1(f"v{CACHE_VERSION}:{size}{limit}{policy_tag}".encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:20]


def raw_bytes_estimate(paths: list[Path], policy: CachePolicy) -> int:
    """Bytes of the raw cache: exact for a square policy; short_side from the aspect of up to 64 sampled images."""
    square = len(paths) * policy.size * policy.size * 3
    if policy.square or not paths:
        return square
    aspects = []
    for path in paths[:: max(1, len(paths) // 64)][:64]:
        try:
            with Image.open(path) as image:
                aspects.append(max(image.size) / max(1, min(image.size)))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return int(square * (float(np.mean(aspects)) if aspects else 1.0))


def resolve_kind(
    paths: list[Path], policy: CachePolicy, cache_dir: Path, max_pixels: int = MAX_PIXELS
) -> tuple[str, str]:
    """(raw or packed, why) for `data.cache: auto`: raw when it fits the disk budget and the free disk."""
    if policy.kind != "auto":
        return policy.kind, ""
    for kind in ("raw", "packed"):  # a set already built (or a packed build to resume) is taken whatever the disk
        key = cache_key(paths, policy.size, max_pixels, policy.tag(kind))
        built = [cache_dir / f"{key}.npy", cache_dir / f"{key}.pack", cache_dir / f"{key}.pack.partial"]
        if any(path.exists() for path in built):
            return kind, f"data.cache auto -> {kind} (already on disk)"
    needed = raw_bytes_estimate(paths, policy)
    free = shutil.disk_usage(_existing(cache_dir)).free
    kind = "raw" if raw_fits(needed, free, policy.budget_gb) else "packed"
    budget = f", budget {policy.budget_gb:g} GB" if policy.budget_gb else ""
    return kind, f"data.cache auto -> {kind} (raw needs {_gb(needed)}; {_gb(free)} free{budget})"


def raw_fits(needed_bytes: float, free_bytes: float, budget_gb: float | None) -> bool:
    """`data.cache: auto`'s rule: raw when its bytes fit the free disk and data.cache_disk_budget_gb (when set)."""
    limit = min(free_bytes, budget_gb * 2**30) if budget_gb else free_bytes
    return needed_bytes <= limit


def check_free_space(cache_dir: Path, needed: int, what: str) -> None:
    """PipelineError (one line: the size needed, the free space, what to change) when `cache_dir`'s disk is short."""
    free = shutil.disk_usage(_existing(cache_dir)).free
    if needed > free:
        raise PipelineError(
            f"{cache_dir}: the {what} needs about {_gb(needed)} but the disk has {_gb(free)} free; set data.cache: "
            "packed (or a lower data.cache_quality), a smaller data.cache_size, or point output_dir at another disk"
        )


def _gb(count: float) -> str:
    return f"{count / 2**30:.2f} GB"


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def load_or_build(
    paths: list[Path],
    size: int,
    cache_dir: Path | None,
    skip_unreadable: bool,
    quiet: bool = False,
    label: str = "images",
    max_pixels: int = MAX_PIXELS,
    policy: CachePolicy | None = None,
) -> ImageCache:
    """Decoded, resized images for `paths`, from `cache_dir` when present there (None = no disk cache); an image over
    `max_pixels` is unreadable. `policy` (default: a raw squashed square at `size`) says how they are cached."""
    policy = policy or CachePolicy(size)
    if cache_dir is None:
        return _in_memory(paths, policy, skip_unreadable, quiet, label, max_pixels)
    cache_dir.mkdir(parents=True, exist_ok=True)
    kind, _ = resolve_kind(paths, policy, cache_dir, max_pixels)
    if kind != "raw" or not policy.square:
        return _load_or_build_packed(paths, policy, kind, cache_dir, skip_unreadable, quiet, label, max_pixels)
    size = policy.size
    key = cache_key(paths, size, max_pixels, policy.tag(kind))
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (array_path.exists() and meta_path.exists()):
            shape = (len(paths), size, size, 3)
            for stale in cache_dir.glob(f".{key}.npy.*.tmp"):  # a killed build's: its space counts as free
                stale.unlink()
            check_free_space(cache_dir, int(np.prod(shape)), f"raw image cache of {len(paths):,} images at {size} px")
            # Decoded straight into the memory-mapped file: RAM stays flat however large the image set
            # (109,237 iMet images at 320 px are 34 GB).
            with atomic_path(array_path) as tmp:
                images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                _reserve(tmp, cache_dir)
                unreadable = _decode_into(images, paths, policy, skip_unreadable, quiet, label, max_pixels)
                images.flush()
                del images
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps({"size": size, "count": len(paths), "unreadable": unreadable}))
    meta = json.loads(meta_path.read_text())
    unreadable = {int(row): reason for row, reason in meta["unreadable"].items()}
    if unreadable and not skip_unreadable:
        raise PipelineError(next(iter(unreadable.values())))
    return ImageCache(np.load(array_path, mmap_mode="r"), unreadable)


def _reserve(path: Path, cache_dir: Path) -> None:
    """Allocate the memory-mapped file's blocks now: a full disk is one OSError here instead of a SIGBUS (Bus error,
    no message) on the first page written past the end of the free space."""
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        needed = path.stat().st_size
        raise PipelineError(
            f"{cache_dir}: no space left for the raw image cache ({_gb(needed)} needed, "
            f"{_gb(shutil.disk_usage(cache_dir).free)} free); set data.cache: packed, a smaller data.cache_size, "
            "or point output_dir at another disk"
        ) from None


def _source(paths: list[Path], policy: CachePolicy, max_pixels: int):
    def source(row: int) -> np.ndarray:
        return cached_source(load_rgb(paths[row], max_pixels), policy.resize, policy.size)

    return source


def _load_or_build_packed(paths, policy, kind, cache_dir, skip_unreadable, quiet, label, max_pixels) -> ImageCache:
    """The packed cache folder (raw pixels for short_side under data.cache: raw, else the policy's codec)."""
    codec = "raw" if kind == "raw" else policy.codec
    key = cache_key(paths, policy.size, max_pixels, policy.tag(kind))
    folder = cache_dir / f"{key}.pack"
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "meta.json").exists():
            partial = folder.with_name(folder.name + ".partial")
            done = sum(path.stat().st_size for path in partial.glob("*.bin")) if partial.is_dir() else 0
            needed = int(raw_bytes_estimate(paths, policy) * PACKED_RATIO[codec])
            what = f"{codec} image cache of {len(paths):,} images at {policy.size} px"
            check_free_space(cache_dir, max(0, needed - done), what)
            meta = {"version": CACHE_VERSION, "size": policy.size, "resize": policy.resize, "max_pixels": max_pixels}
            source = _source(paths, policy, max_pixels)
            desc = f"pack {label} @{policy.size}px"
            build_packed(folder, len(paths), source, codec, policy.quality, meta, desc, quiet, _relative_names(paths))
    store = PackedImages(folder)
    unreadable = {int(row): reason for row, reason in store.meta["unreadable"].items()}
    if unreadable and not skip_unreadable:
        raise PipelineError(unreadable[min(unreadable)])
    return ImageCache(store, unreadable)


def _relative_names(paths: list[Path]) -> list[str]:
    """Each path relative to the folder all of them share (a file name alone when there is one image)."""
    try:
        root = Path(os.path.commonpath([str(path) for path in paths]))
        root = root.parent if root in set(map(Path, paths)) else root  # one file (or copies of it)
        return [str(Path(path).relative_to(root)) for path in paths]
    except ValueError:  # no paths, or absolute and relative ones mixed: the paths as given
        return [str(path) for path in paths]


def _in_memory(paths, policy, skip_unreadable, quiet, label, max_pixels) -> ImageCache:
    """No disk cache: a decoded array (square policies) or a list of images (short_side)."""
    if policy.square:
        images = np.zeros((len(paths), policy.size, policy.size, 3), dtype=np.uint8)
    else:
        images = [None] * len(paths)
    unreadable = _decode_into(images, paths, policy, skip_unreadable, quiet, label, max_pixels)
    if not policy.square:
        for row in unreadable:
            images[row] = np.zeros((policy.size, policy.size, 3), dtype=np.uint8)
    return ImageCache(images, unreadable)


def _decode_into(
    images: np.ndarray,
    paths: list[Path],
    policy: CachePolicy,
    skip_unreadable: bool,
    quiet: bool,
    label: str,
    max_pixels: int = MAX_PIXELS,
) -> dict[int, str]:
    """Fill images[row] with each decoded, resized image; return {row: reason} for the unreadable ones."""
    unreadable: dict[int, str] = {}
    source = _source(paths, policy, max_pixels)

    def decode(row: int) -> None:
        try:
            images[row] = source(row)
        except PipelineError as exc:
            unreadable[row] = str(exc)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(
            pool.map(decode, range(len(paths))),
            total=len(paths),
            desc=f"decode {label} @{policy.size}px",
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
    sets: list[tuple[str, int]] = field(default_factory=list)  # (what each set is, its bytes on disk)


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


def _describe_set(path: Path) -> str:
    """One cached set in words: raw or packed (codec), size, image count; a killed build says how far it got."""
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        return f"raw {shape[0]:,} images at {shape[1]} px"
    meta_path = path / ("progress.json" if path.suffix == ".partial" else "meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if path.suffix == ".partial":
        inner = meta.get("meta", {})
        count = inner.get("count", 0)
        return (
            f"{inner.get('codec', '?')} build stopped at {meta.get('rows', 0):,} of {count:,} images (re-run resumes)"
        )
    return f"{meta.get('codec')} {len(np.load(path / 'index.npy', mmap_mode='r')):,} images, {meta.get('resize')} at {meta.get('size')} px"


def cache_usage(cache_dir: Path) -> CacheUsage:
    """How many cached image sets `cache_dir` holds, their size on disk, and each set in words with its size."""
    items = list(Path(cache_dir).iterdir()) if Path(cache_dir).is_dir() else []
    sets = sorted(path for path in items if path.suffix in (".npy", ".pack", ".partial"))
    return CacheUsage(
        sum(path.suffix in (".npy", ".pack") for path in sets),
        sum(size_on_disk(path) for path in items),
        sets=[(_describe_set(path), size_on_disk(path)) for path in sets],
    )


def clear_cache(cache_dir: Path) -> CacheUsage:
    """Delete every cached image set not being built at this moment (and temp files of killed builds).

    A process reading a deleted set keeps its memory map (the data lives until it closes it); the next
    run rebuilds the set. Sets whose lock is held (a build in progress) are skipped and counted.
    """
    cache_dir = Path(cache_dir)
    removed = CacheUsage(0, 0)
    if not cache_dir.is_dir():
        return removed
    keys = sorted({path.name.lstrip(".").split(".")[0] for path in cache_dir.iterdir()})
    for key in keys:
        with open(cache_dir / f"{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                removed.in_use += 1
                continue
            removed.entries += (cache_dir / f"{key}.npy").exists() or (cache_dir / f"{key}.pack").exists()
            for path in [
                cache_dir / f"{key}.npy",
                cache_dir / f"{key}.json",
                cache_dir / f"{key}.pack",
                cache_dir / f"{key}.pack.partial",
                *cache_dir.glob(f".{key}.*.tmp"),
                cache_dir / f"{key}.lock",
            ]:
                if path.exists():
                    removed.bytes += size_on_disk(path)
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
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
    policy: CachePolicy | None = None,
    prebuilt: Path | None = None,
    root: Path | None = None,
) -> tuple[np.ndarray | PackedImages | PrebuiltImages, np.ndarray]:
    """(images: [n, S, S, 3] uint8 or a packed store, boolean mask of readable rows) via the on-disk cache, or read
    from the `prebuilt` cache folder (matched by path under `root`, data.root); skipped files are logged. `policy`
    (data.resize/cache_size/cache...): default a raw square at `size`."""
    policy = policy or CachePolicy(size)
    if prebuilt is not None:
        settings = CacheSettings(CACHE_VERSION, policy.size, policy.resize, max_pixels)
        images, unreadable = open_prebuilt(Path(prebuilt), paths, Path(root), settings)
        if unreadable and not skip_unreadable:
            raise PipelineError(unreadable[min(unreadable)])
        log(f"{label}: {len(paths):,} images read from the prebuilt cache {prebuilt} ({images.store.codec})")
        return images, _readable_mask(len(paths), unreadable, log)
    if policy.kind == "auto" and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        kind, why = resolve_kind(paths, policy, cache_dir, max_pixels)
        log(f"{label}: {why}")
        policy = replace(policy, kind=kind)
    cache = load_or_build(paths, size, cache_dir, skip_unreadable, quiet, label, max_pixels, policy)
    return cache.images, _readable_mask(len(paths), cache.unreadable, log)


def _readable_mask(count: int, unreadable: dict[int, str], log) -> np.ndarray:
    """The boolean mask of readable rows, each skipped row logged."""
    readable = np.ones(count, dtype=bool)
    for row, reason in sorted(unreadable.items()):
        readable[row] = False
        log(f"skipped unreadable image: {reason}")
    if unreadable:
        log(f"skipped {len(unreadable)} unreadable image(s) of {count} (data.skip_unreadable=true)")
    return readable
