"""Training behaviours as callbacks, found by name (like the formats in src/formats/).

A behaviour is ONE module in this folder: a `Callback` subclass with a `name`, an `Options` model (a
`CallbackOptions`) and `@register_callback`. Every module here is imported when callbacks are created,
so nothing else needs an edit. A config switches them on, in order, with
`train.callbacks: [{name: <callback>, <option>: <value>, ...}]`; a few `train.*` keys are shorthand for
one (`SHORTHAND`), and `train_score` runs in every run.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from src.engine.callbacks.base import NO_CALLBACKS, Batch, Callback, CallbackList, CallbackOptions
from src.errors import PipelineError
from src.registry import Registry

__all__ = [
    "NO_CALLBACKS",
    "SHORTHAND",
    "Batch",
    "Callback",
    "CallbackList",
    "CallbackOptions",
    "callback_names",
    "callbacks_for",
    "create_callbacks",
    "register_callback",
]

# train.<key>: the callback it switches on, and that callback's option the key's value sets (None: no option).
SHORTHAND: dict[str, tuple[str, str | None]] = {
    "clip_grad_norm": ("clip_grad_norm", "max_norm"),
    "ema_decay": ("ema", "decay"),
    "early_stopping_patience": ("early_stopping", "patience"),
    "time_budget_s": ("time_budget", "seconds"),
    "tensorboard": ("tensorboard", None),
    "init_from": ("init_from", "experiment"),
}
ALWAYS_ON = ("train_score",)  # every run: epochs.csv's train_score

_CALLBACKS: Registry[type[Callback]] = Registry("callback", discover=__name__)


def register_callback(cls: type[Callback]) -> type[Callback]:
    """Class decorator: make a callback available to `train.callbacks` by its `name` (a taken name is refused)."""
    return _CALLBACKS.register(cls)


def callback_names() -> list[str]:
    """Every registered callback name, sorted."""
    return _CALLBACKS.names()


def callbacks_for(train_config) -> CallbackList:
    """A run's callbacks: `train_score`, then `train.callbacks` in order, then those the shorthand keys switch on
    (`train.ema_decay: 0.999` = `{name: ema, decay: 0.999}`); one switched on twice is refused in one line."""
    items = [(f"config train.callbacks[{index}]", item) for index, item in enumerate(train_config.callbacks)]
    for key, (name, option) in SHORTHAND.items():
        value = getattr(train_config, key)
        if value is not None and value is not False:
            items.append((f"config train.{key}", {"name": name, **({option: value} if option else {})}))
    listed = [item.get("name") for _, item in items]
    for where, item in items:
        if listed.count(item.get("name")) > 1:
            also = [w for w, other in items if other.get("name") == item.get("name") and w != where]
            raise PipelineError(f"{where}: callback '{item.get('name')}' is also switched on by {also[0]}; keep one")
    always = [(f"callback {name} (always on)", {"name": name}) for name in ALWAYS_ON if name not in listed]
    return CallbackList(_created(always + items))


def create_callbacks(items: list[dict[str, Any]]) -> list[Callback]:
    """One callback per `train.callbacks` item ({name: ..., options}); a bad name or option is one PipelineError line."""
    return _created([(f"config train.callbacks[{index}]", item) for index, item in enumerate(items)])


def _created(items: list[tuple[str, dict[str, Any]]]) -> list[Callback]:
    callbacks = []
    for where, item in items:
        options = dict(item)
        name = options.pop("name", None)
        if name is None:
            raise PipelineError(
                f"{where}: no 'name'; write each item as {{name: <callback>, <option>: <value>}} "
                f"(known callbacks: {', '.join(callback_names())})"
            )
        cls = _CALLBACKS.get(name, where=f"{where}.name")
        callbacks.append(cls(_validated(cls, options, where)))
    return callbacks


def _validated(cls: type[Callback], options: dict[str, Any], where: str) -> CallbackOptions:
    try:
        return cls.Options.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join([where, *(str(part) for part in error["loc"])])
        if error["type"] == "extra_forbidden":
            known = list(cls.Options.model_fields)
            guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"its options: {', '.join(known) or 'none'}"
            message = f"{key}: unknown option for callback '{cls.name}'; {hint}"
        else:
            message = f"{key}: {error['msg']} (got {error.get('input')!r}) for callback '{cls.name}'; fix the value"
        raise PipelineError(message) from None
