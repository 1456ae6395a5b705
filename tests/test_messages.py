"""Messages that tell a user what to do next: hints keep the user's overrides, a missing competition folder names
the command that fills it, a stage after --config is put first, a softmax-only run names no threshold methods."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import tiny_config

from src.artifacts import Experiment, OofPredictions
from src.config import load_config
from src.errors import PipelineError
from src.stage import main
from src.steps import thresholds as thresholds_step


def test_make_it_first_hint_repeats_the_overrides(tiny_imet_root, tmp_path, capsys):
    root = tmp_path / "competition"  # a copy without a folds file (other tests write one into the shared root)
    shutil.copytree(tiny_imet_root[0], root, ignore=shutil.ignore_patterns("folds-*"))
    config = tiny_config(tmp_path, "imet", tmp_path / "elsewhere")
    assert main(["oof", "--config", str(config), f"data.root={root}", "train.epochs=2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "make it first with: python -m src.stage folds --config" in err
    # Following the hint must write the folds where the failing stage looks for them: the same overrides.
    assert err.rstrip().endswith(f"data.root={root} train.epochs=2")


def test_an_override_with_spaces_is_quoted_in_the_hint(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root)
    exp = Experiment(load_config(config, ["train.epochs=3"]), config)
    assert exp.command("train", "--fold 0").endswith(f"train --fold 0 --config {config} train.epochs=3")
    spaced = tmp_path / "a copy" / "comp"
    exp = Experiment(load_config(config, [f"data.root={spaced}"]), config)
    assert exp.command("oof").endswith(f"'data.root={spaced}'")  # pastes into a shell as one word


@pytest.mark.parametrize(
    ("root_name", "competition", "expected"),
    [
        ("imet-2019", "imet-2019", "download --competition imet-2019 --dest {parent}"),
        ("elsewhere", "imet-2019", "download --competition imet-2019 (into input/imet-2019/), then set data.root"),
        ("demo-imet", "imet-2019", "build the demo data with: python -m src.stage demo --config"),
    ],
)
def test_a_missing_competition_folder_names_the_command_that_fills_it(tmp_path, root_name, competition, expected):
    config = tiny_config(tmp_path, "imet", tmp_path / "input" / root_name, {"competition": competition})
    exp = Experiment(load_config(config), config)
    with pytest.raises(PipelineError) as error:
        exp.fmt  # noqa: B018 (the format reads the folder)
    message = str(error.value)
    assert "competition folder not found" in message and "\n" not in message
    assert expected.format(parent=tmp_path / "input") in message


def test_a_stage_after_the_config_is_put_first(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--config", "configs/demo-imet.yaml", "train", "data.root=x"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "the stage comes first: python -m src.stage train --config configs/demo-imet.yaml data.root=x" in err
    assert "invalid choice" not in err
    with pytest.raises(SystemExit):
        main(["--config", "configs/demo-imet.yaml"])
    assert (
        "python -m src.stage <stage> --config configs/demo-imet.yaml (stages: folds, train" in capsys.readouterr().err
    )


def test_forbidden_weights_are_refused_when_the_config_loads(tmp_path):
    config = tiny_config(tmp_path, "imet", tmp_path, {"model": {"forbid_pretrained": True}})
    with pytest.raises(PipelineError) as error:
        load_config(config, [f"model.weights={tmp_path / 'w.pth'}"])
    assert "forbids pretrained weights" in str(error.value) and "set model.weights=null" in str(error.value)
    load_config(config)  # nothing pretrained: fine


def test_a_softmax_only_run_names_no_threshold_methods(tmp_path):
    from src.demo import build_demo

    paths = build_demo("folder", tmp_path / "demo-folder", n_train=60, n_test=10, seed=1)
    config = tiny_config(tmp_path, "folder", paths.root)
    exp = Experiment(load_config(config), config)
    [head] = exp.fmt.heads()
    n = len(exp.fmt.read_train().ids)
    probs = np.full((n, head.n_outputs), 1 / head.n_outputs, dtype=np.float32)
    targets = np.zeros(n, dtype=np.int64)
    OofPredictions(exp.fmt.read_train().ids, np.arange(n) % 3, {head.name: probs}, {head.name: targets}).write(
        exp.oof_path
    )
    lines: list[str] = []
    thresholds_step.run(exp, quiet=True, log=lines.append)
    assert not any("methods" in line for line in lines)
    assert lines[0] == f"thresholds {exp.name}: no multi-label head, nothing to tune (softmax heads use argmax)"
