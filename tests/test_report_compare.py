"""report.compare: this experiment beside others of the output folder, from their saved artifacts (real files)."""

from __future__ import annotations

import json

import pytest

from src.artifacts import Layout, ScoreTable, write_test_scores
from src.errors import PipelineError
from src.report.compare import comparison_rows, comparison_sentences


def saved_experiment(output_dir, name, config, oof, test=None, honest=None):
    layout = Layout(output_dir, name)
    run = layout.run_dir(0)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    ScoreTable([{"rows": "overall", "images": 10, "at 0.5": oof}]).write(layout.oof_scores_path)
    if honest is not None:
        layout.thresholds_path.write_text(json.dumps({"honest": {"labels": [{"method": "exact", "honest": honest}]}}))
    if test is not None:
        layout.submission_dir.mkdir(parents=True)
        write_test_scores(layout.test_scores_path, {"accuracy": test})
    return layout


def test_rows_name_what_differs_and_the_honest_and_test_scores(tmp_path):
    base = {
        "model": {"name": "r", "pretrained": "r.tag"},
        "train": {"epochs": 8, "threads": 1, "callbacks": [{"name": "freeze"}]},
    }
    scratch = {"model": {"name": "r", "pretrained": None}, "train": {"epochs": 8, "threads": 2, "callbacks": []}}
    saved_experiment(tmp_path, "tuned", base, 0.93, test=0.95)
    saved_experiment(tmp_path, "scratch", scratch, 0.80, test=0.90)
    rows = comparison_rows(tmp_path, "tuned", ["scratch"], "accuracy", None, lambda name: f"make {name}")
    assert [row["experiment"] for row in rows] == ["tuned (this report)", "scratch"]
    # train.threads is a machine setting: not a difference in what was trained.
    assert rows[1]["differs from this run"] == "model.pretrained: r.tag -> null; train.callbacks: [freeze] -> none"
    assert (rows[0]["honest OOF accuracy"], rows[1]["test accuracy"]) == (0.93, 0.90)
    sentence = comparison_sentences(rows, "accuracy")[0]
    assert "0.9300 vs 0.8000 (+0.1300)" in sentence and "0.9500 vs 0.9000 (+0.0500)" in sentence
    # With tuned thresholds the honest figure is the nested one of the configured method, not the optimistic OOF.
    saved_experiment(tmp_path, "multi", base, 0.99, honest=0.7)
    assert comparison_rows(tmp_path, "multi", [], "f2", "exact", str)[0]["honest OOF f2"] == 0.7


def test_a_missing_compared_experiment_is_one_line_naming_the_command(tmp_path):
    saved_experiment(tmp_path, "tuned", {}, 0.9)
    with pytest.raises(PipelineError) as error:
        comparison_rows(
            tmp_path, "tuned", ["absent"], "accuracy", None, lambda name: f"python -m src.stage demo {name}"
        )
    message = str(error.value)
    assert message.startswith("config report.compare: experiment 'absent' has no ") and "\n" not in message
    assert message.endswith("make it with: python -m src.stage demo absent")


def test_report_compare_names_are_validated(tmp_path):
    from src.config import load_config

    with pytest.raises(PipelineError, match="report.compare"):
        load_config("configs/demo-folder.yaml", ["report.compare=[../elsewhere]"])
    assert load_config("configs/demo-folder.yaml").report.compare == ["demo-folder-scratch"]
