"""`kernel train --follow` (src/kaggle/local/follow.py): sessions pushed through the REAL `kaggle` CLI to the fake
server, which RUNS them (network blocked); a time budget pauses the first, the follow pulls it and pushes a --resume
session, and the run ends with the weights of one uninterrupted local train; a killed follow re-run picks up where it
was without pushing twice; a failed session's log is fetched; no push when the week's GPU quota is spent."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_kaggle_server import FAKE_USER  # noqa: E402
from helpers import kaggle_demo_experiment  # noqa: E402

from src.artifacts import Experiment  # noqa: E402
from src.errors import PipelineError  # noqa: E402
from src.steps import kernel as kernel_step  # noqa: E402
from src.steps import train  # noqa: E402

pytestmark = pytest.mark.slow  # kernels run end to end (the inner loop leaves them out)

COMPETITION = "demo-imet"
TRAIN_REF = f"{FAKE_USER}/tiny-train"


class Killed(BaseException):
    """Stands in for the local process being killed (not an Exception: nothing may catch it)."""


@pytest.fixture
def exp(tmp_path) -> Experiment:
    """A tiny iMet demo, 2 folds, 2 epochs; a time budget so small that every session stops after one epoch."""
    return kaggle_demo_experiment(
        tmp_path,
        COMPETITION,
        40,
        4,
        {
            "kaggle": {"username": FAKE_USER, "session_timeout_s": 600, "poll_s": 0.01, "poll_max_s": 0.05},
            "train": {"time_budget_s": 0.001},
        },
    )


def _weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: torch.load(io.BytesIO((run_dir / name).read_bytes()), map_location="cpu", weights_only=True)["model"]
        for name in ("best.pt", "last.pt")
    }


def test_two_sessions_killed_and_rerun_end_with_the_weights_of_one_local_run(exp, fake_kaggle, tmp_path):
    fake_kaggle.serve_competition_of(exp)
    logs: list[str] = []

    def killed(seconds: float) -> None:
        raise Killed

    with pytest.raises(Killed):  # killed while waiting for the first session
        kernel_step.train(exp, fold="0", follow=True, check=False, log=logs.append, sleep=killed)
    state = json.loads((exp.train_kernel_dir / "follow.json").read_text())
    assert [(s["run"], s["status"], s["version"]) for s in state["sessions"]] == [("fold-0", "pushed", 1)]

    kernel_step.train(
        exp, fold="0", follow=True, check=False, log=logs.append, sleep=lambda s: fake_kaggle.wait_for_runs()
    )

    first, second = fake_kaggle.rpc_bodies("SaveKernel")  # the re-run waited for session 1 instead of pushing it again
    assert first["machineShape"] == second["machineShape"] == "NvidiaTeslaT4"
    assert first["sessionTimeoutSeconds"] == second["sessionTimeoutSeconds"] == 600
    assert second["datasetDataSources"] == [f"{FAKE_USER}/tiny-wheels", f"{FAKE_USER}/tiny-train-state"]
    state = json.loads((exp.train_kernel_dir / "follow.json").read_text())
    assert [(s["resume"], s["epochs_left"], s["status"]) for s in state["sessions"]] == [
        (False, 2, "pulled"),
        (True, 1, "pulled"),
    ]
    assert logs[-1] == "follow: every run is finished (fold-0) after 2 session(s)"
    assert (exp.run_dir(0) / "summary.json").is_file() and not (exp.run_dir(1)).exists()

    config = exp.config.model_copy(deep=True)
    config.output_dir, config.train.time_budget_s = tmp_path / "local", None  # one uninterrupted local run
    local = Experiment(config, exp.config_path)
    train.run(local, "0", quiet=True, log=[].append)
    theirs, ours = _weights(exp.run_dir(0)), _weights(local.run_dir(0))
    for name in ours:
        assert sorted(theirs[name]) == sorted(ours[name])
        assert all(torch.equal(theirs[name][key], ours[name][key]) for key in ours[name]), name

    kernel_step.train(exp, fold="0", follow=True, check=False, log=logs.append)  # nothing left: nothing pushed
    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 2


def test_a_failed_session_fetches_its_log_and_stops_with_its_last_error(exp, fake_kaggle):
    def fails(seconds: float) -> None:
        fake_kaggle.kernel_status[TRAIN_REF] = ("ERROR", "Kernel failed")
        fake_kaggle.kernel_logs[TRAIN_REF] = "train tiny: fold 0\nerror: CUDA out of memory on fold 0\nexit\n"

    with pytest.raises(PipelineError) as raised:
        kernel_step.train(exp, fold="0", follow=True, check=False, log=[].append, sleep=fails)

    message = str(raised.value)
    log_file = exp.train_kernel_dir / "logs" / "fold-0-v1.log"
    assert f"kernel {TRAIN_REF} v1 (fold-0) ended error: error: CUDA out of memory on fold 0" in message
    assert str(log_file) in message and "\n" not in message
    assert log_file.read_text() == fake_kaggle.kernel_logs[TRAIN_REF]
    assert len(fake_kaggle.rpc_bodies("ListKernelSessionOutput")) == 1 and not exp.oof_dir.exists()
    [session] = json.loads((exp.train_kernel_dir / "follow.json").read_text())["sessions"]
    assert session["status"] == "failed"
    logs: list[str] = []
    kernel_step.status(exp, log=logs.append)
    assert logs[-2:] == [
        f"training kernel {TRAIN_REF}: error: Kernel failed",
        "follow of fold-0: session 1 (fold-0, v1) failed",
    ]


def test_no_push_when_the_weeks_quota_is_spent(exp, fake_kaggle):
    fake_kaggle.gpu_used_s = fake_kaggle.gpu_total_s

    with pytest.raises(PipelineError, match=r"kaggle quota: 0.0 GPU hours left this week.*not pushed.*--force"):
        kernel_step.train(exp, fold="all", follow=True, check=False, log=[].append)

    assert not fake_kaggle.rpc_bodies("SaveKernel") and not fake_kaggle.rpc_bodies("CreateDataset")
    assert not (exp.train_kernel_dir / "follow.json").exists()


@pytest.mark.parametrize("reached_kaggle", [False, True])
def test_a_session_killed_while_pushing_is_pushed_once_on_rerun(exp, fake_kaggle, monkeypatch, reached_kaggle):
    from src.kaggle.local import cli

    real_push = cli.push_kernel_with_version

    def killed_pushing(*args, **kwargs):
        if reached_kaggle:  # the CLI's push went through; the process died before push.json was written
            real_push(*args, **kwargs)
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(cli, "push_kernel_with_version", killed_pushing)
        with pytest.raises(Killed):
            kernel_step.train(exp, fold="0", follow=True, check=False, log=[].append)
    [session] = json.loads((exp.train_kernel_dir / "follow.json").read_text())["sessions"]
    assert session["status"] == "pushing" and len(fake_kaggle.rpc_bodies("SaveKernel")) == int(reached_kaggle)

    def fails(seconds: float) -> None:  # ends the re-run quickly once a session is on Kaggle
        fake_kaggle.kernel_status[TRAIN_REF] = ("ERROR", "stop")

    logs: list[str] = []
    with pytest.raises(PipelineError, match="ended error"):
        kernel_step.train(exp, fold="0", follow=True, check=False, log=logs.append, sleep=fails)
    assert len(fake_kaggle.rpc_bodies("SaveKernel")) == 1
    expected = (
        "was pushed before the restart: waiting for it" if reached_kaggle else "never reached Kaggle: pushing it again"
    )
    assert f"follow: session 1 (fold-0) {expected}" in logs
    assert json.loads(exp.train_push_path.read_text())["kernel_ref"] == TRAIN_REF  # kernel pull / status find it


def test_no_push_when_the_plan_says_a_session_cannot_finish_an_epoch(exp, fake_kaggle):
    config = exp.config.model_copy(deep=True)
    config.kaggle.images_per_s, config.kaggle.session_timeout_s = 0.01, 60  # an epoch takes hours, a session 1 min
    slow = Experiment(config, exp.config_path)

    with pytest.raises(
        PipelineError, match=r"the plan says it will not fit: one epoch \(.*\) is longer than a session's 1.0 min"
    ):
        kernel_step.train(slow, fold="0", follow=True, check=False, log=[].append)

    assert not fake_kaggle.rpc_bodies("SaveKernel")


def test_a_damaged_or_other_follow_state_is_one_line(exp):
    exp.train_kernel_dir.mkdir(parents=True, exist_ok=True)
    exp.train_follow_path.write_text('{"runs": ["fold-0"], "sessions": [{"run": "fold-0"')  # torn by hand
    with pytest.raises(PipelineError, match=r"follow.json: not a follow state \(.*\): delete it and rerun$"):
        kernel_step.train(exp, fold="0", follow=True, check=False, log=[].append)

    pending = {"run": "fold-1", "resume": False, "epochs_left": 2, "status": "pushed", "version": 3}
    exp.train_follow_path.write_text(json.dumps({"runs": ["fold-1"], "sessions": [pending]}))
    with pytest.raises(PipelineError, match=r"a session of fold-1 for the runs \['fold-1'\] is still on Kaggle: rerun"):
        kernel_step.train(exp, fold="0", follow=True, check=False, log=[].append)
