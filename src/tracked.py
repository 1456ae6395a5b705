"""The code that leaves the machine (course zips, kernel pushes) is the code git tracks.

A file under `src/` that git neither tracks nor ignores (a scratch module, a pasted credential) would otherwise ship
because the code is copied from disk: inside a git checkout such a file is refused, by name. Outside one (an unzipped
course folder, a copy without .git) there is nothing to compare with: the folder ships as it is, with a note.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from src.errors import PipelineError

logger = logging.getLogger(__name__)
_GIT_TIMEOUT_S = 60


def refuse_untracked(folder: Path) -> None:
    """Raise a one-line PipelineError naming the first file under `folder` that git neither tracks nor ignores, when
    `folder` is tracked in a git checkout; otherwise (no git, no checkout, an untracked folder) log a note."""
    folder = Path(folder).resolve()
    tracked = _git(folder, "ls-files", "-z", "--", ".")
    if not tracked:
        logger.warning("note: %s is not tracked in a git checkout; shipping its files as they are on disk", folder)
        return
    untracked = sorted(_git(folder, "ls-files", "-z", "--others", "--exclude-standard", "--", "."))
    if untracked:
        raise PipelineError(
            f"{folder / untracked[0]}: not tracked by git, so it is not shipped (the code that leaves this machine is "
            f"what git tracks{f'; {len(untracked) - 1} more' if len(untracked) > 1 else ''}): `git add` it, or "
            "delete it or list it in .gitignore, then rerun"
        )


def _git(folder: Path, *args: str) -> list[str]:
    """The NUL-separated names `git <args>` prints in `folder`; [] when git is missing or `folder` is no checkout."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, timeout=_GIT_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
