"""Unattended multi-session training: `kernel train ... --follow`.

One session trains one run (a fold, or the full fit) until it finishes or `train.time_budget_s` pauses it; the loop
pushes a session, waits (polling `kaggle kernels status`, each wait twice the last, from kaggle.poll_s up to
kaggle.poll_max_s), pulls and verifies the runs (training_kernel.pull_training), and pushes the next session
(`--resume` once the run has a last.pt) until every requested run is finished, the week's GPU quota is smaller than
the next session, the plan says the runs will not fit (a cache over the disk, an epoch longer than a session), or a
session finished no epoch. A failed session's log goes to kernels/<exp>/train/logs/ and the
loop stops with its last error line.

Its state is kernels/<exp>/train/follow.json, written atomically before and after each push and pull: a killed
local process re-running the same command picks up where it was. A session is marked `pushing` before the push and
`pushed` (with Kaggle's version) after; a `pushing` session found on restart counts as pushed when push.json holds a
newer version or Kaggle says the kernel is queued or running, so one session is never pushed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from src.artifacts import LAST_CHECKPOINT, Experiment, PushRecord, fold_run_name
from src.atomic import write_text
from src.errors import PipelineError
from src.kaggle.local import cli
from src.kaggle.local import plan as planning
from src.kaggle.local.push import FAILED_STATES, save_failed_log

Log = Callable[[str], None]
_RUNNING = ("queued", "running", "new", "pending")


class Session(BaseModel):
    """One pushed session: the run it trains, whether it resumes, Kaggle's kernel version, where it stands."""

    model_config = ConfigDict(extra="forbid")

    run: str
    resume: bool
    epochs_left: int  # before the session: a session that leaves as many made no progress
    status: Literal["pushing", "pushed", "pulled", "failed"]
    version: int | None = None
    known_version: int | None = None  # push.json's version before this push


class FollowState(BaseModel):
    """follow.json: what was asked (the runs) and every session so far."""

    model_config = ConfigDict(extra="forbid")

    runs: list[str]
    sessions: list[Session] = []

    @classmethod
    def read(cls, path: Path, runs: list[str]) -> FollowState:
        if not path.is_file():
            return cls(runs=runs)
        try:
            state = cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise PipelineError(
                f"{path}: not a follow state ({str(error).splitlines()[0]}): delete it and rerun"
            ) from None
        pending = state.sessions[-1] if state.sessions and state.sessions[-1].status in ("pushing", "pushed") else None
        if state.runs != runs and pending is not None:
            raise PipelineError(
                f"{path}: a session of {pending.run} for the runs {state.runs} is still on Kaggle: rerun that "
                "--follow command to finish it, or delete the file to forget it"
            )
        return state if state.runs == runs else cls(runs=runs)

    def write(self, path: Path) -> None:
        write_text(path, self.model_dump_json(indent=2))


def follow(
    exp: Experiment,
    runs: list[str],
    push_session: Callable[[dict], int | None],
    force: bool = False,
    log: Log = print,
    sleep: Callable[[float], None] = time.sleep,
) -> FollowState:
    """Push, wait, pull until every run of `runs` is finished; `push_session(train options)` builds and pushes one
    session and returns its kernel version. Returns the final state; stops with one line on a failed session, a
    spent quota (unless `force`) or a session that finished no epoch."""
    path = exp.train_follow_path
    state = FollowState.read(path, runs)
    while True:
        last = state.sessions[-1] if state.sessions else None
        if last is not None and last.status == "pushing":
            _settle_pushing(exp, state, last, path, log)
        if last is not None and last.status == "pushed":
            _wait(exp, state, last, path, sleep, log)
            _pull(exp, state, last, path, log)
            continue
        left = {run: planning.epochs_left(exp, run) for run in runs}
        todo = [run for run in runs if left[run]]
        if not todo:
            log(f"follow: every run is finished ({', '.join(runs)}) after {len(state.sessions)} session(s)")
            return state
        found = refuse_small_quota(exp, todo, force, log)
        if found is not None and found.problems:  # the plan says stop: a session would fail or never finish
            if not force:
                raise PipelineError(
                    f"the plan says it will not fit: {found.problems[0]}: not pushed (`kernel train --plan` for the "
                    "whole plan; --force pushes anyway)"
                )
            log(f"warning: the plan says it will not fit: {found.problems[0]} (--force: pushing anyway)")
        run = todo[0]
        session = Session(
            run=run,
            resume=(exp.oof_dir / run / LAST_CHECKPOINT).is_file(),
            epochs_left=left[run],
            status="pushing",
            known_version=PushRecord.read(exp.train_push_path).version,
        )
        state.sessions.append(session)
        state.write(path)
        log(f"follow: session {len(state.sessions)}: {run}, {left[run]} epoch(s) left" + (", resumed" * session.resume))
        session.version, session.status = push_session(session_options(run, session.resume)), "pushed"
        state.write(path)


def describe(exp: Experiment) -> str | None:
    """One line on the last --follow of this experiment (None when there was none): runs, sessions, the last one."""
    path = exp.train_follow_path
    if not path.is_file():
        return None
    try:
        state = FollowState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return f"follow: {path} is not readable: delete it (the next --follow starts afresh)"
    last = state.sessions[-1] if state.sessions else None
    where = f"session {len(state.sessions)} ({last.run}, v{last.version}) {last.status}" if last else "no session yet"
    return f"follow of {', '.join(state.runs)}: {where}"


