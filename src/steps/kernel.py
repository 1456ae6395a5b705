"""Stage `kernel`: the offline Kaggle kernel, as sub-commands (a row each in SUBCOMMANDS below).

`build` writes kernels/<exp>/ (script + weights dataset) and runs the parity check when the
competition's test images are here (`--check` always, `--no-check` never); `push` builds, checks
and uploads (refused when the check fails); `status`, `output` and `submit` follow the pushed kernel.
Adding a sub-command is one row and one function here. src.kaggle is imported only when one runs.
"""
from __future__ import annotations

from typing import Callable, Optional

from src.artifacts import Experiment
from src.errors import PipelineError
from src.steps.table import Stage, one_of, option

_CHECK = one_of(
    option("--check", dest="check", action="store_const", const=True, default=None,
           help="run the parity check even if it passed before for these files"),
    option("--no-check", dest="check", action="store_const", const=False, help="skip the parity check"))

SUBCOMMANDS: tuple[Stage, ...] = (
    Stage("build", "write kernels/<exp>/ (script with src embedded + weights dataset) and run it locally offline "
                   "(parity with submit)", run="src.steps.kernel:build", options=(_CHECK,)),
    Stage("push", "build, check, then upload the weights dataset (create or new version) and push the kernel; "
                  "refused when the parity check fails", run="src.steps.kernel:push", options=(_CHECK,)),
    Stage("status", "state of the pushed kernel's run (kaggle kernels status)", run="src.steps.kernel:status"),
    Stage("output", "download its output into kernels/<exp>/output/ and validate it (kaggle kernels output)",
          run="src.steps.kernel:output"),
    Stage("submit", "code competitions: submit the pushed kernel version once its run is complete",
          run="src.steps.kernel:submit"),
)


def build(exp: Experiment, check: Optional[bool] = None, quiet: bool = False, log: Callable[[str], None] = print):
    """Build kernels/<exp>/ and check it (None = when the test images are here); return (build, parity)."""
    from src.kaggle import kernel

    built = kernel.build_kernel(exp, log)
    return built, _parity(exp, built, check, False, quiet, log)


def push(exp: Experiment, check: Optional[bool] = None, quiet: bool = False, log: Callable[[str], None] = print):
    """Build + check, then push; return the build."""
    from src.kaggle import kernel

    built = kernel.build_kernel(exp, log)
    kernel.push(exp, built, _parity(exp, built, check, True, quiet, log), log)
    return built


def status(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    from src.kaggle import kernel

    return kernel.kernel_status(exp, log)


def output(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    from src.kaggle import kernel

    return kernel.fetch_output(exp, log)


def submit(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print):
    """Submit the pushed kernel version (code competitions); its leaderboard score goes to kaggle.json."""
    from src.artifacts import LeaderboardRecord
    from src.kaggle import kernel

    record = LeaderboardRecord(submissions=kernel.submit_kernel(exp, log))
    record.write(exp.kaggle_scores_path)
    log(f"leaderboard: {exp.kaggle_scores_path}")
    return record


def _parity(exp: Experiment, built, check: Optional[bool], pushing: bool, quiet: bool, log: Callable[[str], None]):
    from src.kaggle import kernel
    from src.steps import submit as submit_step

    if check is False:
        log("parity check skipped (--no-check)")
        return None
    if not kernel.has_test_images(exp):
        if check:
            raise PipelineError(f"{exp.config.data.root}: the competition's test images are not here, so the kernel "
                                f"cannot be run locally: download them (python -m src.stage download --competition "
                                f"{exp.config.competition}) or leave out --check")
        log(f"parity check skipped: the competition's test images are not in {exp.config.data.root}")
        return None
    result = kernel.check_parity(exp, built, lambda: submit_step.run(exp, quiet=quiet, log=log), log, reuse=check is None)
    if not result.passed:
        raise PipelineError(f"parity check failed{' (nothing pushed)' if pushing else ''}: {result.detail}; "
                            f"the kernel's log is {built.kernel_dir / kernel.PARITY_LOG}")
    return result
