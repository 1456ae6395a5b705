"""A packed image cache built on another machine (`kernel cache` here, attached to a training kernel as a Kaggle
dataset; `data.prebuilt_cache`), read in place and never written.

It is matched to a table by each image's path under data.root and byte size, not by the local cache's key (that
hashes absolute paths and modification times, which differ on every machine): `source.json` beside the packed files
records both for every cached image, and the settings it was cached with (data.resize, the cached side, the pixel
limit, the recipe version), so a cache made for other settings or other images is refused in one line. A table may
use any subset of the cached images (a fold, data.train_subset) in any order.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.atomic import write_text
from src.data.packed import PackedImages
from src.errors import PipelineError

SOURCE_FILE = "source.json"
PACKED_FILES = ("images.bin", "index.npy", "names.txt", "meta.json")  # the packed folder's own files (packed.py)


@dataclass(frozen=True)
class CacheSettings:
    """What decides a cached image's pixels besides its file: compared key by key with the cache's meta.json."""

    version: int
    size: int
    resize: str
    max_pixels: int

    def differences(self, meta: dict) -> list[str]:
        """'key: cached X, wanted Y' for each setting the cache's meta.json holds otherwise."""
        wanted = {"version": self.version, "size": self.size, "resize": self.resize, "max_pixels": self.max_pixels}
        return [
            f"{key} cached {meta.get(key)!r}, wanted {value!r}"
            for key, value in wanted.items()
            if meta.get(key) != value
        ]


class PrebuiltImages:
    """`images[row]` is the cached image of the table's row `row` (a view over the packed store's rows)."""

    def __init__(self, store: PackedImages, rows: np.ndarray):
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple:
        return (len(self), None, None, 3)

    def __getitem__(self, row) -> np.ndarray:
        return self.store[int(self.rows[int(row)])]


def names_under(paths: list[Path], root: Path) -> list[str]:
    """Each image's path relative to data.root, as posix text (what a cache built elsewhere is matched by)."""
    root = Path(root).absolute()
    names = []
    for path in paths:
        try:
            names.append(Path(path).absolute().relative_to(root).as_posix())
        except ValueError:
            raise PipelineError(
                f"{path}: this image is not under data.root ({root}), so a prebuilt cache cannot be matched to it; "
                "set data.prebuilt_cache: null"
            ) from None
    return names


def export_prebuilt(packed: Path, dest: Path, paths: list[Path], root: Path) -> Path:
    """Make `dest` a prebuilt cache of the packed folder `packed` (built from `paths`): its files hard-linked (copied
    across disks, after a free-space check) and source.json written; built beside `dest` and renamed into place."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sources = [packed / name for name in PACKED_FILES]
    try:
        for source in sources:
            os.link(source, partial / source.name)
    except OSError:  # another disk (or no hard links there): copy, once the space is known to be there
        needed = sum(source.stat().st_size for source in sources)
        free = shutil.disk_usage(partial).free
        if needed > free:
            shutil.rmtree(partial, ignore_errors=True)
            raise PipelineError(
                f"{dest}: copying the packed cache needs {needed / 2**30:.2f} GB but the disk has {free / 2**30:.2f} GB "
                "free; free space there, or keep output_dir on the disk of the image cache (a hard link costs nothing)"
            ) from None
        for source in sources:
            shutil.copyfile(source, partial / source.name)
    record = {"names": names_under(paths, root), "sizes": [Path(path).stat().st_size for path in paths]}
    write_text(partial / SOURCE_FILE, json.dumps(record, separators=(",", ":")))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return dest


def open_prebuilt(folder: Path, paths: list[Path], root: Path, wanted: CacheSettings) -> tuple[PrebuiltImages, dict]:
    """(the cached images of `paths` in their order, {table row: reason} of the unreadable ones) from the prebuilt
    cache `folder`; one PipelineError line when it was made for other settings or lacks an image or holds another
    version of one."""
    folder = Path(folder)
    missing = [name for name in (*PACKED_FILES, SOURCE_FILE) if not (folder / name).is_file()]
    if missing:
        raise PipelineError(
            f"{folder}: not a prebuilt image cache ({missing[0]} missing): make one with `kernel cache`, or set "
            "data.prebuilt_cache: null"
        )
    store = PackedImages(folder)
    differences = wanted.differences(store.meta)
    if differences:
        raise PipelineError(
            f"{folder}: the prebuilt image cache was made for other settings ({'; '.join(differences)}): rebuild it "
            "with `kernel cache` for this config, or set data.prebuilt_cache: null"
        )
    source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    cached_row = {name: row for row, name in enumerate(source["names"])}
    names = names_under(paths, root)
    absent = [name for name in names if name not in cached_row]
    if absent:
        raise PipelineError(
            f"{folder}: {len(absent):,} of the {len(names):,} images are not in the prebuilt cache (first: {absent[0]}): "
            "rebuild it with `kernel cache`, or set data.prebuilt_cache: null"
        )
    rows = np.array([cached_row[name] for name in names], dtype=np.int64)
    for path, name, row in zip(paths, names, rows, strict=True):
        try:
            size = Path(path).stat().st_size
        except FileNotFoundError:
            size = None
        if size != source["sizes"][row]:
            shown = "missing" if size is None else f"{size:,} bytes"
            raise PipelineError(
                f"{path}: {shown}, but the prebuilt cache {folder} was made from a {source['sizes'][row]:,}-byte "
                f"{name}: the images changed since; rebuild it with `kernel cache`, or set data.prebuilt_cache: null"
            )
    unreadable_cached = {int(row): reason for row, reason in store.meta.get("unreadable", {}).items()}
    unreadable = {i: unreadable_cached[int(row)] for i, row in enumerate(rows) if int(row) in unreadable_cached}
    return PrebuiltImages(store, rows), unreadable
