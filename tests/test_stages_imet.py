"""End to end on a tiny iMet-layout competition: each stage as a user runs it, and the refusals between them."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_config

from src.stage import main

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)


@pytest.fixture(scope="module")
def experiment(tiny_imet_root, tmp_path_factory):
    root, solution = tiny_imet_root
    tmp = tmp_path_factory.mktemp("stages")
    config = tiny_config(tmp, "imet", root, {"data": {"solution": str(solution)}})
    return SimpleNamespace(root=root, tmp=tmp, config=config, out=tmp / "out", solution=solution)


def run(config, *args) -> int:
    return main([args[0], "--config", str(config), "--quiet", *args[1:]])


def test_stage_refuses_without_previous_artifacts(experiment, capsys):
    config = experiment.config
    fresh = tiny_config(experiment.tmp / "fresh", "imet", experiment.tmp / "missing-root")
    assert run(fresh, "folds") == 2
    assert "competition folder not found" in capsys.readouterr().err
    assert run(config, "oof") == 2
    err = capsys.readouterr().err
    assert "is missing; make it first with: python -m src.stage" in err


def test_full_chain(experiment, capsys):
    config, out = experiment.config, experiment.out
    assert run(config, "folds") == 0
    frame = pd.read_csv(experiment.root / "folds-k3-seed42.csv")
    assert sorted(frame["fold"].unique()) == [0, 1, 2]

    # oof before training says which command makes the checkpoints
    assert run(config, "oof") == 2
    assert "train --fold 0" in capsys.readouterr().err

    assert run(config, "train", "--fold", "all") == 0
    for k in range(3):
        run_dir = out / "oof" / "tiny" / f"fold-{k}"
        assert (run_dir / "best.pt").exists() and (run_dir / "last.pt").exists()
        epochs = pd.read_csv(run_dir / "epochs.csv")
        assert list(epochs["epoch"]) == [1, 2]
        for column in ("train_loss", "valid_loss", "score", "lr", "seconds", "images_per_s"):
            assert column in epochs.columns
    assert run(config, "train", "--full") == 0
    assert (out / "oof" / "tiny" / "full" / "best.pt").exists()

    assert run(config, "oof") == 0
    with np.load(out / "oof" / "tiny" / "oof.npz") as data:
        assert data["probs__attributes"].dtype == np.float16
        assert len(data["ids"]) == 150 and set(data["fold"]) == {0, 1, 2}

    assert run(config, "submit") == 2  # thresholds first
    assert "thresholds" in capsys.readouterr().err

    assert run(config, "thresholds") == 0
    saved = json.loads((out / "oof" / "tiny" / "thresholds.json").read_text())
    methods = saved["heads"]["attributes"]["methods"]
    assert set(methods) == {"global", "exact", "optuna"}
    rows = {row["method"]: row for row in saved["honest"]["attributes"]}
    assert rows["exact"]["optimistic"] >= rows["global"]["optimistic"] - 1e-9
    assert rows["exact"]["optimistic"] >= rows["0.5 (no tuning)"]["optimistic"]
    assert (out / "oof" / "tiny" / "optuna.db").exists()

    assert run(config, "submit") == 0
    submission = out / "submissions" / "tiny" / "submission.csv"
    sample = pd.read_csv(experiment.root / "sample_submission.csv", dtype=str)
    written = pd.read_csv(submission, dtype=str, keep_default_na=False)
    assert list(written.columns) == ["id", "attribute_ids"]
    assert list(written["id"]) == list(sample["id"])
    for cell in written["attribute_ids"]:
        ids = [int(x) for x in cell.split()]
        assert ids == sorted(ids)
    scores = json.loads((out / "submissions" / "tiny" / "test_scores.json").read_text())
    assert 0.0 <= scores["f2"] <= 1.0
    # no temp files left beside the artifacts
    assert not list(out.glob("**/*.tmp"))


def test_submit_refuses_a_checkpoint_list(experiment, capsys):
    config = experiment.config
    assert run(config, "submit", "submit.checkpoint=[fold-0, fold-1]") == 2
    assert "ensemble" in capsys.readouterr().err


def test_answers_to_another_test_set_leave_the_submission_without_a_score(experiment, tmp_path, capsys):
    """A shared config's demo answers with data.root pointed elsewhere: the submission stands, no stale test score."""
    scores_path = experiment.out / "submissions" / "tiny" / "test_scores.json"
    assert scores_path.exists()  # from the full chain
    answers = pd.read_csv(experiment.solution, dtype=str)
    other = tmp_path / "other-solution.csv"
    pd.concat([answers, answers.assign(id=answers["id"] + "x")]).to_csv(other, index=False)
    assert run(experiment.config, "submit", f"data.solution={other}") == 0
    out = capsys.readouterr().out
    assert "no test score: data.solution does not answer this test set" in out and str(other) in out
    assert (experiment.out / "submissions" / "tiny" / "submission.csv").exists() and not scores_path.exists()


def test_data_root_override_runs_on_another_copy(experiment, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(experiment.root, copy)
    config = experiment.config
    assert run(config, "folds", f"data.root={copy}") == 0
    assert (copy / "folds-k3-seed42.csv").exists()
    assert str(copy) in capsys.readouterr().out


def test_submit_kaggle_uploads_the_validated_file_through_the_real_cli(experiment, fake_kaggle):
    fake_kaggle.competition_files["demo-imet"] = {}  # the fake server knows the competition
    assert run(experiment.config, "submit", "--kaggle") == 0
    submission = experiment.out / "submissions" / "tiny" / "submission.csv"
    assert list(fake_kaggle.uploads.values()) == [submission.read_bytes()]
    [sent] = fake_kaggle.submissions
    assert sent["competitionName"] == "demo-imet" and "single model" in sent["submissionDescription"]


def test_thresholds_tune_a_head_whose_format_names_no_objective(experiment, monkeypatch, capsys):
    """A multilabel head without `objective` is tuned for per-image F1 (HeadSpec.threshold_objective), not a crash."""
    import dataclasses

    from src.formats.imet import ImetFormat

    heads = ImetFormat.heads
    monkeypatch.setattr(ImetFormat, "heads", lambda self: [dataclasses.replace(h, objective=None) for h in heads(self)])
    assert run(experiment.config, "thresholds") == 0
    assert "[attributes] F1 per image (mean)" in capsys.readouterr().out  # the objective it fell back to
    saved = json.loads((experiment.out / "oof" / "tiny" / "thresholds.json").read_text())
    assert set(saved["heads"]["attributes"]["methods"]) == {"global", "exact", "optuna"}
