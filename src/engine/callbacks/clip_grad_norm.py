"""Gradient clipping: `{name: clip_grad_norm, max_norm: 5.0}`, or the shorthand `train.clip_grad_norm: 5.0`.

Before each optimizer step the global norm of every optimized parameter's gradient is clipped to `max_norm`: after
the AMP grad scaler's unscale (the true gradients, not the loss-scaled ones) and DDP's average.
"""

from __future__ import annotations

import torch
from pydantic import Field

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class ClipGradNorm(Callback):
    """Clips the gradients' global norm just before each optimizer step."""

    name = "clip_grad_norm"

    class Options(CallbackOptions):
        max_norm: float = Field(gt=0, description="the largest global gradient norm a step may take")
        norm_type: float = Field(2.0, gt=0, description="the p of the p-norm (2 = Euclidean; inf = the largest entry)")

    def on_before_optimizer_step(self, run) -> None:
        training = run.training
        training.scaler.unscale_(training.optimizer)  # clip the true gradients, not the loss-scaled ones
        parameters = [p for group in training.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, self.options.max_norm, norm_type=self.options.norm_type)
