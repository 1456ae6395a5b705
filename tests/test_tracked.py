"""src/tracked.py: the code that ships is what git tracks; an untracked file under src/ is refused by name."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path

import pytest

from src.errors import PipelineError
from src.kaggle.local.kernel_script import code_archive, extract_archive, render_script
from src.tracked import refuse_untracked

ROOT = Path(__file__).resolve().parents[1]


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def _checkout(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "src" / "sub").mkdir(parents=True)
    (project / "src" / "model.py").write_text("x = 1\n")
    (project / ".gitignore").write_text("*.log\n__pycache__/\n")
    _git(project, "init", "-q")
    _git(project, "add", ".gitignore", "src/model.py")
    return project


def test_an_untracked_file_is_refused_by_name_an_ignored_one_is_not(tmp_path):
    project = _checkout(tmp_path)
    (project / "src" / "run.log").write_text("ignored\n")
    (project / "src" / "__pycache__").mkdir()
    (project / "src" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    refuse_untracked(project / "src")  # tracked and ignored files only: fine

    (project / "src" / "sub" / "scratch.py").write_text("HF_TOKEN = 'hf_' + 'x' * 34\n")
    with pytest.raises(PipelineError) as raised:
        refuse_untracked(project / "src")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{project / 'src' / 'sub' / 'scratch.py'}: not tracked by git, so it is not shipped")

    _git(project, "add", "src/sub/scratch.py")
    refuse_untracked(project / "src")


def test_outside_a_checkout_the_folder_ships_as_it_is_with_a_note(tmp_path, caplog):
    folder = tmp_path / "unzipped-course" / "code" / "src"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text("x = 1\n")
    with caplog.at_level(logging.WARNING, logger="src.tracked"):
        refuse_untracked(folder)
    assert f"{folder} is not tracked in a git checkout" in caplog.text


def test_a_kernel_push_never_carries_an_untracked_source_file():
    """The real src/ of this checkout: a file planted in it stops the kernel's code archive, by name."""
    tracked = subprocess.run(["git", "ls-files", "src"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0 or not tracked.stdout.strip():
        pytest.skip("not run from a git checkout of the project")
    planted = ROOT / "src" / f"planted_{uuid.uuid4().hex}.py"
    planted.write_text("AWS_KEY = 'AKIA' + 'Q' * 16\n")
    try:
        with pytest.raises(PipelineError, match=f"{planted}: not tracked by git, so it is not shipped"):
            code_archive()
    finally:
        planted.unlink()
    shipped = extract_archive(render_script({}, code_archive()))
    assert "code/src/tracked.py" in shipped and not any("planted_" in name for name in shipped)
