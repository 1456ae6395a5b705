"""The epoch loop: train (hooks per batch and around each optimizer step), validate, record the epoch, checkpoint.

Every training behaviour beyond the plain loop (EMA, freezing, clipping, early stopping, the time budget, mixup,
TensorBoard, train_score, SWA, ...) is a callback (src.engine.callbacks; the hooks and their order are listed in
src/engine/callbacks/base.py). Under DDP every rank runs the loop; only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import torch
from tqdm import tqdm

from src.artifacts import EPOCHS_CSV, LAST_CHECKPOINT, RUN_SUMMARY
from src.atomic import atomic_path, write_text
from src.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    all_sum,
    assert_same_on_all_ranks,
    average_gradients,
    barrier,
)
from src.engine.build import Training
from src.engine.callbacks import NO_CALLBACKS, Batch, CallbackList
from src.engine.checkpoint import save_resume_point
from src.engine.context import Run, RunState
from src.errors import PipelineError
from src.faults import crash_point
from src.model import backbone_stages, count_parameters
from src.runtime import Runtime, peak_memory_mb


def train_one_epoch(
    training: Training,
    loader,
    runtime: Runtime,
    distributed: DistributedContext = SINGLE_PROCESS,
    accumulate: int = 1,
    callbacks: CallbackList = NO_CALLBACKS,
    run: Run | None = None,
    quiet: bool = True,
    desc: str = "train",
) -> tuple[float, int]:
    """One pass over `loader` ((images, {head: targets}, rows) batches), an optimizer step every `accumulate`
    batches and after the last; returns (sum of batch loss x batch size, images seen) on this rank. Each
    `callbacks` hook gets `run` (None where a caller, such as the benchmark, trains without one)."""
    training.trained.train()
    loss_sum, seen = 0.0, 0
    training.optimizer.zero_grad(set_to_none=True)
    batches = len(loader)
    progress = tqdm(loader, desc=desc, disable=quiet, leave=False)
    for index, (images, targets, _) in enumerate(progress):
        # TrainData.loader (src.runtime.DeviceLoader) hands over normalised float batches already on the device
        # (uint8 -> float once per batch there, prefetched on CUDA): these two lines only move other batches.
        batch = Batch(
            runtime.to_device(images),
            {name: value.to(runtime.device, non_blocking=True) for name, value in targets.items()},
            index,
        )
        callbacks.call("on_batch", run, batch)
        with runtime.autocast():
            batch.outputs = training.trained(batch.images)
        batch.loss, _ = training.loss_fn(batch.outputs, batch.targets)
        training.scaler.scale(batch.loss / accumulate).backward()
        crash_point("batch")
        if (index + 1) % accumulate == 0 or index + 1 == batches:
            _optimizer_step(training, distributed, callbacks, run)
        callbacks.call("on_batch_end", run, batch)
        loss_sum += float(batch.loss.detach()) * len(batch)
        seen += len(batch)
        progress.set_postfix(loss=f"{loss_sum / seen:.4f}")
    if not math.isfinite(loss_sum):
        raise PipelineError("training loss became NaN/inf; lower train.lr or disable train.amp")
    return loss_sum, seen


def _optimizer_step(
    training: Training, distributed: DistributedContext, callbacks: CallbackList, run: Run | None
) -> None:
    average_gradients(distributed, training.loss_fn.parameters())  # DDP averages the model's; the loss's are ours
    callbacks.call("on_before_optimizer_step", run)
    training.scaler.step(training.optimizer)
    training.scaler.update()
    training.optimizer.zero_grad(set_to_none=True)
    training.scheduler.step()
    callbacks.call("on_after_optimizer_step", run)


def run_epochs(run: Run, stop_after_epochs: int | None = None) -> bool:
    """Train epochs until the run is finished; False when it stopped early as asked (`stop_after_epochs`) or as a
    callback asked (`run.pause`)."""
    state, epochs_this_call = run.state, 0
    run.callbacks.call("on_fit_start", run)
    try:
        while not state.finished and state.next_epoch < run.epochs:
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                run.log(f"stopped after {epochs_this_call} epoch(s) as asked; continue with --resume")
                return False
            if run.pause_reason is not None:
                run.log(run.pause_reason)
                return False
            run_epoch(run)
            epochs_this_call += 1
        return True
    finally:
        run.callbacks.call("on_fit_end", run)


def run_epoch(run: Run) -> None:
    """One epoch: train, validate, record it in `run.state` (best epoch), save last.pt / best.pt, log."""
    tc, training, state = run.config.train, run.training, run.state
    run.epoch = epoch = state.next_epoch
    started = time.perf_counter()
    run.train_data.set_epoch(epoch)
    run.callbacks.call("on_epoch_start", run)
    loss_sum, seen = train_one_epoch(
        training,
        run.train_data.loader,
        run.runtime,
        run.distributed,
        tc.accumulate_steps,
        run.callbacks,
        run,
        run.quiet,
        f"epoch {epoch + 1}/{tc.epochs}",
    )
    if training.loss_fn.log_vars is not None:
        assert_same_on_all_ranks(run.distributed, training.loss_fn.log_vars, "learned loss log-variances")
    loss_sum, seen = all_sum(run.distributed, loss_sum, seen)
    train_seconds = time.perf_counter() - started
    row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1)}
    run.callbacks.call("on_train_epoch_end", run, row)
    score = _validate(run, row) if run.valid_data is not None else float(epoch)  # full fit: the last epoch is kept
    if training.loss_fn.log_vars is not None:
        row.update({f"weight_{name}": weight for name, weight in training.loss_fn.head_weights().items()})
    row.update(
        {
            "lr": training.optimizer.param_groups[0]["lr"],
            **trained_parts(training),
            "seconds": time.perf_counter() - started,
            "images_per_s": seen / max(train_seconds, 1e-9),
        }
    )
    improved = _advance(run, row, score)
    run.callbacks.call("on_epoch_end", run, row)
    if run.is_main:
        _save_epoch(run, row, improved, score)
    barrier(run.distributed)
    if not run.quiet:
        run.log(_epoch_line(row, tc.epochs, improved))


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
    """Score the evaluation weights on the held-out rows; adds valid_loss and the metrics to `row`."""
    run.callbacks.call("on_validation_start", run)
    score, scores = run.validate(run.eval_model)
    row.update(scores)
    run.callbacks.call("on_validation_end", run, row)
    return score


def _advance(run: Run, row: dict, score: float) -> bool:
    """Record the epoch in `run.state`; True when it is the best so far. The last epoch finishes the run."""
    state = run.state
    state.history.append(row)
    state.next_epoch += 1
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_epoch = score, state.next_epoch
    if state.next_epoch >= run.epochs:
        state.finished = True
    return improved


def _save_epoch(run: Run, row: dict, improved: bool, score: float) -> None:
    """Rank 0's writes after an epoch: best.pt (when improved), last.pt, epochs.csv."""
    state = run.state
    if improved:  # best before last: a crash between the two re-runs this epoch and rewrites both
        run.write_best(run.eval_model, state.next_epoch, score)
    save_resume_point(run.run_dir / LAST_CHECKPOINT, run)
    with atomic_path(run.run_dir / EPOCHS_CSV) as tmp:
        pd.DataFrame(state.history).to_csv(tmp, index=False, float_format="%.6g")


