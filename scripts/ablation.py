"""Ablation (issue 23): what each single-model trick buys, on and off at equal epochs, honest OOF and test score
side by side over seeds.

    .venv/bin/python scripts/ablation.py                    # every trick, seeds 0 and 1 (about 30-60 min on 2 cores)
    .venv/bin/python scripts/ablation.py --seeds 0 --tricks baseline crops

The competition (iMet layout, written here): 1-4 small handwritten digits (scikit-learn's real scans) on photo crops
of varied aspect (1:2 to 2:1, shorter side 64-96 px), labels `digit::<d>` with long-tailed frequencies (digit 0 on
about 9 times as many images as digit 9) plus `tag::single` / `tag::many`; 8% of the TRAINING images carry a
wrong label set (one true label dropped or one false label added, as iMet's single annotator did), the test
answers are clean. Every variant trains resnet10t from scratch, 3 folds + the full fit, the same number of epochs:

    baseline      squash to 32 px, uniform sampling, exact per-class thresholds, one stage
    crops         data.resize short_side at cache 40 px, RandomCrop 32 in training, centre + 4 corner crops at
                  eval (predict.tta_crops 5) (point 1)
    sampler       train.sampler log (the iMet winner's 1 + ln(n_max / n_c)) (point 3)
    thresholds    the baseline's OOF and test probabilities, decided by label groups + the relative rule (point 4)
    staged        epochs-2 epochs as the baseline, then 2 epochs of soft F2 loss from them (train.init_from) (point 5)
    drop_noisy    the baseline again, leaving out the 8% of each run's rows the baseline's OOF contradicts most (point 6)

Prints one markdown table: per variant the honest OOF F2 (nested thresholds) and the test F2 (the full fit), as
mean and min..max over seeds. Not a test: a benchmark whose figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRICKS = ("baseline", "crops", "sampler", "thresholds", "staged", "drop_noisy")
NOISE_SHARE = 0.08
DIGIT_WEIGHTS = 1.0 / np.arange(1, 11)  # digit d on about (1/(d+1)) of the draws: a long tail over ten classes


def write_competition(root: Path, answers: Path, n_train: int, n_test: int, seed: int = 7) -> None:
    """The iMet-layout folder described above, and the clean test answers in `answers`/solution.csv."""
    from src import demo_drawing as drawing

    pools = drawing.digit_pools(seed)
    names = [f"digit::{d}" for d in range(10)] + ["tag::single", "tag::many"]
    rng = np.random.default_rng(seed)
    ids = drawing.hex_names(rng, n_train + n_test, 16)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for index, image_id in enumerate(ids):
        split = "train" if index < n_train else "test"
        image, labels = _scene(pools, split, np.random.default_rng([seed, index]))
        if split == "train" and rng.random() < NOISE_SHARE:
            labels = _noisy(labels, rng)
        drawing.save_image(image, root / split / f"{image_id}.png")
        rows[split].append(f"{image_id},{drawing.join_ids(labels)}")
    drawing.write_lines(root / "train.csv", ["id,attribute_ids", *sorted(rows["train"])])
    drawing.write_lines(
        root / "labels.csv", ["attribute_id,attribute_name", *(f"{i},{n}" for i, n in enumerate(names))]
    )
    test_ids = sorted(ids[n_train:])
    drawing.write_lines(root / "sample_submission.csv", ["id,attribute_ids", *(f"{i},0" for i in test_ids)])
    answers.mkdir(parents=True, exist_ok=True)
    drawing.write_lines(answers / "solution.csv", ["id,attribute_ids", *sorted(rows["test"])])


def _scene(pools, split: str, rng: np.random.Generator):
    from src import demo_drawing as drawing

    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    short = int(rng.integers(64, 97))
    width, height = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
    canvas = drawing.photo_crop(rng, height, width) * 0.3
    count = int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])) + 1
    digits = rng.choice(10, size=count, replace=False, p=DIGIT_WEIGHTS / DIGIT_WEIGHTS.sum())
    for digit in digits:
        size = int(rng.integers(14, 25))  # small detail: a 32 px squash of a wide image leaves a few pixels of it
        top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        digit8 = drawing.pick_digit(pools, split, int(digit), rng)
        drawing.place_digit(canvas, digit8, size, top, left, drawing.bright_color(rng), rng)
    labels = [int(d) for d in digits] + ([10] if count == 1 else []) + ([11] if count >= 3 else [])
    return drawing.to_image(canvas), labels


def _noisy(labels: list[int], rng: np.random.Generator) -> list[int]:
    digits = [label for label in labels if label < 10]
    if len(digits) > 1 and rng.random() < 0.5:
        digits.remove(digits[int(rng.integers(len(digits)))])  # a true label the annotator missed
    else:
        digits.append(int(rng.choice([d for d in range(10) if d not in digits])))  # one that is not there
    return sorted(set(digits)) + ([10] if len(digits) == 1 else []) + ([11] if len(digits) >= 3 else [])


def base_config(root: Path, solution: Path, out: Path, seed: int, epochs: int) -> dict:
    return {
        "competition": "imet-2019",
        "format": "imet",
        "output_dir": str(out),
        "data": {"root": str(root), "image_size": 32, "n_folds": 3, "fold_seed": 42, "solution": str(solution)},
        "model": {"name": "resnet10t"},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.003, "warmup_epochs": 1, "seed": seed},
        "augment": {"train": [{"name": "RandomBrightnessContrast", "p": 0.3}], "eval": []},
        "predict": {"tta_flip": False},
        "thresholds": {"methods": ["global", "exact"], "method": "exact"},
        "submit": {"checkpoint": "full"},
    }


def variant_configs(trick: str, base: dict, name: str, epochs: int, baseline: str) -> list[tuple[str, dict]]:
    """(experiment name, config) to run in order for a trick; the last one is scored. `baseline` names the
    baseline experiment of the same seed (drop_noisy ranks rows by its OOF)."""
    import copy

    config = copy.deepcopy(base)
    if trick == "crops":
        config["data"].update({"resize": "short_side", "cache_size": 40, "eval_crop": "center"})
        config["augment"]["train"] = [{"name": "RandomCrop"}, *config["augment"]["train"]]
        config["predict"]["tta_crops"] = 5  # centre + 4 corners: a wide image's ends are seen at eval too
    elif trick == "sampler":
        config["train"]["sampler"] = {"name": "log"}
    elif trick == "thresholds":
        config["thresholds"] = {
            "methods": ["global", "exact", "relative"],
            "method": "relative",
            "groups": [{"prefix": "tag::", "max_labels": 1}],
        }
    elif trick == "staged":
        first = copy.deepcopy(base)
        first["train"]["epochs"] = epochs - 2
        config["train"].update({"epochs": 2, "warmup_epochs": 0, "lr": 0.001, "init_from": f"{name}-stage1"})
        config["train"]["loss"] = {"name": "soft_fbeta"}
        return [(f"{name}-stage1", first), (name, config)]
    elif trick == "drop_noisy":
        config["train"]["drop_noisy"] = {"experiment": baseline, "quantile": NOISE_SHARE}
    return [(name, config)]


CHAIN = (["folds"], ["train", "--fold", "all"], ["train", "--full"], ["oof"], ["thresholds"], ["submit"])


def run_chain(configs_dir: Path, name: str, config: dict) -> dict:
    """Write the config, run folds -> train (all folds + full) -> oof -> thresholds -> submit; the scores."""
    return _run_stages(configs_dir, name, config, CHAIN, config["thresholds"]["method"])


def thresholds_only(configs_dir: Path, base_name: str, name: str, config: dict) -> dict:
    """The baseline's trained runs decided another way: copy its oof/ and runs, then thresholds and submit."""
    out = Path(config["output_dir"])
    shutil.copytree(out / "oof" / base_name, out / "oof" / name, dirs_exist_ok=True)
    for stale in ("thresholds.json", "threshold_scores.json", "optuna.db"):
        (out / "oof" / name / stale).unlink(missing_ok=True)
    return _run_stages(configs_dir, name, config, (["thresholds"], ["submit"]), "relative + groups")


