"""What a kernel does before it imports this project: install the shipped wheels whose version differs, offline.

Standard library only. The kernel script loads this file by its path, not as part of the `src`
package, so nothing of the project and none of the packages the wheels replace is imported before
they are installed. It also holds the search for an attached dataset by its files' sha256, which
the inference side uses for the weights dataset.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

# Where a Kaggle machine mounts data, relative to the input root (newer layouts nest by kind).
_SEARCH_DEPTH = 3


class AttachedError(Exception):
    """An input the kernel needs is missing or is not the version it was built with (a one-line message)."""


def install_wheels(wheels: dict, input_root: Path, log: Callable[[str], None] = print) -> list[str]:
    """Install (pip, offline, no dependencies) each shipped wheel whose distribution is missing here or at
    another version; return one 'name version (was ...)' per wheel installed.

    `wheels` is what the builder embedded: {"dataset_ref": "owner/slug", "files": {name: {"version", "file",
    "sha256"}}}. Only the wheels needed are looked for, so a kernel whose image already matches runs without
    the wheels dataset.
    """
    needed = {}
    for name, wheel in sorted(wheels.get("files", {}).items()):
        here = installed_version(name)
        if here != wheel["version"]:
            needed[name] = (here, wheel)
    if not needed:
        return []
    folder = find_attached(
        Path(input_root),
        wheels["dataset_ref"],
        {wheel["file"]: wheel["sha256"] for _, wheel in needed.values()},
        "wheels dataset",
    )
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--quiet",
        *(str(folder / wheel["file"]) for _, wheel in needed.values()),
    ]
    # No pip configuration of the machine (an index, constraints) may change what gets installed.
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1")
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = " | ".join(done.stdout.decode("utf-8", "replace").strip().splitlines()[-3:])
        raise AttachedError(
            f"pip could not install the shipped wheels from {folder} ({tail[-300:]}): "
            "rebuild the kernel with `python -m src.stage kernel build` and push it again"
        )
    importlib.invalidate_caches()
    installed = [f"{name} {wheel['version']} (was {here or 'not installed'})" for name, (here, wheel) in needed.items()]
    log("installed from the wheels dataset (offline): " + ", ".join(installed))
    return installed


def installed_version(name: str) -> str | None:
    """The version of distribution `name` this interpreter would import (None when it has none)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def find_attached(input_root: Path, dataset_ref: str, files: dict[str, str], what: str) -> Path:
    """The attached dataset's folder holding every file of `files` (name -> sha256) with those sums:
    input/<slug>, input/datasets/<owner>/<slug>, input/<owner>/<slug>, else any folder a few levels down."""
    owner, slug = dataset_ref.split("/")
    preferred = [input_root / slug, input_root / "datasets" / owner / slug, input_root / owner / slug]
    wrong = []
    for candidate in itertools.chain(preferred, (c for c in folders(input_root) if c not in preferred)):
        if not all((candidate / name).is_file() for name in files):
            continue
        differing = [name for name, digest in sorted(files.items()) if file_sha256(candidate / name) != digest]
        if not differing:
            return candidate
        wrong.append(f"{candidate} ({', '.join(differing)} differ)")
    if wrong:
        raise AttachedError(
            f"the attached {what} is not the one this kernel was built with: {'; '.join(wrong)}: "
            f"Kaggle attaches a new version of {dataset_ref} only once it has been processed; "
            "run the kernel again later, or push again with `python -m src.stage kernel push`"
        )
    raise AttachedError(
        f"{input_root}: {what} {dataset_ref} is not attached (found: {listing(input_root)}): "
        "add it to dataset_sources in kernel-metadata.json"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by its path relative to it (posix), in sorted order."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def changed_files(folder: Path, digests: dict[str, str]) -> list[str]:
    """The paths in `digests` (relative to `folder`, sorted) whose file is gone or no longer has that sha256."""
    return [
        rel
        for rel, digest in sorted(digests.items())
        if not (folder / rel).is_file() or file_sha256(folder / rel) != digest
    ]


def folders(root: Path) -> Iterator[Path]:
    """Folders under `root`, breadth first, up to _SEARCH_DEPTH levels down (only walked when needed)."""
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        level = sorted(child for folder in level if folder.is_dir() for child in folder.iterdir() if child.is_dir())
        yield from level


def listing(root: Path) -> str:
    """The first names in `root`, for messages."""
    if not root.is_dir():
        return "no such folder"
    names = sorted(child.name for child in root.iterdir())
    return ", ".join(names[:20]) or "nothing"
