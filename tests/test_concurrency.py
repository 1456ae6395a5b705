"""Two `train` processes on different folds at once share the folds file and the image cache safely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_config

from src.checkpoint_files import load_checkpoint
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_parallel_folds_do_not_clobber(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": 1, "threads": 1}}, name="par")
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    folds_before = (root / "folds-k3-seed42.csv").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "src.stage", "train", "--config", str(config), "--fold", str(k), "--quiet"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (0, 1)
    ]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    out = tmp_path / "out" / "oof"
    assert (root / "folds-k3-seed42.csv").read_bytes() == folds_before
    assert len(list((out / "_image_cache").glob("*.npy"))) == 1  # built once, under a lock
    assert not list(out.glob("**/.*.tmp"))
    for k in (0, 1):
        assert load_checkpoint(out / "par" / f"fold-{k}" / "best.pt")["epoch"] == 1
