"""Registry of competition formats, found by name (like timm's readers).

Adding a format = adding one module here that defines a `CompetitionFormat` subclass decorated with
`@register`; it is imported below so the registry knows it.
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
    """Class decorator: make a format available by its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def format_names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def create_format(name: str, root: Path, options: dict[str, Any] | None = None) -> CompetitionFormat:
    """Instantiate the format `name` over the competition folder `root`."""
    _import_all()
    if name not in _REGISTRY:
        raise PipelineError(f"config format: unknown format '{name}'; known formats: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](root, options)
