"""Stage `oof`: every training image predicted by the fold model that held it out; scored per fold and overall at 0.5.

Writes oof.npz and oof_scores.json; tuned-threshold scores are the thresholds stage's (it runs after this one).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from src.artifacts import Experiment, OofPredictions, ScoreTable
from src.inference import load_inference_model, predict_rows
from src.runtime import runtime_from_config
from src.scores import fold_score_rows
from src.steps.common import decoded_images, fold_numbers, table_text


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> None:
    config, fmt = exp.config, exp.fmt
    table = fmt.read_train()
    fold_of_row = exp.fold_of_row(table.ids)
    folds = fold_numbers(fold_of_row)
    checkpoints = {k: exp.best_checkpoint(k) for k in folds}
    log(
        f"oof {exp.name}: predicting {int((fold_of_row >= 0).sum())} held-out images with {len(folds)} fold models"
        f"{' + flip TTA' if config.predict.tta_flip else ''} -> {exp.oof_path}"
    )
    images, readable = decoded_images(exp, table, quiet, log, "train images")
    runtime = runtime_from_config(config.train, inference=True)
    heads = fmt.heads()
    held_out = readable & (fold_of_row >= 0)
    probs = {head.name: np.zeros((len(table), head.n_outputs), np.float32) for head in heads}
    for k in folds:
        rows = np.flatnonzero(held_out & (fold_of_row == k))
        model, _ = load_inference_model(checkpoints[k], fmt)
        for name, values in predict_rows(model, config, heads, images, rows, runtime, quiet, f"oof fold {k}").items():
            probs[name][rows] = values
    keep = np.flatnonzero(held_out)
    oof = OofPredictions(
        [table.ids[i] for i in keep],
        fold_of_row[keep],
        {n: v[keep] for n, v in probs.items()},
        {name: values[keep] for name, values in table.targets.items()},
    )
    oof.write(exp.oof_path)
    # Scores are on the float16 values that were saved, the same numbers later stages read.
    saved = {name: values.astype(np.float16).astype(np.float32) for name, values in oof.probs.items()}
    scores = ScoreTable(fold_score_rows(fmt, oof.fold_of_row, saved, oof.targets, {"at 0.5": None}))
    scores.write(exp.oof_scores_path)
    log(f"OOF {fmt.main_metric} per fold and overall:\n" + table_text(scores.rows))
    log(f"wrote {exp.oof_path}; next: {exp.command('thresholds')}")
