"""The Kaggle records in src.artifacts: push.json, parity.json and pull.json round-trip, read what earlier versions
wrote, and a damaged one is refused with its path and what to do (or, for parity, just checked again)."""

from __future__ import annotations

import json

import pytest

from src.artifacts import Layout, ParityRecord, PulledRuns, PushRecord
from src.errors import PipelineError


def test_push_record_keeps_each_upload_and_the_kernel_version(tmp_path):
    path = tmp_path / "push.json"
    assert PushRecord.read(path) == PushRecord()  # nothing pushed yet
    record = (
        PushRecord().with_upload("dataset", "me/weights", {"model.pt": "aa"}).with_upload("wheels", "me/wheels", {})
    )
    record = record.model_copy(update={"kernel_ref": "me/kernel", "version": 3})
    record.write(path)
    again = PushRecord.read(path)
    assert again == record
    assert again.uploaded("dataset") == ("me/weights", {"model.pt": "aa"})
    assert again.uploaded("wheels") == ("me/wheels", {})
    assert again.uploaded("state") == (None, None)
    assert "state_ref" not in json.loads(path.read_text())  # unset fields are left out of the file
    with pytest.raises(ValueError, match="unknown upload"):
        record.uploaded("weights")


def test_push_record_reads_the_flat_file_the_first_pushes_wrote(tmp_path):
    path = tmp_path / "push.json"
    path.write_text(
        json.dumps(
            {
                "dataset_ref": "me/w",
                "dataset_files": {"model.pt": "aa"},
                "kernel_ref": "me/k",
                "kernel_url": "https://www.kaggle.com/code/me/k",
                "version": 2,
                "script_sha256": "bb",
                "competition": "imet-2019",
                "submission_names": ["submission.csv"],
            }
        )
    )
    record = PushRecord.read(path)
    assert record.version == 2 and record.uploaded("dataset") == ("me/w", {"model.pt": "aa"})


@pytest.mark.parametrize("body", ["{not json", "[]", '{"version": "two"}', '{"dataset_ref": "a", "surprise": 1}'])
def test_a_damaged_push_record_is_refused_by_name(tmp_path, body):
    path = tmp_path / "push.json"
    path.write_text(body)
    with pytest.raises(PipelineError, match=r"push\.json: not a push record .*delete it: the next push uploads"):
        PushRecord.read(path)


def test_parity_record_round_trips_and_a_damaged_one_means_check_again(tmp_path):
    path = tmp_path / "parity.json"
    assert ParityRecord.read(path) is None
    record = ParityRecord(
        passed=True, detail="byte-identical", fingerprint={"script": "ff", "versions": {"torch": "2.14.1"}}, seconds=1.5
    )
    record.write(path)
    assert ParityRecord.read(path) == record
    path.write_text('{"passed": true}')
    assert ParityRecord.read(path) is None


def test_pulled_runs_round_trip_and_a_damaged_record_is_refused(tmp_path):
    path = tmp_path / "pull.json"
    assert PulledRuns.read(path).root == {}
    PulledRuns({"fold-0": {"best.pt": "aa", "epochs.csv": "bb"}}).write(path)
    assert PulledRuns.read(path).root == {"fold-0": {"best.pt": "aa", "epochs.csv": "bb"}}
    path.write_text('{"fold-0": ["best.pt"]}')
    with pytest.raises(PipelineError, match=r"pull\.json: not a record of pulled runs \(fold-0: .*delete it"):
        PulledRuns.read(path)


def test_layout_names_the_kernel_records():
    layout = Layout("out", "exp")
    assert layout.kernel_push_path.as_posix() == "out/kernels/exp/push.json"
    assert layout.parity_path.as_posix() == "out/kernels/exp/parity.json"
    assert layout.train_push_path.as_posix() == "out/kernels/exp/train/push.json"


def _tuned(exp, exact_value=0.4, methods=("global", "exact", "optuna")):
    """A thresholds.json for the tiny iMet experiment's head, every method at `exact_value`."""
    head = exp.fmt.heads()[0]
    values = [exact_value] * len(head.class_names)
    body = {
        "method": "exact",
        "heads": {
            head.name: {
                "class_names": list(head.class_names),
                "global": 0.4,
                "methods": {method: values for method in methods},
                "label_count_rule": {"min_labels": 0, "max_labels": None},
            }
        },
        "honest": {head.name: []},
    }
    exp.thresholds_path.parent.mkdir(parents=True, exist_ok=True)
    exp.thresholds_path.write_text(json.dumps(body))


@pytest.fixture
def tiny_experiment(tiny_imet_root, tmp_path):
    from helpers import tiny_config

    from src.artifacts import Experiment
    from src.config import load_config

    root, _ = tiny_imet_root
    path = tiny_config(tmp_path, "imet", root)
    return Experiment(load_config(path), path)


@pytest.mark.parametrize("value", [5.0, -1.0, float("nan")])
def test_thresholds_outside_0_1_are_refused_with_the_command_that_rewrites_them(tiny_experiment, value):
    _tuned(tiny_experiment, value)
    with pytest.raises(PipelineError) as error:
        tiny_experiment.decision_rules()
    message = str(error.value)
    assert "a 'global' threshold" in message or "a 'global' threshold is" not in message
    assert "outside [0, 1]" in message and "python -m src.stage thresholds" in message and "\n" not in message


def test_a_configured_method_missing_from_thresholds_json_is_one_line(tiny_experiment):
    _tuned(tiny_experiment, methods=("global", "optuna"))
    with pytest.raises(PipelineError) as error:
        tiny_experiment.decision_rules()
    assert "has no 'exact' thresholds (it has global, optuna); tune again with" in str(error.value)


def test_thresholds_older_than_the_oof_they_were_tuned_on_are_refused(tiny_experiment):
    import os

    _tuned(tiny_experiment)
    assert tiny_experiment.decision_rules() is not None
    tiny_experiment.oof_path.write_bytes(b"a newer oof.npz")
    stamp = tiny_experiment.thresholds_path.stat().st_mtime
    os.utime(tiny_experiment.oof_path, (stamp + 60, stamp + 60))  # oof ran again a minute after tuning
    with pytest.raises(PipelineError, match="tuned on an older oof.npz .oof ran again since.; tune again with"):
        tiny_experiment.decision_rules()


def test_a_truncated_oof_npz_is_one_line_naming_the_command(tmp_path):
    import numpy as np

    from src.artifacts import OofPredictions

    path = tmp_path / "oof.npz"
    OofPredictions(["a", "b"], np.array([0, 1]), {"h": np.ones((2, 3))}, {"h": np.zeros((2, 3))}).write(path)
    path.write_bytes(path.read_bytes()[:40])  # cut off mid-file, as a full disk or a kill leaves it
    with pytest.raises(PipelineError) as error:
        OofPredictions.read(path, "python -m src.stage oof --config c.yaml")
    assert str(error.value).startswith(f"{path}: unreadable OOF file (") and "\n" not in str(error.value)
    assert str(error.value).endswith("write it again with: python -m src.stage oof --config c.yaml")
