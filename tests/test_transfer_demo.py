"""The transfer proof end to end (`python scripts/transfer_demo.py`): a backbone pretrained on single digits, published
on the local stand-in hub, fetched by the real `weights` stage, beats training from scratch at equal epochs."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # whole stage chains and kernels (the inner loop leaves them out)

transfer_demo = load_script("transfer_demo")
TAG, main = transfer_demo.TAG, transfer_demo.main


def test_fine_tuning_fetched_weights_beats_scratch_at_every_epoch(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = printed.index(next(line for line in printed if line.startswith("epoch  scratch")))
    columns = printed[header].split()
    rows = [dict(zip(columns, map(float, line.split()))) for line in printed[header + 1 :]]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert row["fine_tuned"] > row["scratch"] and row["fine_tuned_recipe"] > row["scratch"], row
    assert rows[-1]["fine_tuned"] - rows[-1]["scratch"] >= 0.05  # not a tie broken by noise

    # The weights came the way a real download comes: through the weights stage, from the hub, into input/weights/.
    folder = tmp_path / "input" / "weights" / TAG
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors", "pretrained_cfg.json"]
    assert manifest["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["source"].startswith("http://127.0.0.1:") and manifest["hf_hub_id"] == f"timm/{TAG}"
    assert json.loads((folder / "pretrained_cfg.json").read_text())["mean"] == [0.5, 0.5, 0.5]
