"""The folder demo's transfer learning (src/demo_pretrain.py): the pretrained weights it fine-tunes from are made on
this machine and installed as the `weights` stage installs a download, so the demo runs offline on a fresh machine;
the run follows the config's freezing schedule and the report shows it."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save

from src.config import load_config
from src.demo_pretrain import DEMO_TAG, install_hub_files
from src.model import build_model
from src.stage import main
from src.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo-folder.yaml"


def test_installed_hub_files_load_as_fetched_weights_and_a_changed_byte_is_refused(tmp_path):
    backbone = timm.create_model("test_resnet", num_classes=10)
    files = {"model.safetensors": save({k: v.contiguous() for k, v in backbone.state_dict().items()})}
    folder = install_hub_files(files, DEMO_TAG, tmp_path / "weights")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert manifest["tag"] == DEMO_TAG and manifest["source"].startswith("local:")
    model_config = load_config(CONFIG).model
    weight_file = resolve_weights(model_config, CONFIG, tmp_path / "weights")
    model = build_model("test_resnet", [], weights=weight_file, pretrained_tag=DEMO_TAG)
    stem = next(name for name in backbone.state_dict() if name.endswith("weight"))
    assert torch.equal(model.backbone.state_dict()[stem], backbone.state_dict()[stem])
    data = bytearray(weight_file.read_bytes())
    data[-1] ^= 1
    weight_file.write_bytes(bytes(data))
    with pytest.raises(Exception, match="SHA-256"):
        resolve_weights(model_config, CONFIG, tmp_path / "weights")


@pytest.mark.slow
def test_the_folder_demo_fine_tunes_offline_from_weights_it_makes_with_the_freezing_schedule(tmp_path, monkeypatch):
    def no_network(self, address, *args):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network refused in this test: {address}")
        return real_connect(self, address, *args)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)  # a fresh machine: no input/weights/ anywhere
    overrides = ["data.n_folds=2", "train.epochs=2", "thresholds.optuna_trials=4", "thresholds.honest_folds=2"]
    assert main(["demo", "--config", str(CONFIG), *overrides, "--quiet"]) == 0

    folder = tmp_path / "input" / "weights" / DEMO_TAG
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    saved = json.loads((tmp_path / "oof" / "demo-folder" / "fold-0" / "config.json").read_text())
    assert saved["model"]["pretrained"] == DEMO_TAG
    for run in ("fold-0", "fold-1", "full"):
        epochs = pd.read_csv(tmp_path / "oof" / "demo-folder" / run / "epochs.csv")
        assert list(epochs["trainable"]) == ["heads", "all"], run  # epoch 1: the head alone; then everything
        backbone_lrs = epochs[[c for c in epochs.columns if c.startswith("lr_depth")]]
        assert (backbone_lrs.iloc[0] == 0).all() and (backbone_lrs.iloc[1] > 0).all(), run
    report = (tmp_path / "oof" / "demo-folder" / "report" / "report.md").read_text()
    assert "freeze" in report
    assert "The freezing schedule, held-out accuracy: fold-0:" in report  # what training everything brought
    scores = json.loads((tmp_path / "submissions" / "demo-folder" / "test_scores.json").read_text())
    assert scores["accuracy"] > 0.5  # ten classes: chance is 0.1
    # report.compare: the demo also trained the same model from scratch, and the report says what fine-tuning bought.
    scratch = json.loads((tmp_path / "oof" / "demo-folder-scratch" / "fold-0" / "config.json").read_text())
    assert scratch["model"]["pretrained"] is None and scratch["train"]["callbacks"] == []
    assert (tmp_path / "submissions" / "demo-folder-scratch" / "test_scores.json").is_file()
    assert "Compared with other experiments" in report and "Against demo-folder-scratch (model.pretrained: " in report
    rows = {
        row["experiment"]: row
        for row in json.loads((tmp_path / "oof" / "demo-folder" / "report" / "tables.json").read_text())["comparison"]
    }
    assert rows["demo-folder (this report)"]["test accuracy"] == scores["accuracy"]
