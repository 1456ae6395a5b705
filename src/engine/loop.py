"""The epoch loop: train with callback points, validate, keep the best epoch, stop early, checkpoint, log.

Callback points (src.engine.callbacks): `on_epoch_start` before an epoch's first batch, `on_batch`
between moving a batch to the device and the forward pass, `after_step` after each optimizer step,
`on_epoch_end` after validation and before the checkpoint. Under DDP every rank runs the loop; only
rank 0 writes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from src.artifacts import BEST_CHECKPOINT, EPOCHS_CSV, LAST_CHECKPOINT, RUN_SUMMARY
from src.atomic import atomic_path, write_text
from src.config import Config
from src.distributed import (DistributedContext, all_sum, assert_same_on_all_ranks, average_gradients, barrier,
                             gather_predictions)
from src.engine.build import Training, TrainData, ValidData
from src.engine.callbacks import Callback
from src.engine.checkpoint import RunState, save_best, save_resume_point
from src.errors import PipelineError
from src.faults import crash_point
from src.formats.base import CompetitionFormat, HeadSpec
from src.model import backbone_stages, count_parameters
from src.predict_loop import predict_probs
from src.runtime import Runtime, peak_memory_mb


@dataclass
class Run:
    """A training run's fixed parts, built once by `src.engine.run.build_run`; the loop reads them."""

    config: Config
    fmt: CompetitionFormat
    heads: list[HeadSpec]
    training: Training
    train_data: TrainData
    valid_data: Optional[ValidData]     # None for a full fit
    runtime: Runtime
    context: DistributedContext
    callbacks: list[Callback]
    run_dir: Path
    quiet: bool
    log: Callable[[str], None]


def train_one_epoch(training: Training, loader, runtime: Runtime, context: DistributedContext = DistributedContext(),
                    accumulate: int = 1, callbacks: Sequence[Callback] = (), quiet: bool = True,
                    desc: str = "train", collect: Optional[TrainOutputs] = None) -> tuple[float, int]:
    """One pass over `loader` ((images, {head: targets}, rows) batches), an optimizer step every `accumulate`
    batches and after the last; returns (sum of batch loss x batch size, images seen) on this rank.
    `collect` keeps the outputs of each batch no callback mixed, with its targets (for the epoch's train_score)."""
    training.trained.train()
    loss_sum, seen = 0.0, 0
    training.optimizer.zero_grad(set_to_none=True)
    batches = len(loader)
    progress = tqdm(loader, desc=desc, disable=quiet, leave=False)
    for index, (images, targets, _) in enumerate(progress):
        # TrainData.loader (src.runtime.DeviceLoader) hands over normalised float batches already on the device
        # (uint8 -> float once per batch there, prefetched on CUDA): these two lines only move other batches.
        images = runtime.to_device(images)
        targets = {name: value.to(runtime.device, non_blocking=True) for name, value in targets.items()}
        for callback in callbacks:
            images, targets = callback.on_batch(training, images, targets)
        with runtime.autocast():
            outputs = training.trained(images)
        loss, _ = training.loss_fn(outputs, targets)
        if collect is not None and not any(callback.mixed_last_batch() for callback in callbacks):
            collect.add(outputs, targets)
        training.scaler.scale(loss / accumulate).backward()
        crash_point("batch")
        if (index + 1) % accumulate == 0 or index + 1 == batches:
            _optimizer_step(training, context, callbacks)
        loss_sum += float(loss.detach()) * len(images)
        seen += len(images)
        progress.set_postfix(loss=f"{loss_sum / seen:.4f}")
    if not math.isfinite(loss_sum):
        raise PipelineError("training loss became NaN/inf; lower train.lr or disable train.amp")
    return loss_sum, seen


