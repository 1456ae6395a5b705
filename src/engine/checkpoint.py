"""What a run's checkpoints hold and how a run resumes from last.pt.

last.pt holds everything an exact resume needs: model, EMA, optimizer, scheduler, grad scaler, the
loss's learned weights, the sampler's and the global RNG states, each callback's state and the
RunState. best.pt holds inference weights only. The file-level IO (atomic, hashed, previous copy kept)
is src.checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from src.checkpoint_files import load_checkpoint, save_checkpoint
from src.config import Config
from src.engine.build import Training
from src.engine.callbacks import Callback
from src.errors import PipelineError
from src.formats.base import CompetitionFormat
from src.runtime import rng_state, set_rng_state

_CHANGED_CONFIG_FIX = "restore the run's config (its config.json) or delete the folder to start over"


@dataclass
class RunState:
    """What survives between epochs (saved in last.pt)."""

    next_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    epochs_since_best: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)


def resume_payload(training: Training, sampler_rng: torch.Generator, callbacks: list[Callback], state: RunState) -> dict:
    """last.pt's content, taken now: call it after the epoch's validation, as the RNG states are part of it."""
    return {
        "model": training.model.state_dict(), "ema": training.ema.state_dict() if training.ema is not None else None,
        "optimizer": training.optimizer.state_dict(), "scheduler": training.scheduler.state_dict(),
        "scaler": training.scaler.state_dict(), "loss": training.loss_fn.state_dict(),
        "sampler_rng": sampler_rng.get_state(), "rng": rng_state(), "state": asdict(state),
        "callbacks": [{"name": callback.name, "state": callback.state_dict()} for callback in callbacks],
    }


def save_resume_point(path: Path, training: Training, sampler_rng: torch.Generator, callbacks: list[Callback],
                      state: RunState) -> None:
    """Write last.pt (the one before it kept as last.prev.pt)."""
    save_checkpoint(path, keep_previous=True, payload=resume_payload(training, sampler_rng, callbacks, state))


def save_best(path: Path, model: nn.Module, config: Config, fmt: CompetitionFormat, epoch: int, score: float) -> None:
    """Write best.pt: `model`'s weights (the EMA's when EMA is on) with what inference needs to rebuild it."""
    save_checkpoint(path, inference_payload(model, config, fmt, epoch, score))


def inference_payload(model: nn.Module, config: Config, fmt: CompetitionFormat, epoch: int, score: float) -> dict:
    """Weights only (no optimizer state): what oof, submit and the kernel load (src.inference)."""
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "model_name": config.model.name,
            "heads": [[h.name, h.kind, list(h.class_names)] for h in fmt.heads()],
            "image_size": config.data.image_size, "epoch": epoch, "score": score}


def restore(path: Path, training: Training, sampler_rng: torch.Generator, callbacks: list[Callback],
            log: Callable[[str], None] = print) -> RunState:
    """Load last.pt (or its previous copy when it is damaged) into the built run; return the state it saved."""
    checkpoint = load_checkpoint(path, fallback=True, log=log)
    training.model.load_state_dict(checkpoint["model"])
    _restore_trained_values(training, checkpoint, path)
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    training.scaler.load_state_dict(checkpoint["scaler"])
    if training.ema is not None and checkpoint.get("ema") is not None:
        training.ema.load_state_dict(checkpoint["ema"])
    _restore_callbacks(callbacks, checkpoint.get("callbacks", []), path)
    sampler_rng.set_state(checkpoint["sampler_rng"])
    set_rng_state(checkpoint["rng"])
    return RunState(**checkpoint["state"])


def _restore_trained_values(training: Training, checkpoint: dict, path: Path) -> None:
    """Optimizer state and the loss's learned weights; a changed set of trained values is one clear error."""
    try:
        training.optimizer.load_state_dict(checkpoint["optimizer"])
        training.loss_fn.load_state_dict(checkpoint.get("loss", {}))
    except (ValueError, RuntimeError) as error:
        raise PipelineError(f"{path}: this run was saved with other trained values than the config now asks for "
                            f"(e.g. train.loss.head_weighting changed): {str(error).splitlines()[0]}; "
                            f"{_CHANGED_CONFIG_FIX}") from error


def _restore_callbacks(callbacks: list[Callback], saved: list[dict], path: Path) -> None:
    names, saved_names = [callback.name for callback in callbacks], [item["name"] for item in saved]
    if names != saved_names:
        raise PipelineError(f"{path}: this run was saved with train.callbacks {saved_names or 'none'}, the config now asks "
                            f"for {names or 'none'}; {_CHANGED_CONFIG_FIX}")
    for callback, item in zip(callbacks, saved):
        callback.load_state_dict(item["state"])
