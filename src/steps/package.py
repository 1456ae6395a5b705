"""Stage `package`: the course's deliverable as one zip (prediction files named as the course asks, the PDF
report, the code, Readme.txt, and for the folder course an executed notebook) -> submissions/<exp>/package/.

Refuses to start while the submission or the report is missing or older than what it is made from,
naming the stage to run first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from src.artifacts import Experiment
from src.package import build_package


def run(
    exp: Experiment,
    name: str | None = None,
    author: str | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the package (`author`: package.author, for the report's and the Readme's author line); return the zip."""
    if author is not None:
        exp.config.package.author = author
    _report_for_the_author(exp, quiet, log)
    log(
        f"package {exp.name}: the {exp.config.format} course's files from {exp.submission_dir} and {exp.report_dir} "
        f"-> {exp.package_dir}"
    )
    package = build_package(exp, name, log)
    log(f"wrote {package.zip_path} ({len(package.files)} files; unzipped in {package.folder}):")
    shown = [file for file in package.files if "/src/" not in f"/{file}"]
    log(
        "  "
        + "\n  ".join(shown)
        + (f"\n  ... and {len(package.files) - len(shown)} code files" if len(shown) < len(package.files) else "")
    )
    return package.zip_path


def _report_for_the_author(exp: Experiment, quiet: bool, log: Callable[[str], None]) -> None:
    """A report.pdf whose author line is not package.author's (`--author` given after the report was made) is made
    again first, so the zip's PDF and Readme name the same author."""
    from src.report.pdf import author_of

    wanted = exp.config.package.author
    if not exp.report_pdf.is_file() or author_of(exp.report_pdf) == wanted:
        return
    from src.steps import report as report_step

    log(f"report: made again for the author line {wanted!r} (package.author)" if wanted else "report: made again")
    report_step.run(exp, quiet=quiet, log=log)
