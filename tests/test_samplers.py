"""train.sampler: the weightings by hand, rare classes drawn more often, draws a function of (seed, epoch) shared
out across DDP ranks, and a weighted run that resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_config
from test_train_resume import _assert_resume_is_exact

from src.data.samplers import EpochWeightedSampler, class_counts, image_weights
from src.stage import main

# 10 images, 3 classes: class 0 on 8 images, class 1 on 2, class 2 on 1; image 9 has no label
MULTI = np.array([[1, 0, 0]] * 7 + [[1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=np.uint8)


def expected_draws(weights: np.ndarray, targets: np.ndarray, samples: int) -> np.ndarray:
    """Expected images per class in an epoch of `samples` weighted draws (a multilabel head's 0/1 rows)."""
    share = np.asarray(weights, dtype=np.float64) / math.fsum(weights)
    return (share[:, None] * np.asarray(targets, dtype=np.float64)).sum(axis=0) * samples


def test_weights_by_hand():
    assert class_counts(MULTI).tolist() == [8, 2, 1]
    repeat = image_weights(MULTI, "repeat_factor", threshold=0.4)  # frequencies 0.8, 0.2, 0.1
    assert repeat.tolist() == pytest.approx([1.0] * 7 + [math.sqrt(2), 2.0, 1.0])
    log = image_weights(MULTI, "log")
    assert log.tolist() == pytest.approx([1.0] * 7 + [1 + math.log(4), 1 + math.log(8), 1.0])
    balanced = image_weights(MULTI, "class_balanced")
    assert balanced.tolist() == pytest.approx([1 / 8] * 7 + [1 / 2, 1.0, 1 / 8])
    single = np.array([0, 0, 0, 1])  # a softmax head: the class is the label
    assert image_weights(single, "class_balanced").tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="unknown weighting"):
        image_weights(single, "sqrt")


def test_rare_classes_are_drawn_more_often_and_draws_follow_seed_and_epoch():
    weights = image_weights(MULTI, "class_balanced")
    sampler = EpochWeightedSampler(weights, 20_000, seed=3)
    drawn = np.bincount(list(sampler), minlength=10)
    per_class = (drawn[:, None] * MULTI).sum(axis=0)
    assert per_class[2] > 3 * class_counts(MULTI)[2] / 10 * 20_000  # far above its uniform share
    np.testing.assert_allclose(per_class, expected_draws(weights, MULTI, 20_000), rtol=0.05)
    assert list(sampler) == list(sampler)  # the same epoch draws the same
    sampler.set_epoch(1)
    assert list(sampler) != list(EpochWeightedSampler(weights, 20_000, seed=3))
    ranks = [EpochWeightedSampler(weights, 101, seed=3, rank=rank, world_size=2) for rank in (0, 1)]
    assert [len(rank) for rank in ranks] == [50, 50]
    whole = list(EpochWeightedSampler(weights, 100, seed=3))
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(whole)  # the ranks share out one draw


def test_a_weighted_run_trains_on_its_draws_and_resumes_exactly(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    sampler = {"name": "repeat_factor", "threshold": 0.3, "samples_per_epoch": 64}
    config = tiny_config(tmp_path / "one", "imet", root, {"train": {"epochs": 1, "sampler": sampler}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    epochs = pd.read_csv(tmp_path / "one" / "out" / "oof" / "tiny" / "fold-0" / "epochs.csv")
    assert epochs["images_per_s"].iloc[0] > 0 and len(epochs) == 1
    _assert_resume_is_exact(root, tmp_path / "resume", {"train": {"epochs": 3, "sampler": sampler}})


def test_an_epoch_has_samples_per_epoch_draws_and_an_unknown_head_is_one_line(tiny_imet_root, tmp_path):
    from src.config import load_config
    from src.engine import build_train_data
    from src.errors import PipelineError
    from src.runtime import make_runtime

    root, _ = tiny_imet_root
    sampler = {"name": "log", "samples_per_epoch": 64}
    config = load_config(tiny_config(tmp_path, "imet", root, {"train": {"sampler": sampler}}))
    images = np.zeros((100, 32, 32, 3), dtype=np.uint8)
    targets = {"attributes": (np.arange(100)[:, None] % np.array([2, 7, 50]) == 0).astype(np.uint8)}
    data = build_train_data(config, images, np.arange(100), targets, make_runtime("cpu", threads=1))
    assert len(data.loader) == 64 // 16 and len(data.sampler) == 64
    config.train.sampler.head = "category"
    with pytest.raises(PipelineError, match="config train.sampler.head: no head 'category'; the heads: attributes"):
        build_train_data(config, images, np.arange(100), targets, make_runtime("cpu", threads=1))


def test_a_train_subset_keeps_the_first_rows_of_every_fold():
    from src.steps.train import subset_rows

    fold_of_row = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    assert subset_rows(fold_of_row, 6).tolist() == [0, 1, 2, 3, 4, 5]  # two of each fold, in file order
    assert subset_rows(np.full(10, -1), 4).tolist() == [0, 1, 2, 3]  # a full fit: the first rows
    assert subset_rows(fold_of_row, 100).tolist() == list(range(10))
