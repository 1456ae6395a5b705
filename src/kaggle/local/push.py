"""Push the inference kernel and its datasets to Kaggle, then follow it: status, output, code-competition submit.

`upload_dataset` (create or version a flat dataset folder, skipped when unchanged, then wait until Kaggle has
processed it) serves the training kernel too.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from src import confine
from src.artifacts import KERNEL_MODEL_FILE, KERNEL_WHEELS_DIR, Experiment, LeaderboardEntry, PushRecord
from src.atomic import write_text
from src.errors import PipelineError
from src.kaggle.local import cli, leaderboard
from src.kaggle.local.inference_kernel import KernelBuild
from src.kaggle.local.names import kaggle_names
from src.kaggle.local.parity import ParityResult
from src.kaggle.on_kaggle.install_wheels import changed_files

Log = Callable[[str], None]

DATASET_WAIT_S = 30 * 60
_DATASET_POLL_S = 10


def push(
    exp: Experiment, build: KernelBuild, parity: ParityResult | None, log: Log = print, wait_s: float = DATASET_WAIT_S
) -> tuple[str, int | None]:
    """Upload the weights and wheels datasets (create, or a new version; each skipped when unchanged since the
    last push), wait until Kaggle has processed them, push the kernel; return (kernel URL, kernel version).

    Refused when the parity check failed, or when a built file changed since it was built and checked.
    """
    _refuse_unchecked(exp, build, parity, log)
    record_path = exp.kernel_push_path
    last = _upload_kernel_datasets(exp, build, PushRecord.read(record_path), record_path, wait_s, log)
    kernel_url, version = cli.push_kernel_with_version(build.kernel_dir, exp.config.kaggle.session_timeout_s)
    last.model_copy(
        update={
            "kernel_ref": build.names.kernel_ref,
            "kernel_url": kernel_url,
            "version": version,
            "script_sha256": build.files[build.names.code_file],
            "competition": exp.config.competition,
            "submission_names": exp.fmt.submission_names(),
        }
    ).write(record_path)
    log(f"kernel pushed: {kernel_url} (version {version}); follow it with: {exp.command('kernel status')}")
    return kernel_url, version


def _refuse_unchecked(exp: Experiment, build: KernelBuild, parity: ParityResult | None, log: Log) -> None:
    """Raises when a built file changed since it was built and checked or when `parity` failed; warns when the
    kernel was not run locally (`parity` None)."""
    changed = changed_files(build.kernel_dir, build.files)
    if changed:
        raise PipelineError(
            f"{build.kernel_dir / changed[0]} changed after it was built and checked: not pushing; "
            f"build, check and push again with: {exp.command('kernel push')}"
        )
    if parity is None:
        log("warning: pushing a kernel that was not run locally (no parity check)")
    elif not parity.passed or parity.script_sha256 != build.files[build.names.code_file]:
        raise PipelineError(f"the parity check did not pass for {build.script_path}: not pushing ({parity.detail})")


def _upload_kernel_datasets(
    exp: Experiment, build: KernelBuild, last: PushRecord, record_path: Path, wait_s: float, log: Log
) -> PushRecord:
    """Uploads the weights dataset, then the wheels one when built, each unless `last` shows it unchanged;
    returns the updated push record (written to `record_path` after each upload)."""
    dataset_files = build.dataset_files()
    last = upload_dataset(
        build.dataset_dir,
        build.names.dataset_ref,
        dataset_files,
        "dataset",
        last,
        record_path,
        f"{exp.name}: {KERNEL_MODEL_FILE} {dataset_files[KERNEL_MODEL_FILE][:12]}",
        wait_s,
        log,
    )
    if build.wheels_dir.is_dir():
        wheels = build.dataset_files(KERNEL_WHEELS_DIR)
        last = upload_dataset(
            build.wheels_dir,
            build.names.wheels_ref,
            wheels,
            "wheels",
            last,
            record_path,
            f"{exp.name}: {len(wheels)} wheels",
            wait_s,
            log,
        )
    return last


def upload_dataset(
    folder: Path,
    ref: str,
    files: dict[str, str],
    key: str,
    last: PushRecord,
    record_path: Path,
    message: str,
    wait_s: float,
    log: Log,
) -> PushRecord:
    """Upload a flat dataset folder (create, or a new version) unless the last push (`last`, its upload `key`)
    sent these exact files; wait until Kaggle has processed it; return the updated record (written at once)."""
    label = "weights" if key == "dataset" else key  # push.json's first keys predate the wheels dataset
    if last.uploaded(key) == (ref, files):
        log(f"{label} dataset {ref} unchanged since the last push: not uploading it again")
        return last
    url = cli.create_or_version_dataset(folder, message)
    log(f"{label} dataset uploaded: {url}")
    _wait_until_ready(ref, wait_s, log)
    last = last.with_upload(key, ref, files)
    last.write(record_path)
    return last


def _wait_until_ready(dataset_ref: str, wait_s: float, log: Log) -> None:
    """Kaggle attaches a new dataset version to kernels only once processed: wait for that."""
    deadline = time.monotonic() + wait_s
    while True:
        state = cli.dataset_status(dataset_ref)
        if state == "ready":
            return
        if "error" in state or "fail" in state:
            raise PipelineError(
                f"Kaggle could not process dataset {dataset_ref} ({state}): open it on Kaggle to see why"
            )
        if time.monotonic() > deadline:
            raise PipelineError(
                f"dataset {dataset_ref} is still {state} after {wait_s / 60:.0f} min: push the kernel "
                "later with the same command (the dataset is not uploaded again)"
            )
        log(f"weights dataset {dataset_ref} is {state}; waiting")
        time.sleep(_DATASET_POLL_S)


def kernel_status(exp: Experiment, log: Log = print) -> cli.KernelStatus:
    """State of the kernel's latest run (queued, running, complete, error, ...)."""
    ref = kaggle_names(exp).kernel_ref
    status = cli.kernel_status(ref)
    log(f"kernel {ref}: {status.state}" + (f": {status.failure_message}" if status.failure_message else ""))
    return status


