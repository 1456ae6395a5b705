"""Folds: iterative stratification keeps every class's positives balanced; seeded and reproducible."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from src.data.folds import make_folds, positives_per_fold, read_folds, write_folds


def long_tail_labels(n=1500, classes=40, seed=0):
    rng = np.random.default_rng(seed)
    freq = 0.4 / (1 + np.arange(classes)) ** 0.9
    return (rng.random((n, classes)) < freq).astype(np.uint8)


def spread(labels, folds, k):
    counts = positives_per_fold(labels, folds, k)
    return (counts.max(axis=1) - counts.min(axis=1)).mean()


def test_every_row_gets_one_fold_and_classes_are_balanced():
    labels = long_tail_labels()
    folds = make_folds(labels, 5, seed=1)
    assert set(np.unique(folds)) == set(range(5))
    assert np.bincount(folds).min() >= 280
    random_folds = np.zeros(len(labels), int)
    for k, (_, held) in enumerate(KFold(5, shuffle=True, random_state=1).split(labels)):
        random_folds[held] = k
    # Stratified spread of positives across folds is far tighter than a random split's.
    assert spread(labels, folds, 5) < 0.5 * spread(labels, random_folds, 5)
    counts = positives_per_fold(labels, folds, 5)
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 2


def test_seeded_and_round_trips(tmp_path):
    labels = long_tail_labels(300, 10)
    a, b = make_folds(labels, 4, seed=7), make_folds(labels, 4, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, make_folds(labels, 4, seed=8))
    ids = [f"id{i}" for i in range(300)]
    write_folds(tmp_path / "folds.csv", ids, a)
    assert np.array_equal(read_folds(tmp_path / "folds.csv", ids), a)


def test_official_and_kfold_schemes_never_share_a_folds_file(tmp_path):
    from src.artifacts import folds_file
    from src.demo import build_demo
    from src.formats import create_format

    root = build_demo("celeba", tmp_path / "celeba", n_train=30, n_test=5).root
    official = create_format("celeba", root, {"fold_mode": "official"}).folds_scheme()
    kfold = create_format("celeba", root, {"fold_mode": "kfold"}).folds_scheme()
    assert folds_file(root, 5, 42, official) != folds_file(root, 5, 42, kfold)
    assert folds_file(root, 5, 42, kfold).name == "folds-k5-seed42.csv"


def _iterstrat_folds(labels: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    folds = np.full(len(labels), -1)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held_out] = fold
    return folds


def test_the_same_folds_as_iterstrat_draw_by_draw():
    """The fast stratification keeps every folds file (and so every demo's outputs) what iterstrat made."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n_rows, n_classes, n_splits = int(rng.integers(6, 250)), int(rng.integers(2, 30)), int(rng.integers(2, 6))
        labels = (rng.random((n_rows, n_classes)) < rng.uniform(0.01, 0.5, n_classes)).astype(np.uint8)
        if seed % 4 == 0:
            labels[: n_rows // 3] = 0  # rows with no label at all take the last branch
        if seed % 7 == 0:
            labels[:, 0] = 1  # a label on every row: ties on every draw
        assert np.array_equal(make_folds(labels, n_splits, seed), _iterstrat_folds(labels, n_splits, seed)), seed