def _optimizer_step(training: Training, context: DistributedContext, callbacks: Sequence[Callback]) -> None:
    average_gradients(context, training.loss_fn.parameters())  # DDP averages the model's; the loss's are ours
    if training.clip_grad_norm is not None:
        training.scaler.unscale_(training.optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_([p for group in training.optimizer.param_groups for p in group["params"]],
                                       training.clip_grad_norm)
    training.scaler.step(training.optimizer)
    training.scaler.update()
    training.optimizer.zero_grad(set_to_none=True)
    training.scheduler.step()
    if training.ema is not None:
        training.ema.update(training.trained)
    for callback in callbacks:
        callback.after_step(training, training.step)


def run_epochs(run: Run, state: RunState, stop_after_epochs: Optional[int] = None) -> bool:
    """Train epochs until the run is finished; False when it stopped after `stop_after_epochs` as asked."""
    board = _tensorboard(run.run_dir, run.config.train.tensorboard and run.context.is_main)
    try:
        epochs_this_call, started, longest = 0, time.perf_counter(), 0.0
        while not state.finished and state.next_epoch < run.config.train.epochs:
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                run.log(f"stopped after {epochs_this_call} epoch(s) as asked; continue with --resume")
                return False
            if _over_budget(run, time.perf_counter() - started, longest):
                run.log(f"stopped after {epochs_this_call} epoch(s): another would pass train.time_budget_s "
                        f"{run.config.train.time_budget_s:g} s; continue with --resume")
                return False
            epoch_started = time.perf_counter()
            run_epoch(run, state, board)
            longest = max(longest, time.perf_counter() - epoch_started)
            epochs_this_call += 1
    finally:
        if board is not None:
            board.close()
    return True


def _over_budget(run: Run, elapsed: float, longest_epoch: float) -> bool:
    """Whether one more epoch (as long as the longest so far) would pass the time budget; ranks agree."""
    budget = run.config.train.time_budget_s
    if budget is None or longest_epoch == 0.0:
        return False
    [votes] = all_sum(run.context, float(elapsed + longest_epoch > budget))
    return votes > 0  # any rank over budget stops all, so no rank waits alone in a collective


def run_epoch(run: Run, state: RunState, board=None) -> None:
    """One epoch: train, validate, update `state` (best epoch, early stopping), save last.pt / best.pt, log."""
    tc, training, epoch = run.config.train, run.training, state.next_epoch
    started = time.perf_counter()
    run.train_data.set_epoch(epoch)
    for callback in run.callbacks:
        callback.on_epoch_start(training, epoch)
    collected = TrainOutputs(run.heads)
    loss_sum, seen = train_one_epoch(training, run.train_data.loader, run.runtime, run.context, tc.accumulate_steps,
                                     run.callbacks, run.quiet, f"epoch {epoch + 1}/{tc.epochs}", collected)
    if training.loss_fn.log_vars is not None:
        assert_same_on_all_ranks(run.context, training.loss_fn.log_vars, "learned loss log-variances")
    loss_sum, seen = all_sum(run.context, loss_sum, seen)
    train_seconds = time.perf_counter() - started
    row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
           "train_score": collected.score(run.fmt, run.context)}
    score = _validate(run, row) if run.valid_data is not None else float(epoch)  # full fit: the last epoch is kept
    if training.loss_fn.log_vars is not None:
        row.update({f"weight_{name}": weight for name, weight in training.loss_fn.head_weights().items()})
    row.update({"lr": training.optimizer.param_groups[0]["lr"], **trained_parts(training),
                "seconds": time.perf_counter() - started, "images_per_s": seen / max(train_seconds, 1e-9)})
    for callback in run.callbacks:
        callback.on_epoch_end(training, epoch, row)
    improved = _advance(run, state, row, score)
    if run.context.is_main:
        _save_epoch(run, state, row, improved, score, board)
    barrier(run.context)
    if not run.quiet:
        run.log(_epoch_line(row, tc.epochs, improved))


