"""One confinement rule for every file that comes from elsewhere: Kaggle competition zips, kernel outputs and pulled
runs, hub weights.

A download goes into a fresh staging folder; a name is accepted only when it is a plain relative name that stays
inside its folder (`is_safe_name`), only regular files (no link, device or pipe) and only the files expected are
accepted, hashes are compared where a manifest or the server gives one, and only then are the files moved into
place with renames. When a check fails the staging folder is kept, and its path is named in the one-line error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path

from src.errors import PipelineError

# A relative name whose every part starts with neither "." nor a separator (so no "..", no "." and no hidden file)
# and holds no backslash or control character (NUL included); "/" separates parts, none of them empty. The CLI's
# --file-pattern takes this as is, so `kaggle kernels output` never writes a name outside its folder.
SAFE_NAME = r"\A[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*(/[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*)*\Z"
_MAX_PART_BYTES = 255  # a longer file name cannot be created (ENAMETOOLONG)
# A zip member that inflates more than this many times (and past _BOMB_FLOOR) is a decompression bomb, not data.
_MAX_RATIO = 500
_BOMB_FLOOR = 64 << 20
# More members than any image competition ships (Google Landmarks v2: about 4.1 M images) is a hostile listing, not
# data: its central directory alone would take gigabytes of memory to read, so the count is checked before that.
MAX_ZIP_MEMBERS = 10_000_000


def is_safe_name(name: object) -> bool:
    """Whether `name` (a '/'-separated relative name) stays inside whatever folder it is joined to."""
    if not isinstance(name, str) or re.search(SAFE_NAME, name) is None:
        return False
    try:
        return all(len(part.encode("utf-8")) <= _MAX_PART_BYTES for part in name.split("/"))
    except UnicodeEncodeError:  # a lone surrogate: no file name on this system
        return False


def plain_files(folder: Path, what: str) -> list[str]:
    """The '/'-separated names of every file under `folder`, checked: a link, a device or pipe, or a name outside
    the rule anywhere under it is a one-line PipelineError naming it (`what` says where the files came from)."""
    names = []
    for root, dirs, files in os.walk(folder):  # os.walk never follows a link to a folder
        for entry in sorted(dirs + files):
            path = Path(root) / entry
            mode = path.lstat().st_mode
            relative = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PipelineError(f"{path}: not a plain file ({what} made a link or a device): nothing used")
            if not is_safe_name(relative):
                raise PipelineError(f"{path}: {relative!r} is not a plain relative name ({what}): nothing used")
            if stat.S_ISREG(mode):
                names.append(relative)
    return sorted(names)


def expected_files(folder: Path, expected: Collection[str], listed_in: str) -> list[str]:
    """`plain_files`, refusing any file not in `expected` (what `listed_in` names) and any expected one missing."""
    names = plain_files(folder, f"the download {listed_in} lists")
    extra = sorted(set(names) - set(expected))
    if extra:
        raise PipelineError(f"{folder / extra[0]}: not listed in {listed_in}: nothing used")
    missing = sorted(set(expected) - set(names))
    if missing:
        raise PipelineError(f"{folder / missing[0]}: listed in {listed_in} but not downloaded: nothing used; rerun")
    return names


@contextlib.contextmanager
def staging(parent: Path, prefix: str, suffix: str = "") -> Iterator[Path]:
    """A fresh, empty folder in `parent` for one download; removed afterwards, except when the block raises a
    PipelineError with something in it: then it is kept and the error names it (one line still)."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    except OSError as exc:
        raise PipelineError(f"{parent}: cannot write ({exc.strerror or exc}); make it writable or free space") from None
    keep = False
    try:
        yield folder
    except PipelineError as exc:
        if folder.is_dir() and any(folder.iterdir()):
            keep = True
            raise PipelineError(f"{exc}; the download stays in {folder} for a look") from None
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def move_files(staging_dir: Path, names: list[str], dest: Path) -> list[Path]:
    """Rename each checked file from `staging_dir` to the same name under `dest` (one rename each: a reader sees the
    old file or the new one); return the new paths."""
    moved = []
    for name in names:
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging_dir / name, target)
        except OSError as exc:
            raise PipelineError(f"{target}: cannot move the download into place ({exc.strerror or exc})") from None
        moved.append(target)
    return moved


