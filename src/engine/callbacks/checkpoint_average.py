"""Checkpoint averaging (as timm's avg_checkpoints.py): `{name: checkpoint_average, k: 3}`.

The evaluation weights of the `k` best epochs by validation score (a full fit, which has no score: the last `k`
epochs) are kept on the CPU; when the run finishes, their mean (BatchNorm statistics included; integer buffers from
the best epoch) is scored on the held-out rows and written as best.pt, which oof, submit and the kernel then use.
ONE model of the same architecture, so the no-ensemble rule holds. summary.json names the averaged epochs with both
scores. The kept weights are part of last.pt (k copies of the model: mind the disk for a large model).
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class CheckpointAverage(Callback):
    """Keeps the k best epochs' weights and makes their mean the run's best.pt at the end."""

    name = "checkpoint_average"

    class Options(CallbackOptions):
        k: int = Field(3, ge=2, description="how many of the best epochs to average")

    def setup(self, run) -> None:
        self.kept: list[dict] = []  # {"epoch", "score", "weights"}, best first

    def on_epoch_end(self, run, row) -> None:
        score = float(row.get("score", row["epoch"]))  # a full fit keeps its latest epochs
        if len(self.kept) == self.options.k and score <= self.kept[-1]["score"]:
            return
        weights = {key: value.detach().cpu().clone() for key, value in run.eval_model.state_dict().items()}
        self.kept.append({"epoch": int(row["epoch"]), "score": score, "weights": weights})
        self.kept = sorted(self.kept, key=lambda item: -item["score"])[: self.options.k]

    def on_fit_end(self, run) -> None:
        if not run.state.finished or len(self.kept) < 2:
            return
        averaged = copy.deepcopy(run.eval_model)
        averaged.load_state_dict(mean_weights([item["weights"] for item in self.kept]))
        epochs = sorted(item["epoch"] for item in self.kept)
        best_single = run.state.best_score
        score = run.validate(averaged)[0] if run.valid_data is not None else best_single
        run.write_best(averaged, max(epochs), score)
        run.state.best_score = score
        run.summary.update({"averaged_epochs": epochs, "averaged_score": score, "best_single_epoch_score": best_single})
        run.log(
            f"checkpoint_average: best.pt is the mean of epochs {', '.join(map(str, epochs))}: score {score:.4f} "
            f"(best single epoch {best_single:.4f})"
        )

    def state_dict(self) -> dict:
        return {"kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.kept = list(state["kept"])


def mean_weights(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating tensors (in float64, cast back); other tensors (counters) from the first."""
    mean = {}
    for key, first in state_dicts[0].items():
        if first.is_floating_point():
            total = sum(weights[key].double() for weights in state_dicts)
            mean[key] = (total / len(state_dicts)).to(first.dtype)
        else:
            mean[key] = first.clone()
    return mean
