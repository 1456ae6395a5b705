"""scripts/gpu_check.py runs end to end in its CPU mode at tiny sizes: every part measured, a table, the JSON.

No timing thresholds: the figures only mean something on a GPU (and say so there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_cpu_mode_measures_every_part_and_writes_the_json(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--tiny", "--skip-compile", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["sizes"]["model"] == "test_resnet"
    speed = result["parts"]["model_speed"]
    assert list(speed["variants"]) == ["fp32 NCHW", "fp32 channels_last", "bf16 NCHW", "bf16 channels_last"]
    assert all(row["train_images_per_s"] > 0 and row["forward_images_per_s"] > 0 for row in speed["variants"].values())
    assert speed["variants"]["fp32 NCHW"]["train_speedup"] == 1.0 and "skipped" in speed["compile"]
    path = result["parts"]["data_path"]
    assert path["training"]["ratio"]["median"] > 0 and path["inference"]["ratio"]["median"] > 0
    chain = result["parts"]["chain"]
    assert chain["ok"] and list(chain["stages"]) == ["folds", "train", "oof", "thresholds", "submit"]
    assert chain["submission_rows"] == result["sizes"]["chain_test"]
    for words in ("model speed", "data path", "train -> submit on a tiny demo: ok", "wrote"):
        assert words in done.stdout


def test_compile_is_measured_exactly_when_the_config_has_the_key():
    gpu_check = load_script("gpu_check")
    config = gpu_check.check_config(gpu_check.TINY, "cpu")
    names = [name for name, _, _ in gpu_check.variants(config, torch.device("cpu"))]
    assert ("bf16 channels_last compile" in names) == gpu_check.has_compile_key(config)
    assert len(gpu_check.variants(config, torch.device("cpu"), with_compile=False)) == 4


def test_without_a_gpu_it_says_how_to_test_it(tmp_path):
    if torch.cuda.is_available():
        return
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(tmp_path / "x.json")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--cpu" in done.stderr and len(done.stderr.strip().splitlines()) == 1
