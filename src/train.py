"""The training loop: AdamW + warmup/cosine, AMP, EMA, accumulation, checkpoints, exact resume, early stopping.

A run trains on `train_rows` and (unless it is a full fit) validates on `valid_rows` each epoch.
Its folder holds `last.pt` (everything needed to resume exactly), `best.pt` (inference weights of
the best epoch by the competition metric), `epochs.csv` and `summary.json`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from src.atomic import atomic_path, write_text
from src.config import Config, config_to_dict
from src.data.dataset import CachedImageDataset
from src.data.transforms import build_transform
from src.errors import PipelineError
from src.checkpoints import checkpoint_exists, load_checkpoint, save_checkpoint
from src.faults import crash_point
from src.formats.base import CompetitionFormat
from src.losses import MultiHeadLoss
from src.model import MultiHeadModel, build_model, count_parameters
from src.predict import make_eval_loader, predict_probs
from src.distributed import (DistributedContext, all_sum, assert_same_on_all_ranks, average_gradients, barrier,
                             gather_predictions, init_from_env)
from src.runtime import Runtime, loader_workers, make_runtime, peak_memory_mb, rng_state, seed_everything, set_rng_state


@dataclass
class RunState:
    """What survives between epochs (saved in last.pt)."""

    next_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    epochs_since_best: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)


class WarmupCosine:
    """LR factor per optimizer step: linear warm-up, then cosine to `floor`; 0 for frozen groups early on."""

    def __init__(self, total_steps: int, warmup_steps: int, frozen_steps: int = 0, floor: float = 0.01):
        self.total_steps, self.warmup_steps, self.frozen_steps, self.floor = total_steps, warmup_steps, frozen_steps, floor

    def __call__(self, step: int) -> float:
        if step < self.frozen_steps:
            return 0.0
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: MultiHeadModel, weight_decay: float) -> list[dict]:
    """Backbone and head parameters in separate groups (head warm-up); no decay on biases and norms."""
    groups = []
    for part_name, part in (("backbone", model.backbone), ("heads", model.heads)):
        decay = [p for p in part.parameters() if p.ndim > 1]
        no_decay = [p for p in part.parameters() if p.ndim <= 1]
        groups.append({"params": decay, "weight_decay": weight_decay, "part": part_name})
        groups.append({"params": no_decay, "weight_decay": 0.0, "part": part_name})
    return [group for group in groups if group["params"]]


def train_run(config: Config, fmt: CompetitionFormat, images: np.ndarray, targets: dict[str, np.ndarray],
              train_rows: np.ndarray, valid_rows: Optional[np.ndarray], run_dir: Path, resume: bool = False,
              stop_after_epochs: Optional[int] = None, quiet: bool = False,
              log: Callable[[str], None] = print) -> RunState:
    """Train one model (a fold, or a full fit when `valid_rows` is None); return the final run state.

    Under `torchrun` this is DDP: every rank trains on its shard of each batch (the global batch stays
    `train.batch_size`), validation predictions are gathered across ranks, and only rank 0 writes.
    """
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if checkpoint_exists(last_path) and not resume:
        raise PipelineError(f"{run_dir}: a run is already there; add --resume to continue it, or delete the folder to start over")
    tc = config.train
    heads = fmt.heads()
    wants_cuda = tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available())
    context = init_from_env(use_cuda=wants_cuda)
    runtime = make_runtime(tc.device, tc.amp, tc.channels_last, tc.threads, context.local_rank)
    if not context.is_main:
        quiet, log = True, (lambda message: None)
    seed_everything(tc.seed)

    model = build_model(config.model.name, heads, config.model.weights, config.model.drop_rate, config.model.forbid_pretrained)
    model.to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=tc.ema_decay) if tc.ema_decay else None
    loss_fn = MultiHeadLoss(heads, tc.loss).to(runtime.device)
    trained_model = model
    if context.enabled:
        trained_model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.on_cuda else None)

    aug = config.augment
    size = config.data.image_size
    train_set = CachedImageDataset(images, train_rows, targets, build_transform(aug.train, size, aug.mean, aug.std, "augment.train"), tc.seed)
    sampler_generator = torch.Generator().manual_seed(tc.seed)
    per_rank_batch = max(1, tc.batch_size // context.world_size)
    drop_last = len(train_rows) > tc.batch_size
    _refuse_single_image_batches(model, per_rank_batch if drop_last else len(train_rows) // context.world_size,
                                 tc.batch_size, context.world_size)
    if context.enabled:
        train_sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=tc.seed, drop_last=True)
    else:
        train_sampler = RandomSampler(train_set, generator=sampler_generator)
    train_loader = make_train_loader(train_set, per_rank_batch, train_sampler, tc.num_workers, runtime, drop_last,
                                     sampler_generator)
    valid_loader, valid_positions, rank_valid_rows = None, {}, None
    if valid_rows is not None:
        valid_set = CachedImageDataset(images, valid_rows, targets, build_transform(aug.eval, size, aug.mean, aug.std, "augment.eval"))
        valid_sampler = DistributedSampler(valid_set, context.world_size, context.rank, shuffle=False) if context.enabled else None
        rank_valid_rows = valid_rows[list(valid_sampler)] if valid_sampler is not None else valid_rows
        valid_positions = {int(row): position for position, row in enumerate(valid_rows)}
        valid_loader = make_eval_loader(valid_set, config.predict.batch_size, tc.num_workers, runtime, valid_sampler)
    valid_targets = {name: values[valid_rows] for name, values in targets.items()} if valid_rows is not None else None

    steps_per_epoch = math.ceil(len(train_loader) / tc.accumulate_steps)
    total_steps = steps_per_epoch * tc.epochs
    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay) + loss_fn.parameter_group(), lr=tc.lr)
    warmup = int(round(tc.warmup_epochs * steps_per_epoch))
    frozen = tc.head_warmup_epochs * steps_per_epoch
    lambdas = [WarmupCosine(total_steps, warmup + (frozen if g["part"] == "backbone" else 0),
                            frozen if g["part"] == "backbone" else 0) for g in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler())

    state = RunState()
    if resume and checkpoint_exists(last_path):
        checkpoint = load_checkpoint(last_path, fallback=True, log=log)
        model.load_state_dict(checkpoint["model"])
        _restore_optimizer(optimizer, loss_fn, checkpoint, last_path)
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint.get("ema") is not None:
            ema.load_state_dict(checkpoint["ema"])
        sampler_generator.set_state(checkpoint["sampler_rng"])
        set_rng_state(checkpoint["rng"])
        state = RunState(**checkpoint["state"])
        log(f"resumed {run_dir} at epoch {state.next_epoch}" + (" (already finished)" if state.finished else ""))
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.json", json.dumps(config_to_dict(config), indent=2))
    board = _tensorboard(run_dir, tc.tensorboard and context.is_main)

    epochs_this_call = 0
    while not state.finished and state.next_epoch < tc.epochs:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            log(f"stopped after {epochs_this_call} epoch(s) as asked; continue with --resume")
            return state
        epoch = state.next_epoch
        started = time.perf_counter()
        train_set.set_epoch(epoch)
        if context.enabled:
            train_sampler.set_epoch(epoch)
        loss_sum, seen = _train_one_epoch(trained_model, ema, train_loader, loss_fn, optimizer, scheduler, scaler, runtime,
                                          tc.accumulate_steps, quiet, f"epoch {epoch + 1}/{tc.epochs}", context)
        if loss_fn.log_vars is not None:
            assert_same_on_all_ranks(context, loss_fn.log_vars, "learned loss log-variances")
        loss_sum, seen = all_sum(context, loss_sum, seen)
        train_seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1)}
        eval_model = ema.module if ema is not None else model
        if valid_loader is not None:
            crash_point("validation")
            probs, valid_loss = predict_probs(eval_model, valid_loader, heads, runtime, loss_fn=loss_fn, quiet=quiet, desc="validate")
            probs = gather_predictions(context, rank_valid_rows, probs, len(valid_rows), valid_positions)
            valid_loss_sum, valid_seen = all_sum(context, (valid_loss or 0.0) * len(rank_valid_rows), len(rank_valid_rows))
            score, report = fmt.validation_score(valid_targets, probs)
            row.update({"valid_loss": valid_loss_sum / max(valid_seen, 1), "score": score, **report})
        else:
            score = float(epoch)  # full fit: the last epoch is the one kept
        seconds = time.perf_counter() - started
        if loss_fn.log_vars is not None:
            row.update({f"weight_{name}": weight for name, weight in loss_fn.head_weights().items()})
        row.update({"lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "images_per_s": seen / max(train_seconds, 1e-9)})
        state.history.append(row)
        state.next_epoch = epoch + 1
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.epochs_since_best = score, epoch + 1, 0
        else:
            state.epochs_since_best += 1
        patience = tc.early_stopping_patience
        if valid_loader is not None and patience is not None and state.epochs_since_best >= patience:
            state.finished = True
            log(f"early stop: no improvement for {patience} epoch(s); best epoch {state.best_epoch}")
        if state.next_epoch >= tc.epochs:
            state.finished = True
        if context.is_main:
            if improved:  # best before last: a crash between the two re-runs this epoch and rewrites both
                save_checkpoint(best_path, _inference_payload(eval_model, config, fmt, epoch + 1, score))
            save_checkpoint(last_path, keep_previous=True, payload={
                "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "loss": loss_fn.state_dict(), "sampler_rng": sampler_generator.get_state(), "rng": rng_state(), "state": asdict(state),
            })
            _write_epochs_csv(run_dir / "epochs.csv", state.history)
            if board is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
        barrier(context)
        epochs_this_call += 1
        if not quiet:
            log(_epoch_line(row, tc.epochs, improved))
    if context.is_main:
        total, trainable = count_parameters(model)
        write_text(run_dir / "summary.json", json.dumps({
            "best_epoch": state.best_epoch, "best_score": state.best_score, "epochs_run": state.next_epoch,
            "finished": state.finished, "train_images": int(len(train_rows)),
            "valid_images": int(len(valid_rows)) if valid_rows is not None else 0,
            "model": config.model.name, "parameters": total, "trainable_parameters": trainable,
            "batch_size": tc.batch_size, "image_size": size, "device": _device_name(runtime),
            "processes": context.world_size, "peak_memory_mb": round(peak_memory_mb(runtime), 1),
            "train_seconds": round(sum(row["seconds"] for row in state.history), 2),
        }, indent=2))
    if board is not None:
        board.close()
    return state


def _restore_optimizer(optimizer: torch.optim.Optimizer, loss_fn: MultiHeadLoss, checkpoint: dict, last_path: Path) -> None:
    """Optimizer state and the loss's learned weights from last.pt; a changed set of trained values is one clear error."""
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        loss_fn.load_state_dict(checkpoint.get("loss", {}))
    except (ValueError, RuntimeError) as error:
        raise PipelineError(f"{last_path}: this run was saved with other trained values than the config now asks for "
                            f"(e.g. train.loss.head_weighting changed): {str(error).splitlines()[0]}; "
                            "restore the run's config (its config.json) or delete the folder to start over") from error