def _run_stages(configs_dir: Path, name: str, config: dict, stages, method: str) -> dict:
    """Write `name`'s config, run `stages` in their own processes; the honest OOF F2 of the threshold row whose
    method starts with `method`, and the test F2 of the submission."""
    path = configs_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for argv in stages:
        command = [sys.executable, "-m", "src.stage", *argv, "--config", str(path), "--quiet"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"ablation: {name}: `{' '.join(argv)}` failed: {done.stderr.strip()[-600:]}")
    out = Path(config["output_dir"])
    honest = json.loads((out / "oof" / name / "thresholds.json").read_text())["honest"]["attributes"]
    row = next(r for r in honest if r["method"] == method or r["method"].startswith(f"{method} "))
    test = json.loads((out / "submissions" / name / "test_scores.json").read_text())
    return {"honest": row["honest"], "test": float(test["f2"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tricks", nargs="+", choices=TRICKS, default=list(TRICKS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=900)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the working folder (printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ablation-"))
    root, answers, configs_dir = work / "comp", work / "answers", work / "configs"
    configs_dir.mkdir()
    print(f"writing the competition ({args.n_train} + {args.n_test} images) into {root} ...", flush=True)
    write_competition(root, answers, args.n_train, args.n_test)
    tricks = ["baseline", *(trick for trick in args.tricks if trick != "baseline")]
    results: dict[str, list[dict]] = {trick: [] for trick in tricks}
    try:
        for seed in args.seeds:
            base = base_config(root, answers / "solution.csv", work / "out", seed, args.epochs)
            baseline = f"baseline-s{seed}"
            baseline_scores = run_chain(configs_dir, baseline, base)  # every other trick is measured against it
            for trick in tricks:
                name = f"{trick}-s{seed}"
                if trick == "baseline":
                    scores = baseline_scores
                elif trick == "thresholds":
                    config = variant_configs(trick, base, name, args.epochs, baseline)[-1][1]
                    scores = thresholds_only(configs_dir, baseline, name, config)
                else:
                    for step_name, config in variant_configs(trick, base, name, args.epochs, baseline):
                        scores = run_chain(configs_dir, step_name, config)
                results[trick].append(scores)
                print(f"{name}: honest OOF F2 {scores['honest']:.4f}, test F2 {scores['test']:.4f}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args)


def print_table(results: dict[str, list[dict]], args) -> None:
    print(f"\n{args.n_train} training / {args.n_test} test images, {args.epochs} epochs, seeds {args.seeds}\n")
    print("| variant | honest OOF F2, mean (min..max) | test F2, mean (min..max) | test vs baseline |")
    print("|---|---|---|---|")
    base = np.mean([r["test"] for r in results["baseline"]]) if results.get("baseline") else None
    for trick, rows in results.items():
        honest, test = np.array([r["honest"] for r in rows]), np.array([r["test"] for r in rows])
        delta = f"{test.mean() - base:+.4f}" if base is not None and trick != "baseline" else ""
        print(
            f"| {trick} | {honest.mean():.4f} ({honest.min():.4f}..{honest.max():.4f}) | "
            f"{test.mean():.4f} ({test.min():.4f}..{test.max():.4f}) | {delta} |"
        )


if __name__ == "__main__":
    main()
