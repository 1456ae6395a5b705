"""The format registry: found by name, duplicates refused, names listed in errors; what formats declare."""

from __future__ import annotations

import pytest

from src.demo import list_formats
from src.errors import PipelineError
from src.formats import create_format, folds_scheme_of, format_class, format_names, register
from src.formats.base import CompetitionFormat


def test_every_module_registers_a_format_under_its_name():
    names = format_names()
    assert names == sorted(names) and len(names) >= 4
    assert all(format_class(name).name == name for name in names)
    assert set(list_formats()) <= set(names)


def test_a_second_class_under_a_taken_name_is_refused_with_the_names():
    taken = format_names()[0]
    imposter = type("Imposter", (CompetitionFormat,), {"name": taken})
    with pytest.raises(
        ValueError, match=f"format name '{taken}' is taken by src.formats.*; .*Imposter needs another name"
    ):
        register(imposter)
    assert format_class(taken) is not imposter
    assert register(format_class(taken)) is format_class(taken)  # the same class again is no clash


def test_a_class_without_a_name_is_refused():
    with pytest.raises(PipelineError, match="needs a non-empty `name`"):
        register(type("Nameless", (CompetitionFormat,), {}))


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(PipelineError, match=f"unknown format 'mnist'; known formats: {', '.join(format_names())}"):
        create_format("mnist", tmp_path)
    with pytest.raises(PipelineError, match="known formats"):
        folds_scheme_of("mnist")


@pytest.mark.parametrize("name", format_names())
def test_fold_scheme_is_read_without_data_and_matches_the_instance(tmp_path, name):
    assert isinstance(folds_scheme_of(name), str)
    assert folds_scheme_of(name) == create_format(name, tmp_path).folds_scheme()


def test_bad_format_options_are_one_config_line():
    name = next(name for name in format_names() if format_class(name).Options.model_fields)
    with pytest.raises(PipelineError, match=r"config format_options\.no_such_key: .*for format"):
        folds_scheme_of(name, {"no_such_key": 1})
