"""Each new format end to end: folds -> train -> oof -> thresholds -> submit on a small real-image demo.

The stages run in-process from the format's own demo config, shrunk for speed (32 px, 2 folds, a
tiny EfficientNet, one thread). The written files must pass the format's validator and score
clearly above the best constant prediction on the held-apart answers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from src import metrics
from src.config import load_config
from src.demo import build_demo
from src.formats import create_format
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.image_size=32", "data.n_folds=2", "model.name=test_efficientnet", "train.epochs=6", "train.batch_size=16",
        "train.lr=0.01", "train.warmup_epochs=0.5", "train.threads=1", "thresholds.optuna_trials=8",
        "thresholds.honest_folds=2", "predict.batch_size=64", "--quiet"]
STAGES = (["folds"], ["train", "--fold", "all"], ["train", "--full"], ["oof"], ["thresholds"], ["submit"])


def constant_baseline(format_name: str, train_targets: dict, solution: dict) -> float:
    """The main metric of the best prediction that ignores the image (what 'chance' means per format)."""
    n = len(next(iter(solution.values())))
    if format_name == "folder":
        return float(np.mean(solution["label"] == np.bincount(train_targets["label"]).argmax()))
    if format_name == "celeba":
        majority = train_targets["attributes"].mean(axis=0) > 0.5
        return metrics.mean_accuracy(solution["attributes"], np.tile(majority, (n, 1)))
    category = float(np.mean(solution["category"] == np.bincount(train_targets["category"]).argmax()))
    by_frequency = np.argsort(-train_targets["attributes"].mean(axis=0), kind="stable")
    best_f1 = 0.0
    for k in range(1, len(by_frequency) + 1):  # the top-k most frequent attributes on every image
        constant = np.zeros_like(solution["attributes"])
        constant[:, by_frequency[:k]] = True
        best_f1 = max(best_f1, metrics.fbeta_samples(solution["attributes"], constant, beta=1.0))
    return (category + best_f1) / 2


@pytest.mark.parametrize("format_name, margin", [("deepfashion", 0.08), ("celeba", 0.05), ("folder", 0.3)])
def test_five_stages_write_a_valid_submission_well_above_chance(tmp_path, format_name, margin):
    paths = build_demo(format_name, tmp_path / f"demo-{format_name}", n_train=240, n_test=60, seed=3)
    config_path = ROOT / "configs" / f"demo-{format_name}.yaml"
    solution = ", ".join(str(path) for path in paths.solution_files)
    overrides = [f"output_dir={tmp_path / 'out'}", f"data.root={paths.root}", f"data.solution=[{solution}]", *FAST]
    for stage in STAGES:
        assert main([stage[0], "--config", str(config_path), *stage[1:], *overrides]) == 0, stage

    experiment = f"demo-{format_name}"
    out = tmp_path / "out" / "submissions" / experiment
    fmt = create_format(format_name, paths.root, load_config(config_path).format_options)
    files = [out / name for name in fmt.submission_names()]
    ids, _ = fmt.read_submission(files)  # the format's validator accepts what submit wrote
    assert ids == fmt.read_test().ids
    assert sorted(p.name for p in out.iterdir()) == sorted([*fmt.submission_names(), "test_probs.npz", "test_scores.json"])

    scores = json.loads((out / "test_scores.json").read_text())
    assert scores == pytest.approx(fmt.score_submission(files, list(paths.solution_files)))
    _, answers = fmt.read_submission(list(paths.solution_files))
    chance = constant_baseline(format_name, fmt.read_train().targets, answers)
    assert scores[fmt.main_metric] > chance + margin, (scores, chance)

    oof_dir = tmp_path / "out" / "oof" / experiment
    saved = json.loads((oof_dir / "thresholds.json").read_text())
    thresholded = [head.name for head in fmt.heads() if head.thresholded]
    assert sorted(saved["heads"]) == sorted(thresholded)
    for name in thresholded:
        assert len(saved["heads"][name]["methods"]["exact"]) == next(h.n_outputs for h in fmt.heads() if h.name == name)
