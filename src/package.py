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
from src.config import config_to_dict, load_config, training_settings
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
    spellings = {"name_lower_first": name[:1].lower() + name[1:], "name_upper_first": name[:1].upper() + name[1:]}
    try:
        place = pattern.format(name=name, file=file, **spellings)
    except (KeyError, IndexError, ValueError):
        raise PipelineError(
            f"{key}: '{pattern}' may use only {{name}}, {{name_lower_first}}, {{name_upper_first}} and {{file}}; "
            "fix the pattern"
        ) from None
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
    saved, now = training_settings(read_run_config(checkpoint.parent)), training_settings(config_to_dict(exp.config))
    return [(key, value, now.get(key, value)) for key, value in saved.items() if now.get(key, value) != value]


def _assemble(
    exp: Experiment,
    name: str,
    places: dict[str, str],
    submissions: list[Path],
    staging: Path,
    log: Callable[[str], None],
) -> dict[str, str]:
    """Copy the code, the trained run, the prediction files and the report, run the notebook; return
    {zip path (or folder/ for a folder of test images): what it is}."""
    described: dict[str, str] = {}
    if "code" in places:
        described.update(_copy_code(exp, staging, places["code"]))
        described.update(_copy_trained_run(exp, staging, places["code"]))
        if "notebook" in places:
            described.update(_copy_test_inputs(exp, staging, places["code"]))
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
    if "notebook" in places:
        log(
            f"running the notebook headless (predicts from the shipped weights and test images) -> {places['notebook']}"
        )
        described[places["notebook"]] = _write_notebook(exp, name, places, staging)
    described[places["readme"]] = "this file"
    return described


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _copy_code(exp: Experiment, staging: Path, code: str) -> dict[str, str]:
    """src/ (Python files), requirements.txt and the packaged config (relative paths only)."""
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
    (staging / config_place).write_text(yaml.safe_dump(packaged_config(exp), sort_keys=False), encoding="utf-8")
    load_config(staging / config_place)  # what the Readme's commands read must load
    described[config_place] = (
        "the config of the run, every default filled in; its paths are relative to code/ (output_dir: . holds the "
        "shipped run under oof/; data.root: the competition folder, override it with data.root=/path/to/data)"
    )
    return described


def packaged_data_root(exp: Experiment) -> str:
    """The packaged config's data.root, relative to code/: where the shipped test images are (if any)."""
    return f"input/{exp.config.competition or exp.name}"


def packaged_config(exp: Experiment) -> dict:
    """The run's resolved config with nothing of the building machine in it: output_dir is code/ itself, data.root
    a relative folder, the demo's answers dropped, a weight file by name only, no report.compare (those experiments'
    runs are not shipped); the format's options name the heads
    (`standalone_options`), so predicting needs only test images."""
    config = config_to_dict(exp.config)
    config["output_dir"] = "."
    config["data"]["root"] = packaged_data_root(exp)
    config["data"]["solution"] = []
    if config["model"].get("weights"):
        config["model"]["weights"] = f"input/weights/{Path(config['model']['weights']).name}"
    config["thresholds"]["storage"] = None  # a database URL may carry a password; tuning again makes a local study
    config["data"]["prebuilt_cache"] = None  # a folder of the building machine; the zip's notebook decodes its own
    # The experiments the report compared with are not shipped: a report made from the zip compares with none.
    config["report"]["compare"] = []
    config["format_options"] = {**(config.get("format_options") or {}), **exp.fmt.standalone_options()}
    return _without_machine_paths(config)


def _without_machine_paths(value: Any) -> Any:
    """Every absolute path string left in the config (a notes file, an init checkpoint) as its file name."""
    if isinstance(value, dict):
        return {key: _without_machine_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_machine_paths(item) for item in value]
    if isinstance(value, str) and value.startswith(("/", "~")) and len(value) > 1:
        return Path(value).name
    return value


