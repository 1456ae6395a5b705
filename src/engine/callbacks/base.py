"""The callback interface: the points in the epoch loop where a training trick runs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from src.engine.build import Training


class CallbackOptions(BaseModel):
    """Base of every callback's `Options`: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Callback:
    """A training trick: hooks the epoch loop calls, each a no-op unless a subclass overrides it.

    Hooks run on every DDP rank, in the order of `train.callbacks`. `training` is the run's
    `src.engine.build.Training` (model, DDP wrapper, EMA, loss, optimizer, scheduler, grad scaler).
    A callback whose behaviour depends on what it has seen keeps that in `state_dict`, which last.pt
    saves after each epoch and `--resume` hands back to `load_state_dict` (tensors, numbers, strings,
    lists and dicts only: checkpoints load with `weights_only=True`).
    """

    name: ClassVar[str]
    Options: ClassVar[type[CallbackOptions]] = CallbackOptions
    mixes_targets: ClassVar[bool] = False  # True: on_batch may mix targets (mixup, CutMix); see `mixed_last_batch`

    def __init__(self, options: CallbackOptions):
        self.options = options

    def on_epoch_start(self, training: Training, epoch: int) -> None:
        """Before the epoch's first batch (`epoch` counts from 0), e.g. unfreeze a part or change a group's lr."""

    def on_batch(self, training: Training, images: torch.Tensor,
                 targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each training batch, already on the device, before the forward pass: return the images and
        targets (per head) the forward pass and the loss should see, e.g. mixed pairs for mixup."""
        return images, targets

    def mixed_last_batch(self) -> bool:
        """Whether the last `on_batch` mixed the targets: train_score leaves such batches out."""
        return False

    def after_step(self, training: Training, step: int) -> None:
        """After each optimizer step (the schedule and the EMA have moved); `step` counts the run's steps from 1."""

    def on_epoch_end(self, training: Training, epoch: int, row: dict[str, Any]) -> None:
        """After validation, before the checkpoint; `row` is the epoch's epochs.csv row (keys added become columns)."""

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to continue exactly after `--resume`."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned when last.pt was written."""
