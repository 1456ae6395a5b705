"""The thresholds stage tunes only the methods a config lists (thresholds.methods), saying how long each took."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_config

from src.artifacts import Experiment, OofPredictions
from src.config import load_config
from src.errors import PipelineError
from src.steps import thresholds as thresholds_step


def _experiment_with_oof(tmp_path, root, extra):
    path = tiny_config(tmp_path, "imet", root, extra)
    exp = Experiment(load_config(path), path)
    [head] = exp.fmt.heads()
    rng = np.random.default_rng(0)
    targets = (rng.random((90, head.n_outputs)) < 0.3).astype(np.uint8)
    probs = np.clip(targets * 0.6 + rng.random(targets.shape) * 0.5, 0, 1)
    ids = [f"id{row}" for row in range(90)]
    OofPredictions(ids, np.arange(90) % 3, {head.name: probs}, {head.name: targets}).write(exp.oof_path)
    return exp


def test_only_the_listed_methods_are_tuned_each_with_its_time(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    exp = _experiment_with_oof(tmp_path, root, {"thresholds": {"methods": ["global", "exact"]}})
    lines: list[str] = []
    thresholds_step.run(exp, quiet=True, log=lines.append)
    saved = json.loads(exp.thresholds_path.read_text())
    assert set(saved["heads"]["attributes"]["methods"]) == {"global", "exact"}
    assert [row["method"] for row in saved["honest"]["attributes"]][:2] == ["global", "exact"]
    assert not exp.optuna_path.exists()  # no Optuna study was made
    timed = [line for line in lines if " tuned in " in line]
    assert [line.split(":")[0] for line in timed] == ["[attributes] global", "[attributes] exact"]
    assert "methods global, exact;" in lines[0] and "trials" not in lines[0]
    assert exp.decision_rules() is not None  # what submit reads


def test_the_chosen_method_must_be_tuned_and_listed_once(tmp_path):
    from helpers import tiny_config as config_file

    path = config_file(tmp_path, "imet", tmp_path)
    with pytest.raises(PipelineError) as error:
        load_config(path, ["thresholds.methods=[global]"])
    assert "thresholds.method exact is not among thresholds.methods ['global']; add it there" in str(error.value)
    with pytest.raises(PipelineError, match="names a method twice"):
        load_config(path, ["thresholds.methods=[exact, exact]"])


def test_label_groups_are_scored_honestly_and_decide_what_submit_writes(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    groups = [{"prefix": "digit::", "max_labels": 3}, {"prefix": "tag::", "min_labels": 1, "max_labels": 1}]
    exp = _experiment_with_oof(tmp_path, root, {"thresholds": {"methods": ["global", "exact"], "groups": groups}})
    thresholds_step.run(exp, quiet=True, log=[].append)
    rows = {row["method"]: row for row in json.loads(exp.thresholds_path.read_text())["honest"]["attributes"]}
    grouped = "exact + groups digit:: [0, 3], tag:: [1, 1]"
    assert grouped in rows and 0 <= rows[grouped]["honest"] <= rows[grouped]["optimistic"] + 0.2
    [head] = exp.fmt.heads()
    probs = np.random.default_rng(1).random((50, head.n_outputs))
    labels = exp.fmt.decide({head.name: probs}, exp.decision_rules())[head.name]
    digits = [i for i, name in enumerate(head.class_names) if name.startswith("digit::")]
    tags = [i for i, name in enumerate(head.class_names) if name.startswith("tag::")]
    assert labels[:, digits].sum(axis=1).max() <= 3 and (labels[:, tags].sum(axis=1) == 1).all()


def test_the_relative_rule_is_tuned_scored_and_used_by_submit(tiny_imet_root, tmp_path):
    from src.thresholds import RelativeThresholds, apply_thresholds

    root, _ = tiny_imet_root
    exp = _experiment_with_oof(
        tmp_path, root, {"thresholds": {"methods": ["global", "relative"], "method": "relative"}}
    )
    thresholds_step.run(exp, quiet=True, log=[].append)
    saved = json.loads(exp.thresholds_path.read_text())["heads"]["attributes"]
    ratio = saved["relative_ratio"]
    assert 0 < ratio < 1 and len(set(saved["methods"]["relative"])) == 1
    honest = {row["method"] for row in json.loads(exp.thresholds_path.read_text())["honest"]["attributes"]}
    assert "relative" in honest  # scored optimistic and honest like every method
    rules = exp.decision_rules()
    assert rules.relative_ratios == {"attributes": ratio}
    oof = exp.read_oof()
    decided = exp.fmt.decide(oof.probs, rules)["attributes"]
    expected = apply_thresholds(
        oof.probs["attributes"], RelativeThresholds(np.asarray(saved["methods"]["relative"]), ratio)
    )
    assert np.array_equal(decided, expected)
    # Without the method the file carries no ratio key at all (older files and their bytes stay as they were).
    exp = _experiment_with_oof(tmp_path / "plain", root, {"thresholds": {"methods": ["global", "exact"]}})
    thresholds_step.run(exp, quiet=True, log=[].append)
    assert "relative_ratio" not in exp.thresholds_path.read_text()