def _copy_trained_run(exp: Experiment, staging: Path, code: str) -> dict[str, str]:
    """The submitted model's best.pt (within package.max_weights_mb), every run's epochs.csv and the OOF and threshold
    files, under code/oof/<exp>/ where the packaged config (output_dir: .) finds them."""
    checkpoint = exp.submission_checkpoint()
    limit = exp.config.package.max_weights_mb
    size_mb = checkpoint.stat().st_size / 2**20
    if size_mb > limit:
        raise PipelineError(
            f"{checkpoint}: {size_mb:.1f} MB of weights, over package.max_weights_mb={limit:g}; the zip ships them "
            f"for predicting without retraining: raise the limit (package.max_weights_mb={int(size_mb) + 1}) if the "
            "course accepts that size, or train a smaller model"
        )
    shipped = Path(code) / "oof" / exp.name
    runs = {checkpoint.parent.name: checkpoint.parent, **{path.name: path for _, path in exp.fold_run_dirs()}}
    described = {
        f"{shipped.as_posix()}/{checkpoint.parent.name}/{BEST_CHECKPOINT}": (
            f"the trained weights ({size_mb:.1f} MB, the `{exp.config.submit.checkpoint}` run that made the "
            "predictions) with the model's name and heads; what the notebook and `submit` predict with"
        ),
        f"{shipped.as_posix()}/{checkpoint.parent.name}/{BEST_CHECKPOINT}.sha256": "its size and SHA-256 (checked on load)",
    }
    _copy(checkpoint, staging / shipped / checkpoint.parent.name / BEST_CHECKPOINT)
    sidecar = checkpoint.with_name(checkpoint.name + ".sha256")
    if sidecar.is_file():  # without it the loader still takes the file, as its only candidate
        _copy(sidecar, staging / shipped / checkpoint.parent.name / f"{BEST_CHECKPOINT}.sha256")
    else:
        described.pop(f"{shipped.as_posix()}/{checkpoint.parent.name}/{BEST_CHECKPOINT}.sha256")
    for run_name, run_dir in sorted(runs.items()):
        if (run_dir / EPOCHS_CSV).is_file():
            _copy(run_dir / EPOCHS_CSV, staging / shipped / run_name / EPOCHS_CSV)
            described[f"{shipped.as_posix()}/{run_name}/{EPOCHS_CSV}"] = (
                f"loss and scores per epoch of the {run_name} run"
            )
    what = {
        exp.oof_path: "out-of-fold probabilities of every training image (ids, folds, targets)",
        exp.oof_scores_path: "the OOF score per fold and overall at 0.5",
        exp.thresholds_path: "the tuned thresholds `submit` applied",
        exp.threshold_scores_path: "the OOF score per fold with the tuned thresholds",
    }
    for path, text in what.items():
        if path.is_file():
            _copy(path, staging / shipped / path.name)
            described[f"{shipped.as_posix()}/{path.name}"] = text
    return described


def _copy_test_inputs(exp: Experiment, staging: Path, code: str) -> dict[str, str]:
    """The test images (and the listing the format reads) under code/<packaged data.root>/, within
    package.max_test_images_mb, so the notebook predicts them from the zip alone."""
    root = Path(exp.config.data.root).resolve()
    files = [Path(file).resolve() for file in exp.fmt.test_input_files()]
    outside = next((file for file in files if not file.is_relative_to(root)), None)
    if outside is not None:
        raise PipelineError(
            f"{outside}: a test image outside data.root ({root}); the notebook's copy keeps the layout under "
            "data.root, so put the test folder inside it"
        )
    limit, total_mb = exp.config.package.max_test_images_mb, sum(file.stat().st_size for file in files) / 2**20
    if total_mb > limit:
        raise PipelineError(
            f"{root}: {total_mb:.1f} MB of test files, over package.max_test_images_mb={limit:g}; the notebook "
            f"predicts them from the zip: raise the limit (package.max_test_images_mb={int(total_mb) + 1})"
        )
    target = Path(code) / packaged_data_root(exp)
    for file in files:
        _copy(file, staging / target / file.relative_to(root))
    count: dict[str, int] = {}
    for file in files:
        folder = (target / file.relative_to(root)).parent.as_posix()
        count[folder] = count.get(folder, 0) + 1
    return {
        f"{folder}/": f"the test files the predictions are made from ({count[folder]} files; {total_mb * 1024:.0f} KB of test files in all)"
        for folder in sorted(count)
    }