def session_options(run: str, resume: bool) -> dict:
    """The `train` options of a session that trains `run` (a fold's or the full fit's run folder)."""
    full = run == fold_run_name(None)
    return {
        "fold": None if full else run.removeprefix("fold-"),
        "full": full,
        "resume": resume,
        "stop_after_epochs": None,
    }


def _settle_pushing(exp: Experiment, state: FollowState, session: Session, path: Path, log: Log) -> None:
    """A session marked `pushing` by a process that was killed: pushed when push.json moved on or Kaggle runs it."""
    record = PushRecord.read(exp.train_push_path)
    pushed = record.version is not None and record.version != session.known_version
    if not pushed:  # killed after the CLI's push but before push.json: Kaggle knows
        pushed = _kaggle_runs_it(exp)
    if pushed:
        session.version, session.status = record.version, "pushed"
        if record.kernel_ref is None:  # the first push ever: `kernel pull` finds the kernel through push.json
            record.model_copy(update={"kernel_ref": _training_ref(exp)}).write(exp.train_push_path)
        log(f"follow: session {len(state.sessions)} ({session.run}) was pushed before the restart: waiting for it")
    else:
        state.sessions.pop()
        log(f"follow: session {len(state.sessions) + 1} ({session.run}) never reached Kaggle: pushing it again")
    state.write(path)


def _training_ref(exp: Experiment) -> str:
    """The training kernel's owner/slug: as push.json recorded it, else the name it is pushed under."""
    from src.kaggle.local.names import kaggle_names
    from src.kaggle.local.training_kernel import training_slugs

    return PushRecord.read(exp.train_push_path).kernel_ref or kaggle_names(exp).ref(training_slugs(exp)[0])


def _kaggle_runs_it(exp: Experiment) -> bool:
    """Whether the training kernel is queued or running on Kaggle now."""
    try:
        return cli.kernel_status(_training_ref(exp)).state in _RUNNING
    except PipelineError:  # never pushed: Kaggle does not know it
        return False


def _wait(
    exp: Experiment, state: FollowState, session: Session, path: Path, sleep: Callable[[float], None], log: Log
) -> cli.KernelStatus:
    """Poll the kernel's status until its run ends (each wait doubles, poll_s .. poll_max_s); a failed run's log is
    saved under train/logs/ and stops everything with its last error line."""
    settings = exp.config.kaggle
    ref = _training_ref(exp)
    wait, started = settings.poll_s, time.monotonic()
    while True:
        sleep(wait)  # first: right after a push Kaggle may still show the previous run's state
        wait = min(wait * 2, settings.poll_max_s)
        status = cli.kernel_status(ref)
        if status.state == "complete":
            return status
        if status.state in FAILED_STATES:
            session.status = "failed"
            state.write(path)
            _stop_failed(exp, ref, session, status)
        log(
            f"follow: {ref} v{session.version} is {status.state} ({time.monotonic() - started:.0f} s); next look in {wait:.0f} s"
        )


def _stop_failed(exp: Experiment, ref: str, session: Session, status: cli.KernelStatus) -> None:
    """Save the failed session's log under train/logs/; stop with its last error line."""
    target = exp.train_logs_dir / f"{session.run}-v{session.version}.log"
    last = save_failed_log(ref, target, status)
    raise PipelineError(
        f"kernel {ref} v{session.version} ({session.run}) ended {status.state}: {last}; its log is {target}; "
        "fix it and rerun the same command"
    )


def _pull(exp: Experiment, state: FollowState, session: Session, path: Path, log: Log) -> None:
    """Pull the finished session's runs; stop when it finished no epoch (it would never end)."""
    from src.kaggle.local.training_kernel import pull_training

    pull_training(exp, log)
    session.status = "pulled"
    state.write(path)
    left = planning.epochs_left(exp, session.run)
    if left >= session.epochs_left:
        raise PipelineError(
            f"kernel session for {session.run} finished no epoch ({left} left before and after): one epoch does not "
            "fit a session; lower data.image_size or train.sampler.samples_per_epoch, or raise train.time_budget_s"
        )


def refuse_small_quota(exp: Experiment, runs: list[str], force: bool, log: Log) -> planning.Plan | None:
    """Print the plan's one-line summary for `runs` on kaggle.accelerator and refuse (unless `force`) when `kaggle
    quota` leaves less than the next session: the plan's estimate of it, or a whole session without an estimate."""
    session_h = (exp.config.kaggle.session_timeout_s or planning.KAGGLE_SESSION_S) / 3600
    try:
        found = planning.make_plan(exp, runs, exp.config.kaggle.accelerator, quota=cli.gpu_quota)
    except PipelineError as error:  # no plan (e.g. the training table is not here): the quota alone decides
        log(f"plan: no estimate ({error})")
        found, left, needed = None, _quota_left(log), session_h
    else:
        log(found.summary())
        left, needed = found.quota_left_h, found.next_session_h
        if left is None and found.quota_note:
            log(f"warning: {found.quota_note}: not checked")
    if left is not None and left < needed:
        message = (
            f"kaggle quota: {left:.1f} GPU hours left this week, the next session may take {needed:.1f}: not pushed; "
            "wait for the weekly refresh (kaggle quota), or pass --force"
        )
        if not force:
            raise PipelineError(message)
        log(f"warning: {message.replace(': not pushed', '')} (--force: pushing anyway)")
    return found


def _quota_left(log: Log) -> float | None:
    """GPU hours left this week, or None (logged) when `kaggle quota` does not answer: the push is not judged then."""
    try:
        return cli.gpu_quota().left_h
    except PipelineError as error:
        log(f"warning: quota unknown, not checked: {error}")
        return None
