"""The training kernel: build it, check it locally, push it, pull its run folders back into oof/<exp>/.

`kernels/<exp>/train/` holds
  kernel-metadata.json   <user>/<exp>-train: private script, internet off, `enable_gpu` from the config, the
                         competition, the wheels dataset, the pretrained-weights dataset (model.pretrained)
                         and, with --resume, the training-state dataset attached
  <exp>-train.py         ONE script: `src` plus inputs/config.yaml (the config's training part) and the
                         local folds file embedded; it runs the `train` stage (src/kaggle/on_kaggle/train.py)
  state/                 --resume: the pulled run folders' files, flat (`fold-0--last.pt`), as a dataset
  check.log              the last local run of the script (network blocked, one epoch of the first run)
  push.json, pull.json   what was pushed (kernel version, dataset sums) and what was pulled (run file sums)

A pull downloads the kernel's output into a staging folder, reads kaggle-run.json, and refuses the runs
when they were trained with another training config or folds file, or when any file's sha256 differs
from the manifest; only then are the run folders moved into oof/<exp>/, their config.json written as a
local `train` writes it. A local run folder that did not come from Kaggle is never replaced.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from src import confine
from src.artifacts import (
    DATASET_METADATA,
    KAGGLE_TEST_PROBS,
    KERNEL_METADATA,
    KERNEL_WHEELS_DIR,
    LAST_CHECKPOINT,
    RUN_CONFIG,
    TRAINING_MANIFEST,
    WEIGHTS_ROOT,
    Experiment,
    PulledRuns,
    PushRecord,
    TrainingManifest,
    fold_run_name,
    portable_config,
)
from src.atomic import write_text
from src.config import config_to_dict
from src.errors import PipelineError
from src.kaggle.local import cli
from src.kaggle.local.image_cache_dataset import find_image_cache_dataset, image_cache_folder, push_image_cache_dataset
from src.kaggle.local.inference_kernel import stage_wheels, staging_dir, write_dataset_metadata, write_json
from src.kaggle.local.kernel_script import code_archive, render_script, script_settings
from src.kaggle.local.names import KaggleNames, kaggle_names, machine_metadata
from src.kaggle.local.offline_sandbox import run_offline
from src.kaggle.local.push import DATASET_WAIT_S, upload_dataset
from src.kaggle.local.secret_scan import seal
from src.kaggle.on_kaggle.install_wheels import changed_files, file_sha256, tree_sha256
from src.kaggle.on_kaggle.train import CHECK_ENV, CONFIG_NAME, INPUTS_DIR, check_runs, train_under_torchrun

Log = Callable[[str], None]
STAGE = "src.steps.train:run"  # what the kernel runs: the local train stage's own function
# The local check trains this many images (data.train_subset), not two more full-size image caches.
CHECK_IMAGES = 256
OOF_STAGE = "src.steps.oof:run"  # and, once every fold is trained, the oof stage's (on Kaggle's GPU)
_TIMING = ("seconds", "images_per_s", "train_seconds", "peak_memory_mb")  # may differ between two identical runs
_FLAT = "--"  # state/ is flat: fold-0/last.pt travels as fold-0--last.pt


@dataclass(frozen=True)
class TrainingBuild:
    """A built training kernel; `files` maps each built file (relative to kernels/<exp>/) to its sha256."""

    kernel_dir: Path
    kernel_ref: str
    code_file: str
    settings: dict
    files: dict[str, str]

    @property
    def script_path(self) -> Path:
        return self.kernel_dir / self.code_file

    def dataset_files(self, folder: str) -> dict[str, str]:
        prefix = folder + "/"
        return {
            rel[len(prefix) :]: digest
            for rel, digest in self.files.items()
            if rel.startswith(prefix) and not rel.endswith("/" + DATASET_METADATA)
        }


def training_slugs(exp: Experiment) -> tuple[str, str]:
    """(kernel slug, training-state dataset slug), from the experiment's name."""
    base = re.sub(r"[^a-z0-9]+", "-", exp.name.lower()).strip("-") or "model"
    return f"{base[:44].rstrip('-')}-train", f"{base[:38].rstrip('-')}-train-state"


