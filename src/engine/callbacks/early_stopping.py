"""Early stopping: `{name: early_stopping, patience: 4}`, or the shorthand `train.early_stopping_patience: 4`.

A run with held-out rows ends after `patience` epochs in a row without a better validation score; best.pt keeps the
best epoch. A full fit (no held-out rows) runs all its epochs. What it counts is in the run's state (best epoch,
epochs done), so a resumed run stops where the uninterrupted one would.
"""

from __future__ import annotations

from pydantic import Field

from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class EarlyStopping(Callback):
    """Finishes the run when the score has not improved for `patience` epochs."""

    name = "early_stopping"

    class Options(CallbackOptions):
        patience: int = Field(ge=1, description="epochs without a better score before the run ends")

    def on_epoch_end(self, run, row) -> None:
        state, patience = run.state, self.options.patience
        if run.valid_data is not None and not state.finished and state.epochs_since_best >= patience:
            run.finish(f"early stop: no improvement for {patience} epoch(s); best epoch {state.best_epoch}")
