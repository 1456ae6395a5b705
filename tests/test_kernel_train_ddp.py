"""The training kernel on a machine with two GPUs: the pushed script runs the `train` stage under torchrun with
one process per GPU (here forced to two gloo processes on the CPU, `kaggle.train_processes: 2`), its local check
compares against two processes here, and a session stopped after an epoch and resumed on Kaggle in two processes
ends with the weights of one uninterrupted two-process run here, bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment, run_torchrun  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.config import load_config  # noqa: E402
from src.kaggle.local import training_kernel  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

COMPETITION = "demo-imet"
TRAIN_REF = f"{FAKE_USER}/tiny-train"


def _runs(exp: Experiment) -> dict[str, dict[str, bytes]]:
    return {
        path.name: {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
        for _, path in exp.fold_run_dirs()
    }


def test_two_processes_on_kaggle_resume_bit_exactly(tmp_path, fake_kaggle):
    exp = kaggle_demo_experiment(
        tmp_path / "kaggle",
        COMPETITION,
        60,
        10,
        {"kaggle": {"username": FAKE_USER, "train_processes": 2}, "train": {"epochs": 2, "batch_size": 8}},
    )
    fake_kaggle.serve_competition_of(exp)
    logs: list[str] = []
    # The local check runs the very script that is pushed, in two processes, against two processes here.
    kernel_step.train(exp, fold="0", stop_after_epochs=1, push=True, check=True, log=logs.append)
    assert any(line.startswith("training check: passed") for line in logs), logs
    fake_kaggle.wait_for_runs()
    kernel_step.pull(exp, log=logs.append)
    assert "(2 processes, DDP)" in fake_kaggle.kernel_logs[TRAIN_REF]
    assert (exp.run_dir(0) / "epochs.csv").read_text().count("\n") == 2  # one epoch, then stopped

    kernel_step.train(exp, fold="0", resume=True, push=True, check=False, log=logs.append)
    fake_kaggle.wait_for_runs()
    kernel_step.pull(exp, log=logs.append)
    assert "resuming from" in fake_kaggle.kernel_logs[TRAIN_REF]

    local_dir = tmp_path / "local"
    done = run_torchrun("train", "--config", str(exp.config_path), "--fold", "0", f"output_dir={local_dir}", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    local = Experiment(load_config(exp.config_path, [f"output_dir={local_dir}"]), exp.config_path)
    assert training_kernel.compare_runs(_runs(exp), _runs(local)) == []
