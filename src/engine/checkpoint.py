"""What a run's checkpoints hold and how a run resumes from last.pt.

last.pt holds everything an exact resume needs: model, optimizer, scheduler, grad scaler, the loss's
learned weights, the sampler's and the global RNG states, each callback's state (EMA and SWA weights
among them) and the RunState. best.pt holds inference weights only. The file-level IO (atomic, hashed, previous copy kept)
is src.checkpoint_files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from src.checkpoint_files import load_checkpoint, save_checkpoint
from src.config import Config
from src.engine.build import Training
from src.engine.callbacks import CallbackList
from src.errors import PipelineError
from src.formats.base import CompetitionFormat
from src.runtime import rng_state, set_rng_state

if TYPE_CHECKING:
    from src.engine.context import Run, RunState

_CHANGED_CONFIG_FIX = "restore the run's config (its config.json) or delete the folder to start over"


def resume_payload(run: Run) -> dict:
    """last.pt's content, taken now: call it after the epoch's validation, as the RNG states are part of it."""
    training = run.training
    return {
        "model": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "scaler": training.scaler.state_dict(),
        "loss": training.loss_fn.state_dict(),
        "sampler_rng": run.train_data.generator.get_state(),
        "rng": rng_state(),
        "state": asdict(run.state),
        "callbacks": [{"name": callback.name, "state": callback.state_dict()} for callback in run.callbacks],
    }


def save_resume_point(path: Path, run: Run) -> None:
    """Write last.pt (the one before it kept as last.prev.pt)."""
    save_checkpoint(path, keep_previous=True, payload=resume_payload(run))


def save_best(path: Path, model: nn.Module, config: Config, fmt: CompetitionFormat, epoch: int, score: float) -> None:
    """Write best.pt: `model`'s weights (the EMA's when EMA is on) with what inference needs to rebuild it."""
    save_checkpoint(path, inference_payload(model, config, fmt, epoch, score))


def inference_payload(model: nn.Module, config: Config, fmt: CompetitionFormat, epoch: int, score: float) -> dict:
    """Weights only (no optimizer state): what oof, submit and the kernel load (src.inference)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_name": config.model.name,
        "heads": [[h.name, h.kind, list(h.class_names)] for h in fmt.heads()],
        "image_size": config.data.image_size,
        "epoch": epoch,
        "score": score,
    }


def restore(path: Path, run: Run, log: Callable[[str], None] = print) -> RunState:
    """Load last.pt (or its previous copy when it is damaged) into the built run (its callbacks set up); return the
    state it saved."""
    from src.engine.context import RunState

    checkpoint = load_checkpoint(path, fallback=True, log=log)
    training = run.training
    training.model.load_state_dict(checkpoint["model"])
    _restore_trained_values(training, checkpoint, path)
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    training.scaler.load_state_dict(checkpoint["scaler"])
    _restore_callbacks(run.callbacks, checkpoint.get("callbacks", []), path)
    run.train_data.generator.set_state(checkpoint["sampler_rng"])
    set_rng_state(checkpoint["rng"])
    known = {item.name for item in fields(RunState)}
    return RunState(**{key: value for key, value in checkpoint["state"].items() if key in known})


def _restore_trained_values(training: Training, checkpoint: dict, path: Path) -> None:
    """Optimizer state and the loss's learned weights; a changed set of trained values is one clear error."""
    try:
        training.optimizer.load_state_dict(checkpoint["optimizer"])
        training.loss_fn.load_state_dict(checkpoint.get("loss", {}))
    except (ValueError, RuntimeError) as error:
        raise PipelineError(
            f"{path}: this run was saved with other trained values than the config now asks for "
            f"(e.g. train.loss.head_weighting changed): {str(error).splitlines()[0]}; "
            f"{_CHANGED_CONFIG_FIX}"
        ) from error


def _restore_callbacks(callbacks: CallbackList, saved: list[dict], path: Path) -> None:
    """Hand each callback that keeps state its saved state; those without state (a time budget, TensorBoard) may
    differ between the calls of one run, those with state must be the same, in the same order."""
    keeping = [callback for callback in callbacks if callback.state_dict()]
    saved = [item for item in saved if item["state"]]
    names, saved_names = [callback.name for callback in keeping], [item["name"] for item in saved]
    if names != saved_names:
        raise PipelineError(
            f"{path}: this run was saved with the callbacks that keep state {saved_names or 'none'}, the "
            f"config now asks for {names or 'none'} (train.callbacks and the train.* keys that switch "
            f"one on); {_CHANGED_CONFIG_FIX}"
        )
    for callback, item in zip(keeping, saved):
        callback.load_state_dict(item["state"])
