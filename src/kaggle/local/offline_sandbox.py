"""Run a kernel script here the way Kaggle runs it with internet off: a stand-in /kaggle tree, no network.

The network guard (`network_guard.py` beside this file) is copied into the sandbox as `sitecustomize.py`, so
the script's interpreter loads it before any user code; it refuses every IPv4/IPv6 connect, send and name
lookup and notes each attempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NETWORK_GUARD = Path(__file__).with_name("network_guard.py")  # becomes the sandbox's sitecustomize.py
RUN_TIMEOUT_S = 4 * 3600
_SANDBOX_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "LD_LIBRARY_PATH",
)
_NOWHERE = "http://127.0.0.1:9"  # the discard port: a proxy that is never there


@dataclass(frozen=True)
class OfflineRun:
    """One run of a script in the offline stand-in: exit status, output, files left in working/, network tries."""

    returncode: int
    output: str
    files: dict[str, bytes]
    network_attempts: list[str]
    network_blocked: bool
    seconds: float


def run_offline(
    script: Path,
    inputs: dict[str, Path],
    timeout_s: float = RUN_TIMEOUT_S,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> OfflineRun:
    """Run `script` with this interpreter (or `python`) the way Kaggle runs a kernel with internet off
    (`env`: a few more variables for it, e.g. the training kernel's check switch).

    A temporary tree stands in for /kaggle: input/<name> links to each folder of `inputs`, the
    script runs from a copy in src/ with working/ as its current folder, HOME empty, no credential
    and no variable of this environment but a few locale/thread/GPU ones. A sitecustomize makes every
    IPv4/IPv6 connect, send and name lookup fail and notes each attempt; proxies point nowhere.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kernel-offline-") as tmp:
        box = _Sandbox.under(Path(tmp))
        box.make(script, inputs)
        command = [python or sys.executable, str(box.code_dir / script.name)]
        returncode, output = _run_script(command, box.working, _sandbox_env(box, env or {}), timeout_s)
        files = {
            p.relative_to(box.working).as_posix(): p.read_bytes() for p in sorted(box.working.rglob("*")) if p.is_file()
        }
        attempts = box.attempts_log.read_text(encoding="utf-8").splitlines() if box.attempts_log.exists() else []
        return OfflineRun(returncode, output, files, attempts, box.ready_flag.exists(), time.perf_counter() - started)


@dataclass(frozen=True)
class _Sandbox:
    """The paths of one stand-in /kaggle tree, the script's home, scratch and guard folders, the guard's files."""

    input_root: Path
    working: Path
    code_dir: Path
    guard: Path
    home: Path
    scratch: Path
    attempts_log: Path
    ready_flag: Path

    @classmethod
    def under(cls, root: Path) -> _Sandbox:
        """The sandbox's paths under the temporary folder `root` (nothing made yet)."""
        kaggle = root / "kaggle"
        return cls(
            input_root=kaggle / "input",
            working=kaggle / "working",
            code_dir=kaggle / "src",
            guard=root / "guard",
            home=root / "home",
            scratch=root / "tmp",
            attempts_log=root / "network-attempts.log",
            ready_flag=root / "network-guard-ready",
        )

    def make(self, script: Path, inputs: dict[str, Path]) -> None:
        """Makes the folders, links each of `inputs` under input/, copies `script` and the network guard in."""
        for folder in (self.input_root, self.working, self.code_dir, self.guard, self.home, self.scratch):
            folder.mkdir(parents=True)
        for name, target in inputs.items():
            _link_or_copy(Path(target).resolve(), self.input_root / name)
        shutil.copyfile(script, self.code_dir / script.name)
        shutil.copyfile(NETWORK_GUARD, self.guard / "sitecustomize.py")  # loaded before any of the script's code


def _sandbox_env(box: _Sandbox, extra: dict[str, str]) -> dict[str, str]:
    """The script's environment: a few of this one's variables, the sandbox's paths, proxies nowhere, then `extra`."""
    env = {name: os.environ[name] for name in _SANDBOX_ENV if name in os.environ}
    env.update(
        {
            "HOME": str(box.home),
            "TMPDIR": str(box.scratch),
            "PYTHONPATH": str(box.guard),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
            "KAGGLE_INPUT_ROOT": str(box.input_root),
            "KAGGLE_WORKING_ROOT": str(box.working),
            "KERNEL_CHECK_NETWORK_LOG": str(box.attempts_log),
            "KERNEL_CHECK_READY": str(box.ready_flag),
            "NO_PROXY": "",
            "no_proxy": "",
            **{
                name: _NOWHERE
                for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
            },
            **extra,
        }
    )
    return env


def _run_script(command: list[str], working: Path, env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Runs `command` in `working` with `env` and no input; returns (exit status, output), (-1, output so far and
    a note) when it runs past `timeout_s`."""
    try:
        done = subprocess.run(
            command,
            cwd=working,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )
        return done.returncode, done.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode("utf-8", "replace") + f"\n(stopped after {timeout_s:.0f} s)\n"
        return -1, output


def _link_or_copy(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError:  # no symlinks here: copy instead
        shutil.copytree(target, link)
