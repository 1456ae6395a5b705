"""What a training kernel runs on Kaggle: the `train` stage itself, on the attached copy of the data.

The script built by `kernel train` unpacks this package (with the experiment's training config and the
local folds file under inputs/), installs the shipped wheels, and calls `run_training` with the stage's
own run function (`src.steps.train.run`, handed in by the script: the core never imports a stage).
Kaggle's competition folder is read-only, so the data root is a scratch folder of links to each of its
entries plus the shipped folds file; run folders are written straight into the working folder
(`oof/<exp>/fold-K/`, so a run cut off by Kaggle's time limit keeps its finished epochs) and the
decoded-image cache stays in scratch. At the end `kaggle-run.json` records the config, the folds file's
sum and every run file's sum, which `kernel pull` checks before anything reaches oof/ here.

KERNEL_CHECK=1 (set only by the local check) trains one epoch of the first run, so that the check
compares the very script that is pushed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from src.kaggle.on_kaggle.install_wheels import file_sha256, tree_sha256
from src.kaggle.on_kaggle.predict import check_own_code, find_competition_dir, find_dataset_dir, version_drift

INPUTS_DIR = "inputs"  # in the code archive: the training config and the folds file
CONFIG_NAME = "config.yaml"
CHECK_ENV = "KERNEL_CHECK"


def run_training(
    settings: dict,
    input_root: str,
    working_root: str,
    code_dir: str,
    train_stage: Callable,
    oof_stage: Callable | None = None,
) -> int:
    """Train the runs `settings["runs"]` names into `working_root`, then, once every fold is trained, predict the
    OOF rows here on the GPU with `oof_stage` (the local oof stage's own function: on a CPU at real size it takes
    a day); 0, or 2 after printing one error line."""
    from src.errors import PipelineError

    start_dir = os.getcwd()
    try:
        check_own_code(code_dir)
        for line in version_drift(settings.get("versions", {}), settings.get("python", "")):
            print(f"warning: {line}", flush=True)
        with tempfile.TemporaryDirectory(prefix="kernel-train-") as scratch:
            exp = training_experiment(settings, Path(input_root), Path(working_root), Path(code_dir), Path(scratch))
            restore_state(settings, Path(input_root), exp)
            runs = check_runs(settings["runs"]) if os.environ.get(CHECK_ENV) == "1" else settings["runs"]
            processes = process_count(settings.get("processes"))
            print(
                f"training kernel {exp.name}: {runs} on {exp.config.data.root} -> {exp.oof_dir}"
                + (f" ({processes} processes, DDP)" if processes > 1 else ""),
                flush=True,
            )
            if processes > 1:
                code = [str(Path(code_dir) / "code"), str(Path(code_dir) / "vendor")]
                train_under_torchrun(exp.config_path, runs, processes, code)
            else:
                train_stage(exp, **runs, quiet=True, log=lambda line: print(line, flush=True))
            if os.environ.get(CHECK_ENV) != "1":
                exp.config.submit.checkpoint = settings.get("submit_checkpoint") or exp.config.submit.checkpoint
                predict_here(exp, oof_stage)
            write_manifest(exp, settings, Path(working_root))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        os.chdir(start_dir)
    return 0


def process_count(configured: int | None) -> int:
    """How many training processes: `kaggle.train_processes` when set, else one per visible GPU (Kaggle's default
    machine has two T4s; one process would leave one idle), else one."""
    if configured:
        return int(configured)
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def train_under_torchrun(
    config_path: Path, runs: dict, processes: int, python_path: list[str], overrides: tuple[str, ...] = ()
) -> None:
    """The `train` stage of `config_path` (with `overrides`) under torchrun: `processes` DDP ranks (nccl on GPUs,
    gloo on the CPU), the global batch still train.batch_size; rank 0 prints. `python_path` finds `src`. A failed
    rank is one error line (its own line printed above it)."""
    import subprocess

    from src.errors import PipelineError

    argv = ["--fold", str(runs["fold"])] if runs.get("fold") is not None else ["--full"]
    argv += ["--resume"] if runs.get("resume") else []
    if runs.get("stop_after_epochs"):
        argv += ["--stop-after-epochs", str(runs["stop_after_epochs"])]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "src.stage", "train", "--config", str(config_path), *argv, *overrides, "--quiet"]
    paths = [*python_path, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, said once instead of its warning per rank
    finished = subprocess.run(command, env=env, check=False)
    if finished.returncode != 0:
        raise PipelineError(f"the {processes} training processes stopped with exit status {finished.returncode}")


def check_runs(runs: dict) -> dict:
    """The local check's share of `runs`: one epoch of the first run (fold 0 for --fold all)."""
    return {**runs, "fold": "0" if runs.get("fold") == "all" else runs.get("fold"), "stop_after_epochs": 1}


