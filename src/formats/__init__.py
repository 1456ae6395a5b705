"""Registry of competition formats, found by name (like timm's readers).

Adding a format = adding one module here that defines a `CompetitionFormat` subclass decorated with
`@register`; it is imported below so the registry knows it. The format owns everything about its
competition: files, heads, metric, fold scheme, demo data and course file names.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from src.errors import PipelineError
from src.formats.base import CompetitionFormat

_REGISTRY: dict[str, type[CompetitionFormat]] = {}


def register(cls: type[CompetitionFormat]) -> type[CompetitionFormat]:
    """Class decorator: make a format available by its `name`; a name taken by another class is refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{cls.__module__}.{cls.__qualname__}: a format needs a non-empty `name`; set one")
    existing = _REGISTRY.get(name)
    # The same class seen again (a module imported twice) is not a clash; another class under the name is.
    if existing is not None and _where(existing) != _where(cls):
        raise PipelineError(f"format name '{name}' is registered twice ({_where(existing)} and {_where(cls)}); "
                            f"give one another `name` (registered: {', '.join(sorted(_REGISTRY))})")
    _REGISTRY[name] = cls
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def format_names() -> list[str]:
    """Every registered format's name, sorted."""
    _import_all()
    return sorted(_REGISTRY)


def format_class(name: str) -> type[CompetitionFormat]:
    """The registered format class called `name`; an unknown name stops with the list of known ones."""
    _import_all()
    if name not in _REGISTRY:
        raise PipelineError(f"config format: unknown format '{name}'; known formats: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_format(name: str, root: Path, options: dict[str, Any] | None = None) -> CompetitionFormat:
    """Instantiate the format `name` over the competition folder `root`."""
    return format_class(name)(root, options)


def folds_scheme_of(name: str, options: dict[str, Any] | None = None) -> str:
    """The fold scheme format `name` chooses with `options` (it names the folds file), without reading any data."""
    cls = format_class(name)
    return cls.folds_scheme_of(cls.parse_options(options))
