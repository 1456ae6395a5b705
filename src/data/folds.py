"""K folds balanced on every label column (iterative stratification), stored as `id,fold`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.atomic import atomic_path
from src.errors import PipelineError


def make_folds(label_matrix: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold index (0..n_splits-1) for every row, balancing each column's positives across folds."""
    n_rows = label_matrix.shape[0]
    if n_rows < n_splits:
        raise PipelineError(f"only {n_rows} training images for {n_splits} folds; lower data.n_folds")
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold  # imports sklearn: seconds, only when splitting

    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold_of_row = np.full(n_rows, -1, dtype=np.int64)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(n_rows), label_matrix)):
        fold_of_row[held_out] = fold
    return fold_of_row


def positives_per_fold(label_matrix: np.ndarray, fold_of_row: np.ndarray, n_splits: int) -> np.ndarray:
    """[n_classes, n_splits] count of positives of each class in each fold."""
    one_hot = np.eye(n_splits, dtype=np.int64)[fold_of_row]
    return label_matrix.astype(np.int64).T @ one_hot


def write_folds(path: Path, ids: list[str], fold_of_row: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame({"id": ids, "fold": fold_of_row}).to_csv(tmp, index=False)


def read_folds(path: Path, ids: list[str]) -> np.ndarray:
    """Fold of each id in `ids`; refuse a folds file made for other training data."""
    frame = pd.read_csv(path, dtype={"id": str, "fold": np.int64})
    if list(frame["id"]) != list(ids):
        raise PipelineError(
            f"{path}: its ids do not match the training labels (labels changed?); re-run the folds stage"
        )
    return frame["fold"].to_numpy()
