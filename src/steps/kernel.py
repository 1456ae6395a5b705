"""Stage `kernel`: build the offline Kaggle kernel + weights dataset, check it locally (parity), push, follow.

Without --status/--output/--submit it builds `kernels/<exp>/` and runs the parity check when the
competition's test images are here (`check`: None = then, True = always, False = never); a failed
check stops it, and `push` happens only after a passed (or impossible) check.
"""
from __future__ import annotations

from typing import Callable, Optional

from src.errors import PipelineError
from src.experiment import Experiment
from src.kaggle import kernel


def run(exp: Experiment, push: bool = False, status: bool = False, output: bool = False, check: Optional[bool] = None,
        quiet: bool = False, log: Callable[[str], None] = print, submit: bool = False) -> Optional[kernel.KernelBuild]:
    """Build (+ check, + push); then, as asked, show the kernel's status, fetch its output, submit it.

    Returns the build, or None when only following an already pushed kernel.
    """
    build = None
    if push or not (status or output or submit):
        build = kernel.build_kernel(exp, log)
        parity = _parity(exp, build, check, push, quiet, log)
        if push:
            kernel.push(exp, build, parity, log)
    if status:
        kernel.kernel_status(exp, log)
    if output:
        kernel.fetch_output(exp, log)
    if submit:
        kernel.submit_kernel(exp, log)
    return build


def _parity(exp: Experiment, build: kernel.KernelBuild, check: Optional[bool], push: bool, quiet: bool,
            log: Callable[[str], None]) -> Optional[kernel.ParityResult]:
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
    result = kernel.check_parity(exp, build, log, reuse=check is None, quiet=quiet)
    if not result.passed:
        raise PipelineError(f"parity check failed{' (nothing pushed)' if push else ''}: {result.detail}; "
                            f"the kernel's log is {build.kernel_dir / kernel.PARITY_LOG}")
    return result
