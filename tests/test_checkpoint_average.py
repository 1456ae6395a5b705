"""Checkpoint averaging as one callback: best.pt becomes the mean of the k best epochs' weights, scored again."""

from __future__ import annotations

import json

import pandas as pd
import torch
from helpers import tiny_config

from src.engine import Callback, register_callback
from src.engine.callbacks.checkpoint_average import mean_weights
from src.stage import main


@register_callback
class EvalWeights(Callback):
    """Keeps a copy of the evaluation weights at each epoch's end."""

    name = "test_eval_weights"
    SEEN: list[dict] = []

    def on_epoch_end(self, run, row):
        self.SEEN.append({key: value.detach().clone() for key, value in run.eval_model.state_dict().items()})


def test_best_pt_is_the_mean_of_the_k_best_epochs(tiny_imet_root, tmp_path, capsys):
    root, _ = tiny_imet_root
    EvalWeights.SEEN.clear()
    config = tiny_config(
        tmp_path,
        "imet",
        root,
        {"train": {"epochs": 4, "callbacks": [{"name": "test_eval_weights"}, {"name": "checkpoint_average", "k": 2}]}},
    )
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    run_dir = tmp_path / "out" / "oof" / "tiny" / "fold-0"
    scores = pd.read_csv(run_dir / "epochs.csv")["score"].tolist()
    best_two = sorted(range(4), key=lambda index: -scores[index])[:2]
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    expected = mean_weights([EvalWeights.SEEN[index] for index in best_two])
    assert all(torch.equal(best["model"][key], expected[key]) for key in expected)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["averaged_epochs"] == sorted(index + 1 for index in best_two)
    assert (
        summary["best_single_epoch_score"] == max(scores)
        or abs(summary["best_single_epoch_score"] - max(scores)) < 1e-5
    )
    assert summary["best_score"] == summary["averaged_score"] == best["score"]
    assert "checkpoint_average: best.pt is the mean of epochs" in capsys.readouterr().out


def test_mean_weights_averages_floats_and_keeps_counters():
    first = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    second = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    mean = mean_weights([first, second])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and int(mean["n"]) == 3
