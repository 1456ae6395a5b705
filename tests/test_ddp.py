"""DDP through torchrun: 2 CPU processes (gloo) reach what one process reaches, within a stated tolerance.

Exact equality is impossible: each rank normalises its half batch with its own BatchNorm statistics
and DistributedSampler orders images differently from the single-process sampler. Tolerance: the
final validation loss within 10% relative and the metric within 0.15 absolute on this tiny task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import run_torchrun, tiny_config

from src.stage import main

pytestmark = pytest.mark.ddp  # torchrun with 2 processes (conftest marks these slow too)

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_gloo_matches_single_process(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    extra = {"train": {"epochs": 3, "batch_size": 16, "threads": 1}}
    single = tiny_config(tmp_path / "single", "imet", root, extra, name="single")
    double = tiny_config(tmp_path / "ddp", "imet", root, extra, name="ddp")
    assert main(["folds", "--config", str(single), "--quiet"]) == 0
    assert main(["train", "--config", str(single), "--fold", "0", "--quiet"]) == 0

    result = run_torchrun("train", "--config", str(double), "--fold", "0", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]

    one = pd.read_csv(tmp_path / "single" / "out" / "oof" / "single" / "fold-0" / "epochs.csv")
    two = pd.read_csv(tmp_path / "ddp" / "out" / "oof" / "ddp" / "fold-0" / "epochs.csv")
    assert len(one) == len(two) == 3
    assert abs(two["valid_loss"].iloc[-1] - one["valid_loss"].iloc[-1]) <= 0.10 * one["valid_loss"].iloc[-1]
    assert abs(two["score"].iloc[-1] - one["score"].iloc[-1]) <= 0.15
    summary = json.loads((tmp_path / "ddp" / "out" / "oof" / "ddp" / "fold-0" / "summary.json").read_text())
    assert summary["processes"] == 2
    # the skipped-image count is written by rank 0 with the rest (a second rank rewriting it raced rank 0)
    assert summary["skipped_unreadable"] == 0 and summary["skipped_files"] == []
    # only rank 0 wrote: one set of artifacts, no stray temp files
    assert sorted(p.name for p in (tmp_path / "ddp" / "out" / "oof" / "ddp" / "fold-0").iterdir()) == [
        "best.pt",
        "best.pt.sha256",
        "config.json",
        "epochs.csv",
        "last.prev.pt",
        "last.prev.pt.sha256",
        "last.pt",
        "last.pt.sha256",
        "summary.json",
    ]


def test_two_process_learned_loss_weights_stay_identical_across_ranks(tmp_path):
    """The loss's log-variances are not DDP's to sync: the trainer averages their gradients itself and
    checks every epoch that all ranks hold the same values (the run stops with an error otherwise)."""
    from test_format_deepfashion import HEADER, _uncertainty_train, make_competition

    root = tmp_path / "c"
    make_competition(root, HEADER + "".join(f"train/{i}.jpg,{i % 4},{i % 5}\n" for i in range(8)))
    argv = _uncertainty_train(root, tmp_path / "out", "train.epochs=2", "train.batch_size=4")  # 2 images per rank
    result = run_torchrun(*argv)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "out" / "oof" / "demo-deepfashion" / "full"
    log_vars = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["loss"]["log_vars"]
    assert bool((log_vars != 0).all())
    assert json.loads((run / "summary.json").read_text())["processes"] == 2
