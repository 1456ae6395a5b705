"""Registry of competition formats, found by name (like timm's readers).

Adding a format = adding one module here that defines a `CompetitionFormat` subclass decorated with
`@register`; every module here is imported before the first lookup (src.registry), so nothing else needs an edit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from src.formats.base import CompetitionFormat
from src.registry import Registry

_FORMATS: Registry[type[CompetitionFormat]] = Registry("format", discover=__name__)


def register(cls: type[CompetitionFormat]) -> type[CompetitionFormat]:
    """Class decorator: make a format available by its `name` (a name taken by another format is refused)."""
    return _FORMATS.register(cls)


def format_names() -> list[str]:
    """Every format's name, sorted (every module here imported first)."""
    return _FORMATS.names()


def create_format(name: str, root: Path, options: dict[str, Any] | None = None) -> CompetitionFormat:
    """Instantiate the format `name` over the competition folder `root`."""
    return _FORMATS.create(name, root, options, where="config format")
