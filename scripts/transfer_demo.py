"""Proof that fine-tuning works, on 2 CPU cores: pretrain a backbone, publish it as timm weights, fetch it with the
`weights` stage, then fine-tune it and train from scratch side by side.

1. Pretrain: `test_resnet` learns to name single handwritten digits (scikit-learn's real 8x8 scans, from the demo's
   train pool only, upscaled at a random size and place over the demo's photo textures), a folder-format
   competition trained by the engine like any other.
2. Publish: the backbone's weights, with its classifier as `fc` as timm's files carry one, become the
   `model.safetensors` of the hub repository `timm/test_resnet.r160_in1k`: the file the `weights` stage fetches for
   that timm tag. The local stand-in hub (tests/fake_hub_server.py) serves it.
3. Fetch: `python -m src.stage weights --model test_resnet.r160_in1k`, run in the work folder and pointed at that hub,
   writes `input/weights/<tag>/` (weight file, pretrained_cfg.json, manifest.json) exactly as for a real download.
4. Compare: one small slice of the iMet demo (a few hundred mosaics) trained from scratch and fine-tuned from those
   weights (`model.pretrained`), same config and epochs, each scored every epoch on the demo's test images
   (handwriting that neither the pretraining nor the fine-tuning saw).

`python scripts/transfer_demo.py [--workdir DIR]` runs all four and prints the scores per epoch. A script, not part
of the pipeline: it serves the weights from the tests' stand-in hub.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python scripts/transfer_demo.py` from anywhere

from src.artifacts import EPOCHS_CSV  # noqa: E402 (after the path above)
from src.config import Config, load_config  # noqa: E402
from src.demo_pretrain import DEMO_TAG as TAG  # noqa: E402 (a real timm tag: hf_hub_id timm/<tag>)
from src.demo_pretrain import NORMALISE, train_settings  # noqa: E402

HUB_REPO = f"timm/{TAG}"
Log = Callable[[str], None]
# The runs compared: name -> (model.pretrained, train settings over the shared ones). The recipe is the configs'
# fine-tuning schedule: heads alone for an epoch (backbone frozen, its lr held at 0), then layer-wise lr decay.
VARIANTS: dict[str, tuple[str | None, dict]] = {
    "scratch": (None, {}),
    "fine_tuned": (TAG, {}),
    "fine_tuned_recipe": (
        TAG,
        {"layer_decay": 0.8, "head_lr_mult": 5.0, "callbacks": [{"name": "freeze", "epochs": 1, "rewarm": True}]},
    ),
}


@dataclass(frozen=True)
class TransferSettings:
    """Sizes of the proof; the defaults take about a minute on 2 CPU cores."""

    n_finetune: int = 300  # iMet-demo training mosaics both runs learn from
    n_test: int = 300  # demo test mosaics they are scored on
    epochs: int = 6  # of each of the two fine-tuning runs
    pretrain_copies: int = 2  # renderings of each train-pool digit for pretraining
    pretrain_epochs: int = 6
    image_size: int = 32
    seed: int = 0
    threads: int | None = 1  # torch CPU threads: 1 runs steadily on a shared 2-core machine (null = torch default)


def run_transfer_demo(
    workdir: Path,
    serve: Callable[[dict[str, bytes]], str],
    settings: TransferSettings = TransferSettings(),
    log: Log = print,
) -> list[dict]:
    """Pretrain, publish through `serve` (hub files -> the hub's URL), fetch with the `weights` stage, compare.

    Returns one row per epoch: {"epoch", <variant>: the iMet F2 at the best global threshold on the demo's test
    images, "<variant>@0.5": the F2 at threshold 0.5} for each of VARIANTS (scratch, fine_tuned, fine_tuned_recipe).
    """
    workdir = Path(workdir).absolute()
    for stale in ("pretrain-digits", "pretrain-run", *(f"{name}-run" for name in VARIANTS), f"input/weights/{TAG}"):
        shutil.rmtree(workdir / stale, ignore_errors=True)  # a rerun trains again and fetches the new weights
    files = pretrain(workdir, settings, log)
    fetch_with_weights_stage(workdir, serve(files), log)
    return compare(workdir, settings, log)


# ---- 1. pretraining (src/demo_pretrain.py: the folder demo installs the same files without a hub) -------------


def pretrain(workdir: Path, settings: TransferSettings, log: Log = print) -> dict[str, bytes]:
    """Train the digit classifier (a full fit with the engine); return the hub repository's files for TAG."""
    from src.demo_pretrain import PretrainSettings, pretrain_hub_files

    pretraining = PretrainSettings(
        settings.pretrain_copies, settings.pretrain_epochs, settings.image_size, settings.seed, settings.threads
    )
    return pretrain_hub_files(workdir, pretraining, log)


# ---- 3. fetching ---------------------------------------------------------------------------------


def fetch_with_weights_stage(workdir: Path, hub_url: str, log: Log = print) -> Path:
    """Run the `weights` stage for TAG in `workdir` against the hub at `hub_url`; return the folder it wrote."""
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(workdir / "hf-home"),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-m", "src.stage", "weights", "--model", TAG, "--quiet"]
    log(f"fetch: {' '.join(command[2:])} (in {workdir}, HF_ENDPOINT={hub_url})")
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the weights stage failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    log(result.stdout.strip().splitlines()[-1])
    return workdir / "input" / "weights" / TAG


# ---- 4. scratch vs fine-tuned --------------------------------------------------------------------


def compare(workdir: Path, settings: TransferSettings, log: Log = print) -> list[dict]:
    """Train the iMet-demo slice once per VARIANTS entry (run in `workdir`, where the weights stage put
    input/weights/TAG); every run validates on the demo's test images each epoch."""
    import pandas as pd

    from src.demo import build_demo
    from src.engine import RunInputs, train_run
    from src.formats import create_format

    demo = build_demo(
        "imet", workdir / "demo-imet", n_train=settings.n_finetune, n_test=settings.n_test, seed=settings.seed
    )
    fmt = create_format("imet", demo.root)
    train, test = fmt.read_train(), fmt.read_test()
    test_labels = fmt.read_submission(list(demo.solution_files))[1]
    targets = {
        name: np.concatenate([train.targets[name], test_labels[name].astype(train.targets[name].dtype)])
        for name in train.targets
    }
    epochs, images = {}, None
    for name, (pretrained, recipe) in VARIANTS.items():
        config = _config(
            workdir,
            name,
            {
                "competition": "imet-2019",
                "format": "imet",
                "data": {"root": str(demo.root), "image_size": settings.image_size},
                "model": {"name": "test_resnet", "pretrained": pretrained},
                "train": {**train_settings(settings.epochs, settings.seed, settings.threads), **recipe},
            },
        )
        images = _decoded(config, train.paths + test.paths, log) if images is None else images
        log(f"{name}: {len(train)} training mosaics, {len(test)} test mosaics, {settings.epochs} epochs")
        with contextlib.chdir(workdir):  # model.pretrained resolves input/weights/<tag>/ here, as in a project folder
            rows = np.arange(len(train)), np.arange(len(train), len(train) + len(test))
            train_run(RunInputs(config, fmt, images, targets, *rows, workdir / f"{name}-run"), quiet=True, log=log)
        epochs[name] = pd.read_csv(workdir / f"{name}-run" / EPOCHS_CSV)
    return [
        {
            "epoch": index + 1,
            **{name: float(frame["score"][index]) for name, frame in epochs.items()},
            **{f"{name}@0.5": float(frame["f2@0.5"][index]) for name, frame in epochs.items()},
        }
        for index in range(settings.epochs)
    ]


def _config(workdir: Path, name: str, body: dict) -> Config:
    """Write `workdir/configs/<name>.yaml` (to rerun or read) and load it like any config."""
    body = {
        **body,
        "output_dir": str(workdir / "out"),
        "predict": {"tta_flip": False},
        "augment": {
            "train": [{"name": "Affine", "translate_percent": [-0.06, 0.06], "scale": [0.9, 1.1], "p": 0.7}],
            "mean": NORMALISE,  # the tag's own: scratch runs use them too, so only the weights differ
            "std": NORMALISE,
        },
    }
    path = workdir / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return load_config(path)


def _decoded(config: Config, paths: list[Path], log: Log) -> np.ndarray:
    from src.data.cache import decode_table

    images, _ = decode_table(
        list(paths), config.data.image_size, config.output_dir / "cache", False, True, log, "images"
    )
    return np.asarray(images)


def score_table(rows: list[dict]) -> str:
    """The per-epoch comparison as an aligned text table (F2 at the best global threshold; at 0.5 after it)."""
    columns = [*VARIANTS, *(f"{name}@0.5" for name in VARIANTS)]
    lines = ["epoch  " + "  ".join(f"{column:>{max(len(column), 6)}}" for column in columns)]
    lines += [
        f"{row['epoch']:>5}  " + "  ".join(f"{row[column]:>{max(len(column), 6)}.3f}" for column in columns)
        for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python scripts/transfer_demo.py`: the whole proof, served by the repository's stand-in hub."""
    parser = argparse.ArgumentParser(prog="python scripts/transfer_demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("oof/_transfer_demo"), help="where everything is written")
    parser.add_argument("--epochs", type=int, default=TransferSettings.epochs)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # the stand-in hub lives with the tests; nothing leaves 127.0.0.1
    from fake_hub_server import FakeHub

    with FakeHub() as hub:

        def serve(files: dict[str, bytes]) -> str:
            hub.add_repo(HUB_REPO, files)
            return hub.url

        rows = run_transfer_demo(args.workdir, serve, TransferSettings(epochs=args.epochs))
    print(
        f"iMet-demo F2 on the demo's {TransferSettings.n_test} test images after each of {args.epochs} epochs, "
        "per run (best global threshold; at 0.5 after):"
    )
    print(score_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
