"""One training run end to end: build it, resume it if asked, run its epochs, write its summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.artifacts import LAST_CHECKPOINT, RUN_CONFIG
from src.atomic import write_text
from src.checkpoint_files import checkpoint_exists
from src.config import Config, config_to_dict
from src.distributed import init_from_env
from src.engine import build
from src.engine.callbacks import CallbackList, callbacks_for
from src.engine.checkpoint import restore
from src.engine.context import CallClock, Run, RunState
from src.engine.loop import run_epochs, write_summary
from src.errors import PipelineError
from src.formats.base import CompetitionFormat
from src.losses import MultiHeadLoss
from src.runtime import runtime_from_config, seed_everything


@dataclass(frozen=True)
class RunInputs:
    """What one training run is built from: config, format, the decoded images and targets, the rows it trains
    on and validates on (None: a full fit), and the folder it writes."""

    config: Config
    fmt: CompetitionFormat
    images: np.ndarray
    targets: dict[str, np.ndarray]
    train_rows: np.ndarray
    valid_rows: np.ndarray | None
    run_dir: Path
    clock: CallClock | None = None  # the call's clock when it trains several runs (None: this run's own)


def train_run(
    inputs: RunInputs,
    resume: bool = False,
    stop_after_epochs: int | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    skipped_files: list[str] | None = None,
) -> RunState:
    """Train one model (a fold, or a full fit when `valid_rows` is None); return the final run state.

    `run_dir` receives last.pt, best.pt, epochs.csv, config.json and, once the run stops without being
    asked to, summary.json (naming `skipped_files`, the unreadable images left out, when given).
    Under `torchrun` this is DDP: every rank trains on its shard of each batch (the global batch stays
    `train.batch_size`), validation predictions are gathered across ranks, and only rank 0 writes.
    """
    config, run_dir = inputs.config, Path(inputs.run_dir)
    last_path = run_dir / LAST_CHECKPOINT
    if checkpoint_exists(last_path) and not resume:
        raise PipelineError(
            f"{run_dir}: a run is already there; add --resume to continue it, or delete the folder to start over"
        )
    callbacks = callbacks_for(config.train)
    run = build_run(inputs, callbacks, quiet, log)
    run.callbacks.call("setup", run)
    if resume and checkpoint_exists(last_path):
        run.state = restore(last_path, run, log=run.log)
        run.log(
            f"resumed {run_dir} at epoch {run.state.next_epoch}" + (" (already finished)" if run.state.finished else "")
        )
    if run.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / RUN_CONFIG, json.dumps(config_to_dict(config), indent=2))
    if run_epochs(run, stop_after_epochs) and run.is_main:
        write_summary(run, skipped_files)
    return run.state


def build_run(
    inputs: RunInputs, callbacks: CallbackList, quiet: bool = False, log: Callable[[str], None] = print
) -> Run:
    """Join DDP (under torchrun), seed, and build model, loaders, optimizer and schedule, in a fixed RNG order."""
    config, fmt, images, targets = inputs.config, inputs.fmt, inputs.images, inputs.targets
    run_dir = Path(inputs.run_dir)
    tc, heads = config.train, fmt.heads()
    context = init_from_env(use_cuda=tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available()))
    runtime = runtime_from_config(tc, context.local_rank)
    if not context.is_main:
        quiet, log = True, (lambda message: None)
    wrap = build.trainer_wrapper(tc, runtime, context, log)  # its compile check runs before seeding: no RNG draw moves
    seed_everything(tc.seed)
    model, trained = build.build_models(config, heads, runtime, context, wrap)
    loss_fn = MultiHeadLoss(heads, tc.loss).to(runtime.device)
    train_data = build.build_train_data(config, images, inputs.train_rows, targets, runtime, context)
    build.refuse_single_image_batches(model, train_data.smallest_batch, tc.batch_size, context.world_size)
    valid_data = build.build_valid_data(config, images, inputs.valid_rows, targets, runtime, context)
    optimizer = build.build_optimizer(model, loss_fn, tc)
    scheduler = build.build_scheduler(optimizer, tc, build.steps_per_epoch(len(train_data.loader), tc.accumulate_steps))
    training = build.Training(model, trained, loss_fn, optimizer, scheduler, build.build_grad_scaler(runtime), wrap)
    parts = (config, fmt, heads, training, train_data, valid_data, runtime, context, callbacks, run_dir, quiet, log)
    return Run(*parts, clock=inputs.clock or CallClock())
