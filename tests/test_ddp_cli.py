"""DDP as a user runs it: `torchrun --nproc_per_node=2 -m src.stage train ...` through the command line.

Only rank 0 prints and writes: exit 0, every line of the stage once, one set of run files.
(tests/test_ddp.py compares what 2 processes learn with what one learns.)
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from helpers import run_torchrun, tiny_config

from src.stage import main

pytestmark = pytest.mark.ddp  # torchrun with 2 processes (conftest marks these slow too)

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_train_prints_each_line_once_and_rank_0_writes_each_file_once(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 2, "batch_size": 16, "threads": 1}}, name="ddp")
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    result = run_torchrun("train", "--config", str(config), "--fold", "0")
    assert result.returncode == 0, result.stderr[-3000:]

    lines = [line for line in result.stdout.splitlines() if line.strip()]
    repeated = {line: n for line, n in collections.Counter(lines).items() if n > 1}
    assert not repeated, repeated
    assert sum(line.startswith("train ddp: ") for line in lines) == 1
    assert sum(line.startswith("epoch ") for line in lines) == 2  # one line per epoch, from rank 0 only
    assert "error" not in result.stderr.lower()

    run_dir = tmp_path / "out" / "oof" / "ddp" / "fold-0"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.pt",
        "best.pt.sha256",
        "config.json",
        "epochs.csv",
        "last.prev.pt",
        "last.prev.pt.sha256",
        "last.pt",
        "last.pt.sha256",
        "summary.json",
    ]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs_run"] == 2 and summary["skipped_unreadable"] == 0


def test_sigterm_to_torchrun_stops_every_rank_in_a_line_and_resume_ends_as_an_uninterrupted_run(
    tiny_imet_root, tmp_path
):
    """What a scheduler (or a Kaggle session's end) does to `torchrun ... train`: SIGTERM to torchrun, which passes it
    to the ranks. Each rank stops with one line, nothing half-written stays, and --resume in 2 processes ends with the
    weights of 2 processes that were never stopped."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import torch

    root, _ = tiny_imet_root
    train = {"train": {"epochs": 100, "batch_size": 16, "threads": 1}}  # far more than run before the signal
    stopped = tiny_config(tmp_path / "a", "imet", root, train, name="stopped")
    straight = tiny_config(tmp_path / "b", "imet", root, train, name="straight")
    assert main(["folds", "--config", str(stopped), "--quiet"]) == 0
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "src.stage"]
    command = [*torchrun, "train", "--config", str(stopped), "--fold", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "a" / "out" / "oof" / "stopped" / "fold-0"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "last.pt").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()

    lines = [line for line in err.splitlines() if "was stopped (SIGTERM)" in line]
    assert sorted(line.split("error: ")[0] for line in lines) == ["", "rank 1: "], err[-3000:]  # one line a rank
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    resumed = run_torchrun("train", "--config", str(stopped), "--fold", "0", "--resume", "--stop-after-epochs", "1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = int(re.search(r"resumed .* at epoch (\d+)", resumed.stdout).group(1)) + 1
    reference = run_torchrun("train", "--config", str(straight), "--fold", "0", "--stop-after-epochs", str(epochs))
    assert reference.returncode == 0, reference.stderr[-3000:]

    def weights(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    a, b = weights(run_dir / "last.pt"), weights(tmp_path / "b" / "out" / "oof" / "straight" / "fold-0" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
