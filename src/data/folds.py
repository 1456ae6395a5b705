"""K folds balanced on every label column (iterative stratification), stored as `id,fold`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.atomic import atomic_path
from src.errors import PipelineError


def make_folds(label_matrix: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold index (0..n_splits-1) for every row, balancing each column's positives across folds: iterative
    stratification (Sechidis et al. 2011), the same folds as iterstrat's MultilabelStratifiedKFold(shuffle=True,
    random_state=seed) draw by draw (tested), in O(rows x labels per row) instead of its O(rows x classes^2)
    (iMet's 109,237 x 1,103: seconds instead of minutes)."""
    n_rows = label_matrix.shape[0]
    if n_rows < n_splits:
        raise PipelineError(f"only {n_rows} training images for {n_splits} folds; lower data.n_folds")
    rng = np.random.RandomState(seed)
    order = np.arange(n_rows)
    rng.shuffle(order)
    labels = np.asarray(label_matrix, dtype=bool)[order]
    fold_of_shuffled = _iterative_stratification(labels, n_splits, rng)
    fold_of_row = np.empty(n_rows, dtype=np.int64)
    fold_of_row[order] = fold_of_shuffled
    return fold_of_row


def _iterative_stratification(labels: np.ndarray, n_splits: int, rng: np.random.RandomState) -> np.ndarray:
    """Folds of the rows of the bool matrix `labels`: the rarest label left first, each of its rows to the fold
    that most wants that label (then the most rows; ties drawn from `rng`); rows without labels fill the folds."""
    n_rows = labels.shape[0]
    share = np.full(n_splits, 1 / n_splits)
    wanted_rows = share * n_rows  # float, as the reference: its ties and draws depend on these exact values
    wanted_labels = np.outer(share, labels.sum(axis=0))
    left = labels.sum(axis=0).astype(np.int64)  # unassigned rows per label, kept up to date row by row
    columns_of_row = np.split(np.nonzero(labels)[1], np.cumsum(np.count_nonzero(labels, axis=1))[:-1])
    rows_of_label = np.split(np.nonzero(labels.T)[1], np.cumsum(left)[:-1])
    unassigned = np.ones(n_rows, dtype=bool)
    folds = np.zeros(n_rows, dtype=np.int64)
    while left.any():
        present = left[left > 0]
        rarest = np.flatnonzero(left == present.min())
        label = rarest[rng.choice(len(rarest))] if len(rarest) > 1 else rarest[0]
        rows = rows_of_label[label][unassigned[rows_of_label[label]]]
        for row in rows:
            fold = _pick_fold(wanted_labels[:, label], wanted_rows, rng)
            folds[row] = fold
            unassigned[row] = False
            wanted_labels[fold, columns_of_row[row]] -= 1
            wanted_rows[fold] -= 1
            left[columns_of_row[row]] -= 1
    for row in np.flatnonzero(unassigned):  # rows with no label at all
        most = np.flatnonzero(wanted_rows == wanted_rows.max())
        fold = most[rng.choice(len(most))] if len(most) > 1 else most[0]
        folds[row] = fold
        wanted_rows[fold] -= 1
    return folds


def _pick_fold(wanted_label: np.ndarray, wanted_rows: np.ndarray, rng: np.random.RandomState) -> int:
    """The fold that wants this label most, then the most rows; a remaining tie is drawn."""
    best = np.flatnonzero(wanted_label == wanted_label.max())
    if len(best) == 1:
        return int(best[0])
    most = np.flatnonzero(wanted_rows[best] == wanted_rows[best].max())
    return int(best[most[rng.choice(len(most))]] if len(most) > 1 else best[most[0]])


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
