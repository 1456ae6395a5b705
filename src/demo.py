"""Demo competitions built from real images that ship with scikit-learn, one per competition format.

The images are scikit-learn's handwritten digits (`load_digits`: 1797 real 8x8 scans, no download),
upsampled and composed into small scenes, over crops of the two shipped photos
(`load_sample_images`) where a texture helps (src/demo_drawing.py). The digits are split into a train pool
and a test pool, so test images show handwriting the model never saw. Each format's `write_demo`
(src/formats/) writes a competition folder in that competition's real on-disk layout and the test answers
apart, in the competition's submission format, so a submission is scored by reading the solution with the
same reader. This module is the generic part: the manifest, building atomically, refusing to clobber.

Everything is a pure function of the seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.errors import PipelineError
from src.formats import format_class, format_names
from src.formats.base import CompetitionFormat

MANIFEST_NAME = "demo.json"
_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class DemoPaths:
    """Where a demo competition lives: the competition folder and the held-apart test answers."""

    root: Path
    answers_root: Path
    solution_files: tuple[Path, ...]


# --------------------------------------------------------------------------------------------
# Public API


def list_formats() -> tuple[str, ...]:
    """Names accepted by `build_demo`, sorted: the registered formats that have a demo."""
    return tuple(name for name in format_names() if format_class(name).demo_solution_names)


def build_demo(
    format_name: str,
    dest_root: str | Path,
    answers_root: str | Path | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    overwrite: bool = False,
) -> DemoPaths:
    """Build the demo competition `format_name` into `dest_root`, its test answers into `answers_root`.

    `answers_root` defaults to the sibling folder `<dest_root>-answers`. Both folders are built under
    temporary names and renamed into place at the end, so a crash never leaves a half folder.
    A complete build with the same settings is left as it is (no-op) unless `overwrite` is true;
    an existing folder that is not such a build is an error unless `overwrite` is true.
    Returns the two folders and the solution files.
    """
    if format_name not in list_formats():
        raise PipelineError(f"unknown demo format {format_name!r}; choose one of: {', '.join(list_formats())}")
    fmt = format_class(format_name)
    default_train, default_test = fmt.demo_sizes
    seed = _check_count("seed", seed, minimum=0)
    n_train = _check_count("n_train", default_train if n_train is None else n_train, minimum=1)
    n_test = _check_count("n_test", default_test if n_test is None else n_test, minimum=1)
    dest_root = Path(dest_root).absolute()
    answers_root = (
        dest_root.with_name(dest_root.name + "-answers") if answers_root is None else Path(answers_root).absolute()
    )
    _check_apart(dest_root, answers_root)

    manifest = {"format": format_name, "seed": seed, "n_train": n_train, "n_test": n_test, "version": _MANIFEST_VERSION}
    paths = DemoPaths(
        root=dest_root,
        answers_root=answers_root,
        solution_files=tuple(answers_root / name for name in fmt.demo_solution_names),
    )
    if not overwrite:
        found = _read_manifest(answers_root)
        if dest_root.is_dir() and found == manifest and all(p.is_file() for p in paths.solution_files):
            return paths
        _refuse_to_clobber(dest_root, answers_root, found)

    _build_atomically(fmt, manifest, dest_root, answers_root)
    return paths


# --------------------------------------------------------------------------------------------
# Building folders atomically


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PipelineError(f"demo {name}={value!r} is not an integer >= {minimum}; pass one")
    return int(value)


def _check_apart(dest_root: Path, answers_root: Path) -> None:
    if dest_root == answers_root or dest_root in answers_root.parents or answers_root in dest_root.parents:
        raise PipelineError(
            f"demo answers folder {answers_root} overlaps the competition folder {dest_root}; "
            "put the answers beside it, not inside (the default is <dest_root>-answers)"
        )


def _read_manifest(answers_root: Path) -> dict | None:
    try:
        return json.loads((answers_root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refuse_to_clobber(dest_root: Path, answers_root: Path, found_manifest: dict | None) -> None:
    if dest_root.exists():
        raise PipelineError(
            f"{dest_root} already exists and is not a complete demo build with these settings; "
            "pass overwrite=True to replace it or choose another folder"
        )
    # Answers without a competition folder are left over from a crashed build only if they carry our manifest.
    if answers_root.exists() and found_manifest is None:
        raise PipelineError(
            f"{answers_root} already exists and is not a demo answers folder; "
            "pass overwrite=True to replace it or choose another answers_root"
        )


def _build_atomically(fmt: type[CompetitionFormat], manifest: dict, dest_root: Path, answers_root: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        tmp_dest = _temp_dir_beside(dest_root, "tmp", cleanup)
        tmp_answers = _temp_dir_beside(answers_root, "tmp", cleanup)
        fmt.write_demo(
            tmp_dest, tmp_answers, seed=manifest["seed"], n_train=manifest["n_train"], n_test=manifest["n_test"]
        )
        (tmp_answers / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        # The competition folder goes away first and comes back last: whenever it exists, it is complete.
        _move_aside(dest_root, cleanup)
        _move_aside(answers_root, cleanup)
        tmp_answers.rename(answers_root)
        tmp_dest.rename(dest_root)


def _temp_dir_beside(final: Path, tag: str, cleanup: contextlib.ExitStack) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def _move_aside(path: Path, cleanup: contextlib.ExitStack) -> None:
    if not path.exists():
        return
    trash = _temp_dir_beside(path, "old", cleanup)
    path.rename(trash / path.name)
