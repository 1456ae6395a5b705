"""OOF-driven cleaning (train.drop_noisy): each run leaves out its own training rows with the highest OOF loss of an
earlier experiment, ranked among those rows only, and lists them in dropped.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_config

from src.artifacts import Experiment, OofPredictions
from src.cleaning import noisy_training_rows, oof_losses
from src.config import load_config
from src.errors import PipelineError
from src.formats.base import HeadSpec
from src.objectives import SamplesFbeta
from src.stage import main

MULTI = HeadSpec("attributes", "multilabel", ("a", "b", "c"), SamplesFbeta(beta=2.0))
SINGLE = HeadSpec("category", "softmax", ("x", "y"))


def test_losses_are_cross_entropies_per_head_summed():
    probs = {"attributes": np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]), "category": np.array([[0.8, 0.2], [0.5, 0.5]])}
    targets = {"attributes": np.array([[1, 0, 1], [1, 0, 1]]), "category": np.array([0, -1])}
    oof = OofPredictions(["i0", "i1"], np.array([0, 1]), probs, targets)
    expected_0 = -(np.log(0.9) + np.log(0.9) + np.log(0.5)) / 3 - np.log(0.8)
    expected_1 = -(np.log(0.1) + np.log(0.1) + np.log(0.5)) / 3  # no category label: that head adds nothing
    assert oof_losses(oof, [MULTI, SINGLE]) == pytest.approx([expected_0, expected_1])


def test_the_worst_share_of_the_runs_own_training_rows_is_left_out():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    probs = np.where(targets == 1, 0.9, 0.1)
    probs[[3, 17, 25, 30]] = 1 - probs[[3, 17, 25, 30]]  # four rows whose labels the OOF contradicts
    ids = [f"id{i}" for i in range(40)]
    oof = OofPredictions(ids, np.arange(40) % 4, {"attributes": probs}, {"attributes": targets})
    train_rows = np.flatnonzero(np.arange(40) % 4 != 1)  # fold 1 held out: row 17 and 25 are not this run's
    noisy = noisy_training_rows(oof, None, [MULTI], ids, train_rows, 0.07)  # 2 of the 30 training rows
    assert noisy.rows.tolist() == [3, 30]  # 17 and 25 are validation rows: never ranked, never dropped
    assert noisy.threshold == pytest.approx(noisy.losses.min())
    assert len(noisy_training_rows(oof, None, [MULTI], ids, train_rows, 0.1).rows) == 3
    with pytest.raises(PipelineError, match="no OOF prediction for 1 training image"):
        noisy_training_rows(oof, "x/oof.npz", [MULTI], [*ids[:-1], "new"], train_rows, 0.1)


@pytest.mark.slow
def test_train_stage_leaves_out_and_lists_the_noisy_rows(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    earlier = tiny_config(tmp_path, "imet", root, name="stage1")
    config = tiny_config(
        tmp_path, "imet", root, {"train": {"epochs": 1, "drop_noisy": {"experiment": "stage1", "quantile": 0.2}}}
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 2
    assert "train.drop_noisy ranks rows by it; make it with: python -m src.stage oof" in capsys.readouterr().err
    exp, stage1 = Experiment(load_config(config), config), Experiment(load_config(earlier), earlier)
    table = exp.fmt.read_train()
    [head] = exp.fmt.heads()
    rng = np.random.default_rng(1)
    probs = rng.uniform(0.05, 0.95, (len(table.ids), head.n_outputs)).astype(np.float32)
    OofPredictions(
        table.ids, exp.fold_of_row(table.ids), {head.name: probs}, {head.name: table.targets[head.name]}
    ).write(stage1.oof_path)
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    dropped = pd.read_csv(exp.run_dir(0) / "dropped.csv")
    train_ids = [i for i, fold in zip(table.ids, exp.fold_of_row(table.ids)) if fold != 0]
    assert len(dropped) == int(0.2 * len(train_ids)) and set(dropped["id"]) <= set(train_ids)
    losses = dict(zip(table.ids, oof_losses(stage1.read_oof(), [head])))
    kept = [losses[i] for i in train_ids if i not in set(dropped["id"])]
    assert dropped["oof_loss"].min() >= max(kept) - 1e-4  # the highest losses went
    assert list(dropped["oof_loss"]) == sorted(dropped["oof_loss"], reverse=True)