class TrainOutputs:
    """The epoch's training-batch outputs as probabilities, with the targets the loss saw, per head: what its
    train_score scores. float16 keeps an iMet-sized epoch (100k x 1,103 classes) near 220 MB."""

    def __init__(self, heads: Sequence[HeadSpec]):
        self.kinds = {head.name: head.kind for head in heads}
        self.probs: dict[str, list[np.ndarray]] = {name: [] for name in self.kinds}
        self.targets: dict[str, list[np.ndarray]] = {name: [] for name in self.kinds}

    def add(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        """One batch: sigmoid (multilabel) or softmax (softmax heads) of its logits, and its targets, on the CPU."""
        for name, kind in self.kinds.items():
            logits = outputs[name].detach().float()
            probs = torch.sigmoid(logits) if kind == "multilabel" else torch.softmax(logits, dim=1)
            self.probs[name].append(probs.half().cpu().numpy())
            self.targets[name].append(targets[name].detach().cpu().numpy())

    def score(self, fmt: CompetitionFormat, context: DistributedContext) -> float:
        """The format's validation score over every rank's batches (the same number on each rank); NaN without any."""
        parts = [(self.targets, self.probs)]
        if context.enabled:
            parts = [None] * context.world_size
            dist.all_gather_object(parts, (self.targets, self.probs))
        if not any(batches for part in parts for batches in part[0].values()):
            return math.nan  # every batch was mixed
        targets, probs = ({name: np.concatenate([array for part in parts for array in part[index][name]])
                           for name in self.kinds} for index in (0, 1))
        return float(fmt.validation_score(targets, probs)[0])


def mixing_callbacks(callbacks: Sequence[Callback]) -> list[str]:
    """Names of the callbacks that may mix targets (mixup, CutMix): train_score leaves out the batches they mix, as
    outputs scored against mixed targets mean nothing."""
    return [callback.name for callback in callbacks if callback.mixes_targets]


def trained_parts(training: Training) -> dict:
    """epochs.csv's `lr_<group>` (each group's lr at the epoch's last optimizer step; 0 where none of its parameters
    trained) and `trainable` ('all', or the parts that trained, input first: e.g. 'layer4+heads')."""
    scheduler, lrs, lr_of = training.scheduler, {}, {}
    for group, base, factor in zip(training.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        lr = base * factor(max(scheduler.last_epoch - 1, 0))
        lr_of.update({id(p): lr for p in group["params"]})
        key = f"lr_{group.get('group', group['part'])}"
        lrs[key] = max(lrs.get(key, 0.0), lr if any(p.requires_grad for p in group["params"]) else 0.0)
    parts = [*backbone_stages(training.model.backbone), ("heads", list(training.model.heads.parameters()))]
    trained = [name for name, params in parts if any(p.requires_grad and lr_of.get(id(p), 0.0) > 0 for p in params)]
    return {**lrs, "trainable": "all" if len(trained) == len(parts) else "+".join(trained) or "none"}


def _validate(run: Run, row: dict) -> float:
    """Score the eval weights on the held-out rows (gathered across ranks); adds valid_loss and metrics to `row`."""
    crash_point("validation")
    valid, training = run.valid_data, run.training
    probs, valid_loss = predict_probs(training.eval_model, valid.loader, run.heads, run.runtime, loss_fn=training.loss_fn,
                                      quiet=run.quiet, desc="validate")
    probs = gather_predictions(run.context, valid.rank_rows, probs, len(valid.rows), valid.positions)
    loss_sum, seen = all_sum(run.context, (valid_loss or 0.0) * len(valid.rank_rows), len(valid.rank_rows))
    score, report = run.fmt.validation_score(valid.targets, probs)
    row.update({"valid_loss": loss_sum / max(seen, 1), "score": score, **report})
    return score


def _advance(run: Run, state: RunState, row: dict, score: float) -> bool:
    """Record the epoch in `state`; True when it is the best so far. Ends the run on patience or the last epoch."""
    tc = run.config.train
    state.history.append(row)
    state.next_epoch += 1
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_epoch, state.epochs_since_best = score, state.next_epoch, 0
    else:
        state.epochs_since_best += 1
    patience = tc.early_stopping_patience
    if run.valid_data is not None and patience is not None and state.epochs_since_best >= patience:
        state.finished = True
        run.log(f"early stop: no improvement for {patience} epoch(s); best epoch {state.best_epoch}")
    if state.next_epoch >= tc.epochs:
        state.finished = True
    return improved


def _save_epoch(run: Run, state: RunState, row: dict, improved: bool, score: float, board) -> None:
    """Rank 0's writes after an epoch: best.pt (when improved), last.pt, epochs.csv, TensorBoard scalars."""
    epoch = state.next_epoch
    if improved:  # best before last: a crash between the two re-runs this epoch and rewrites both
        save_best(run.run_dir / BEST_CHECKPOINT, run.training.eval_model, run.config, run.fmt, epoch, score)
    save_resume_point(run.run_dir / LAST_CHECKPOINT, run.training, run.train_data.generator, run.callbacks, state)
    with atomic_path(run.run_dir / EPOCHS_CSV) as tmp:
        pd.DataFrame(state.history).to_csv(tmp, index=False, float_format="%.6g")
    if board is not None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                board.add_scalar(key, value, epoch)
        board.flush()


def write_summary(run: Run, state: RunState, skipped_files: Optional[list[str]] = None) -> None:
    """summary.json: best epoch and score, sizes, model, device, memory and time (+ skipped unreadable images)."""
    total, trainable = count_parameters(run.training.model)
    tc = run.config.train
    summary = {
        "best_epoch": state.best_epoch, "best_score": state.best_score, "epochs_run": state.next_epoch,
        "finished": state.finished, "train_images": int(len(run.train_data.dataset)),
        "valid_images": int(len(run.valid_data.rows)) if run.valid_data is not None else 0,
        "best_train_score": _at_best_epoch(state, "train_score"),
        "model": run.config.model.name, "parameters": total, "trainable_parameters": trainable,
        "batch_size": tc.batch_size, "image_size": run.config.data.image_size, "device": _device_name(run.runtime),
        "processes": run.context.world_size, "peak_memory_mb": round(peak_memory_mb(run.runtime), 1),
        "train_seconds": round(sum(row["seconds"] for row in state.history), 2),
    }
    if skipped_files is not None:
        summary.update({"skipped_unreadable": len(skipped_files), "skipped_files": list(skipped_files)})
    write_text(run.run_dir / RUN_SUMMARY, json.dumps(summary, indent=2))


def _at_best_epoch(state: RunState, key: str) -> Optional[float]:
    """`key` of the best epoch's epochs.csv row; None where it was not computed (NaN) or there is no best epoch."""
    value = state.history[state.best_epoch - 1].get(key) if 0 < state.best_epoch <= len(state.history) else None
    return None if value is None or not math.isfinite(value) else float(value)


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _device_name(runtime: Runtime) -> str:
    if runtime.on_cuda:
        return torch.cuda.get_device_name(runtime.device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if math.isfinite(row.get("train_score", math.nan)):
        parts.append(f"train_score {row['train_score']:.4f}")
    if "valid_loss" in row:
        parts += [f"valid_loss {row['valid_loss']:.4f}", f"score {row['score']:.4f}" + (" *" if improved else "")]
    parts += [f"lr {row['lr']:.2e}"] + ([f"trained {row['trainable']}"] if row.get("trainable", "all") != "all" else [])
    parts += [f"{row['seconds']:.1f}s", f"{row['images_per_s']:.0f} img/s"]
    return "  ".join(parts)
