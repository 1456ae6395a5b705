"""src/watchdog.py: a dead notebook kernel and a SIGTERM each stop the work with one line, children included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from src.watchdog import process_alive

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60  # the promise: a dead child is noticed, and the stage stops, within a minute


def _wait_for(path: Path, seconds: float = LIMIT_S) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


NOTEBOOK_RUN = """
import sys
from pathlib import Path
import nbformat.v4 as nbf
from src.errors import PipelineError
from src.notebook import execute_notebook
folder = Path(sys.argv[1])
cell = f"import os, time\\nopen({str(folder / 'kernel.pid')!r}, 'w').write(str(os.getpid()))\\ntime.sleep(600)"
notebook = nbf.new_notebook(cells=[nbf.new_code_cell(cell)])
notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
try:
    execute_notebook(notebook, folder, folder / "course.ipynb")
except PipelineError as exc:
    sys.exit(f"error: {exc}")
"""


def test_a_killed_notebook_kernel_stops_the_run_with_one_line(tmp_path):
    """As an out-of-memory kill would: the kernel is SIGKILLed while its cell sleeps (nbclient alone waits forever)."""
    run = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK_RUN, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        kernel = int(_wait_for(tmp_path / "kernel.pid"))
        os.kill(kernel, signal.SIGKILL)
        out, err = run.communicate(timeout=LIMIT_S)  # without the watchdog: TimeoutExpired, the test fails
    finally:
        run.kill()
    assert run.returncode == 1 and not process_alive(kernel)
    assert err.decode().strip().splitlines() == [
        f"error: {tmp_path / 'course.ipynb'}: the notebook's kernel died (its process is gone: killed, e.g. out of "
        "memory); check memory (a smaller batch or image size), then package again"
    ]


STAGE_WITH_A_CHILD = """
import subprocess, sys
from src.steps import download
def hang(*args, **kwargs):
    subprocess.run(["sleep", "600"])
download.fetch = hang
from src.stage import main
sys.exit(main(["download", "--competition", "some-competition"]))
"""


def _children(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in children.read_text().split()]
    return found


def test_sigterm_stops_a_stage_and_its_child_with_one_line():
    stage = subprocess.Popen(
        [sys.executable, "-c", STAGE_WITH_A_CHILD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + LIMIT_S
        while not _children(stage.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        [child] = _children(stage.pid)
        stage.send_signal(signal.SIGTERM)
        out, err = stage.communicate(timeout=LIMIT_S)
    finally:
        stage.kill()
    assert stage.returncode == 128 + signal.SIGTERM  # 143: stopped, as a shell reports it, not failed (2)
    assert err.strip().splitlines() == [
        "error: stage download was stopped (SIGTERM): its children were stopped too; rerun it when wanted"
    ]
    assert not process_alive(child)
