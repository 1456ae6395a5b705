"""SWA as one callback: the lr anneals to the SWA lr, the average is the mean of the epochs' weights from
start_epoch on with BatchNorm statistics recomputed, validation and best.pt use it, and a resumed run is exact."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import tiny_config
from test_train_resume import _assert_resume_is_exact

from src.engine import Callback, create_callbacks, register_callback
from src.errors import PipelineError
from src.stage import main


@register_callback
class EpochWeights(Callback):
    """Keeps a copy of the trained weights at the end of each epoch's training (before validation)."""

    name = "test_epoch_weights"
    SEEN: list[dict] = []

    def on_train_epoch_end(self, run, row):
        self.SEEN.append({key: value.detach().clone() for key, value in run.model.state_dict().items()})


def _train(tmp_path, root, callbacks, epochs=3, **train):
    config = tiny_config(tmp_path, "imet", root, {"train": {"epochs": epochs, "callbacks": callbacks, **train}})
    assert main(["folds", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--fold", "0", "--quiet"]) == 0
    return tmp_path / "out" / "oof" / "tiny" / "fold-0"


def test_swa_averages_the_epochs_from_start_and_recomputes_batchnorm(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    EpochWeights.SEEN.clear()
    swa = {"name": "swa", "start_epoch": 2, "lr": 1e-3, "anneal_epochs": 1}
    run_dir = _train(tmp_path, root, [{"name": "test_epoch_weights"}, swa])
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["callbacks"]
    averaged = next(item["state"]["averaged"] for item in state if item["name"] == "swa")
    assert int(averaged["n_averaged"]) == 2
    for key, value in averaged.items():
        if (
            key.startswith("module.")
            and key[7:] in EpochWeights.SEEN[0]
            and "running" not in key
            and "num_batches" not in key
        ):
            expected = (EpochWeights.SEEN[1][key[7:]] + EpochWeights.SEEN[2][key[7:]]) / 2
            assert torch.allclose(value, expected, atol=1e-6), key
    # BatchNorm statistics come from a fresh pass over the training loader, not from the last epoch's model.
    summary = json.loads((run_dir / "summary.json").read_text())
    batches = summary["train_images"] // 16
    counters = [value for key, value in averaged.items() if key.endswith("num_batches_tracked")]
    assert counters and all(int(value) == batches for value in counters)
    epochs = pd.read_csv(run_dir / "epochs.csv")
    assert epochs["swa_models"].fillna(0).tolist() == [0, 1, 2]
    assert epochs["swa_lr"].iloc[-1] == pytest.approx(1e-3)  # annealed over one epoch, then held
    assert epochs["lr"].iloc[-1] == pytest.approx(1e-3)
    # best.pt holds the average's weights when an SWA epoch scored best, else an epoch before it started
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    if best["epoch"] >= 2:
        assert all(torch.equal(best["model"][key], averaged[f"module.{key}"]) for key in best["model"])


@pytest.mark.slow
def test_swa_resumes_exactly(tiny_imet_root, tmp_path):
    root, _ = tiny_imet_root
    _assert_resume_is_exact(
        root,
        tmp_path,
        {
            "train": {
                "epochs": 3,
                "callbacks": [
                    {"name": "swa", "start_epoch": 1, "lr": 5e-4, "anneal_epochs": 2, "anneal_strategy": "linear"}
                ],
            }
        },
    )


def test_swa_refuses_a_second_weights_provider_and_bad_options():
    with pytest.raises(PipelineError) as error:
        create_callbacks([{"name": "swa", "lr": 1e-3}])
    assert str(error.value).startswith("config train.callbacks[0].start_epoch: Field required")
    from src.config import TrainConfig
    from src.engine import callbacks_for

    with pytest.raises(PipelineError) as error:
        callbacks_for(TrainConfig(ema_decay=0.99, callbacks=[{"name": "swa", "start_epoch": 2, "lr": 1e-3}]))
    assert "swa and ema each provide the weights" in str(error.value)
