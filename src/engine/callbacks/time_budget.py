"""A time budget per call: `{name: time_budget, seconds: 40000}`, or the shorthand `train.time_budget_s: 40000`.

A Kaggle session ends after 12 hours: an epoch that would pass `seconds` of this call (judged by the longest epoch
of the call so far, checkpoint included) is not started; the run stops cleanly after a whole epoch and `--resume`
continues it. The call is the `train` stage's, whatever its runs (`--fold all` trains them one after another in one
session): the clock starts with the stage (decoding the images counts), and a later run whose first epoch would pass
the budget is not started at all. A call trains at least one epoch. Under DDP the ranks vote, so every rank stops
together.
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
        self.epochs, self.epoch_started = 0, None
        clock = run.clock
        if clock.longest_epoch_s and self._over(run, time.perf_counter() - clock.started + clock.longest_epoch_s):
            run.pause(
                f"{run.run_dir.name} not started: its first epoch would pass this call's train.time_budget_s "
                f"{self.options.seconds:g} s; continue with --resume"
            )

    def on_epoch_start(self, run) -> None:
        now = time.perf_counter()
        if self.epoch_started is not None:  # the whole previous epoch, its checkpoint included
            run.clock.longest_epoch_s = max(run.clock.longest_epoch_s, now - self.epoch_started)
        self.epoch_started = now

    def on_epoch_end(self, run, row) -> None:
        now = time.perf_counter()
        self.epochs += 1
        run.clock.longest_epoch_s = max(run.clock.longest_epoch_s, now - self.epoch_started)
        if self._over(run, now - run.clock.started + run.clock.longest_epoch_s):
            run.pause(
                f"stopped after {self.epochs} epoch(s): another would pass train.time_budget_s "
                f"{self.options.seconds:g} s; continue with --resume"
            )

    def _over(self, run, seconds_needed: float) -> bool:
        """Whether any rank would pass the budget (a vote, so no rank waits alone in a collective)."""
        [votes] = all_sum(run.distributed, float(seconds_needed > self.options.seconds))
        return votes > 0
