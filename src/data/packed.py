"""A cache folder of images of any size, one after another in `images.bin` with an offset index: encoded once (PNG,
JPEG or WebP) and decoded per image in the loader workers when the raw cache would not fit the disk, or stored raw
(uint8 pixels, read in place) for the aspect-keeping `short_side` policy whose images differ in shape.

The folder is self-contained (`images.bin`, `index.npy` [n, 4] int64 of offset, length, height, width,
`names.txt` (each row's image file, relative to their common folder) and `meta.json`), so it can be copied or uploaded as a dataset as is. It is built chunk by chunk in `<name>.partial/`:
after each chunk the bytes and index rows are flushed and `progress.json` is replaced atomically, so a build killed
(or stopped by a session limit) resumes from its last completed chunk; the finished folder is renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src.atomic import write_text
from src.errors import PipelineError
from src.faults import crash_point

INDEX_COLUMNS = 4  # offset, length, height, width
CODECS = ("raw", "png", "jpeg", "webp")


def encode(image: np.ndarray, codec: str, quality: int) -> bytes:
    """One RGB uint8 image as `codec` bytes (raw: its pixels)."""
    if codec == "raw":
        return np.ascontiguousarray(image).tobytes()
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 3],  # 3: most of level 9's size at a fraction of its time
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[codec]
    ok, data = cv2.imencode(f".{codec}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise PipelineError(f"cannot encode an image as {codec}; set data.cache_format: png")
    return data.tobytes()


class PackedImages:
    """`store[row]` is one cached image (H x W x 3 uint8); rows that could not be read are black size x size."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.index = np.load(self.folder / "index.npy")
        self.codec, self.size = self.meta["codec"], self.meta["size"]
        self._bytes: np.ndarray | None = None  # mapped on first read (a spawned worker maps its own: __getstate__)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple:
        return (len(self), None, None, 3)

    def __getitem__(self, row) -> np.ndarray:
        if self._bytes is None:
            bin_path = self.folder / "images.bin"
            size = bin_path.stat().st_size
            self._bytes = np.memmap(bin_path, np.uint8, "r") if size else np.zeros(0, np.uint8)
        offset, length, height, width = (int(v) for v in self.index[int(row)])
        if length == 0:
            return np.zeros((self.size, self.size, 3), dtype=np.uint8)
        data = self._bytes[offset : offset + length]
        if self.codec == "raw":
            return np.asarray(data).reshape(height, width, 3)
        image = cv2.imdecode(np.asarray(data), cv2.IMREAD_COLOR)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def __getstate__(self) -> dict:
        return {"folder": self.folder}  # a spawned worker reopens the folder instead of pickling the bytes

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])


def build_packed(
    folder: Path,
    count: int,
    source: Callable[[int], np.ndarray],
    codec: str,
    quality: int,
    meta: dict,
    progress_label: str,
    quiet: bool,
    names: list[str] | None = None,
) -> dict[int, str]:
    """Build the packed folder of `count` images (`source(row)`: the cached image, PipelineError if unreadable),
    resuming a killed build's `<folder>.partial`; return {row: reason} of the unreadable rows. `names` (each row's
    file, relative to the image folder) go into `names.txt`, so a copied folder still says which image is which."""
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    progress = _resume(partial, {**meta, "codec": codec, "quality": quality, "count": count})
    chunk = max(64, min(4096, count // 100 or 1))
    workers = max(1, min(8, os.cpu_count() or 1))

    def one(row: int) -> tuple[bytes, int, int, str | None]:
        try:
            image = source(row)
        except PipelineError as exc:
            return b"", 0, 0, str(exc)
        return encode(image, codec, quality), image.shape[0], image.shape[1], None

    bar = tqdm(total=count, initial=progress["rows"], desc=progress_label, disable=quiet, leave=False)
    with ThreadPoolExecutor(workers) as pool, bar:
        while progress["rows"] < count:
            rows = range(progress["rows"], min(count, progress["rows"] + chunk))
            _append_chunk(partial, progress, list(pool.map(one, rows)))
            bar.update(len(rows))
            crash_point("cache_chunk")
    np.save(partial / "index.npy", np.fromfile(partial / "index.bin", dtype=np.int64).reshape(-1, INDEX_COLUMNS))
    (partial / "index.bin").unlink()
    if names is not None:
        write_text(partial / "names.txt", "".join(f"{name}\n" for name in names))
    write_text(partial / "meta.json", json.dumps({**progress["meta"], "unreadable": progress["unreadable"]}))
    (partial / "progress.json").unlink()
    os.replace(partial, folder)
    return {int(row): reason for row, reason in progress["unreadable"].items()}


def _resume(partial: Path, meta: dict) -> dict:
    """The progress of the build in `partial` (started afresh if it is for other settings), its files cut back to
    the last completed chunk (a chunk half-written when the process died is dropped and redone)."""
    progress_path = partial / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else None
    if progress is None or progress.get("meta") != meta:
        progress = {"rows": 0, "bytes": 0, "unreadable": {}, "meta": meta}
    _cut_back(partial, progress)
    return progress


def _append_chunk(partial: Path, progress: dict, encoded: list[tuple[bytes, int, int, str | None]]) -> None:
    """Append one chunk's bytes and index rows (file writes: a full disk is an OSError here, never a SIGBUS from a
    memory map), then record it in progress.json; on a full disk cut the files back and stop with one line."""
    index = np.zeros((len(encoded), INDEX_COLUMNS), dtype=np.int64)
    offset, unreadable = progress["bytes"], {}
    for i, (data, height, width, reason) in enumerate(encoded):
        index[i] = (offset, len(data), height, width)
        offset += len(data)
        if reason is not None:
            unreadable[str(progress["rows"] + i)] = reason
    done = {**progress, "rows": progress["rows"] + len(encoded), "bytes": offset}
    done["unreadable"] = {**progress["unreadable"], **unreadable}
    try:
        _append(partial / "images.bin", [data for data, *_ in encoded])
        _append(partial / "index.bin", [index.tobytes()])
        write_text(partial / "progress.json", json.dumps(done))
    except (OSError, PipelineError) as exc:
        _cut_back(partial, progress)  # back to the last completed chunk: nothing half-written stays
        if getattr(exc, "errno", None) != errno.ENOSPC and "no space left" not in str(exc):
            raise
        raise PipelineError(
            f"{partial}: the disk filled up while building the image cache ({progress['rows']:,} of "
            f"{progress['meta']['count']:,} images kept, nothing half-written); free space and re-run to continue, "
            "or lower data.cache_quality / data.cache_size, or point output_dir at a larger disk"
        ) from None
    progress.update(done)


def _append(path: Path, parts: list[bytes]) -> None:
    with open(path, "ab") as handle:
        for part in parts:
            handle.write(part)
        handle.flush()
        os.fsync(handle.fileno())


def _cut_back(partial: Path, progress: dict) -> None:
    for name, length in (("images.bin", progress["bytes"]), ("index.bin", progress["rows"] * INDEX_COLUMNS * 8)):
        with open(partial / name, "ab") as handle:
            handle.truncate(length)


def remove_partial(folder: Path) -> None:
    shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)
