"""What the offline kernel runs on Kaggle: find the inputs, load the ONE model, write the submission.

The script built from `script_template.py` unpacks this package and calls `run_kernel` with the
settings the builder embedded. It makes an Experiment over the attached competition folder whose
artifacts (checkpoint, thresholds, resolved config) come from the weights dataset, and then makes
the same call as the submit stage: `src.inference.make_submission` (predict -> decide -> write + validate).
Only the standard library (and install_wheels, which uses only that) is imported at module level, so the
builder can import the names below; the weights dataset's file names are src.artifacts'.
"""

from __future__ import annotations

import importlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from src.kaggle.on_kaggle.install_wheels import AttachedError, find_attached, folders, listing


def run_kernel(
    settings: dict,
    input_root: str,
    working_root: str,
    code_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Write the submission into `working_root`; return the exit status (0, or 2 after printing one error line)."""
    from src.artifacts import KERNEL_MODEL_FILE, KERNEL_THRESHOLDS_FILE
    from src.errors import PipelineError

    log = log or _print
    started = time.perf_counter()
    try:
        check_own_code(code_dir)
        for line in version_drift(settings.get("versions", {}), settings.get("python", "")):
            log(f"warning: {line}")
        competition_dir = find_competition_dir(Path(input_root), settings["competition"])
        dataset_dir = find_dataset_dir(Path(input_root), settings["dataset_ref"], settings["dataset_files"])
        log(f"kernel {settings['experiment']}: competition data {competition_dir}, weights {dataset_dir}")
        with tempfile.TemporaryDirectory(prefix="kernel-scratch-") as scratch:
            exp = kernel_experiment(settings["experiment"], dataset_dir, competition_dir, Path(scratch))
            files = predict_submission(
                exp, dataset_dir / KERNEL_MODEL_FILE, dataset_dir / KERNEL_THRESHOLDS_FILE, Path(working_root), log
            )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    log(
        f"wrote (validated against the competition's format): {', '.join(str(f) for f in files)} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0


def predict_submission(
    exp, checkpoint: Path, thresholds_file: Path, out_dir: Path, log: Callable[[str], None], quiet: bool = True
) -> list[Path]:
    """The submit stage's own call (`src.inference.make_submission`), writing into `out_dir`."""
    from src.errors import PipelineError
    from src.inference import make_submission
    from src.runtime import runtime_from_config

    rules = exp.decision_rules(thresholds_file, "python -m src.stage kernel build (after the thresholds stage)")
    if rules is None and any(head.thresholded for head in exp.fmt.heads()):
        raise PipelineError(
            f"{thresholds_file}: the weights dataset has no thresholds: rebuild the kernel "
            "after running the thresholds stage"
        )
    runtime = runtime_from_config(exp.config.train, inference=True)
    files, _, _ = make_submission(exp, checkpoint, rules, out_dir, runtime, quiet, log)
    return files


def kernel_experiment(name: str, dataset_dir: Path, competition_dir: Path, scratch_dir: Path):
    """An Experiment over `competition_dir` whose config comes from the weights dataset and whose scratch
    files (the decoded-image cache) stay under `scratch_dir`."""
    import yaml
    from pydantic import ValidationError

    from src.artifacts import KERNEL_CONFIG_FILE, Experiment
    from src.config import Config
    from src.errors import PipelineError

    config_path = dataset_dir / KERNEL_CONFIG_FILE
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["data"]["root"] = str(competition_dir)
    raw["output_dir"] = str(scratch_dir)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(
            f"{config_path}: not a config this code can read ({exc.errors()[0]['msg']}): "
            "rebuild the kernel and push it again"
        ) from None
    config.experiment = name
    return Experiment(config, config_path)


def find_competition_dir(input_root: Path, competition: str) -> Path:
    """The attached competition's folder: input/<slug>, input/competitions/<slug>, or a folder of that name."""
    from src.errors import PipelineError

    for candidate in (input_root / competition, input_root / "competitions" / competition):
        if candidate.is_dir():
            return candidate
    for candidate in folders(input_root):
        if candidate.name == competition:
            return candidate
    raise PipelineError(
        f"{input_root}: competition {competition} is not attached (found: {listing(input_root)}): "
        f"add it to the kernel's data (competition_sources in kernel-metadata.json)"
    )


def find_dataset_dir(input_root: Path, dataset_ref: str, files: dict[str, str], what: str = "weights dataset") -> Path:
    """The attached dataset's folder, checked file by file against the sha256 sums in `files`."""
    from src.errors import PipelineError

    try:
        return find_attached(input_root, dataset_ref, files, what)
    except AttachedError as exc:
        raise PipelineError(str(exc)) from None


def package_versions(modules: tuple[str, ...]) -> dict[str, str]:
    """Version of each importable module in `modules` ('' when it cannot be imported)."""
    found = {}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            found[name] = ""
            continue
        found[name] = str(getattr(module, "__version__", "") or getattr(module, "VERSION", ""))
    return found


def version_drift(built_with: dict[str, str], python: str) -> list[str]:
    """One line per package (and Python) whose version here differs from the one the kernel was built with."""
    lines = []
    here = platform.python_version()
    if python and python.split(".")[:2] != here.split(".")[:2]:
        lines.append(f"Python {here} here, built and checked with {python}")
    for name, version in sorted(package_versions(tuple(built_with)).items()):
        if version != built_with[name] and built_with[name]:
            lines.append(f"{name} {version or '(not installed)'} here, built and checked with {built_with[name]}")
    return lines


def check_own_code(code_dir: str | None) -> None:
    """Refuse to run with a `src` package other than the embedded one (e.g. one in an attached dataset)."""
    import src
    from src.errors import PipelineError

    if code_dir is not None and not Path(src.__file__).resolve().is_relative_to(Path(code_dir).resolve()):
        raise PipelineError(
            f"imported src from {Path(src.__file__).parent}, not from the embedded archive: "
            "remove that package from the kernel's inputs"
        )


def _print(line: str) -> None:
    print(line, flush=True)
