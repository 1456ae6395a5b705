"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; on success fsync it and rename it into place.

    On any exception the temporary file is removed and `final_path` is left untouched.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, final_path)
        _fsync_dir(final_path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(final_path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, `\\n` line ends) to `final_path` atomically."""
    with atomic_path(final_path) as tmp_path:
        tmp_path.write_text(text, encoding="utf-8", newline="\n")


def write_bytes(final_path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `final_path` atomically."""
    with atomic_path(final_path) as tmp_path:
        tmp_path.write_bytes(data)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
