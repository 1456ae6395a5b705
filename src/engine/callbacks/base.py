"""The callback interface: every point of a training run where a trick can act, each given the whole run.

The hooks, in the order a run calls them (as PyTorch Lightning's and fastai's callbacks, which see the trainer):

    setup                     once per call, after the run is built and before a resume point is loaded
    on_fit_start              once per call, after the resume point is loaded, before the first epoch
      on_epoch_start            before an epoch's first batch (`run.epoch` counts from 0)
        on_batch                  a training batch on the device, before the forward pass: may replace
                                  `batch.images` / `batch.targets` (`batch.mix` says the targets are mixed)
        on_before_optimizer_step  gradients ready (and averaged across ranks), before the step: e.g. clipping
        on_after_optimizer_step   after the step and the lr schedule's step (`run.step` counts from 1): e.g. EMA
        on_batch_end              after the batch (and its step, if it ended an accumulation group)
      on_train_epoch_end        every training batch done, before validation; `row` is the epoch's epochs.csv row
      on_validation_start       before the held-out rows are scored (not in a full fit)
      on_validation_end         after they are scored; `row` has valid_loss and the metrics
      on_epoch_end              after `run.state` recorded the epoch (best epoch, finished), before last.pt and
                                best.pt are written: may call `run.finish` (early stopping) or `run.pause` (budget)
    on_fit_end                once per call when the epochs stop (finished, paused or failed: see `run.state`)

`eval_model` lets a callback provide the weights that validation, best.pt and so every prediction use (EMA,
SWA); at most one callback of a run may (`provides_eval_weights`). `state_dict` / `load_state_dict` carry what a
callback must keep across `--resume` (tensors, numbers, strings, lists and dicts: last.pt loads with
weights_only=True). Hooks run on every DDP rank, in the run's callback order; only rank 0 writes files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from src.errors import PipelineError

if TYPE_CHECKING:
    from src.engine.context import Run

HOOKS = (
    "setup",
    "on_fit_start",
    "on_epoch_start",
    "on_batch",
    "on_before_optimizer_step",
    "on_after_optimizer_step",
    "on_batch_end",
    "on_train_epoch_end",
    "on_validation_start",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
)


class CallbackOptions(BaseModel):
    """Base of every callback's `Options`: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Batch:
    """One training batch as the hooks see it: on the device, model-ready; `outputs` and `loss` once computed."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    index: int  # position in the epoch, from 0
    mixed_by: str | None = None  # the callback that mixed the targets (mixup, CutMix), if any
    outputs: dict[str, torch.Tensor] | None = None
    loss: torch.Tensor | None = None

    def mix(self, by: str, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        """Replace images and targets with a mixed pair: outputs scored against mixed targets mean nothing, so
        train_score leaves this batch out."""
        self.images, self.targets, self.mixed_by = images, targets, by

    def __len__(self) -> int:
        return len(self.images)


class Callback:
    """A training behaviour: the hooks above, each a no-op unless a subclass overrides it (see the module docstring)."""

    name: ClassVar[str]
    Options: ClassVar[type[CallbackOptions]] = CallbackOptions
    provides_eval_weights: ClassVar[bool] = False  # True: `eval_model` may return the weights to validate and keep
    runs_first: ClassVar[bool] = False  # True: set up before every other callback (it changes the starting weights)

    def __init__(self, options: CallbackOptions):
        self.options = options

    def setup(self, run: Run) -> None:
        """Build what this callback needs from the run (e.g. an averaged copy of the model)."""

    def on_fit_start(self, run: Run) -> None:
        """Before the first epoch of this call (a resumed run has its state back)."""

    def on_epoch_start(self, run: Run) -> None:
        """Before the epoch's first batch, e.g. unfreeze a part or change a group's lr."""

    def on_batch(self, run: Run, batch: Batch) -> None:
        """Each training batch before the forward pass; change it in place (`batch.mix` for mixed targets)."""

    def on_before_optimizer_step(self, run: Run) -> None:
        """Gradients are complete (and averaged across ranks); the optimizer has not stepped yet."""

    def on_after_optimizer_step(self, run: Run) -> None:
        """After each optimizer step and the schedule's step; `run.step` counts the run's steps from 1."""

    def on_batch_end(self, run: Run, batch: Batch) -> None:
        """After the batch: `batch.outputs` (the logits per head) and `batch.loss` are set."""

    def on_train_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        """The epoch's training batches are done; keys added to `row` become epochs.csv columns."""

    def on_validation_start(self, run: Run) -> None:
        """Before the held-out rows are scored with `run.eval_model`."""

    def on_validation_end(self, run: Run, row: dict[str, Any]) -> None:
        """After validation: `row` holds valid_loss, score and the format's metrics."""

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        """`run.state` has recorded the epoch; last.pt and best.pt are written after this hook."""

    def on_fit_end(self, run: Run) -> None:
        """The epochs stopped: `run.state.finished` says whether the run is complete."""

    def eval_model(self, run: Run) -> nn.Module | None:
        """The weights validation, best.pt and prediction use instead of the trained model; None = the trained model."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to continue exactly after `--resume`."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned when last.pt was written."""


class CallbackList:
    """A run's callbacks in order: calls a hook on each, and asks which one provides the evaluation weights."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = sorted(callbacks, key=lambda callback: not callback.runs_first)  # stable otherwise
        providers = [callback.name for callback in self.callbacks if callback.provides_eval_weights]
        if len(providers) > 1:
            raise PipelineError(
                f"config train.callbacks: {' and '.join(providers)} each provide the weights that "
                "validation and best.pt use; keep one of them"
            )

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    @property
    def names(self) -> list[str]:
        return [callback.name for callback in self.callbacks]

    def call(self, hook: str, run: Run | None, *args: Any) -> None:
        """`hook(run, *args)` on every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(run, *args)

    def eval_model(self, run: Run) -> nn.Module | None:
        """The evaluation weights a callback provides now, or None."""
        for callback in self.callbacks:
            model = callback.eval_model(run)
            if model is not None:
                return model
        return None


NO_CALLBACKS = CallbackList()
