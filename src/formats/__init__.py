"""Registry of competition formats, found by name (like timm's readers).

Adding a format = adding one module here that defines a `CompetitionFormat` subclass decorated with
`@register`; every module here is imported before the first lookup (src.registry), so nothing else needs an edit.
The format owns everything about its competition: files, heads, metric, fold scheme, demo data and course file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.errors import PipelineError
from src.formats.base import CompetitionFormat
from src.registry import Registry

_FORMATS: Registry[type[CompetitionFormat]] = Registry("format", discover=__name__)


def register(cls: type[CompetitionFormat]) -> type[CompetitionFormat]:
    """Class decorator: make a format available by its `name`; a name taken by another class is refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{cls.__module__}.{cls.__qualname__}: a format needs a non-empty `name`; set one")
    return _FORMATS.register(cls)


def format_names() -> list[str]:
    """Every format's name, sorted (every module here imported first)."""
    return _FORMATS.names()


def format_class(name: str) -> type[CompetitionFormat]:
    """The registered format class called `name`; an unknown name stops with the known ones."""
    return _FORMATS.get(name, where="config format")


def create_format(name: str, root: Path, options: dict[str, Any] | None = None) -> CompetitionFormat:
    """Instantiate the format `name` over the competition folder `root`."""
    return format_class(name)(root, options)


def folds_scheme_of(name: str, options: dict[str, Any] | None = None) -> str:
    """The fold scheme format `name` chooses with `options` (it names the folds file), without reading any data."""
    cls = format_class(name)
    return cls.folds_scheme_of(cls.parse_options(options))
