"""Stage `kernel`: the offline Kaggle kernels, as sub-commands (a row each in SUBCOMMANDS below).

`build` writes kernels/<exp>/ (script + weights and wheels datasets) and runs the parity check when the
competition's test images are here (`--check` always, `--no-check` never); `push` builds, checks
and uploads (refused when the check fails); `status`, `output` and `submit` follow the pushed kernel.
`train` builds (and checks, and with --push pushes) the training kernel; `pull` brings its runs back;
`train --plan` only estimates what the runs cost, `train --follow` pushes and pulls sessions until they are done;
`cache` ships the training images' packed cache as a dataset the training kernel reads.
Adding a sub-command is one row and one function here. src.kaggle is imported only when one runs.
"""

from __future__ import annotations

from collections.abc import Callable

from src.artifacts import Experiment
from src.errors import PipelineError
from src.steps.table import OneOf, Stage, one_of, option, train_options


def _check_options(check_help: str, skip_help: str) -> OneOf:
    """--check / --no-check, both into `check`: True, False, or None when neither is given."""
    return one_of(
        option("--check", dest="check", action="store_const", const=True, default=None, help=check_help),
        option("--no-check", dest="check", action="store_const", const=False, help=skip_help),
    )


_ACCELERATOR = option(
    "--accelerator",
    metavar="SHAPE",
    help="the Kaggle GPU machine (default: the config's kaggle.accelerator, NvidiaTeslaT4 = GPU T4 x2)",
)
_CHECK = _check_options("run the parity check even if it passed before for these files", "skip the parity check")
_TRAIN_CHECK = _check_options(
    "require the local training check (one epoch, offline; default: run it when the images are here)",
    "skip the local training check",
)

SUBCOMMANDS: tuple[Stage, ...] = (
    Stage(
        "build",
        "write kernels/<exp>/ (script with src embedded + weights dataset) and run it locally offline "
        "(parity with submit)",
        run="src.steps.kernel:build",
        options=(_CHECK, _ACCELERATOR),
    ),
    Stage(
        "push",
        "build, check, then upload the weights dataset (create or new version) and push the kernel; "
        "refused when the parity check fails",
        run="src.steps.kernel:push",
        options=(_CHECK, _ACCELERATOR),
    ),
    Stage("status", "state of the pushed kernel's run (kaggle kernels status)", run="src.steps.kernel:status"),
    Stage(
        "output",
        "download its output into kernels/<exp>/output/ and validate it (kaggle kernels output)",
        run="src.steps.kernel:output",
    ),
    Stage(
        "submit",
        "code competitions: submit the pushed kernel version once its run is complete",
        run="src.steps.kernel:submit",
    ),
    Stage(
        "train",
        "training kernel (the train stage on Kaggle's GPUs): write kernels/<exp>/train/, check it locally "
        "(one epoch, network blocked, same run folder as a local train), --push it",
        run="src.steps.kernel:train",
        options=(
            *train_options(
                resume_help="ship the pulled runs' last.pt back and continue them",
                stop_help="stop cleanly after N whole epochs (to fit Kaggle's time limit); continue with --resume",
            ),
            option("--push", action="store_true", help="then upload its datasets and push it"),
            _TRAIN_CHECK,
            _ACCELERATOR,
            option(
                "--plan",
                action="store_true",
                help="only estimate: cache size, RAM, time per epoch and run, sessions, GPU hours vs kaggle quota",
            ),
            option(
                "--machine",
                metavar="NAME",
                help="--plan's machine: NvidiaTeslaT4 (t4x2), NvidiaTeslaP100 (p100) or this (measured here); "
                "default kaggle.accelerator",
            ),
            option(
                "--follow",
                action="store_true",
                help="push, wait, pull and push the next --resume session until every run is finished "
                "(state in kernels/<exp>/train/follow.json: rerun the same command after an interruption)",
            ),
            option("--force", action="store_true", help="push even when kaggle quota has less left than a session"),
        ),
    ),
    Stage(
        "cache",
        "pack every training image once here (resumable) into kernels/_image-cache/<slug>/, a dataset the training "
        "kernel attaches and reads in place instead of decoding the images in each session; --push uploads it",
        run="src.steps.kernel:cache",
        options=(option("--push", action="store_true", help="then upload it (create, or a new version if changed)"),),
    ),
    Stage(
        "pull",
        "download the training kernel's runs into oof/<exp>/fold-K/ (checksums, config and folds file verified)",
        run="src.steps.kernel:pull",
    ),
)