def extract_zip(archive: Path, into: Path) -> list[str]:
    """Unzip `archive` into the empty folder `into` after checking every member: a plain relative name (no
    absolute path, no `..`, no backslash: no zip-slip), a regular file or folder (no link), no name twice, and
    sizes that fit (no decompression bomb, no more than the free disk space); return the files' names. Hidden
    members (`.DS_Store`, `__MACOSX/._x`: any part starting with a dot, otherwise plain) are left out."""
    try:
        _check_member_count(archive)
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not _hidden(m.filename.removesuffix("/"))]
            _check_members(archive, members, into)
            files = [m for m in members if not m.is_dir()]
            for member in files:
                target = into / member.filename
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zipped.open(member) as source, open(target, "xb") as sink:  # "x": never an existing name
                        shutil.copyfileobj(source, sink, 1 << 20)
                except OSError as exc:
                    raise PipelineError(
                        f"{archive}: member {member.filename!r} cannot be written ({exc.strerror or exc}; a file and "
                        "a folder of one name?): refusing to unzip it; inspect the archive by hand"
                    ) from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise PipelineError(f"{archive}: not a valid zip ({exc}): rerun the download") from None
    return sorted(m.filename for m in files)


def _check_member_count(archive: Path) -> None:
    """Refuse, from the zip's end record alone, an archive declaring more than MAX_ZIP_MEMBERS members."""
    with open(archive, "rb") as handle:
        end = zipfile._EndRecData(handle)  # the stdlib's own end-record reader (zip64 included), before the listing
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    declared = end[zipfile._ECD_ENTRIES_TOTAL]
    if declared > MAX_ZIP_MEMBERS:
        raise PipelineError(
            f"{archive}: declares {declared:,} members, more than any image competition ships ({MAX_ZIP_MEMBERS:,}): "
            "refusing to read its listing; inspect the archive by hand"
        )


def _check_inodes(archive: Path, count: int, into: Path) -> None:
    """Refuse a zip with more members than the disk has free inodes (a file system that reports none is skipped)."""
    disk = os.statvfs(into)
    if disk.f_files and count > disk.f_favail:
        raise PipelineError(
            f"{archive}: holds {count:,} members but {into}'s disk has {disk.f_favail:,} free inodes (files): "
            "unzip it on another disk (point the download elsewhere), or free files there"
        )


def _hidden(name: str) -> bool:
    """Whether `name` is plain but for a part that starts with a dot (a hidden file, not a way out)."""
    parts = name.split("/")
    return (
        any(p.startswith(".") for p in parts)
        and all(p not in ("", ".", "..") for p in parts)
        and (is_safe_name("/".join(f"h{p}" for p in parts)))
    )


def _check_members(archive: Path, members: list[zipfile.ZipInfo], into: Path) -> None:
    seen: set[str] = set()
    total = 0
    for member in members:
        name = member.filename.removesuffix("/") if member.is_dir() else member.filename
        kind = stat.S_IFMT(member.external_attr >> 16)
        if not is_safe_name(name) or kind not in (0, stat.S_IFREG, stat.S_IFDIR) or name in seen:
            why = "a link or a device" if kind not in (0, stat.S_IFREG, stat.S_IFDIR) else "outside the folder"
            why = "a second member of that name" if name in seen and is_safe_name(name) else why
            raise PipelineError(
                f"{archive}: member {member.filename!r} is {why}: refusing to unzip it; inspect the archive by hand"
            )
        seen.add(name)
        if member.file_size > _BOMB_FLOOR and member.file_size > _MAX_RATIO * max(member.compress_size, 1):
            raise PipelineError(
                f"{archive}: member {member.filename!r} claims {member.file_size} bytes from {member.compress_size} "
                "(a decompression bomb): refusing to unzip it"
            )
        total += member.file_size
    _check_inodes(archive, len(members), into)
    free = shutil.disk_usage(into).free
    if total > free:
        raise PipelineError(
            f"{archive}: unzips to {total / 1e9:.1f} GB but {into} has {free / 1e9:.1f} GB free: free space, rerun"
        )
