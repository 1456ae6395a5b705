"""Stage `folds`: iterative-stratified K folds over every label column, written to the competition folder."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from src.artifacts import Experiment
from src.data.folds import positives_per_fold, write_folds
from src.steps.common import table_text


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print, rarest: int = 8) -> None:
    data = exp.config.data
    table = exp.fmt.read_train()
    matrix = exp.fmt.stratify_matrix(table)
    log(
        f"folds: {len(table)} training images, {matrix.shape[1]} label columns -> {data.n_folds} folds "
        f"(MultilabelStratifiedKFold, shuffle, seed {data.fold_seed}) -> {exp.folds_path}"
    )
    fold_of_row = exp.fmt.assign_folds(table, data.n_folds, data.fold_seed)
    write_folds(exp.folds_path, table.ids, fold_of_row)
    names = [f"{head.name}:{name}" for head in exp.fmt.heads() for name in head.class_names]
    held_out = fold_of_row >= 0
    n_folds = int(fold_of_row.max()) + 1
    counts = positives_per_fold(matrix[held_out], fold_of_row[held_out], n_folds)
    totals = counts.sum(axis=1)
    order = [c for c in np.argsort(totals, kind="stable") if totals[c] > 0][:rarest]
    rows = [
        {"class": names[c], "positives": int(totals[c]), **{f"fold {k}": int(counts[c, k]) for k in range(n_folds)}}
        for c in order
    ]
    sizes = np.bincount(fold_of_row[held_out], minlength=n_folds)
    log("images per fold: " + " ".join(str(int(n)) for n in sizes))
    log(f"positives per fold, rarest {len(rows)} classes:\n" + table_text(rows))
    log(f"wrote {exp.folds_path}")