def _use_accelerator(exp: Experiment, accelerator: str | None) -> None:
    """--accelerator over the config's kaggle.accelerator, checked before anything is built or uploaded."""
    if accelerator is None:
        return
    from pydantic import ValidationError

    try:
        exp.config.kaggle.accelerator = accelerator
    except ValidationError as error:
        raise PipelineError(f"--accelerator {accelerator}: {error.errors()[0]['msg']}") from None


def build(exp: Experiment, check: bool | None = None, accelerator: str | None = None, quiet: bool = False, log=print):
    """Build kernels/<exp>/ and check it (None = when the test images are here); return (build, parity)."""
    return _build_checked(exp, check, accelerator, False, quiet, log)


def push(exp: Experiment, check: bool | None = None, accelerator: str | None = None, quiet: bool = False, log=print):
    """Build + check, then push; return the build."""
    from src.kaggle.local import push as kernel_push

    built, parity = _build_checked(exp, check, accelerator, True, quiet, log)
    kernel_push.push(exp, built, parity, log)
    return built


def _build_checked(exp: Experiment, check: bool | None, accelerator: str | None, pushing: bool, quiet: bool, log):
    """(build, parity result) of the inference kernel, on --accelerator's machine when given."""
    from src.kaggle.local.inference_kernel import build_kernel

    _use_accelerator(exp, accelerator)
    built = build_kernel(exp, log, pushing)
    return built, _parity(exp, built, check, pushing, quiet, log)


def status(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    """State of the pushed inference kernel's run, and of the training kernel's when one was pushed."""
    from src.kaggle.local import cli, training_kernel
    from src.kaggle.local import follow as following
    from src.kaggle.local.push import kernel_status

    training = training_kernel.pushed_training_ref(exp)
    found = kernel_status(exp, log) if training is None or exp.kernel_push_path.is_file() else None
    if training is not None:
        state = cli.kernel_status(training)
        log(
            f"training kernel {training}: {state.state}"
            + (f": {state.failure_message}" if state.failure_message else "")
        )
        found = state if found is None else found
        described = following.describe(exp)
        if described:
            log(described)
    return found


def train(
    exp: Experiment,
    fold: str | None = None,
    full: bool = False,
    resume: bool = False,
    stop_after_epochs: int | None = None,
    push: bool = False,
    check: bool | None = None,
    accelerator: str | None = None,
    plan: bool = False,
    machine: str | None = None,
    follow: bool = False,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] | None = None,
):
    """Build the training kernel for these runs, check it (None = when the training images are here), push it;
    --plan only estimates, --follow pushes and pulls session after session until the runs are finished."""
    from src.kaggle.local import follow as following
    from src.kaggle.local import plan as planning
    from src.kaggle.local import training_kernel

    _use_accelerator(exp, accelerator)
    wanted = planning.requested_runs(exp, fold, full)
    if plan:
        return _plan(exp, wanted, machine or exp.config.kaggle.accelerator, log)
    if follow:
        checks = [check]  # the first session pushed by this process is checked as `kernel train --push` checks

        def push_session(options: dict) -> int | None:
            built, checked = _build_training(exp, {**options, "stop_after_epochs": stop_after_epochs}, checks[0], log)
            checks[0] = False
            return training_kernel.push_training(exp, built, checked, log)[1]

        return following.follow(exp, wanted, push_session, force, log, **({"sleep": sleep} if sleep else {}))
    runs = {"fold": fold, "full": full, "resume": resume, "stop_after_epochs": stop_after_epochs}
    built, checked = _build_training(exp, runs, check, log)
    if push:
        following.refuse_small_quota(exp, wanted, force, log)
        training_kernel.push_training(exp, built, checked, log)
    return built


