"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from src.errors import PipelineError
from src.faults import crash_point


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; on success fsync it and rename it into place.

    On any exception the temporary file is removed and `final_path` is left untouched.
    """
    final_path = Path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in final_path.parent.glob(f".{glob.escape(final_path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a writer that was killed; each artifact has one writer
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent)
    except OSError as exc:
        raise _unwritable(final_path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        try:
            yield tmp_path
            crash_point("atomic_write")
            os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes 0600; artifacts get the usual umask-based mode
            with open(tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_path, final_path)
        except OSError as exc:
            raise _unwritable(final_path, exc) from None
        _fsync_dir(final_path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _unwritable(path: Path, exc: OSError) -> PipelineError:
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
    }.get(exc.errno, exc.strerror or str(exc))
    return PipelineError(
        f"{path}: cannot write ({reason}); free space or point output_dir at a writable folder "
        "(the previous file, if any, is intact)"
    )


def write_text(final_path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, `\\n` line ends) to `final_path` atomically."""
    with atomic_path(final_path) as tmp_path:
        tmp_path.write_text(text, encoding="utf-8", newline="\n")


def write_validated(texts: dict[Path, str], validate: Callable[[Path, Path], object]) -> list[Path]:
    """Write each text beside its final path, call `validate(temp_path, final_path)` on every one, then
    move them all into place and return the final paths; if any check fails, no file is touched."""
    with contextlib.ExitStack() as stack:
        temps = {final: stack.enter_context(atomic_path(final)) for final in texts}
        for final, text in texts.items():
            temps[final].write_text(text, encoding="utf-8", newline="\n")
        for final, temp in temps.items():
            validate(temp, final)
    return list(texts)


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


@contextlib.contextmanager
def atomic_folder(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `final_dir`; on success it replaces `final_dir` whole (the old one is
    renamed away, the new one renamed in, then the old one deleted). On any exception the staging folder is removed
    and `final_dir` is left as it was: a refused or crashed rebuild never leaves half its files beside the old."""
    final_dir = Path(final_dir)
    staging = final_dir.with_name(f".{final_dir.name}.partial")
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists() and not final_dir.exists():  # killed between its two renames: the old folder comes back
        os.replace(old, final_dir)
    for leftover in (staging, old):  # a killed rebuild's
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(staging, final_dir)
    shutil.rmtree(old, ignore_errors=True)
