"""The inference kernel's parity check: its script, run offline here, must write submit's files byte for byte.

A passed check is recorded (parity.json) with the sums of what it checked, so the same script, dataset and
submission are not run again; `kernel push` refuses a script whose check did not pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from src.artifacts import Experiment, ParityRecord
from src.atomic import write_text
from src.errors import PipelineError
from src.kaggle.local.inference_kernel import KernelBuild
from src.kaggle.local.kernel_script import CHECKED_MODULES
from src.kaggle.local.offline_sandbox import RUN_TIMEOUT_S, OfflineRun, run_offline
from src.kaggle.on_kaggle.install_wheels import file_sha256
from src.kaggle.on_kaggle.predict import package_versions

Log = Callable[[str], None]


@dataclass(frozen=True)
class ParityResult:
    passed: bool
    detail: str
    script_sha256: str
    reused: bool = False


def has_images(exp: Experiment, split: str) -> bool:
    """Whether the competition's `split` ('train' or 'test') images are here, so a kernel can be run locally."""
    try:
        return len(exp.fmt.read_train() if split == "train" else exp.fmt.read_test()) > 0
    except PipelineError:
        return False


def check_parity(
    exp: Experiment,
    build: KernelBuild,
    run_submit: Callable[[], list[Path]],
    log: Log = print,
    reuse: bool = True,
    timeout_s: float = RUN_TIMEOUT_S,
) -> ParityResult:
    """Run the built script offline against a stand-in /kaggle tree and compare its files with submit's.

    `run_submit` makes the submission (the submit stage) first when it is missing or older than the
    model, thresholds or config.
    With `reuse`, a passed check recorded for these exact bytes (script, dataset, submission) stands.
    """
    script_sha = file_sha256(build.script_path)
    reference, regenerated = _reference_files(exp, run_submit, log)
    fingerprint = _parity_fingerprint(build, script_sha, reference)
    record_path = exp.parity_path
    record = ParityRecord.read(record_path) if reuse else None
    if record is not None and record.passed and record.fingerprint == fingerprint:
        log(f"parity: passed before for these exact files ({record_path}); pass --check to run it again")
        return ParityResult(True, record.detail, script_sha, reused=True)
    links = {exp.config.competition: Path(exp.config.data.root), build.names.dataset_slug: build.dataset_dir}
    if build.wheels_dir.is_dir():
        links[build.names.wheels_slug] = build.wheels_dir
    log(
        f"parity: running {build.script_path.name} offline (network blocked) against a stand-in /kaggle: "
        f"input/{exp.config.competition} -> {exp.config.data.root}, input/{build.names.dataset_slug} -> {build.dataset_dir}"
    )
    run = run_offline(build.script_path, links, timeout_s)
    write_text(exp.parity_log_path, run.output)
    problems = _compare(run, reference)
    if problems and not regenerated and run.returncode == 0 and not run.network_attempts:
        log(
            "parity: the kernel's files differ from the submission on disk: running submit again to compare with a fresh one"
        )
        reference = list(run_submit())
        fingerprint = _parity_fingerprint(build, script_sha, reference)
        problems = _compare(run, reference)
    passed = not problems
    detail = ("byte-identical to " + ", ".join(str(p) for p in reference)) if passed else "; ".join(problems)
    ParityRecord(passed=passed, detail=detail, fingerprint=fingerprint, seconds=round(run.seconds, 1)).write(
        record_path
    )
    log(f"parity: {'passed' if passed else 'FAILED'} in {run.seconds:.0f} s: {detail}")
    return ParityResult(passed, detail, script_sha)


def _reference_files(exp: Experiment, run_submit: Callable[[], list[Path]], log: Log) -> tuple[list[Path], bool]:
    """Submit's files, made again first when missing or older than what they are made from."""
    files = [exp.submission_dir / name for name in exp.fmt.submission_names()]
    sources = [exp.submission_checkpoint(), exp.thresholds_path, exp.config_path]
    newest = max(p.stat().st_mtime_ns for p in sources if p.exists())
    if all(f.is_file() and f.stat().st_mtime_ns >= newest for f in files):
        return files, False
    log("parity: the submission is missing or older than the model, thresholds or config: running submit first")
    return list(run_submit()), True


def _parity_fingerprint(build: KernelBuild, script_sha: str, reference: list[Path]) -> dict:
    return {
        "script": script_sha,
        "dataset": build.dataset_files(),
        "submission": {p.name: file_sha256(p) for p in reference if p.is_file()},
        "python": sys.executable,
        "versions": package_versions(CHECKED_MODULES),
    }


def _compare(run: OfflineRun, reference: list[Path]) -> list[str]:
    """What differs between the offline run and submit's files (empty = byte-identical)."""
    problems = []
    if not run.network_blocked:
        problems.append("the network guard did not load in the kernel's interpreter, so the check proves nothing")
    if run.network_attempts:
        problems.append(
            f"the kernel tried to reach the network ({', '.join(run.network_attempts[:3])}), "
            "which a kernel with internet off cannot"
        )
    if run.returncode != 0:
        tail = " | ".join(line.strip() for line in run.output.strip().splitlines()[-3:])
        problems.append(f"the kernel exited with status {run.returncode}: {tail[-400:]}")
    expected = {p.name: p for p in reference}
    for name, path in expected.items():
        if name not in run.files:
            if run.returncode == 0:
                problems.append(f"the kernel wrote no {name}")
            continue
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif run.files[name] != path.read_bytes():
            problems.append(
                f"the kernel's {name} differs from {path}: {_first_difference(run.files[name], path.read_bytes())}"
            )
    extra = sorted(set(run.files) - set(expected))
    if extra:
        problems.append(f"the kernel also wrote {', '.join(extra[:5])} into the working folder (submit does not)")
    return problems


def _first_difference(kernel: bytes, submitted: bytes) -> str:
    try:
        kernel_lines, submit_lines = kernel.decode("utf-8").splitlines(), submitted.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        offset = next(
            (i for i, (a, b) in enumerate(zip(kernel, submitted)) if a != b), min(len(kernel), len(submitted))
        )
        return f"first difference at byte {offset} ({len(kernel)} vs {len(submitted)} bytes)"
    for number, (a, b) in enumerate(zip(kernel_lines, submit_lines), start=1):
        if a != b:
            return f"line {number}: kernel {a[:80]!r}, submit {b[:80]!r}"
    if len(kernel_lines) != len(submit_lines):
        return f"the kernel wrote {len(kernel_lines)} lines, submit {len(submit_lines)}"
    return f"line endings or trailing bytes differ ({len(kernel)} vs {len(submitted)} bytes)"