def _plan(exp: Experiment, runs: list[str], machine: str, log: Callable[[str], None]):
    """Print the plan for `runs` on `machine` (this machine: timed here; a Kaggle one: with `kaggle quota`)."""
    from src.kaggle.local import cli
    from src.kaggle.local import plan as planning

    key = planning.machine_key(machine)
    found = planning.make_plan(
        exp,
        runs,
        key,
        measure=lambda e: planning.measure_images_per_s(e, log=log),
        quota=None if key == planning.THIS else cli.gpu_quota,
    )
    for line in found.lines():
        log(line)
    return found


def _build_training(exp: Experiment, runs: dict, check: bool | None, log: Callable[[str], None]):
    """(the built training kernel for `runs`, whether it was checked: None = when the training images are here)."""
    from src.kaggle.local import training_kernel
    from src.kaggle.local.parity import has_images
    from src.steps import train as train_step

    built = training_kernel.build_training_kernel(exp, runs, log)
    checked = check is True or (check is None and has_images(exp, "train"))
    if checked:
        training_kernel.check_training(
            exp, built, lambda local, **runs: train_step.run(local, **runs, quiet=True, log=log), log
        )
    else:
        log(
            "training check skipped"
            + (
                " (--no-check)"
                if check is False
                else f": the competition's training images are not in {exp.config.data.root}"
            )
        )
    return built, checked


def cache(exp: Experiment, push: bool = False, quiet: bool = False, log: Callable[[str], None] = print):
    """Build the training images' packed cache and its dataset folder; --push uploads it."""
    from src.kaggle.local import image_cache_dataset

    built = image_cache_dataset.build_image_cache_dataset(exp, quiet, log)
    if push:
        image_cache_dataset.push_image_cache_dataset(exp, built, log)
    return built


def pull(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    """Download the training kernel's runs into oof/<exp>/ once verified."""
    from src.kaggle.local import training_kernel

    return training_kernel.pull_training(exp, log)


def output(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    from src.kaggle.local.push import fetch_output

    return fetch_output(exp, log)


def submit(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    """Submit the pushed kernel version (code competitions); its leaderboard score goes to kaggle.json."""
    from src.artifacts import LeaderboardRecord
    from src.kaggle.local.push import submit_kernel

    record = LeaderboardRecord(submissions=submit_kernel(exp, log))
    record.write(exp.kaggle_scores_path)
    log(f"leaderboard: {exp.kaggle_scores_path}")
    return record


def _parity(exp: Experiment, built, check: bool | None, pushing: bool, quiet: bool, log: Callable[[str], None]):
    from src.kaggle.local import parity
    from src.steps import submit as submit_step

    if check is False:
        log("parity check skipped (--no-check)")
        return None
    if not parity.has_images(exp, "test"):
        if check:
            raise PipelineError(
                f"{exp.config.data.root}: the competition's test images are not here, so the kernel "
                f"cannot be run locally: download them (python -m src.stage download --competition "
                f"{exp.config.competition}) or leave out --check"
            )
        log(f"parity check skipped: the competition's test images are not in {exp.config.data.root}")
        return None
    result = parity.check_parity(
        exp, built, lambda: submit_step.run(exp, quiet=quiet, log=log), log, reuse=check is None
    )
    if not result.passed:
        raise PipelineError(
            f"parity check failed{' (nothing pushed)' if pushing else ''}: {result.detail}; "
            f"the kernel's log is {exp.parity_log_path}"
        )
    return result
