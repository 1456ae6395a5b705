"""The one registry mechanism (src/registry.py): register by decorator, duplicates refused naming both, sorted
names, 'did you mean' lookups, and discovery of a package's modules before the first lookup (as the formats and
the engine's callbacks need)."""

from __future__ import annotations

import sys

import pytest

from src.errors import PipelineError
from src.registry import Registry


def make_registry() -> Registry:
    tricks = Registry("callback")

    @tricks.register
    class Mixup:
        name = "mixup"

        def __init__(self, alpha=0.2):
            self.alpha = alpha

    @tricks.register
    class Freeze:
        name = "freeze"

    return tricks


def test_register_by_decorator_names_sorted_create():
    tricks = make_registry()
    assert tricks.names() == ["freeze", "mixup"]
    assert "mixup" in tricks and "ema" not in tricks
    assert tricks.create("mixup", alpha=0.5).alpha == 0.5
    assert tricks.get("freeze").__name__ == "Freeze"
    assert tricks.register(str, name="text") is str  # any name, not only a `name` attribute


def test_a_taken_name_is_refused_naming_both():
    tricks = make_registry()

    class Other:
        name = "mixup"

    both = (
        r"callback name 'mixup' is taken by .*make_registry.<locals>.Mixup; "
        r".*test_a_taken_name_is_refused_naming_both.<locals>.Other needs another name"
    )
    with pytest.raises(ValueError, match=both):
        tricks.register(Other)
    mixup = tricks.get("mixup")
    assert tricks.register(mixup) is mixup  # the same class again (a module imported twice) is no duplicate


def test_an_unknown_name_is_one_line_with_a_hint():
    tricks = make_registry()
    with pytest.raises(PipelineError) as error:
        tricks.get("mixpu", where="config train.callbacks[0].name")
    assert str(error.value) == "config train.callbacks[0].name: unknown callback 'mixpu'; did you mean 'mixup'?"
    with pytest.raises(PipelineError) as error:
        tricks.create("zzz")
    assert str(error.value) == "unknown callback 'zzz'; known callbacks: freeze, mixup"
    assert Registry("format").unknown("x") == "unknown format 'x'; no format is registered"


def test_copy_is_independent():
    tricks = make_registry()
    twin = tricks.copy()
    twin.register(int, name="extra")
    assert "extra" in twin and "extra" not in tricks


def test_discover_imports_every_module_of_a_package_before_the_first_lookup(tmp_path, monkeypatch):
    package = tmp_path / "tricks_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from src.registry import Registry\nTRICKS = Registry('callback', discover=__name__)\n"
    )
    (package / "base.py").write_text("raise RuntimeError('base is skipped')\n")
    for name in ("ema", "swa"):
        (package / f"{name}.py").write_text(
            f"from tricks_pkg import TRICKS\n\n\n@TRICKS.register\nclass Trick:\n    name = '{name}'\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tricks_pkg", raising=False)
    import tricks_pkg

    try:
        assert "tricks_pkg.ema" not in sys.modules  # lazy: nothing imported until asked
        assert tricks_pkg.TRICKS.names() == ["ema", "swa"]
        assert tricks_pkg.TRICKS.get("swa").__module__ == "tricks_pkg.swa"
    finally:
        for name in [name for name in sys.modules if name.startswith("tricks_pkg")]:
            del sys.modules[name]


def test_formats_and_objectives_use_it():
    from src import objectives
    from src.formats import create_format, format_names

    assert format_names() == sorted(format_names()) and "imet" in format_names()
    with pytest.raises(PipelineError, match="config format: unknown format 'imte'; did you mean 'imet'"):
        create_format("imte", ".")
    assert isinstance(objectives.OBJECTIVES, Registry)
    assert list(objectives.names()) == objectives.OBJECTIVES.names()