# ---- build --------------------------------------------------------------------------------------


def build_training_kernel(exp: Experiment, runs: dict, log: Log = print) -> TrainingBuild:
    """Write kernels/<exp>/train/ (and refresh kernels/<exp>/wheels/) for the runs `runs` names
    ({fold, full, resume, stop_after_epochs}: the train stage's own options)."""
    names = kaggle_names(exp)
    slug, state_slug = training_slugs(exp)
    if exp.config.model.weights is not None:
        raise PipelineError(
            f"{exp.config_path}: model.weights names a local file, which a training kernel cannot "
            "read; use model.pretrained (the weights stage pushes it as a dataset) or null"
        )
    folds = None if runs.get("full") else exp.require(exp.folds_path, "folds")
    archive = code_archive(_inputs(exp, folds))
    staging = staging_dir(exp)
    try:
        settings = {
            "kind": "training",
            "stage": STAGE,
            "oof_stage": OOF_STAGE,
            "submit_checkpoint": exp.config.submit.checkpoint,  # the run whose test predictions the kernel makes
            "check_images": CHECK_IMAGES,
            "experiment": exp.name,
            "competition": exp.config.competition,
            "kernel_ref": names.ref(slug),
            "runs": runs,
            "processes": exp.config.kaggle.train_processes,
            "folds_file": folds.name if folds else None,
            "wheels": stage_wheels(exp, names, staging / KERNEL_WHEELS_DIR, log),
            "pretrained": _pretrained(exp, names),
            "image_cache": _image_cache(exp, log),
            **script_settings(archive),
            "resume": _stage_state(exp, runs, names.ref(state_slug), staging / _relative(exp, exp.train_state_dir)),
        }
        train_dir = staging / _relative(exp, exp.train_kernel_dir)
        train_dir.mkdir(parents=True, exist_ok=True)
        (train_dir / f"{slug}.py").write_text(render_script(settings, archive), encoding="utf-8")
        parts = (settings["wheels"], settings["pretrained"], settings["resume"], settings["image_cache"])
        sources = [part["dataset_ref"] for part in parts if part]
        write_json(train_dir / KERNEL_METADATA, _metadata(exp, names.ref(slug), f"{slug}.py", sources))
        files = seal(staging)
        _move_into_place(exp, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(
        f"training kernel {names.ref(slug)}: {exp.train_kernel_dir / f'{slug}.py'} (src, config and folds file "
        f"embedded) for {runs}, with {', '.join(sources) or 'no dataset'}, internet off, "
        f"GPU {'on' if exp.config.kaggle.enable_gpu else 'off'}"
    )
    return TrainingBuild(
        exp.kernel_dir, names.ref(slug), _relative(exp, exp.train_kernel_dir) + f"/{slug}.py", settings, files
    )


def _relative(exp: Experiment, path: Path) -> str:
    return path.relative_to(exp.kernel_dir).as_posix()


def _inputs(exp: Experiment, folds: Path | None) -> dict[str, bytes]:
    """What the script carries beside the code: the config's training part and the folds file."""
    config = {
        **portable_config(config_to_dict(exp.config)),
        "data": {**config_to_dict(exp.config)["data"], "root": "/kaggle/input", "solution": [], "prebuilt_cache": None},
    }
    files = {f"{INPUTS_DIR}/{CONFIG_NAME}": yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()}
    if folds is not None:
        files[f"{INPUTS_DIR}/{folds.name}"] = folds.read_bytes()
    return files


def _pretrained(exp: Experiment, names: KaggleNames) -> dict:
    """The pretrained-weights dataset the `weights` stage pushed for model.pretrained ({} without one)."""
    tag = exp.config.model.pretrained
    if tag is None:
        return {}
    from src.weights import MANIFEST, PRETRAINED_CFG, kaggle_slug, read_weights_folder, weights_command

    folder = WEIGHTS_ROOT / tag
    if not (folder / MANIFEST).is_file():
        raise PipelineError(
            f"{folder}: the pretrained weights {tag} are not here; fetch and push them once with "
            f"`{weights_command(tag, exp.config_path)} --push`"
        )
    weights = read_weights_folder(folder)
    files = {name: file_sha256(folder / name) for name in (MANIFEST, PRETRAINED_CFG, weights.file_name)}
    return {"dataset_ref": names.ref(kaggle_slug(tag)), "tag": tag, "files": files, "local": str(folder)}


def _image_cache(exp: Experiment, log: Log) -> dict:
    """The image-cache dataset `kernel cache` made for this config's data settings ({} without one: the kernel
    decodes the competition's images into its own cache on Kaggle)."""
    found = find_image_cache_dataset(exp)
    if found is None:
        log(
            f"no image-cache dataset in {image_cache_folder(exp)}: the kernel decodes the training images on Kaggle "
            f"(ship them once with: {exp.command('kernel cache')})"
        )
        return {}
    return found.settings()


def _stage_state(exp: Experiment, runs: dict, ref: str, dest: Path) -> dict:
    """--resume: every file of the targeted local run folders, flat in `dest` ({} without --resume)."""
    if not runs.get("resume"):
        return {}
    targets = (
        [fold_run_name(None)]
        if runs.get("full")
        else (
            [p.name for _, p in exp.fold_run_dirs()]
            if runs.get("fold") == "all"
            else [fold_run_name(int(runs["fold"]))]
        )
    )
    paths = {}
    for name in targets:
        run_dir = exp.oof_dir / name
        if not (run_dir / LAST_CHECKPOINT).is_file():
            raise PipelineError(
                f"{run_dir / 'last.pt'} is missing: pull the kernel's runs first "
                f"({exp.command('kernel pull')}), or train without --resume"
            )
        for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
            flat = f"{name}{_FLAT}{path.relative_to(run_dir).as_posix().replace('/', _FLAT)}"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / flat)
            paths[flat] = f"{name}/{path.relative_to(run_dir).as_posix()}"
    write_dataset_metadata(dest, ref, f"{exp.name[:36]} training state", exp.config.kaggle.dataset_license)
    return {
        "dataset_ref": ref,
        "runs": targets,
        "paths": paths,
        "files": {flat: file_sha256(dest / flat) for flat in paths},
    }


