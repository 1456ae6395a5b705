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
