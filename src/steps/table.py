"""The shape of a row of the stage table: a stage's name, summary, options and run function, as plain data.

`src/stage.py` turns rows into argparse sub-commands; a stage module may hold a table of its own
sub-commands (the kernel's build / push / status / ...), so adding one is a row in that module.
Nothing here imports the stages: `run` names a function as "module:function", imported only when
that stage runs, so `status` never pays for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One command-line option: argparse's flags and keyword arguments; its `dest` is a keyword of `run`."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def option(*flags: str, **kwargs: Any) -> Option:
    return Option(tuple(flags), kwargs)


@dataclass(frozen=True)
class OneOf:
    """Mutually exclusive options (at most one; exactly one when `required`)."""

    options: tuple[Option, ...]
    required: bool = False


def one_of(*options: Option, required: bool = False) -> OneOf:
    return OneOf(tuple(options), required)


def train_options(resume_help: str, stop_help: str) -> tuple[OneOf, Option, Option]:
    """The options of a training run, local or on Kaggle: --fold K|all or --full, --resume, --stop-after-epochs N."""
    return (
        one_of(
            option("--fold", help="fold number, or 'all'"),
            option("--full", action="store_true", help="fit on all training data (no validation)"),
            required=True,
        ),
        option("--resume", action="store_true", help=resume_help),
        option("--stop-after-epochs", type=int, metavar="N", help=stop_help),
    )


@dataclass(frozen=True)
class Stage:
    """A row of the stage table.

    `run` is "module:function"; it is called as `function(exp, **options, quiet=..., log=...)` where
    `exp` is the experiment of `--config` (None for a config-optional stage run without one, unless
    `default_config` names the config to use then, with `default_overrides` applied first).
    `subcommands` (a "module:TABLE" naming a tuple of Stage rows) makes this a group such as `kernel`.
    """

    name: str
    summary: str
    run: str = ""
    options: tuple[Option | OneOf, ...] = ()
    config: str = "required"  # "required" or "optional"
    default_config: str | None = None
    default_overrides: tuple[str, ...] = ()
    subcommands: str = ""
