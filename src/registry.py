"""One registry mechanism for things found by name (formats, callbacks, threshold objectives), as timm finds models.

A `Registry` holds one kind of thing: `@registry.register` adds a class under its `name` (a second, different
class under a taken name is refused, naming both), `names()` lists them sorted (for --help and errors), and
`get` / `create` look one up, refusing an unknown name in one PipelineError line with a 'did you mean' hint.
With `discover` (a package name), every module of that package is imported before the first lookup or
listing, so a new module registers itself and nothing else needs an edit.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from src.errors import PipelineError

T = TypeVar("T")


class Registry(Generic[T]):
    """Things of one `kind` by name; `discover` is a package whose modules are imported before any lookup,
    except those named in `skip` (a package's base module defines no entries)."""

    def __init__(self, kind: str, discover: str | None = None, skip: Iterable[str] = ("base",)):
        self.kind, self.discover, self.skip = kind, discover, tuple(skip)
        self._entries: dict[str, T] = {}
        self._discovered = discover is None

    def register(self, entry: T, name: str | None = None) -> T:
        """Add `entry` under `name` (default: its `name` attribute) and return it, so it serves as a class
        decorator. The same class defined again (a module imported twice) replaces itself; another is refused."""
        key = entry.name if name is None else name
        known = self._entries.get(key)
        if known is not None and _qualified(known) != _qualified(entry):
            raise ValueError(
                f"{self.kind} name '{key}' is taken by {_qualified(known)}; {_qualified(entry)} needs another name"
            )
        self._entries[key] = entry
        return entry

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._all())

    def __contains__(self, name: Any) -> bool:
        return name in self._all()

    def get(self, name: Any, where: str = "") -> T:
        """The entry called `name`; an unknown name is a PipelineError (`where`: the config key, for the message)."""
        entries = self._all()
        if name not in entries:
            raise PipelineError(self.unknown(name, where))
        return entries[name]

    def create(self, name: Any, *args: Any, where: str = "", **kwargs: Any) -> Any:
        """`get(name)` called with the given arguments (an instance of the registered class)."""
        return self.get(name, where)(*args, **kwargs)

    def unknown(self, name: Any, where: str = "") -> str:
        """The one-line message for an unknown name: where, the name, and a close match or the known names."""
        known = self.names()
        guess = difflib.get_close_matches(str(name), known, n=1)
        if guess:
            hint = f"did you mean '{guess[0]}'?"
        else:
            hint = f"known {self.kind}s: {', '.join(known)}" if known else f"no {self.kind} is registered"
        return f"{where + ': ' if where else ''}unknown {self.kind} '{name}'; {hint}"

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (a test registers into it without touching this one)."""
        twin: Registry[T] = Registry(self.kind, self.discover, self.skip)
        twin._entries, twin._discovered = dict(self._all()), True
        return twin

    def _all(self) -> dict[str, T]:
        """The entries, once every module of `discover` is imported (so each file's @register has run)."""
        if not self._discovered:
            package = importlib.import_module(self.discover)
            for info in pkgutil.iter_modules(package.__path__, prefix=f"{self.discover}."):
                if info.name.rpartition(".")[2] not in self.skip:
                    importlib.import_module(info.name)
            self._discovered = True
        return self._entries


def _qualified(entry: Any) -> str:
    """module.QualifiedName of a registered class or function (what a duplicate-name error shows)."""
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__qualname__)}"