def write_summary(run: Run, skipped_files: list[str] | None = None) -> None:
    """summary.json: best epoch and score, sizes, model, device, memory and time (+ skipped unreadable images, and
    what callbacks add, e.g. averaged weights)."""
    state = run.state
    total, trainable = count_parameters(run.training.model)
    tc = run.config.train
    summary = {
        "best_epoch": state.best_epoch,
        "best_score": state.best_score,
        "epochs_run": state.next_epoch,
        "finished": state.finished,
        "train_images": int(len(run.train_data.dataset)),
        "valid_images": int(len(run.valid_data.rows)) if run.valid_data is not None else 0,
        "best_train_score": _at_best_epoch(state, "train_score"),
        "model": run.config.model.name,
        "parameters": total,
        "trainable_parameters": trainable,
        "batch_size": tc.batch_size,
        "image_size": run.config.data.image_size,
        "device": _device_name(run.runtime),
        "processes": run.distributed.world_size,
        "peak_memory_mb": round(peak_memory_mb(run.runtime), 1),
        "train_seconds": round(sum(row["seconds"] for row in state.history), 2),
    }
    summary.update(run.summary)
    if skipped_files is not None:
        summary.update({"skipped_unreadable": len(skipped_files), "skipped_files": list(skipped_files)})
    write_text(run.run_dir / RUN_SUMMARY, json.dumps(summary, indent=2))


def _at_best_epoch(state: RunState, key: str) -> float | None:
    """`key` of the best epoch's epochs.csv row; None where it was not computed (NaN) or there is no best epoch."""
    value = state.history[state.best_epoch - 1].get(key) if 0 < state.best_epoch <= len(state.history) else None
    return None if value is None or not math.isfinite(value) else float(value)


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