def _metadata(exp: Experiment, ref: str, code_file: str, datasets: list[str]) -> dict:
    return {
        "id": ref,
        "title": ref.split("/")[1].replace("-", " "),
        "code_file": code_file,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        **machine_metadata(exp.config.kaggle),
        "enable_internet": False,
        "dataset_sources": datasets,
        "competition_sources": [exp.config.competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def _move_into_place(exp: Experiment, staging: Path) -> None:
    """The built wheels/ and train/ (its script, metadata, state/) replace the old ones; records stay."""
    for folder in (exp.wheels_dir, exp.train_state_dir):
        if folder.exists():
            shutil.rmtree(folder)
    exp.train_kernel_dir.mkdir(parents=True, exist_ok=True)
    for old in exp.train_kernel_dir.glob("*.py"):
        old.unlink()
    for path in sorted(staging.iterdir()):
        if path.name != exp.train_kernel_dir.name:
            os.replace(path, exp.kernel_dir / path.name)
    for path in sorted((staging / exp.train_kernel_dir.name).iterdir()):
        os.replace(path, exp.train_kernel_dir / path.name)


_PROJECT_ROOT = Path(__file__).resolve().parents[3]  # where `src` is, for the local check's torchrun

# ---- the local check ----------------------------------------------------------------------------


def check_training(exp: Experiment, build: TrainingBuild, run_train: Callable, log: Log = print) -> None:
    """Run the built script offline (network blocked) for one epoch of its first run, run the local `train`
    stage the same way into a scratch folder, and refuse unless the run folders match (weights bit-identical)."""
    settings = build.settings
    inputs = {exp.config.competition: Path(exp.config.data.root)}
    for part, folder in ((settings["wheels"], exp.wheels_dir), (settings["resume"], exp.train_state_dir)):
        if part:
            inputs[part["dataset_ref"].split("/")[1]] = folder
    if settings["pretrained"]:
        inputs[settings["pretrained"]["dataset_ref"].split("/")[1]] = Path(settings["pretrained"]["local"])
    if settings.get("image_cache"):
        inputs[settings["image_cache"]["dataset_ref"].split("/")[1]] = image_cache_folder(exp)
    log(
        f"training check: {build.script_path.name} offline (network blocked), one epoch of the first run, "
        "against a local `train` of the same"
    )
    run = run_offline(build.script_path, inputs, env={CHECK_ENV: "1"})
    write_text(exp.train_check_log, run.output)
    problems = [] if run.network_blocked else ["the network guard did not load, so the check proves nothing"]
    problems += (
        [f"the kernel tried to reach the network ({', '.join(run.network_attempts[:3])})"]
        if run.network_attempts
        else []
    )
    if run.returncode != 0:
        tail = " | ".join(line.strip() for line in run.output.strip().splitlines()[-3:])
        problems.append(f"the kernel exited with status {run.returncode}: {tail[-400:]}")
    else:
        with tempfile.TemporaryDirectory(prefix=f".{exp.name}.check-", dir=exp.kernel_dir) as scratch:
            reference = _reference_runs(exp, settings, Path(scratch), run_train)
            problems += compare_runs(_kernel_runs(run.files, exp.name), reference)
    if problems:
        raise PipelineError(
            f"training check failed (nothing pushed): {'; '.join(problems)}; the kernel's log is {exp.train_check_log}"
        )
    log(
        f"training check: passed in {run.seconds:.0f} s: the kernel's run folder matches a local train's "
        "(weights bit-identical)"
    )


def _reference_runs(exp: Experiment, settings: dict, scratch: Path, run_train: Callable) -> dict[str, dict[str, bytes]]:
    """The local `train` stage's run folders for what the check runs, written under `scratch`."""
    config = exp.config.model_copy(deep=True)
    config.output_dir = scratch
    config.data.train_subset = settings.get("check_images")  # as the kernel's check trains
    shipped = image_cache_folder(exp) if settings.get("image_cache") else None
    config.data.prebuilt_cache = shipped  # the very pixels the kernel reads
    local = Experiment(config, exp.config_path)
    for relative in (settings["resume"] or {}).get("paths", {}).values():
        (local.oof_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exp.oof_dir / relative, local.oof_dir / relative)
    processes = settings.get("processes") or 1
    if processes > 1:  # the kernel's DDP ranks against as many here: the same shards, the same weights
        overrides = (
            *exp.config.overrides,
            f"output_dir={scratch}",
            f"data.train_subset={settings.get('check_images')}",
            f"data.prebuilt_cache={shipped if shipped is not None else 'null'}",
        )
        train_under_torchrun(exp.config_path, check_runs(settings["runs"]), processes, [str(_PROJECT_ROOT)], overrides)
    else:
        run_train(local, **check_runs(settings["runs"]))
    return {
        run.name: {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
        for run in sorted(local.oof_dir.iterdir())
        if run.is_dir()
    }


def _kernel_runs(files: dict[str, bytes], name: str) -> dict[str, dict[str, bytes]]:
    """The run folders among a kernel's output files (oof/<exp>/<run>/<file>)."""
    runs: dict[str, dict[str, bytes]] = {}
    prefix = f"oof/{name}/"
    for path, data in files.items():
        if path.startswith(prefix) and "/" in path[len(prefix) :]:
            run, _, relative = path[len(prefix) :].partition("/")
            runs.setdefault(run, {})[relative] = data
    return runs


def compare_runs(kernel_runs: dict[str, dict[str, bytes]], local_runs: dict[str, dict[str, bytes]]) -> list[str]:
    """What differs between two sets of run folders (empty = the same runs): files by name; checkpoints by
    content (every tensor bit for bit); epochs.csv and summary.json without their timings; config.json by
    its training part; the hash sidecars follow their checkpoints and are skipped."""
    problems = []
    if sorted(kernel_runs) != sorted(local_runs):
        return [f"the kernel wrote runs {sorted(kernel_runs)}, the local train {sorted(local_runs)}"]
    for run, files in sorted(local_runs.items()):
        theirs = kernel_runs[run]
        if sorted(theirs) != sorted(files):
            problems.append(f"{run}: the kernel wrote {sorted(theirs)}, the local train {sorted(files)}")
            continue
        problems += [
            f"{run}/{name} differs"
            for name in sorted(files)
            if not name.endswith(".sha256") and not _same_file(name, theirs[name], files[name])
        ]
    return problems


def _same_file(name: str, a: bytes, b: bytes) -> bool:
    if name.endswith(".pt"):
        import torch

        return _same(*(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True) for data in (a, b)))
    if name.endswith(".csv"):
        import pandas as pd

        frames = [pd.read_csv(io.BytesIO(data)).drop(columns=list(_TIMING), errors="ignore") for data in (a, b)]
        return frames[0].equals(frames[1])
    if name.endswith(".json"):
        loaded = [json.loads(data) for data in (a, b)]
        if name == RUN_CONFIG:
            return portable_config(loaded[0]) == portable_config(loaded[1])
        return _same(*loaded)
    return a == b


def _same(a, b) -> bool:
    """Equal, tensors bit for bit, timing fields ignored."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) - set(_TIMING)
        return keys == set(b) - set(_TIMING) and all(_same(a[k], b[k]) for k in keys)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---- push, status, pull --------------------------------------------------------------------------


def push_training(
    exp: Experiment, build: TrainingBuild, checked: bool, log: Log = print, wait_s: float = DATASET_WAIT_S
) -> tuple[str, int | None]:
    """Upload the wheels, training-state and image-cache datasets (each skipped when unchanged since its last push), check
    that the pretrained-weights dataset is on Kaggle, push the training kernel; return (URL, version)."""
    changed = changed_files(build.kernel_dir, build.files)
    if changed:
        raise PipelineError(
            f"{build.kernel_dir / changed[0]} changed after it was built: not pushing; build and "
            f"push again with: {exp.command('kernel train', '--push')}"
        )
    if not checked:
        log("warning: pushing a training kernel that was not run locally (no check)")
    settings, record_path = build.settings, exp.train_push_path
    last = PushRecord.read(record_path)
    for key, part, folder in (
        ("wheels", settings["wheels"], exp.wheels_dir),
        ("state", settings["resume"], exp.train_state_dir),
    ):
        if part:
            files = build.dataset_files(_relative(exp, folder))
            last = upload_dataset(
                folder,
                part["dataset_ref"],
                files,
                key,
                last,
                record_path,
                f"{exp.name}: {len(files)} {key} files",
                wait_s,
                log,
            )
    if settings.get("image_cache"):
        shipped = find_image_cache_dataset(exp)
        if shipped is None or shipped.files != settings["image_cache"]["files"]:
            raise PipelineError(
                f"{image_cache_folder(exp)} changed after the kernel was built: not pushing; build and push again "
                f"with: {exp.command('kernel train', '--push')}"
            )
        push_image_cache_dataset(exp, shipped, log, wait_s)
    if settings["pretrained"]:
        _require_dataset(settings["pretrained"]["dataset_ref"], settings["pretrained"]["tag"], exp)
    url, version = cli.push_kernel_with_version(exp.train_kernel_dir, exp.config.kaggle.session_timeout_s)
    last.model_copy(
        update={"kernel_ref": build.kernel_ref, "kernel_url": url, "version": version, "runs": settings["runs"]}
    ).write(record_path)
    log(
        f"training kernel pushed: {url} (version {version}); follow it with: {exp.command('kernel status')}, "
        f"then fetch its runs with: {exp.command('kernel pull')}"
    )
    return url, version


def _require_dataset(ref: str, tag: str, exp: Experiment) -> None:
    from src.weights import weights_command

    try:
        state = cli.dataset_status(ref)
    except PipelineError:
        raise PipelineError(
            f"dataset {ref} (the pretrained weights {tag}) is not on Kaggle: push it first with "
            f"`{weights_command(tag, exp.config_path)} --push`"
        ) from None
    if state != "ready":
        raise PipelineError(f"dataset {ref} is {state}: push the training kernel once Kaggle has processed it")


def pushed_training_ref(exp: Experiment) -> str | None:
    """The training kernel last pushed for this experiment (None when none was)."""
    return PushRecord.read(exp.train_push_path).kernel_ref


def pull_training(exp: Experiment, log: Log = print) -> list[Path]:
    """Download the training kernel's output and move its verified run folders into oof/<exp>/; return them."""
    ref = pushed_training_ref(exp)
    if ref is None:
        raise PipelineError(
            f"{exp.train_push_path}: no training kernel pushed: push one first with: "
            f"{exp.command('kernel train', '--fold all --push')}"
        )
    status = cli.kernel_status(ref)
    if status.state != "complete":
        raise PipelineError(
            f"kernel {ref} is {status.state}, not complete: pull once its run has finished (check with: "
            f"{exp.command('kernel status')})"
            + (f"; Kaggle says: {status.failure_message}" if status.failure_message else "")
        )
    pulled = PulledRuns.read(exp.train_pull_path)  # read once, before the download: a damaged one stops it
    exp.train_kernel_dir.mkdir(parents=True, exist_ok=True)
    with confine.staging(exp.train_kernel_dir, ".pull-") as staging:  # kept, and named, when a check fails
        cli.kernel_output(ref, staging)
        manifest = TrainingManifest.read(
            staging / TRAINING_MANIFEST, f"kernel {ref} did not finish its runs: see its log in {staging}"
        )
        verify_pulled(exp, manifest, staging, pulled)
        moved = _move_runs(exp, manifest, staging, pulled)
        predictions = _move_predictions(exp, manifest, staging)
    made = f"OOF predicted on Kaggle ({', '.join(p.name for p in predictions)}); " if predictions else ""
    made += f"training images read from {manifest.image_cache}; " if manifest.image_cache else ""
    log(
        f"pulled {ref}: {', '.join(str(p) for p in [*moved, *predictions])} (checksums verified; same config and "
        f"folds file); {made}continue here with: {exp.command('thresholds' if predictions else 'oof')}"
    )
    return moved


def verify_pulled(exp: Experiment, manifest: TrainingManifest, staging: Path, pulled: PulledRuns) -> None:
    """Refuse runs trained on another training config or folds file, files that are not what the kernel wrote, or
    a local run folder that is not what the last pull (`pulled`) brought (one line naming the first difference)."""
    where = staging / TRAINING_MANIFEST
    here = portable_config(config_to_dict(exp.config))
    if manifest.experiment != exp.name or manifest.config != here:
        key = _first_difference(manifest.config, here) if manifest.experiment == exp.name else "experiment"
        raise PipelineError(
            f"{where}: the kernel trained with another config ({key} differs from {exp.config_path}): "
            f"not pulled; train again on Kaggle with: {exp.command('kernel train', '--push')}"
        )
    if (
        manifest.folds_sha256 is None
        or not exp.folds_path.is_file()
        or file_sha256(exp.folds_path) != manifest.folds_sha256
    ):
        raise PipelineError(  # a manifest cannot switch the check off with folds_sha256: null
            f"{where}: the kernel trained on another folds file than {exp.folds_path} (or names none): not pulled; "
            "restore that folds file or train again on Kaggle"
        )
    _verify_predictions(exp, manifest, staging)
    for run, files in sorted(manifest.runs.items()):
        _verify_run_files(staging / "oof" / exp.name, run, files, where)
        _refuse_local_only(exp, run, pulled)


def _verify_run_files(runs_dir: Path, run: str, files: dict[str, str], where: Path) -> None:
    """A pulled run folder holds exactly the plain files the manifest lists, each with its sha256: no name outside
    the folder (absolute, ..), no link, no file it does not list."""
    unsafe = next((name for name in [run, *files] if not confine.is_safe_name(name)), None)
    if unsafe is not None:
        raise PipelineError(f"{where}: '{unsafe}' is not a plain relative name inside a run folder: not pulled")
    run_dir = runs_dir / run
    present = confine.expected_files(run_dir, files, TRAINING_MANIFEST) if run_dir.is_dir() else []
    for relative, digest in sorted(files.items()):
        path = run_dir / relative
        if relative not in present or file_sha256(path) != digest:
            raise PipelineError(
                f"{path}: missing, or not the file the kernel wrote (sha256 differs from "
                f"{TRAINING_MANIFEST}): not pulled; pull again"
            )


def _refuse_local_only(exp: Experiment, run: str, pulled: PulledRuns) -> None:
    """A local run folder is replaced only when it is what the last pull brought (or --resume shipped)."""
    local = exp.oof_dir / run
    if not local.is_dir():
        return
    if pulled.root.get(run) != tree_sha256(local):
        raise PipelineError(
            f"{local}: holds a run that did not come from this kernel (or changed since it was "
            "pulled): not replaced; move it away, then pull again"
        )


def _move_runs(exp: Experiment, manifest: TrainingManifest, staging: Path, pulled: PulledRuns) -> list[Path]:
    """Move the verified run folders into oof/<exp>/ and write their config.json as a local train does."""
    known = dict(pulled.root)
    moved = []
    for run in sorted(manifest.runs):
        target = exp.oof_dir / run
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "oof" / exp.name / run, target)
        write_text(target / RUN_CONFIG, json.dumps(config_to_dict(exp.config), indent=2))
        known[run] = tree_sha256(target)
        moved.append(target)
    PulledRuns(known).write(exp.train_pull_path)
    return moved


PREDICTION_FILES = (
    "oof.npz",
    "oof_scores.json",
    KAGGLE_TEST_PROBS,
)  # what a training kernel may predict (its manifest's predictions)


def _verify_predictions(exp: Experiment, manifest: TrainingManifest, staging: Path) -> None:
    """The kernel's OOF files: only the known names, each a plain file with the manifest's sha256."""
    where = staging / TRAINING_MANIFEST
    unknown = sorted(set(manifest.predictions) - set(PREDICTION_FILES))
    if unknown:
        raise PipelineError(
            f"{where}: predictions name {unknown[0]!r}, not an OOF file ({', '.join(PREDICTION_FILES)}): not pulled"
        )
    for name, digest in sorted(manifest.predictions.items()):
        source = staging / "oof" / exp.name / name
        if not source.is_file() or source.is_symlink() or file_sha256(source) != digest:
            raise PipelineError(f"{source}: missing, or not the file whose sha256 {where} records: not pulled")


def _move_predictions(exp: Experiment, manifest: TrainingManifest, staging: Path) -> list[Path]:
    """The verified OOF files moved into oof/<exp>/, after the runs they come from (so they are the newer)."""
    for name in sorted(manifest.predictions):
        os.replace(staging / "oof" / exp.name / name, exp.oof_dir / name)
    return [exp.oof_dir / name for name in sorted(manifest.predictions)]


def _first_difference(theirs: dict, ours: dict, prefix: str = "") -> str:
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and a != b:
            return _first_difference(a, b, f"{prefix}{key}.")
        if a != b:
            return f"{prefix}{key} {a!r} there, {b!r} here"
    return prefix.rstrip(".") or "the config"
