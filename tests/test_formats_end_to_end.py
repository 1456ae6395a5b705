"""Each format whose demo sets `demo_margin_over_chance`, end to end: folds -> train -> oof -> thresholds -> submit
on a small real-image demo.

The stages run in-process from the format's own demo config, shrunk for speed (32 px, 2 folds, a
tiny EfficientNet, one thread). The written files must pass the format's validator and score
clearly above the best constant prediction on the held-apart answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from src.config import load_config
from src.demo import build_demo, list_formats
from src.formats import create_format, format_class
from src.stage import main

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "data.image_size=32",
    "data.n_folds=2",
    "model.name=test_efficientnet",
    "model.pretrained=null",  # demo-folder.yaml fine-tunes from weights its demo stage makes; these train from scratch
    "train.epochs=6",
    "train.batch_size=16",
    "train.lr=0.01",
    "train.warmup_epochs=0.5",
    "train.threads=1",
    "thresholds.optuna_trials=8",
    "thresholds.honest_folds=2",
    "predict.batch_size=64",
    "--quiet",
]
STAGES = (["folds"], ["train", "--fold", "all"], ["train", "--full"], ["oof"], ["thresholds"], ["submit"])


def constant_baseline(fmt, train_targets: dict, solution: dict) -> float:
    """The main metric of the best prediction that ignores the image (what 'chance' means for these heads): a softmax
    head's most frequent training class; a multilabel head's k most frequent training labels, the best k."""
    n = len(next(iter(solution.values())))
    labels = {}
    for head in fmt.heads():
        train, truth = train_targets[head.name], solution[head.name]
        if not head.thresholded:
            labels[head.name] = np.full(n, np.bincount(train, minlength=head.n_outputs).argmax())
            continue
        by_frequency = np.argsort(-np.asarray(train).mean(axis=0), kind="stable")
        candidates = []
        for k in range(len(by_frequency) + 1):  # the top-k most frequent labels on every image
            constant = np.zeros((n, head.n_outputs), dtype=bool)
            constant[:, by_frequency[:k]] = True
            candidates.append(constant)
        labels[head.name] = max(candidates, key=lambda constant: head.threshold_objective.score(truth, constant))
    return fmt.score_labels(solution, labels)[fmt.main_metric]


def _end_to_end_formats() -> list[str]:
    """Formats whose demo sets a bar over chance (the others run their chain in their own tests)."""
    return [name for name in list_formats() if format_class(name).demo_margin_over_chance is not None]


@pytest.mark.parametrize("format_name", _end_to_end_formats())
def test_five_stages_write_a_valid_submission_well_above_chance(tmp_path, format_name):
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
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*fmt.submission_names(), "test_probs.npz", "test_scores.json"]
    )

    scores = json.loads((out / "test_scores.json").read_text())
    assert scores == pytest.approx(fmt.score_submission(files, list(paths.solution_files)))
    _, answers = fmt.read_submission(list(paths.solution_files))
    chance = constant_baseline(fmt, fmt.read_train().targets, answers)
    assert scores[fmt.main_metric] > chance + fmt.demo_margin_over_chance, (scores, chance)

    oof_dir = tmp_path / "out" / "oof" / experiment
    saved = json.loads((oof_dir / "thresholds.json").read_text())
    thresholded = [head.name for head in fmt.heads() if head.thresholded]
    assert sorted(saved["heads"]) == sorted(thresholded)
    for name in thresholded:
        assert len(saved["heads"][name]["methods"]["exact"]) == next(h.n_outputs for h in fmt.heads() if h.name == name)
