"""Stage `oof`: every training image predicted by the fold model that held it out; scored per fold and overall."""
from __future__ import annotations

import json
from typing import Callable

import numpy as np

from src.atomic import write_text
from src.data.dataset import CachedImageDataset
from src.data.folds import read_folds
from src.data.transforms import build_transform
from src.experiment import Experiment
from src.predict import make_eval_loader, predict_probs
from src.runtime import runtime_from_config
from src.steps.common import decoded_images, save_oof, score_rows, table_text
from src.steps.thresholds import load_rules
from src.inference import load_inference_model


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> None:
    config, fmt = exp.config, exp.fmt
    table = fmt.read_train()
    fold_of_row = read_folds(exp.require(exp.folds_path, "folds"), table.ids)
    folds = sorted(int(k) for k in np.unique(fold_of_row) if k >= 0)
    checkpoints = {k: exp.require(exp.run_dir(k) / "best.pt", "train", f"--fold {k}") for k in folds}
    log(f"oof {exp.name}: predicting {int((fold_of_row >= 0).sum())} held-out images with {len(folds)} fold models"
        f"{' + flip TTA' if config.predict.tta_flip else ''} -> {exp.oof_path}")
    images, readable = decoded_images(exp, table, quiet, log, "train images")
    runtime = runtime_from_config(config.train, inference=True)
    heads = fmt.heads()
    aug = config.augment
    transform = build_transform(aug.eval, config.data.image_size, aug.mean, aug.std, "augment.eval")
    held_out = readable & (fold_of_row >= 0)
    probs = {head.name: np.zeros((len(table), head.n_outputs), np.float32) for head in heads}
    for k in folds:
        rows = np.flatnonzero(held_out & (fold_of_row == k))
        model, _ = load_inference_model(checkpoints[k], fmt)
        model.to(runtime.device)
        loader = make_eval_loader(CachedImageDataset(images, rows, None, transform), config.predict.batch_size,
                                  config.train.num_workers, runtime)
        fold_probs, _ = predict_probs(model, loader, heads, runtime, tta_flip=config.predict.tta_flip, quiet=quiet,
                                      desc=f"oof fold {k}")
        for name, values in fold_probs.items():
            probs[name][rows] = values
    keep = np.flatnonzero(held_out)
    ids = [table.ids[i] for i in keep]
    probs = {name: values[keep] for name, values in probs.items()}
    targets = {name: values[keep] for name, values in table.targets.items()}
    save_oof(exp.oof_path, ids, fold_of_row[keep], probs, targets)
    # Scores are on the float16 values that were saved, the same numbers later stages read.
    probs = {name: values.astype(np.float16).astype(np.float32) for name, values in probs.items()}
    rules = {"at 0.5": None}
    tuned = load_rules(exp)
    if tuned is not None:
        rules["tuned"] = tuned
    rows = score_rows(fmt, fold_of_row[keep], probs, targets, rules)
    write_text(exp.oof_dir / "oof_scores.json", json.dumps(rows, indent=2))
    log(f"OOF {fmt.main_metric} per fold and overall:\n" + table_text(rows))
    if tuned is None:
        log(f"tuned thresholds not found yet: {exp.command('thresholds')}")
    log(f"wrote {exp.oof_path}")