def fetch_output(exp: Experiment, log: Log = print) -> list[Path]:
    """Download the latest COMPLETE run's output into kernels/<exp>/output/ (staged beside it, then swapped in whole,
    so a previous run's files never look new and a partial download never replaces a good one) and validate its
    submission when the competition folder is here."""
    ref = kaggle_names(exp).kernel_ref
    status = cli.kernel_status(ref)
    if status.state in FAILED_STATES:
        _stop_with_the_log(exp, ref, status)
    if status.state != "complete":
        raise PipelineError(
            f"kernel {ref} is {status.state}, not complete: no output fetched (kernels/{exp.name}/output/ is as it "
            "was)"
            + (f"; Kaggle says: {status.failure_message}" if status.failure_message else "")
            + f"; check with: {exp.command('kernel status')}"
        )
    dest = exp.kernel_output_dir
    dest.parent.mkdir(parents=True, exist_ok=True)
    with confine.staging(dest.parent, ".output-") as staging:  # kept, and named, when a check fails
        files = _expected_only(exp, ref, cli.kernel_output(ref, staging), staging, log)
        _validate_output(exp, staging, log)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    files = [dest / path.relative_to(staging) for path in files if staging in path.parents]
    log(f"kernel {ref} output -> {dest}: {', '.join(p.name for p in files) or 'nothing'}")
    return files


def _expected_only(exp: Experiment, ref: str, files: list[Path], staging: Path, log: Log) -> list[Path]:
    """The downloaded files the inference kernel writes (the format's submission files, and the run's log); any
    other file a listing brought is deleted from staging and named, never moved into kernels/<exp>/output/."""
    try:
        expected = {*exp.fmt.submission_names(), f"{ref.split('/')[1]}.log"}
    except PipelineError:  # no competition folder here: the names are unknown, the confinement rule still held
        return files
    extra = sorted(
        path for path in staging.rglob("*") if path.is_file() and path.relative_to(staging).as_posix() not in expected
    )
    for path in extra:
        path.unlink()
    for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if extra:
        log(
            f"not kept (not an output of the inference kernel): {', '.join(p.relative_to(staging).as_posix() for p in extra)}"
        )
    return [path for path in files if path.is_file()]


FAILED_STATES = ("error", "cancel_requested", "cancel_acknowledged", "cancelled", "canceled")  # Kaggle's, lower case


def save_failed_log(ref: str, target: Path, status: cli.KernelStatus) -> str:
    """A failed run's log (`kaggle kernels logs`) saved at `target`; its last error line (else Kaggle's message)."""
    text = cli.kernel_logs(ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, text)
    return cli.last_error_line(text, status.failure_message or "no log")


def _stop_with_the_log(exp: Experiment, ref: str, status: cli.KernelStatus) -> None:
    """A failed run: its log into kernels/<exp>/logs/ instead of an output, and one line."""
    target = exp.kernel_dir / "logs" / f"{ref.split('/')[1]}.log"
    last = save_failed_log(ref, target, status)
    raise PipelineError(
        f"kernel {ref} ended {status.state}: {last}; no output fetched (kernels/{exp.name}/output/ is as it was); "
        f"its log is {target}"
    )


def _validate_output(exp: Experiment, folder: Path, log: Log) -> None:
    """The output's submission files checked against the competition's format (when its folder is here)."""
    try:
        fmt = exp.fmt
    except PipelineError:
        log(f"(submission not validated: the competition folder {exp.config.data.root} is not here)")
        return
    submission = [folder / name for name in fmt.submission_names()]
    if all(p.is_file() for p in submission):
        fmt.read_submission(submission)
        log(f"validated against the competition's format: {', '.join(n.name for n in submission)}")


def submit_kernel(exp: Experiment, log: Log = print) -> list[LeaderboardEntry]:
    """Code competitions: submit the pushed kernel version's output once its run is complete, then wait
    (bounded, `submit.score_wait_s`) for its leaderboard score."""
    record_path = exp.kernel_push_path
    record = PushRecord.read(record_path)
    if not record.version or not record.kernel_ref:
        raise PipelineError(f"{record_path}: no pushed kernel version: push first with: {exp.command('kernel push')}")
    ref, version = record.kernel_ref, record.version
    names = record.submission_names or ["submission.csv"]
    if len(names) != 1:
        raise PipelineError(f"this format writes {len(names)} files; a code competition takes one: submit by hand")
    status = cli.kernel_status(ref)
    if status.state != "complete":
        raise PipelineError(
            f"kernel {ref} is {status.state}, not complete: submit once its run has finished "
            f"(check with: {exp.command('kernel status')})"
        )
    competition, message = exp.config.competition, exp.config.submit.message
    leaderboard.refuse_without_submissions_left([competition])
    before = leaderboard.refs_listed([competition])
    reply = cli.submit_code(competition, ref, version, names[0], message)
    log(f"submitted {ref} version {version} ({names[0]}) to {competition}: {reply}")
    entry = leaderboard.uploaded_entry(competition, names[0], message, before)
    return leaderboard.wait_for_scores(
        [entry], before, exp.config.submit.score_wait_s, exp.config.submit.score_poll_s, log
    )
