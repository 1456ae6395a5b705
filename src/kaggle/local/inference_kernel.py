"""Build the offline inference kernel and its weights dataset (parity.py checks it here, push.py pushes it).

`kernels/<exp>/` holds
  kernel-metadata.json   id, title, code_file, sources, `enable_internet: false`, private
  <kernel-slug>.py       ONE script: the project's `src` package embedded as a gzipped tar (base64)
                         and the call that predicts the test images and writes the submission
  dataset/               the weights dataset, flat: model.pt (weights only), thresholds.json,
                         config.yaml (resolved; paths rewritten for Kaggle), dataset-metadata.json
  parity.json, .log      the last local check: the script run offline against a stand-in /kaggle
  push.json              what was last pushed (kernel version, dataset file sums)
  output/                what `kernel --output` downloaded

Why the code travels in the script and not in the dataset: the script is one text file that each
kernel version records and shows, so the code that ran on Kaggle is byte for byte the code checked
here; the dataset holds only what training made, so a code change never re-uploads the weights.
The script carries the sha256 of every dataset file and refuses any other version of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from src.artifacts import (
    DATASET_METADATA,
    KERNEL_CONFIG_FILE,
    KERNEL_DATASET_DIR,
    KERNEL_METADATA,
    KERNEL_MODEL_FILE,
    KERNEL_THRESHOLDS_FILE,
    KERNEL_WHEELS_DIR,
    Experiment,
)
from src.config import Config, config_to_dict
from src.errors import PipelineError
from src.kaggle.local.kernel_script import code_archive, render_script, script_settings
from src.kaggle.local.names import UNKNOWN_OWNER, KaggleNames, kaggle_names, machine_metadata
from src.kaggle.local.secret_scan import seal
from src.kaggle.on_kaggle.install_wheels import file_sha256
from src.weights import normalisation

Log = Callable[[str], None]

KAGGLE_INPUT = "/kaggle/input"
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "ema")


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel folder; `files` maps every built file (relative to kernel_dir) to its sha256."""

    kernel_dir: Path
    names: KaggleNames
    files: dict[str, str]

    @property
    def script_path(self) -> Path:
        return self.kernel_dir / self.names.code_file

    @property
    def dataset_dir(self) -> Path:
        return self.kernel_dir / KERNEL_DATASET_DIR

    @property
    def wheels_dir(self) -> Path:
        return self.kernel_dir / KERNEL_WHEELS_DIR

    def dataset_files(self, folder: str = KERNEL_DATASET_DIR) -> dict[str, str]:
        """sha256 of each file of a dataset folder the kernel reads (the metadata file aside)."""
        prefix = folder + "/"
        return {
            rel[len(prefix) :]: digest
            for rel, digest in self.files.items()
            if rel.startswith(prefix) and rel != prefix + DATASET_METADATA
        }


