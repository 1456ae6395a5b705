"""Habits the team keeps, checked where CI runs the tests: ruff's lint and format are clean (pyproject.toml), and no
function in src/ is longer than 60 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["src", "tests", "scripts"]
MAX_FUNCTION_LINES = 60


def _ruff() -> str:
    found = Path(sys.executable).parent / "ruff"
    if found.exists():
        return str(found)
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -r requirements.txt installs it")
    return "ruff"


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    result = subprocess.run([_ruff(), *command, *CHECKED], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} found problems; fix them or run `ruff {command[0]}`:\n"
        + (result.stdout + result.stderr)[-4000:]
    )


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'path:line name (N lines)' for every function or method under `root` longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_longer_than_60_lines():
    assert long_functions(ROOT / "src") == []


def test_the_length_check_finds_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{index} = {index}" for index in range(MAX_FUNCTION_LINES))
    (package / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert long_functions(package) == [f"pkg/long.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
