"""Pretrained weights for the demos, made on this machine: a backbone pretrained on a related digit task and
published as the hub files of a real timm tag, so fine-tuning can be shown offline on a fresh machine.

`test_resnet` learns to name single handwritten digits (scikit-learn's real 8x8 scans from the demo's train pool
only, upscaled at a random size and place over dim photo crops: another domain than the demos' images; the demos'
test pool stays unseen). Its backbone, with the classifier as `fc` as timm's files carry one, becomes the
`model.safetensors` of the hub repository `timm/test_resnet.r160_in1k`. The transfer proof
(scripts/transfer_demo.py) serves those files from the tests' stand-in hub and fetches them with the `weights` stage;
the `demo` stage installs the same files into `input/weights/<tag>/` (weight file, timm's pretrained config,
manifest with the SHA-256) directly, in the layout the `weights` stage writes, so training reads and checks them
exactly as downloaded weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from src.atomic import write_text

DEMO_TAG = "test_resnet.r160_in1k"  # a real timm tag whose pretrained config names hf_hub_id timm/<tag>
NORMALISE = [0.5, 0.5, 0.5]  # the tag's own mean and std
_CANVAS = 64  # the side pretraining digits are drawn on
Log = Callable[[str], None]


@dataclass(frozen=True)
class PretrainSettings:
    """Sizes of the pretraining run; the defaults take about ten seconds on 2 CPU cores."""

    copies: int = 2  # renderings of each train-pool digit
    epochs: int = 6
    image_size: int = 32
    seed: int = 0
    threads: int | None = 1


def render_digits(root: Path, settings: PretrainSettings) -> Path:
    """A folder-format competition `root/train/<digit>/<n>.png`: each train-pool digit drawn `copies` times at a
    random size, place and colour over a dim photo crop (the demo's own drawing, src.demo_drawing)."""
    from src.demo_drawing import bright_color, digit_pools, photo_crop, place_digit, to_image

    pools = digit_pools(settings.seed)  # the demo's split: the test pool stays unseen
    rng = np.random.default_rng([settings.seed, 7])
    for digit, pool in enumerate(pools.train):
        folder = root / "train" / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(len(pool) * settings.copies):
            canvas = photo_crop(rng, _CANVAS, _CANVAS) * 0.3
            size = int(rng.integers(20, 44))
            top, left = (int(value) for value in rng.integers(0, _CANVAS - size + 1, size=2))
            place_digit(canvas, pool[index % len(pool)], size, top, left, bright_color(rng), rng)
            to_image(canvas).save(folder / f"{index}.png")
    (root / "test").mkdir(exist_ok=True)
    return root


def pretrain_hub_files(workdir: Path, settings: PretrainSettings, log: Log = print) -> dict[str, bytes]:
    """Train the digit classifier in `workdir` (a full fit with the engine); return the hub repository's files for
    DEMO_TAG: {"model.safetensors": the backbone + `fc`, "config.json": b"{}"}."""
    from safetensors.torch import save

    from src.artifacts import BEST_CHECKPOINT
    from src.checkpoint_files import load_checkpoint
    from src.config import load_config
    from src.data.cache import decode_table
    from src.engine import RunInputs, train_run
    from src.formats import create_format

    workdir = Path(workdir).absolute()
    root = render_digits(workdir / "pretrain-digits", settings)
    config = load_config(_write_config(workdir, root, settings))
    fmt = create_format("folder", root)
    table = fmt.read_train()
    images, _ = decode_table(
        list(table.paths), config.data.image_size, config.output_dir / "cache", False, True, log, "images"
    )
    run_dir = workdir / "pretrain-run"
    log(f"pretrain: test_resnet names single digits, {len(table)} images, {settings.epochs} epochs -> {run_dir}")
    rows = np.arange(len(table))
    train_run(RunInputs(config, fmt, np.asarray(images), table.targets, rows, None, run_dir), quiet=True, log=log)
    weights = load_checkpoint(run_dir / BEST_CHECKPOINT)["model"]
    state = {key[len("backbone.") :]: value for key, value in weights.items() if key.startswith("backbone.")}
    state.update({"fc.weight": weights["heads.label.weight"], "fc.bias": weights["heads.label.bias"]})
    return {"model.safetensors": save({key: value.contiguous() for key, value in state.items()}), "config.json": b"{}"}


def train_settings(epochs: int, seed: int, threads: int | None) -> dict:
    """The `train:` section of the pretraining run, and of the transfer proof's runs that fine-tune from it."""
    return {"epochs": epochs, "batch_size": 32, "lr": 0.003, "warmup_epochs": 1, "seed": seed, "threads": threads}


def _write_config(workdir: Path, root: Path, settings: PretrainSettings) -> Path:
    """`workdir/configs/pretrain-digits.yaml` (to rerun or read): the pretraining run's config."""
    body = {
        "competition": "digits",
        "format": "folder",
        "data": {"root": str(root), "image_size": settings.image_size},
        "model": {"name": "test_resnet"},
        "train": train_settings(settings.epochs, settings.seed, settings.threads),
        "output_dir": str(workdir / "out"),
        "predict": {"tta_flip": False},
        "augment": {
            "train": [{"name": "Affine", "translate_percent": [-0.06, 0.06], "scale": [0.9, 1.1], "p": 0.7}],
            "mean": NORMALISE,
            "std": NORMALISE,
        },
    }
    path = workdir / "configs" / "pretrain-digits.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def install_hub_files(files: dict[str, bytes], tag: str, weights_root: Path) -> Path:
    """Write `weights_root/<tag>/` as the `weights` stage writes a download (weight file, timm's pretrained config,
    manifest with its SHA-256 and where it came from), atomically; return the folder."""
    import hashlib

    import huggingface_hub
    import timm

    from src.weights import MANIFEST, PRETRAINED_CFG, timm_pretrained_cfg

    name = "model.safetensors"
    folder = Path(weights_root) / tag
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tag}.", suffix=".local", dir=folder.parent))
    try:
        (staging / name).write_bytes(files[name])
        manifest = {
            "tag": tag,
            "file": name,
            "sha256": hashlib.sha256(files[name]).hexdigest(),
            "size": len(files[name]),
            "hf_hub_id": f"timm/{tag}",
            "revision": "local",
            "source": "local: src/demo_pretrain.py (the demo's pretraining on this machine)",
            "timm": timm.__version__,
            "huggingface_hub": huggingface_hub.__version__,
        }
        write_text(staging / PRETRAINED_CFG, json.dumps(timm_pretrained_cfg(tag), indent=2) + "\n")
        write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def ensure_demo_weights(pretrained: str | None, workdir: Path, weights_root: Path, log: Log = print) -> Path | None:
    """The demo's pretrained weights folder: made here (pretrained, then installed) when the config asks for
    DEMO_TAG and `weights_root` does not hold it yet; None for any other tag (the `weights` stage fetches those)."""
    folder = Path(weights_root) / DEMO_TAG
    if pretrained != DEMO_TAG:
        return None
    from src.weights import MANIFEST

    if (folder / MANIFEST).is_file():
        return folder
    log(f"{DEMO_TAG}: not in {weights_root}/; pretraining it on this machine (no download) -> {folder}")
    shutil.rmtree(workdir, ignore_errors=True)
    return install_hub_files(pretrain_hub_files(workdir, PretrainSettings(), log), DEMO_TAG, weights_root)
