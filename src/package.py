"""A course's deliverable as one zip: the prediction file(s) under the names the course asks for, the PDF
report, the code that made them, a Readme.txt and, where the course wants one, an executed notebook.

Where each piece goes comes from src/artifacts.py (`package_names`: the defaults, the format's course,
then `package.names`). Nothing is made here that a stage makes: the submission and the report must
exist and be fresh (not older than what they are made from), or the package is refused with the
stage to run. The content is assembled in a temporary folder beside `submissions/<exp>/package/`, the
notebook (if any) runs there, and then the zip is written and the folder moved into place.
"""

from __future__ import annotations

import ast
import importlib.metadata
import platform
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src.artifacts import BEST_CHECKPOINT, EPOCHS_CSV, FULL_RUN, PACKAGE_PIECES, RUN_SUMMARY, Experiment, package_names
from src.atomic import atomic_path, write_text
from src.config import config_to_dict, load_config
from src.errors import PipelineError
from src.tracked import refuse_untracked

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Package:
    """A built package: its name, the unzipped folder, the zip, and every file in it (zip paths, sorted)."""

    name: str
    folder: Path
    zip_path: Path
    files: list[str]


def build_package(exp: Experiment, name: str | None = None, log: Callable[[str], None] = print) -> Package:
    """Check the artifacts, assemble the course's files, run the notebook (if any), write the zip; return it."""
    name = package_name(exp, name)
    places = piece_places(exp, name)
    submissions = check_artifacts(exp)
    for key, saved, now in trained_differently(exp):
        log(f"note: {key} is {now!r} in the packaged config, but the submitted run was trained with {saved!r}")
    exp.package_dir.mkdir(parents=True, exist_ok=True)
    staging = exp.package_dir / f".{name}.building"
    shutil.rmtree(staging, ignore_errors=True)  # left by a package stage that was stopped
    try:
        described = _assemble(exp, name, places, submissions, staging, log)
        write_text(staging / places["readme"], readme_text(exp, name, described, places))
        refuse_leaks(staging)
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
        zip_path = exp.package_dir / places["zip"]
        with atomic_path(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for file in files:
                    archive.write(staging / file, file)
        folder = exp.package_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Package(name, folder, zip_path, files)


def refuse_leaks(folder: Path) -> None:
    """Stop before zipping when a file holds a credential (the kernel's scan: Kaggle's key, secret-looking
    environment variables): a course package is handed to other people."""
    from src.kaggle.local.secret_scan import find_leaks, secret_values

    leaks = find_leaks(folder, secret_values())
    if leaks:
        raise PipelineError(f"{folder}: {leaks[0]}; take the secret out of that file and package again")


def package_name(exp: Experiment, name: str | None) -> str:
    """--name, else package.name, else the experiment's name; refused unless it is a plain file name."""
    chosen = name or exp.config.package.name or exp.name
    if not _NAME.match(chosen):
        raise PipelineError(
            f"--name '{chosen}': not a plain file name; use letters, digits, '_', '.' and '-' (e.g. RollNumber_06)"
        )
    return chosen


def piece_places(exp: Experiment, name: str) -> dict[str, str]:
    """Each piece's path in the zip ('submission:<file>' per submission file); pieces set to null are left out."""
    submissions = exp.fmt.submission_names()
    overrides = exp.config.package.names
    unknown = [key for key in overrides if key not in PACKAGE_PIECES and key not in submissions]
    if unknown:
        raise PipelineError(
            f"config package.names.{unknown[0]}: unknown piece; use one of {', '.join([*PACKAGE_PIECES, *submissions])}"
        )
    patterns = package_names(exp.fmt.course_package_names, {k: v for k, v in overrides.items() if k in PACKAGE_PIECES})
    places: dict[str, str] = {}
    for key in [piece for piece in PACKAGE_PIECES if piece != "submission"] + [f"submission:{f}" for f in submissions]:
        file = key.partition(":")[2]
        pattern = overrides.get(file, patterns["submission"]) if file else patterns[key]
        if pattern is None:
            if key in ("readme", "zip") or file:
                raise PipelineError(f"config package.names.{file or key}: may not be null; every package has it")
            continue
        places[key] = _place(pattern, name, file, f"config package.names.{file or key}")
    taken = [place for key, place in places.items() if key != "zip"]
    clash = next((place for place in taken if taken.count(place) > 1), None)
    if clash is not None:
        raise PipelineError(f"config package.names: two pieces go to '{clash}'; give each its own name")
    return places


def _place(pattern: str, name: str, file: str, key: str) -> str:
    try:
        place = pattern.format(name=name, file=file)
    except (KeyError, IndexError, ValueError):
        raise PipelineError(f"{key}: '{pattern}' may use only {{name}} and {{file}}; fix the pattern") from None
    parts = Path(place).parts
    if not place or Path(place).is_absolute() or ".." in parts or any(not part.strip() for part in parts):
        raise PipelineError(
            f"{key}: '{place}' is not a path inside the zip; use a relative name such as '{{name}}.csv'"
        )
    return Path(place).as_posix()


def check_artifacts(exp: Experiment) -> list[Path]:
    """The submission files, once every artifact the package holds is there and fresh; else the stage to run."""
    fold_checkpoints = [path / BEST_CHECKPOINT for _, path in exp.fold_run_dirs()]
    exp.require_fresh(exp.oof_path, fold_checkpoints, "oof")
    tuned = any(head.thresholded for head in exp.fmt.heads())
    if tuned or exp.thresholds_path.exists():
        exp.require_fresh(exp.thresholds_path, [exp.oof_path], "thresholds")
    checkpoint = exp.submission_checkpoint()
    files = [exp.submission_dir / file for file in exp.fmt.submission_names()]
    for file in files:
        exp.require_fresh(file, [checkpoint, exp.thresholds_path], "submit")
    try:
        exp.fmt.read_submission(files)
    except PipelineError as exc:
        raise PipelineError(
            f"{exc} (made for another test set?); make it again with: {exp.command('submit')}"
        ) from None
    runs = [path for _, path in exp.fold_run_dirs()] + [exp.run_dir(None)]
    made_from = [exp.oof_path, exp.thresholds_path, *(run / name for run in runs for name in (EPOCHS_CSV, RUN_SUMMARY))]
    exp.require_fresh(exp.report_pdf, made_from, "report")
    from src.report.pdf import page_count

    pages, budget = page_count(exp.report_pdf), exp.config.report.max_pages
    if pages is None or pages > budget:
        raise PipelineError(
            f"{exp.report_pdf}: {'unreadable' if pages is None else f'{pages} pages'}, the budget is "
            f"report.max_pages={budget}; make it again with: {exp.command('report')}"
        )
    return files


def trained_differently(exp: Experiment) -> list[tuple[str, Any, Any]]:
    """(key, value the submitted run saved in config.json, value now) for every training setting that differs."""
    from src.artifacts import read_run_config

    checkpoint = exp.submission_checkpoint()
    saved, now = read_run_config(checkpoint.parent), config_to_dict(exp.config)
    differences = []
    for section in ("model", "train", "augment", "data"):
        for key, value in _flat(saved.get(section, {}), section).items():
            current = _flat(now.get(section, {}), section).get(key, value)
            if current != value and key not in _MACHINE_KEYS:
                differences.append((key, value, current))
    return differences


# Settings that differ between machines without changing what is trained.
_MACHINE_KEYS = {
    "data.root",
    "data.solution",
    "data.skip_unreadable",
    "train.threads",
    "train.num_workers",
    "train.device",
    "train.tensorboard",
    "train.persistent_workers",
    "train.prefetch_factor",
    "model.weights",
}


def _flat(tree: dict, prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def _assemble(
    exp: Experiment,
    name: str,
    places: dict[str, str],
    submissions: list[Path],
    staging: Path,
    log: Callable[[str], None],
) -> dict[str, str]:
    """Copy the code, run the notebook, copy the prediction files and the report; return {zip path: what it is}."""
    described: dict[str, str] = {}
    if "code" in places:
        described.update(_copy_code(exp, staging, places["code"]))
    if "notebook" in places:
        log(f"running the notebook headless (report stage from the saved artifacts) -> {places['notebook']}")
        described[places["notebook"]] = _write_notebook(exp, name, places, staging)
    for file in submissions:
        place = places[f"submission:{file.name}"]
        _copy(file, staging / place)
        lines = len(file.read_text(encoding="utf-8").splitlines())
        described[place] = (
            f"the predictions: {file.name} as `submit` wrote it ({lines} lines, checked by the "
            f"{exp.fmt.name} format's validator)"
        )
    if "report" in places:
        from src.report.pdf import page_count

        _copy(exp.report_pdf, staging / places["report"])
        described[places["report"]] = (
            f"the report ({page_count(exp.report_pdf)} A4 pages): model and diagram, losses and "
            "tricks, per-class / per-attribute table and average, curves per epoch, ROC / PR, "
            "right and wrong examples, resources"
        )
    described[places["readme"]] = "this file"
    return described


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _copy_code(exp: Experiment, staging: Path, code: str) -> dict[str, str]:
    """src/ (Python files), requirements.txt and the resolved config, its paths made absolute."""
    described = {}
    refuse_untracked(PROJECT_ROOT / "src")  # the code that ships is what git tracks
    for path in sorted((PROJECT_ROOT / "src").rglob("*.py")):
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        _copy(path, staging / code / relative)
        described[f"{code}/{relative}"] = _docstring_line(path)
    requirements = PROJECT_ROOT / "requirements.txt"
    if not requirements.is_file():
        raise PipelineError(f"{requirements}: not found; the package ships the pinned requirements, restore the file")
    _copy(requirements, staging / code / "requirements.txt")
    described[f"{code}/requirements.txt"] = "the pinned third-party libraries (pip install -r requirements.txt)"
    config_place = f"{code}/configs/{exp.name}.yaml"
    (staging / config_place).parent.mkdir(parents=True, exist_ok=True)
    (staging / config_place).write_text(yaml.safe_dump(_resolved_config(exp), sort_keys=False), encoding="utf-8")
    load_config(staging / config_place)  # what the Readme's commands read must load
    described[config_place] = "the resolved config of the run (every default filled in, paths made absolute)"
    return described


def _resolved_config(exp: Experiment) -> dict:
    config = config_to_dict(exp.config)
    config["output_dir"] = str(Path(config["output_dir"]).resolve())
    data = config["data"]
    data["root"] = str(Path(data["root"]).resolve())
    data["solution"] = [str(Path(item).resolve()) for item in data.get("solution", [])]
    if config["model"].get("weights"):
        config["model"]["weights"] = str(Path(config["model"]["weights"]).resolve())
    config["thresholds"]["storage"] = None  # a database URL may carry a password; tuning again makes a local study
    return config


def _write_notebook(exp: Experiment, name: str, places: dict[str, str], staging: Path) -> str:
    import nbformat

    from src.notebook import build_notebook, error_outputs, execute_notebook

    if "code" not in places:
        raise PipelineError("config package.names.code: null, but the notebook runs the packaged code; keep the code")
    notebook = build_notebook(
        f"{name}: {exp.name} ({exp.config.format})",
        f"configs/{exp.name}.yaml",
        reproduce_commands(exp),
        exp.fmt.submission_names(),
    )
    path = staging / places["notebook"]
    notebook = execute_notebook(notebook, path.parent, exp.package_dir / places["notebook"])
    errors = error_outputs(notebook)
    if errors:
        raise PipelineError(f"{path.name}: a cell ended in {errors[0]}; fix it and package again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nbformat.write(notebook, str(tmp))
    return (
        "the Jupyter notebook, executed (outputs saved): with TRAIN = False it runs only the report stage from the "
        "trained run's saved artifacts and shows the figures, tables and predictions; TRAIN = True runs every stage"
    )


def reproduce_commands(exp: Experiment) -> list[list[str]]:
    """The stages that make the run, in order (without --config): folds, training, oof, thresholds, submit."""
    commands = [["folds"], ["train", "--fold", "all"]]
    if exp.config.submit.checkpoint == FULL_RUN:
        commands.append(["train", "--full"])
    return commands + [["oof"], ["thresholds"], ["submit"]]


def readme_text(exp: Experiment, name: str, described: dict[str, str], places: dict[str, str]) -> str:
    """Readme.txt: every file and what it is, the libraries at their installed versions, the commands to run."""
    config = f"configs/{exp.name}.yaml"
    width = max(len(path) for path in described) + 2
    stages = [*reproduce_commands(exp), ["report"], ["package", "--name", name]]
    lines = [
        f"{name}: experiment {exp.name} (format {exp.config.format}, competition {exp.config.competition})",
        "",
        "FILES",
        "",
    ]
    lines += [f"  {path.ljust(width)}{described[path]}" for path in sorted(described)]
    lines += [
        "",
        "HOW TO RUN",
        "",
        f"From the {places.get('code', 'code')}/ folder (Python {platform.python_version()} was used):",
        "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
    ]
    lines += [f"  .venv/bin/python -m src.stage {' '.join(stage)} --config {config}" for stage in stages]
    lines += [
        "The config's data.root points at the competition files; on another machine add data.root=/path/to/them "
        "(and output_dir=/path/for/outputs) to each command."
    ]
    if "notebook" in places:
        lines += [
            f"{places['notebook']}: open it in Jupyter beside the code folder. As saved (TRAIN = False) it runs only "
            "the report stage from the trained run's artifacts, then shows the figures and tables; set TRAIN = True "
            "to run every stage above first (slow: it trains)."
        ]
    lines += ["", "THIRD-PARTY LIBRARIES (installed versions when this package was built)", ""]
    lines += [f"  {library} {version}" for library, version in library_versions()]
    return "\n".join(lines) + "\n"


def library_versions() -> list[tuple[str, str]]:
    """(name, installed version) of every library requirements.txt pins."""
    names = []
    for line in (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            names.append(re.split(r"[=<>!~\[; ]", requirement, maxsplit=1)[0])
    versions = []
    for library in names:
        try:
            versions.append((library, importlib.metadata.version(library)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((library, "not installed"))
    return versions


def _docstring_line(path: Path) -> str:
    """The first line of a module's docstring (what the file is), or its role when it has none."""
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (SyntaxError, UnicodeDecodeError):
        docstring = None
    return (docstring or "part of the pipeline's code (src/)").strip().splitlines()[0]
