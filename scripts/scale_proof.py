"""Scale proof (issue 23): the whole chain on a generated iMet-layout competition at two sizes, time and peak RSS
per stage, so a reader sees which stage dominates and whether any grows worse than linearly in rows x classes.

    .venv/bin/python scripts/scale_proof.py                      # 7,500 and 30,000 training images, 1,103 classes
    .venv/bin/python scripts/scale_proof.py --sizes 2000 --keep  # a quick look; --keep leaves the folders

The competition: real photo crops (scikit-learn's two sample photos) of varied aspect (short side 48-96 px, aspect
1:2 to 2:1), 1,103 classes (398 `culture::`, 705 `tag::`, as iMet) with Zipf-distributed frequencies and ~4.5 labels
per image; labels are independent of the pixels (this measures cost, not accuracy). Each stage runs in its own
process (`python -m src.stage ...`), timed by the wall clock and measured by its own peak RSS (children included);
the training is one epoch at 32 px of resnet10t on 2 folds plus the full fit. Not a test: a benchmark whose
figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
N_CULTURE, N_TAG = 398, 705
STAGES = (
    ("folds", ["folds"]),
    ("train", ["train", "--fold", "all"]),
    ("train --full", ["train", "--full"]),
    ("oof", ["oof"]),
    ("thresholds", ["thresholds"]),
    ("submit", ["submit"]),
    ("report", ["report"]),
    ("kernel build", ["kernel", "build", "--no-check"]),
)
# One stage, with its peak RSS (ru_maxrss of the process and its children, in kB) written after it ends.
_RUNNER = (
    "import json, resource, sys\n"
    "from src.stage import main\n"
    "code = main(sys.argv[2:])\n"
    "peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
    "open(sys.argv[1], 'w').write(json.dumps({'code': code, 'peak_kb': peak}))\n"
    "sys.exit(code)\n"
)


def write_competition(root: Path, n_train: int, n_test: int, seed: int) -> None:
    """An iMet-layout folder: train.csv, labels.csv, sample_submission.csv, train/ and test/ PNGs."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(image) for image in load_sample_images().images]
    n_classes = N_CULTURE + N_TAG
    names = [f"culture::c{i}" for i in range(N_CULTURE)] + [f"tag::t{i}" for i in range(N_TAG)]
    weights = 1.0 / np.arange(1, n_classes + 1) ** 1.1
    frequency = np.minimum(weights / weights.sum() * 4.5, 0.35)
    ids = [f"{value:016x}" for value in rng.integers(0, 2**63, n_train + n_test)]
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for index, image_id in enumerate(ids):
        split = "train" if index < n_train else "test"
        _photo_crop(photos, rng).save(root / split / f"{image_id}.png", compress_level=1)
        if split == "train":
            labels = np.flatnonzero(rng.random(n_classes) < frequency)
            labels = labels if labels.size else rng.integers(0, n_classes, 1)
            rows.append(f"{image_id},{' '.join(map(str, labels))}")
        if index % 5000 == 0:
            print(f"  {index}/{len(ids)} images", flush=True)
    (root / "train.csv").write_text("id,attribute_ids\n" + "\n".join(rows) + "\n")
    (root / "labels.csv").write_text(
        "attribute_id,attribute_name\n" + "\n".join(f"{i},{name}" for i, name in enumerate(names)) + "\n"
    )
    test_rows = [f"{image_id},0" for image_id in ids[n_train:]]
    (root / "sample_submission.csv").write_text("id,attribute_ids\n" + "\n".join(test_rows) + "\n")


def _photo_crop(photos: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    photo = photos[rng.integers(len(photos))]
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    short = int(rng.integers(48, 97))
    width, height = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
    crop_w, crop_h = int(rng.integers(80, 300) * width / short), int(rng.integers(80, 300) * height / short)
    crop_w, crop_h = min(crop_w, photo.shape[1]), min(crop_h, photo.shape[0])
    top, left = rng.integers(0, photo.shape[0] - crop_h + 1), rng.integers(0, photo.shape[1] - crop_w + 1)
    return Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize((width, height))


def write_config(path: Path, root: Path, out: Path) -> None:
    import yaml

    config = {
        "competition": "imet-2019",
        "format": "imet",
        "output_dir": str(out),
        "data": {"root": str(root), "image_size": 32, "n_folds": 2},
        "model": {"name": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "warmup_epochs": 0.2},
        "predict": {"tta_flip": False, "batch_size": 256},
        "thresholds": {"methods": ["global", "exact"], "method": "exact"},
        "submit": {"checkpoint": "full"},
        "kaggle": {"username": "scale-proof"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_stage(config: Path, argv: list[str], work: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one stage in its own process; stops the proof if the stage fails."""
    record = work / "stage.json"
    command = [sys.executable, "-c", _RUNNER, str(record), *argv, "--config", str(config), "--quiet"]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"scale proof: `{' '.join(argv)}` failed: {finished.stderr.strip()[-600:]}")
    peak_kb = json.loads(record.read_text())["peak_kb"]
    return seconds, peak_kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[7500, 30000], help="training images per run")
    parser.add_argument("--test-share", type=float, default=0.1, help="test images as a share of training images")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders (printed)")
    args = parser.parse_args()
    results: dict[int, dict[str, tuple[float, float]]] = {}
    work = Path(tempfile.mkdtemp(prefix="scale-proof-"))
    try:
        for size in args.sizes:
            root, out = work / f"n{size}" / "imet", work / f"n{size}" / "out"
            print(f"{size} training images: writing the competition ...", flush=True)
            write_competition(root, size, int(size * args.test_share), seed=size)
            config = work / f"n{size}" / "scale.yaml"
            write_config(config, root, out)
            results[size] = {}
            for name, argv in STAGES:
                results[size][name] = run_stage(config, argv, work)
                print(f"  {name}: {results[size][name][0]:.1f} s, peak {results[size][name][1]:.2f} GB", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)


def print_table(results: dict[int, dict[str, tuple[float, float]]]) -> None:
    sizes = sorted(results)
    header = " | ".join(f"{size:,} x 1,103: s / peak GB" for size in sizes)
    ratio = f" | time ratio {sizes[-1] / sizes[0]:.0f}x rows" if len(sizes) > 1 else ""
    print(f"\n| stage | {header}{ratio} |")
    print("|---" * (len(sizes) + 1 + (len(sizes) > 1)) + "|")
    for name, _ in STAGES:
        cells = " | ".join(f"{results[size][name][0]:.1f} / {results[size][name][1]:.2f}" for size in sizes)
        growth = (
            f" | {results[sizes[-1]][name][0] / max(results[sizes[0]][name][0], 1e-9):.2f}" if len(sizes) > 1 else ""
        )
        print(f"| {name} | {cells}{growth} |")


if __name__ == "__main__":
    main()