def training_experiment(settings: dict, input_root: Path, working_root: Path, code_dir: Path, scratch: Path):
    """The Experiment the train stage runs on Kaggle: the shipped config over a data root of links to the
    attached competition plus the shipped folds file, run folders in `working_root`/oof/<exp>/."""
    import yaml

    from src.artifacts import Experiment
    from src.config import load_config

    competition_dir = find_competition_dir(input_root, settings["competition"])
    data_root = scratch / "data" / settings["competition"]
    data_root.mkdir(parents=True)
    for entry in sorted(competition_dir.iterdir()):
        if entry.name != settings.get("folds_file"):  # the shipped folds file wins over any copy there
            (data_root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    inputs = code_dir / INPUTS_DIR
    if settings.get("folds_file"):
        shutil.copyfile(inputs / settings["folds_file"], data_root / settings["folds_file"])
    raw = yaml.safe_load((inputs / CONFIG_NAME).read_text(encoding="utf-8"))
    raw["data"]["root"], raw["output_dir"] = str(data_root), str(scratch / "out")
    if os.environ.get(CHECK_ENV) == "1" and settings.get("check_images"):  # the local check: a small share only
        raw["data"]["train_subset"] = settings["check_images"]
    raw["data"]["prebuilt_cache"] = _attached_image_cache(settings, input_root)
    config_path = scratch / "config" / f"{settings['experiment']}.yaml"  # the experiment is named after the file
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    exp = Experiment(load_config(config_path), config_path)
    written = working_root / exp.oof_dir.relative_to(exp.output_dir)
    written.mkdir(parents=True, exist_ok=True)
    exp.oof_dir.parent.mkdir(parents=True)
    exp.oof_dir.symlink_to(written, target_is_directory=True)
    _link_pretrained(settings, input_root, scratch)
    return exp


def _attached_image_cache(settings: dict, input_root: Path) -> str | None:
    """The attached image-cache dataset's folder, every file's sum checked (None without one: the run decodes the
    competition's images into its own cache)."""
    shipped = settings.get("image_cache")
    if not shipped:
        return None
    print(f"checking the image-cache dataset {shipped['dataset_ref']} ({shipped['count']:,} images)", flush=True)
    return str(find_dataset_dir(input_root, shipped["dataset_ref"], shipped["files"], "image-cache dataset"))


def _link_pretrained(settings: dict, input_root: Path, scratch: Path) -> None:
    """The pretrained-weights dataset where train looks for it (input/weights/<tag>/, from the current folder)."""
    from src.artifacts import WEIGHTS_ROOT

    pretrained = settings.get("pretrained")
    if not pretrained:
        return
    folder = find_dataset_dir(input_root, pretrained["dataset_ref"], pretrained["files"], "pretrained-weights dataset")
    link = scratch / WEIGHTS_ROOT / pretrained["tag"]
    link.parent.mkdir(parents=True)
    link.symlink_to(folder, target_is_directory=True)
    os.chdir(scratch)


def restore_state(settings: dict, input_root: Path, exp) -> None:
    """--resume: put the shipped run files (the state dataset) back into their run folders."""
    state = settings.get("resume")
    if not state:
        return
    folder = find_dataset_dir(input_root, state["dataset_ref"], state["files"], "training-state dataset")
    for flat, relative in sorted(state["paths"].items()):
        target = exp.oof_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / flat, target)
    print(f"resuming from {len(state['paths'])} shipped file(s) of {', '.join(sorted(state['runs']))}", flush=True)


def predict_here(exp, oof_stage: Callable | None) -> None:
    """On the GPU, what would take a day on a CPU at real size: the OOF rows once every fold is finished, and the
    test images once the run submit uses (submit.checkpoint) is finished."""
    from src.artifacts import read_run_summary, write_predicted_test
    from src.errors import PipelineError
    from src.inference import predict_test, prediction_stamp
    from src.runtime import runtime_from_config

    log = lambda line: print(line, flush=True)  # noqa: E731
    if oof_stage is not None and every_fold_finished(exp):
        oof_stage(exp, quiet=True, log=log)
    try:
        checkpoint = exp.submission_checkpoint()
    except PipelineError:  # that run is not trained here (yet)
        return
    if not read_run_summary(checkpoint.parent).get("finished"):
        return
    runtime = runtime_from_config(exp.config.train, inference=True)
    ids, probs = predict_test(exp, checkpoint, runtime, True, log)
    write_predicted_test(exp.kaggle_test_probs_path, ids, probs, prediction_stamp(exp, checkpoint))
    log(
        f"predicted {len(ids)} test images with {checkpoint.parent.name}/{checkpoint.name} -> {exp.kaggle_test_probs_path}"
    )


def every_fold_finished(exp) -> bool:
    """Whether a finished fold-K run is there for every fold the folds file holds out (then the OOF can be made)."""
    import pandas as pd

    from src.artifacts import read_run_summary

    if not exp.folds_path.is_file():
        return False
    folds = sorted(int(k) for k in pd.read_csv(exp.folds_path, usecols=["fold"])["fold"].unique() if k >= 0)
    return bool(folds) and all(read_run_summary(exp.run_dir(k)).get("finished") for k in folds)


def write_manifest(exp, settings: dict, working_root: Path) -> Path:
    """kaggle-run.json in the working folder: config, folds file sum, every run file's sum."""
    from src.artifacts import TRAINING_MANIFEST, TrainingManifest, portable_config
    from src.config import config_to_dict

    runs = {}
    for run_dir in sorted(p for p in exp.oof_dir.iterdir() if p.is_dir()):
        runs[run_dir.name] = tree_sha256(run_dir)
    folds = exp.folds_path if settings.get("folds_file") else None
    manifest = TrainingManifest(
        experiment=exp.name,
        config=portable_config(config_to_dict(exp.config)),
        folds_sha256=file_sha256(folds) if folds is not None else None,
        runs=runs,
        predictions={
            path.name: file_sha256(path)
            for path in (exp.oof_path, exp.oof_scores_path, exp.kaggle_test_probs_path)
            if path.is_file()
        },
        image_cache=(
            f"{settings['image_cache']['dataset_ref']} ({settings['image_cache']['codec']})"
            if settings.get("image_cache")
            else None
        ),
    )
    path = working_root / TRAINING_MANIFEST
    manifest.write(path)
    print(f"wrote {path}: {', '.join(f'{name} ({len(files)} files)' for name, files in runs.items())}", flush=True)
    return path
