"""The training engine: `build` (model, parameter groups, optimizer, schedule, loaders), `context` (the run every
callback sees), `loop` (epochs with callback hooks), `checkpoint` (last.pt / best.pt, resume), `callbacks` (every
training behaviour, by name), `run` (`train_run`, one run end to end)."""

from src.engine.build import (
    TrainData,
    Training,
    ValidData,
    WarmupCosine,
    build_grad_scaler,
    build_models,
    build_optimizer,
    build_scheduler,
    build_train_data,
    build_valid_data,
    make_train_loader,
    param_groups,
    steps_per_epoch,
)
from src.engine.callbacks import (
    Batch,
    Callback,
    CallbackList,
    CallbackOptions,
    callbacks_for,
    create_callbacks,
    register_callback,
)
from src.engine.context import Run, RunState
from src.engine.loop import train_one_epoch
from src.engine.run import RunInputs, build_run, train_run

__all__ = [
    "Batch",
    "Callback",
    "CallbackList",
    "CallbackOptions",
    "Run",
    "RunInputs",
    "RunState",
    "TrainData",
    "Training",
    "ValidData",
    "WarmupCosine",
    "build_grad_scaler",
    "build_models",
    "build_optimizer",
    "build_run",
    "build_scheduler",
    "build_train_data",
    "build_valid_data",
    "callbacks_for",
    "create_callbacks",
    "make_train_loader",
    "param_groups",
    "register_callback",
    "steps_per_epoch",
    "train_one_epoch",
    "train_run",
]
