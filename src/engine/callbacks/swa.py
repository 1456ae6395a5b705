"""Stochastic weight averaging (Izmailov et al. 2018) with `torch.optim.swa_utils`:
`{name: swa, start_epoch: 8, lr: 1.0e-4, anneal_epochs: 1, anneal_strategy: cos, update_bn: true}`.

From epoch `start_epoch` (counted from 1) each group's lr moves from where the schedule has it to `lr` times the
group's share of `train.lr` (so layer decay and `head_lr_mult` keep their ratios) over `anneal_epochs` epochs, by
SWALR's formula, and stays there. After each of those epochs the weights join an equal-weight running average
(`AveragedModel`); with `update_bn` its BatchNorm statistics are then recomputed by one pass over the training loader
(`update_bn`; under DDP averaged over the ranks). The average is ONE model of the same architecture: validation,
best.pt and so every prediction use it from the first averaged epoch on, within the no-ensemble rule. Its weights, the
lrs it anneals from and its step count are saved in last.pt, so a resumed run averages on exactly.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.distributed as dist
from pydantic import Field
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class Swa(Callback):
    """Averages the weights of the epochs from `start_epoch` on at a constant (annealed-to) lr; see the module."""

    name = "swa"
    provides_eval_weights = True

    class Options(CallbackOptions):
        start_epoch: int = Field(ge=1, description="the first epoch (from 1) whose weights join the average")
        lr: float = Field(gt=0, description="the SWA lr of a group at train.lr (each group keeps its share)")
        anneal_epochs: int = Field(1, ge=0, description="epochs over which the lr moves to the SWA lr")
        anneal_strategy: Literal["cos", "linear"] = Field("cos", description="the shape of that move")
        update_bn: bool = Field(True, description="recompute the average's BatchNorm statistics on the training loader")

    def setup(self, run) -> None:
        # Without a BatchNorm pass the average's buffers must be averaged too, or they stay those of the first copy.
        self.averaged = AveragedModel(run.model, use_buffers=not self.options.update_bn)
        self.start_lrs: list[float] = []
        self.steps = 0
        if self.options.start_epoch > run.epochs:
            run.log(
                f"swa: start_epoch {self.options.start_epoch} is after the last epoch ({run.epochs}); nothing is "
                "averaged"
            )

    def _active(self, run) -> bool:
        return run.epoch + 1 >= self.options.start_epoch

    def on_epoch_start(self, run) -> None:
        if self._active(run):
            if not self.start_lrs:  # the lrs the schedule reached: where the anneal starts
                self.start_lrs = [group["lr"] for group in run.optimizer.param_groups]
            self._set_lrs(run)

    def on_after_optimizer_step(self, run) -> None:
        if self._active(run):  # after the schedule's step: the next step runs at the SWA lr
            self.steps += 1
            self._set_lrs(run)

    def _set_lrs(self, run) -> None:
        """Each group's lr for the next optimizer step: SWALR's anneal from its start lr to its share of `lr`."""
        anneal_steps = self.options.anneal_epochs * run.steps_per_epoch
        t = min(1.0, (self.steps + 1) / anneal_steps) if anneal_steps else 1.0
        alpha = (1.0 - math.cos(math.pi * t)) / 2.0 if self.options.anneal_strategy == "cos" else t
        base_lr = run.config.train.lr
        for group, start_lr, initial in zip(
            run.optimizer.param_groups, self.start_lrs, run.training.scheduler.base_lrs
        ):
            group["lr"] = self.options.lr * (initial / base_lr) * alpha + start_lr * (1.0 - alpha)

    def on_train_epoch_end(self, run, row) -> None:
        if not self._active(run):
            return
        self.averaged.update_parameters(run.model)
        row["swa_models"] = int(self.averaged.n_averaged)
        row["swa_lr"] = run.optimizer.param_groups[0]["lr"]
        if self.options.update_bn:
            with run.runtime.autocast():
                update_bn(run.train_data.loader, self.averaged)
            _average_norm_statistics(self.averaged, run.distributed)

    def eval_model(self, run) -> nn.Module | None:
        return self.averaged.module if int(self.averaged.n_averaged) > 0 else None

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "start_lrs": list(self.start_lrs), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.start_lrs, self.steps = list(state["start_lrs"]), int(state["steps"])


def _average_norm_statistics(model: nn.Module, context) -> None:
    """Each rank saw its shard of the training set: average the BatchNorm running statistics over the ranks."""
    if not context.enabled:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            for buffer in (module.running_mean, module.running_var):
                dist.all_reduce(buffer)
                buffer.div_(context.world_size)
