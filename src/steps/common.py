"""Helpers the stages share: decoded images for a table, OOF artifact I/O, small tables."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from src.atomic import atomic_path
from src.data.cache import load_or_build
from src.errors import PipelineError
from src.experiment import Experiment
from src.formats.base import ImageTable


def decoded_images(exp: Experiment, table: ImageTable, quiet: bool, log: Callable[[str], None], label: str,
                   skip_unreadable: bool | None = None):
    """(images [n, S, S, 3] uint8, boolean mask of readable rows) via the on-disk cache."""
    skip = exp.config.data.skip_unreadable if skip_unreadable is None else skip_unreadable
    cache = load_or_build(table.paths, exp.config.data.image_size, exp.cache_dir, skip, quiet, label)
    readable = np.ones(len(table), dtype=bool)
    for row, reason in sorted(cache.unreadable.items()):
        readable[row] = False
        log(f"skipped unreadable image: {reason}")
    if cache.unreadable:
        log(f"skipped {len(cache.unreadable)} unreadable image(s) of {len(table)} (data.skip_unreadable=true)")
    return cache.images, readable


def save_oof(path: Path, ids: list[str], fold_of_row: np.ndarray, probs: dict[str, np.ndarray],
             targets: dict[str, np.ndarray]) -> None:
    """OOF probabilities as float16 with ids, folds and targets, in one compressed .npz (atomic)."""
    arrays = {"ids": np.asarray(ids, dtype=str), "fold": fold_of_row.astype(np.int16)}
    arrays.update({f"probs__{name}": values.astype(np.float16) for name, values in probs.items()})
    arrays.update({f"target__{name}": values for name, values in targets.items()})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_oof(path: Path):
    """(ids, fold_of_row, probs per head as float32, targets per head)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(value) for value in data["ids"]]
            fold = data["fold"].astype(np.int64)
            probs = {key[7:]: data[key].astype(np.float32) for key in data.files if key.startswith("probs__")}
            targets = {key[8:]: data[key] for key in data.files if key.startswith("target__")}
    except (OSError, ValueError, KeyError) as exc:
        raise PipelineError(f"{path}: unreadable OOF file ({exc}); re-run the oof stage") from None
    return ids, fold, probs, targets


def table_text(rows: list[dict], float_format: str = "{:.4f}") -> str:
    """A plain aligned text table."""
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, float_format=lambda value: float_format.format(value))


def score_rows(fmt, fold_of_row: np.ndarray, probs: dict[str, np.ndarray], targets: dict[str, np.ndarray],
               rules_by_name: dict) -> list[dict]:
    """Main metric per fold and overall, one column per set of decision rules (name -> DecisionRules or None)."""
    rows = []
    folds = sorted(int(k) for k in np.unique(fold_of_row))
    for label, mask in [(f"fold {k}", fold_of_row == k) for k in folds] + [("overall", np.ones(len(fold_of_row), bool))]:
        row = {"rows": label, "images": int(mask.sum())}
        for name, rules in rules_by_name.items():
            part_probs = {head: values[mask] for head, values in probs.items()}
            part_targets = {head: values[mask] for head, values in targets.items()}
            row[name] = fmt.evaluate(part_targets, part_probs, rules)[fmt.main_metric]
        rows.append(row)
    return rows
