"""A time budget per call: `{name: time_budget, seconds: 40000}`, or the shorthand `train.time_budget_s: 40000`.

A Kaggle session ends after 12 hours: an epoch that would pass `seconds` of this call (judged by the longest epoch
so far, checkpoint included) is not started; the run stops cleanly after a whole epoch and `--resume` continues it.
Under DDP the ranks vote, so every rank stops together.
"""

from __future__ import annotations

import time

from pydantic import Field

from src.distributed import all_sum
from src.engine.callbacks import Callback, CallbackOptions, register_callback


@register_callback
class TimeBudget(Callback):
    """Pauses the run when one more epoch would pass the budget of this call."""

    name = "time_budget"

    class Options(CallbackOptions):
        seconds: float = Field(gt=0, description="wall-clock seconds this call may train")

    def on_fit_start(self, run) -> None:
        self.started, self.longest, self.epochs = time.perf_counter(), 0.0, 0
        self.epoch_started: float | None = None

    def on_epoch_start(self, run) -> None:
        now = time.perf_counter()
        if self.epoch_started is not None:  # the whole previous epoch, its checkpoint included
            self.longest = max(self.longest, now - self.epoch_started)
        self.epoch_started = now

    def on_epoch_end(self, run, row) -> None:
        now = time.perf_counter()
        self.epochs += 1
        longest = max(self.longest, now - self.epoch_started)
        [votes] = all_sum(run.distributed, float(now - self.started + longest > self.options.seconds))
        if votes > 0:  # any rank over budget stops all, so no rank waits alone in a collective
            run.pause(
                f"stopped after {self.epochs} epoch(s): another would pass train.time_budget_s "
                f"{self.options.seconds:g} s; continue with --resume"
            )
