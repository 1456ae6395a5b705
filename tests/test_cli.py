"""The command line as a user meets it: --help everywhere, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.stage import STAGES, main, subcommand_rows

ROOT = Path(__file__).resolve().parents[1]


COMMANDS = [[row.name] for row in STAGES if not row.subcommands] + [
    [row.name, sub.name] for row in STAGES for sub in subcommand_rows(row)
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_stage_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "key.path=value" in out


def test_user_error_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("competition: x\nformat: imet\ndata:\n  root: input/x\ntrain:\n  epochz: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "src.stage", "folds", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {config} line 6: train.epochz: unknown key; did you mean 'epochs'?"]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback_and_unknown_flags_are_usage_errors(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("competition: x\nformat: nope\ndata:\n  root: .\n")
    assert main(["folds", "--config", str(config), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "unknown format 'nope'" in err
    with pytest.raises(SystemExit):
        main(["folds", "--config", str(config), "--bogus"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_stage_row_names_a_run_function(command):
    import importlib

    row = {r.name: r for r in STAGES}[command[0]]
    if len(command) == 2:
        row = {r.name: r for r in subcommand_rows(row)}[command[1]]
    module, _, function = row.run.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_status_does_not_load_torch(tmp_path):
    """Each stage imports only its own module: a quick look must not pay for torch, sklearn and matplotlib."""
    code = (
        "import sys; from src.stage import main; code = main(['status', '--output-dir', sys.argv[1], '--quiet']); "
        "print(code, 'torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split()[-3:] == ["0", "False", "False"], result.stderr[-2000:]
