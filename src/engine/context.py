"""The run context: what every callback hook receives. A run's fixed parts (config, format and heads, model,
optimizer and schedule, data, device, ranks), where it is now (epoch, step, `state`), and what a callback may
ask of it (finish, pause, the evaluation weights, scoring other weights on the held-out rows, writing best.pt)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from src.config import Config
from src.distributed import DistributedContext
from src.engine.build import TrainData, Training, ValidData, steps_per_epoch
from src.engine.callbacks import CallbackList
from src.formats.base import CompetitionFormat, HeadSpec
from src.runtime import Runtime


@dataclass
class RunState:
    """What survives between epochs (saved in last.pt)."""

    next_epoch: int = 0  # epochs done
    best_score: float = -math.inf
    best_epoch: int = -1  # 1-based
    finished: bool = False
    history: list[dict] = field(default_factory=list)

    @property
    def epochs_since_best(self) -> int:
        return self.next_epoch - max(self.best_epoch, 0)


@dataclass
class CallClock:
    """The clock of one `train` call, shared by all its runs (`--fold all` trains them one after another in one
    Kaggle session): when the call started and its longest epoch so far, what a time budget per call counts."""

    started: float = field(default_factory=time.perf_counter)
    longest_epoch_s: float = 0.0


@dataclass
class Run:
    """A training run as its callbacks see it (built once by `src.engine.run.build_run`)."""

    config: Config
    fmt: CompetitionFormat
    heads: list[HeadSpec]
    training: Training
    train_data: TrainData
    valid_data: ValidData | None  # None for a full fit
    runtime: Runtime
    distributed: DistributedContext
    callbacks: CallbackList
    run_dir: Path
    quiet: bool
    log: Callable[[str], None]
    state: RunState = field(default_factory=RunState)
    epoch: int = 0  # the epoch under way, from 0
    pause_reason: str | None = None  # set by `pause`: the loop stops before the next epoch
    summary: dict[str, Any] = field(default_factory=dict)  # extra summary.json keys callbacks add
    clock: CallClock = field(default_factory=CallClock)  # this call's, shared by its runs

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    @property
    def step(self) -> int:
        """Optimizer steps taken so far in this run."""
        return self.training.step

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train_data.loader), self.config.train.accumulate_steps)

    @property
    def model(self) -> nn.Module:
        """The bare model being trained (not its DDP / compile wrapper)."""
        return self.training.model

    @property
    def optimizer(self):
        return self.training.optimizer

    @property
    def is_main(self) -> bool:
        return self.distributed.is_main

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and best.pt keeps: a callback's (EMA, SWA) where one provides them."""
        return self.callbacks.eval_model(self) or self.training.model

    def finish(self, reason: str) -> None:
        """End the run after this epoch: it is complete (early stopping)."""
        self.state.finished = True
        self.log(reason)

    def pause(self, reason: str) -> None:
        """Stop this call after this epoch; `--resume` continues (a time budget)."""
        self.pause_reason = reason

    def validate(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        """(score, {valid_loss, score, metrics...}) of `model` on the held-out rows, gathered across ranks."""
        from src.engine.validation import score_held_out

        return score_held_out(self, model)

    def write_best(self, model: nn.Module, epoch: int, score: float) -> None:
        """Write best.pt from `model` (rank 0 only), as the loop does for an improved epoch."""
        from src.artifacts import BEST_CHECKPOINT
        from src.engine.checkpoint import save_best

        if self.is_main:
            save_best(self.run_dir / BEST_CHECKPOINT, model, self.config, self.fmt, epoch, score)