def _write_notebook(exp: Experiment, name: str, places: dict[str, str], staging: Path) -> str:
    import nbformat

    from src.notebook import NOTEBOOK_OUTPUTS, build_notebook, error_outputs, execute_notebook

    if "code" not in places:
        raise PipelineError("config package.names.code: null, but the notebook runs the packaged code; keep the code")
    submissions = {file: places[f"submission:{file}"] for file in exp.fmt.submission_names()}
    notebook = build_notebook(exp, name, places["code"], submissions)
    path = staging / places["notebook"]
    notebook = execute_notebook(notebook, path.parent, exp.package_dir / places["notebook"])
    shutil.rmtree(path.parent / NOTEBOOK_OUTPUTS, ignore_errors=True)  # what it wrote is checked, not shipped
    errors = error_outputs(notebook)
    if errors:
        raise PipelineError(f"{path.name}: a cell ended in {errors[0]}; fix it and package again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nbformat.write(notebook, str(tmp))
    return (
        "the Jupyter notebook, executed (outputs saved): data, model, loss, training, evaluation and prediction "
        "written with the project's code; as saved (TRAIN = False) it predicts the shipped test images with the "
        "shipped weights and writes the same prediction file again; TRAIN = True with DATA_ROOT retrains"
    )


def reproduce_commands(exp: Experiment) -> list[list[str]]:
    """The stages that make the run, in order (without --config): folds, training, oof, thresholds, submit."""
    commands = [["folds"], ["train", "--fold", "all"]]
    if exp.config.submit.checkpoint == FULL_RUN:
        commands.append(["train", "--full"])
    return commands + [["oof"], ["thresholds"], ["submit"]]


def readme_text(exp: Experiment, name: str, described: dict[str, str], places: dict[str, str]) -> str:
    """Readme.txt: every file and what it is, how to predict with the shipped weights and how to retrain, the
    libraries at their installed versions with where they come from."""
    width = max(len(path) for path in described) + 2
    author = exp.config.package.author
    lines = [
        f"{name}: experiment {exp.name} (format {exp.config.format}, competition {exp.config.competition})",
        *([f"Author: {author}"] if author else []),
        "",
        "FILES",
        "",
        *(f"  {path.ljust(width)}{described[path]}" for path in sorted(described)),
        "",
        *_how_to_run(exp, name, places),
        "",
        "THIRD-PARTY LIBRARIES (installed versions when this package was built, and where each comes from)",
        "",
        f"  Python {platform.python_version()}  https://www.python.org/",
        *(f"  {library} {version}  {' '.join(where)}" for library, version, where in library_references()),
    ]
    return "\n".join(lines) + "\n"


def _how_to_run(exp: Experiment, name: str, places: dict[str, str]) -> list[str]:
    """The Readme's commands: install, predict with the shipped weights (a new test folder too), retrain."""
    code, config = places.get("code", "code"), f"configs/{exp.name}.yaml"
    stage = f".venv/bin/python -m src.stage {{}} --config {config}"
    new_test = (
        "format_options.test_dir=/path/to/new_test"
        if "test_dir" in type(exp.fmt.options).model_fields
        else "(the new test files in the competition's layout under that data.root)"
    )
    lines = [
        "HOW TO RUN",
        "",
        f"Everything runs from the {code}/ folder (cd {code}), after installing the pinned libraries once:",
        "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
        "",
        "Predict with the shipped weights (nothing is trained; writes "
        f"submissions/{exp.name}/{', '.join(exp.fmt.submission_names())} in {code}/):",
        "  " + stage.format("submit") + " data.root=/path/to/competition",
        "(the competition folder needs only the test files; without data.root the config's own folder is used"
        + (", which holds the test images this zip ships)" if "notebook" in places else ")"),
        "A NEW test folder (e.g. a test set released later), same weights and thresholds:",
        "  " + stage.format("submit") + f" data.root=/path/to/competition {new_test}",
    ]
    lines += [
        "",
        "Retrain from the competition's files (slow; every stage in order, outputs under retrained/):",
        *(
            "  " + stage.format(" ".join(command)) + " data.root=/path/to/competition output_dir=retrained"
            for command in [*reproduce_commands(exp), ["report"], ["package", "--name", name]]
        ),
    ]
    if "notebook" in places:
        lines += [
            "",
            f"{places['notebook']}: open it in Jupyter in this folder (beside {code}/). As saved, TRAIN = False: it "
            "reads the shipped test images, predicts them with the shipped weights and writes the prediction file "
            "again (it says whether it is byte-identical to the one in this zip); set DATA_ROOT = '/path/to/competition' "
            "to predict another copy of the data, and TRAIN = True as well to retrain first (slow).",
        ]
    return lines


def library_references() -> list[tuple[str, str, list[str]]]:
    """(name, installed version, [its PyPI page, its homepage]) of every library requirements.txt pins."""
    references = []
    for library, version in library_versions():
        where = [f"https://pypi.org/project/{library}/{version}/" if version != "not installed" else ""]
        try:
            meta = importlib.metadata.metadata(library)
        except importlib.metadata.PackageNotFoundError:
            meta = None
        homepage = _homepage(meta) if meta is not None else None
        references.append((library, version, [item for item in (*where, homepage) if item]))
    return references


def _homepage(meta) -> str | None:
    """A package's homepage from its metadata: Home-page, else its first Project-URL."""
    if meta.get("Home-page"):
        return meta.get("Home-page")
    urls = [url.split(",", 1) for url in (meta.get_all("Project-URL") or []) if "," in url]
    ranked = sorted(urls, key=lambda item: next((i for i, w in enumerate(_HOME_LABELS) if w in item[0].lower()), 9))
    return ranked[0][1].strip() if ranked else None


# Project-URL labels that name a project's home, best first (a changelog or issue tracker is no reference).
_HOME_LABELS = ("homepage", "home", "source", "repository", "code", "documentation")


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
