"""Staged training as one callback: each fold starts from another experiment's same fold, refused across splits."""

from __future__ import annotations

import torch
from helpers import tiny_config

from src.config import TrainConfig
from src.engine import callbacks_for
from src.stage import main


def _best(tmp_path, name, fold="fold-0"):
    return torch.load(tmp_path / "out" / "oof" / name / fold / "best.pt", map_location="cpu", weights_only=True)


def test_each_fold_starts_from_the_same_fold_of_the_first_stage(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    first = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 1}}, name="stage1")
    assert main(["folds", "--config", str(first), "--quiet"]) == 0
    assert main(["train", "--config", str(first), "--fold", "0", "--quiet"]) == 0
    # a second stage with a learning rate too small to move anything: its weights are the first stage's
    second = tiny_config(
        tmp_path, "imet", root, {"train": {"epochs": 1, "lr": 1e-12, "init_from": "stage1"}}, name="stage2"
    )
    assert main(["train", "--config", str(second), "--fold", "0", "--quiet"]) == 0
    assert "init_from: fold-0 starts from" in capsys.readouterr().out
    before, after = _best(tmp_path, "stage1")["model"], _best(tmp_path, "stage2")["model"]
    moved = [key for key in before if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.allclose(before[key], after[key], atol=1e-6) for key in moved)

    # fold 1 of stage 1 was never trained: one line naming the command that makes it
    assert main(["train", "--config", str(second), "--fold", "1", "--quiet"]) == 2
    assert "fold-1/best.pt: train.init_from needs this run first; make it with: python -m src.stage train" in (
        capsys.readouterr().err
    )
    # another split would leak validation rows into the OOF
    assert main(["folds", "--config", str(second), "--quiet", "data.fold_seed=7"]) == 0
    assert main(["train", "--config", str(second), "--fold", "0", "--quiet", "--resume", "data.fold_seed=7"]) == 2
    assert "its fold weights have seen other validation rows (OOF would leak)" in capsys.readouterr().err


def test_init_from_is_set_up_before_the_weight_averages_copy_the_model():
    listed_last = callbacks_for(
        TrainConfig(
            callbacks=[{"name": "mixup"}, {"name": "ema", "decay": 0.9}, {"name": "init_from", "experiment": "s1"}]
        )
    )
    assert listed_last.names == ["init_from", "train_score", "mixup", "ema"]
    both = callbacks_for(TrainConfig(init_from="stage1", callbacks=[{"name": "mixup"}]))
    assert both.names == ["init_from", "train_score", "mixup"]