def _refuse_single_image_batches(model: nn.Module, smallest_batch: int, batch_size: int, processes: int) -> None:
    """BatchNorm cannot train on one image per batch (torch stops mid-epoch with a bare ValueError): say so first."""
    if smallest_batch < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise PipelineError(f"train.batch_size {batch_size} over {processes} process(es) gives batches of {smallest_batch} "
                            "image(s); the model's BatchNorm needs at least 2: raise train.batch_size (or train on more images)")


def make_train_loader(dataset, batch_size: int, sampler, num_workers: int, runtime: Runtime, drop_last: bool,
                      generator: torch.Generator) -> DataLoader:
    """The training DataLoader (the benchmark builds it here too, so it measures what training runs)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=loader_workers(num_workers),
                      pin_memory=runtime.on_cuda, drop_last=drop_last, generator=generator)


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _device_name(runtime: Runtime) -> str:
    if runtime.on_cuda:
        return torch.cuda.get_device_name(runtime.device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _train_one_epoch(model, ema, loader, loss_fn, optimizer, scheduler, scaler, runtime: Runtime, accumulate: int,
                     quiet: bool, desc: str, context: DistributedContext) -> tuple[float, int]:
    model.train()
    loss_sum, seen = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    batches = len(loader)
    progress = tqdm(loader, desc=desc, disable=quiet, leave=False)
    for index, (images, targets, _) in enumerate(progress):
        images = runtime.to_device(images)
        targets = {name: value.to(runtime.device, non_blocking=True) for name, value in targets.items()}
        with runtime.autocast():
            outputs = model(images)
        loss, _ = loss_fn(outputs, targets)
        scaler.scale(loss / accumulate).backward()
        crash_point("batch")
        if (index + 1) % accumulate == 0 or index + 1 == batches:
            average_gradients(context, loss_fn.parameters())  # DDP averages the model's; the loss's are ours
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(model)
        loss_sum += float(loss.detach()) * len(images)
        seen += len(images)
        progress.set_postfix(loss=f"{loss_sum / seen:.4f}")
    if not math.isfinite(loss_sum):
        raise PipelineError("training loss became NaN/inf; lower train.lr or disable train.amp")
    return loss_sum, seen


def _inference_payload(model: nn.Module, config: Config, fmt: CompetitionFormat, epoch: int, score: float) -> dict:
    """Weights only (no optimizer state): what oof, submit and the kernel load."""
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "model_name": config.model.name,
            "heads": [[h.name, h.kind, list(h.class_names)] for h in fmt.heads()],
            "image_size": config.data.image_size, "epoch": epoch, "score": score}


def _write_epochs_csv(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if "valid_loss" in row:
        parts += [f"valid_loss {row['valid_loss']:.4f}", f"score {row['score']:.4f}" + (" *" if improved else "")]
    parts += [f"lr {row['lr']:.2e}", f"{row['seconds']:.1f}s", f"{row['images_per_s']:.0f} img/s"]
    return "  ".join(parts)
