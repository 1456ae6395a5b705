"""Stage `download`: a competition's files from Kaggle into `<dest_root>/<slug>/`, unzipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from src.errors import PipelineError
from src.kaggle.local import cli


def run(
    exp=None,
    competition: str | None = None,
    dest: str | Path = "input",
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """The stage: the competition named by --competition, else the config's."""
    slug = competition or (exp.config.competition if exp is not None else None)
    if not slug:
        raise PipelineError("download: name the competition: --competition <slug> (or --config with competition: set)")
    return fetch(slug, dest, log)


def fetch(slug: str, dest_root: str | Path = "input", log: Callable[[str], None] = print) -> list[Path]:
    """`kaggle competitions download <slug>` into `<dest_root>/<slug>/` and unzip; return the files written."""
    cli._check_slug(slug)  # before it becomes part of a path
    dest = Path(dest_root) / slug
    log(f"download {slug} -> {dest}")
    files = cli.download_competition(slug, dest)
    log(f"downloaded and unzipped {len(files)} file(s) into {dest}")
    return files
