"""Stage `download`: a competition's files from Kaggle into `<dest_root>/<slug>/`, unzipped."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from src.kaggle import cli


def run(slug: str, dest_root: str | Path = "input", log: Callable[[str], None] = print) -> list[Path]:
    """`kaggle competitions download <slug>` into `<dest_root>/<slug>/` and unzip; return the files written."""
    cli._check_slug(slug)  # before it becomes part of a path
    dest = Path(dest_root) / slug
    log(f"download {slug} -> {dest}")
    files = cli.download_competition(slug, dest)
    log(f"downloaded and unzipped {len(files)} file(s) into {dest}")
    return files