def build_kernel(exp: Experiment, log: Log = print, pushing: bool = False) -> KernelBuild:
    """Write `kernels/<exp>/` (script, kernel metadata, flat weights dataset, flat wheels dataset) from the
    trained experiment (without a Kaggle username, unless `pushing`, owned by names.UNKNOWN_OWNER).

    Everything is built in a staging folder and scanned for credentials first: a file holding one is
    never moved into place. The same experiment gives the same bytes (the archive is reproducible).
    """
    config, fmt = exp.config, exp.fmt
    names = kaggle_names(exp, pushing)
    if names.username == UNKNOWN_OWNER:
        log(f"no Kaggle username: the kernel names its owner {UNKNOWN_OWNER}; set kaggle.username before `kernel push`")
    checkpoint = exp.submission_checkpoint()
    _check_weights_only(checkpoint)
    thresholds = exp.thresholds_path if exp.read_thresholds() is not None else None
    if thresholds is None and any(head.thresholded for head in fmt.heads()):
        exp.require(exp.thresholds_path, "thresholds")
    staging = staging_dir(exp)
    try:
        dataset = _stage_weights(exp, names, checkpoint, thresholds, staging / KERNEL_DATASET_DIR)
        archive = code_archive()
        settings = {
            "experiment": exp.name,
            "competition": config.competition,
            "kernel_ref": names.kernel_ref,
            "dataset_ref": names.dataset_ref,
            "dataset_files": {p.name: file_sha256(p) for p in sorted(dataset.iterdir()) if p.name != DATASET_METADATA},
            "submission_names": fmt.submission_names(),
            "wheels": stage_wheels(exp, names, staging / KERNEL_WHEELS_DIR, log),
            **script_settings(archive),
        }
        (staging / names.code_file).write_text(render_script(settings, archive), encoding="utf-8")
        sources = [names.dataset_ref] + ([names.wheels_ref] if settings["wheels"] else [])
        write_json(staging / KERNEL_METADATA, kernel_metadata(exp, names, sources))
        files = seal(staging)
        _move_into_place(staging, exp.kernel_dir, names.code_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    build = KernelBuild(exp.kernel_dir, names, files)
    size = (build.dataset_dir / KERNEL_MODEL_FILE).stat().st_size
    log(
        f"kernel {exp.name}: {build.script_path} ({build.script_path.stat().st_size // 1024} KiB, src embedded) and "
        f"weights dataset {build.dataset_dir} ({size / 2**20:.1f} MiB model) for {names.kernel_ref} "
        f"with {', '.join(sources)}, internet off, GPU {'on' if config.kaggle.enable_gpu else 'off'}"
    )
    return build


def staging_dir(exp: Experiment) -> Path:
    """A fresh hidden folder beside kernels/<exp>/ where a build is made before it is moved into place."""
    exp.kernel_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{exp.name}.build-", dir=exp.kernel_dir.parent))


def _stage_weights(
    exp: Experiment, names: KaggleNames, checkpoint: Path, thresholds: Path | None, dataset: Path
) -> Path:
    """The flat weights dataset: model.pt, thresholds.json, the Kaggle-side config, dataset-metadata.json."""
    dataset.mkdir()
    shutil.copyfile(checkpoint, dataset / KERNEL_MODEL_FILE)
    if thresholds is not None:
        shutil.copyfile(thresholds, dataset / KERNEL_THRESHOLDS_FILE)
    (dataset / KERNEL_CONFIG_FILE).write_text(
        yaml.safe_dump(kaggle_config(exp), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    write_dataset_metadata(dataset, names.dataset_ref, names.dataset_title, exp.config.kaggle.dataset_license)
    return dataset


def stage_wheels(exp: Experiment, names: KaggleNames, dest: Path, log: Log) -> dict:
    """Build the wheels dataset into `dest` (reusing unchanged wheels of the last build); return what the
    kernel needs to know of it ({} when `kaggle.wheels` is off)."""
    from src.kaggle.local import wheels_dataset

    settings = exp.config.kaggle
    if not settings.wheels:
        return {}
    requirements = Path(__file__).resolve().parents[3] / "requirements.txt"
    plan = wheels_dataset.plan_wheels(requirements, settings.python_version)
    shipped = wheels_dataset.build_wheels(plan, dest, exp.wheels_dir)
    write_dataset_metadata(dest, names.wheels_ref, f"{exp.name[:43]} wheels", settings.dataset_license)
    log(wheels_dataset.describe(plan))
    return {
        "dataset_ref": names.wheels_ref,
        "files": {w.name: {"version": w.version, "file": w.file, "sha256": w.sha256} for w in shipped},
    }


def write_dataset_metadata(folder: Path, ref: str, title: str, license_name: str) -> None:
    """dataset-metadata.json of a flat dataset folder (Kaggle wants a title of 6 characters or more)."""
    title = title if len(title) >= 6 else f"{title} files"
    write_json(folder / DATASET_METADATA, {"title": title, "id": ref, "licenses": [{"name": license_name}]})


def kernel_metadata(exp: Experiment, names: KaggleNames, datasets: list[str]) -> dict:
    """kernel-metadata.json: a private script, internet off, the competition and `datasets` attached."""
    return {
        "id": names.kernel_ref,
        "title": names.kernel_title,
        "code_file": names.code_file,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        **machine_metadata(exp.config.kaggle),
        "enable_internet": False,  # the CLI defaults it to true; kernels-only competitions require it off
        "dataset_sources": datasets,
        "competition_sources": [exp.config.competition],
        "kernel_sources": [],
        "model_sources": [],
    }


def kaggle_config(exp: Experiment) -> dict:
    """The resolved config as the kernel reads it: Kaggle paths, nothing local, nothing secret."""
    raw = config_to_dict(exp.config)
    raw["output_dir"] = "/kaggle/temp"  # replaced by a scratch folder when the kernel runs
    raw["data"]["root"] = f"{KAGGLE_INPUT}/{exp.config.competition}"
    raw["data"]["prebuilt_cache"] = None  # a folder of this machine; the kernel decodes the test images itself
    raw["data"]["solution"] = []  # held-apart answers exist only here
    raw["model"]["weights"] = None  # the checkpoint holds every weight
    raw["thresholds"]["storage"] = None  # a database URL may carry a password; the kernel never tunes
    # The mean/std resolved here, so the kernel never depends on Kaggle's timm registry or a weights folder.
    raw["augment"]["mean"], raw["augment"]["std"] = (list(values) for values in normalisation(exp.config))
    Config.model_validate(raw)
    return raw


def _check_weights_only(checkpoint: Path) -> None:
    from src.checkpoint_files import load_checkpoint

    payload = load_checkpoint(checkpoint)
    state = [key for key in payload if key in _TRAINING_STATE]
    if "model" not in payload or state:
        raise PipelineError(
            f"{checkpoint}: not an inference checkpoint (holds {', '.join(state) or 'no model'}): "
            "point submit.checkpoint at a finished run's best.pt"
        )


def _move_into_place(staging: Path, kernel_dir: Path, code_file: str) -> None:
    kernel_dir.mkdir(parents=True, exist_ok=True)
    for old in kernel_dir.glob("*.py"):
        if old.name != code_file:  # the script of a former kernel slug
            old.unlink()
    for folder in (KERNEL_DATASET_DIR, KERNEL_WHEELS_DIR):
        if (kernel_dir / folder).exists():
            shutil.rmtree(kernel_dir / folder)
        if (staging / folder).exists():  # no wheels folder when kaggle.wheels is off
            os.replace(staging / folder, kernel_dir / folder)
    for name in (code_file, KERNEL_METADATA):
        os.replace(staging / name, kernel_dir / name)


def write_json(path: Path, data: dict) -> None:
    """A built JSON file (metadata), indented, newline-terminated."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
