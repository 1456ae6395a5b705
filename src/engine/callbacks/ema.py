"""Exponential moving average of the weights (timm's ModelEmaV3), which validation, best.pt and so every
prediction use: `{name: ema, decay: 0.999}`, or the shorthand `train.ema_decay: 0.999`.

The average follows the trained module after every optimizer step; its weights (and BatchNorm buffers) are saved
in last.pt, so a resumed run averages on exactly.
"""

from __future__ import annotations

from pydantic import Field
from timm.utils import ModelEmaV3

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class Ema(Callback):
    """Keeps `ema = decay * ema + (1 - decay) * weights` after each step and provides it as the evaluation weights."""

    name = "ema"
    provides_eval_weights = True

    class Options(CallbackOptions):
        decay: float = Field(0.999, gt=0, lt=1, description="weight of the average so far at each step")

    def setup(self, run) -> None:
        self.ema = ModelEmaV3(run.model, decay=self.options.decay)

    def on_after_optimizer_step(self, run) -> None:
        self.ema.update(run.training.trained)

    def eval_model(self, run):
        return self.ema.module

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
