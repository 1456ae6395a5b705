"""Stage `thresholds`: per-class thresholds on the OOF probabilities, by several methods, scored honestly.

Methods: `global` (one threshold for all classes), `exact` (vectorised coordinate ascent over every
class's cut points) and `optuna` (TPE study stored under oof/<exp>/, resumable). Per-class
thresholds are shrunk toward the global one by positives: t' = (n*t + m*g)/(n + m), m =
thresholds.shrink_strength, so a class seen 3 times barely moves from g. Each method is scored
on all OOF rows (optimistic: tuned and scored on the same rows) and by K-fold over the OOF rows
(honest: tuned on K-1 parts, scored on the held-out part).
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np

from src.atomic import write_text
from src.experiment import Experiment
from src.formats.base import DecisionRules
from src.steps.common import load_oof, score_rows, table_text
from src import thresholds as th


def _tuners(exp: Experiment, head_name: str, objective) -> dict[str, Callable]:
    cfg = exp.config.thresholds

    def global_tuner(probs, targets):
        value, _ = th.best_global_threshold(probs, targets, objective)
        return np.full(probs.shape[1], value, dtype=np.float64)

    def shrunk(tuned, probs, targets):
        value, _ = th.best_global_threshold(probs, targets, objective)
        return th.shrink_toward_global(tuned, value, targets.sum(axis=0), cfg.shrink_strength)

    def exact_tuner(probs, targets):
        return shrunk(th.exact_thresholds(probs, targets, objective), probs, targets)

    def optuna_tuner(probs, targets, storage=None, study_name=None):
        tuned, _ = th.optuna_thresholds(probs, targets, objective, cfg.optuna_trials, storage=storage,
                                        study_name=study_name or "nested", seed=exp.config.train.seed)
        return shrunk(tuned, probs, targets)

    return {"global": global_tuner, "exact": exact_tuner, "optuna": optuna_tuner}


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> None:
    cfg = exp.config.thresholds
    ids, fold_of_row, probs, targets = load_oof(exp.require(exp.oof_path, "oof"))
    heads = [head for head in exp.fmt.heads() if head.thresholded]
    log(f"thresholds {exp.name}: {len(ids)} OOF rows, heads {', '.join(h.name for h in heads) or '(none)'}; "
        f"methods global, exact, optuna ({cfg.optuna_trials} trials, {exp.optuna_storage}); honest = {cfg.honest_folds}-fold over OOF rows")
    result = {"method": cfg.method, "heads": {}, "honest": {}}
    for head in heads:
        head_probs, head_targets = probs[head.name], targets[head.name]
        tuners = _tuners(exp, head.name, head.objective)
        global_value, global_score = th.best_global_threshold(head_probs, head_targets, head.objective)
        found = {
            "global": tuners["global"](head_probs, head_targets),
            "exact": tuners["exact"](head_probs, head_targets),
            "optuna": tuners["optuna"](head_probs, head_targets, storage=exp.optuna_storage, study_name=f"thresholds-{head.name}"),
        }
        rows = []
        for method, tuner in tuners.items():
            nested = th.nested_score(head_probs, head_targets, head.objective, tuner, n_splits=cfg.honest_folds,
                                     seed=exp.config.data.fold_seed)
            rows.append({"method": method, "optimistic": th.score(head_probs, head_targets, found[method], head.objective),
                         "honest": nested["honest"]})
        min_labels, max_labels, count_score = th.best_label_count_rule(head_probs, head_targets, head.objective, global_value)
        rows.append({"method": f"global + labels per image in [{min_labels}, {max_labels}]", "optimistic": count_score,
                     "honest": float("nan")})
        rows.append({"method": "0.5 (no tuning)", "optimistic": th.score(head_probs, head_targets, 0.5, head.objective),
                     "honest": th.score(head_probs, head_targets, 0.5, head.objective)})
        result["heads"][head.name] = {
            "class_names": list(head.class_names), "global": global_value,
            "methods": {method: values.tolist() for method, values in found.items()},
            "label_count_rule": {"min_labels": min_labels, "max_labels": max_labels},
        }
        result["honest"][head.name] = rows
        log(f"[{head.name}] {head.objective.kind} (beta {head.objective.beta:g}); global threshold {global_value:.3f}:\n"
            + table_text(rows))
    write_text(exp.thresholds_path, json.dumps(result, indent=1))
    rules = load_rules(exp)
    if heads:
        per_fold = score_rows(exp.fmt, fold_of_row, probs, targets, {"at 0.5": None, f"tuned ({cfg.method})": rules})
        log(f"OOF {exp.fmt.main_metric} with the '{cfg.method}' thresholds submit will use:\n" + table_text(per_fold))
    else:
        log("no multi-label head: nothing to tune (softmax heads use argmax)")
    log(f"wrote {exp.thresholds_path}")


def load_rules(exp: Experiment) -> DecisionRules | None:
    """The decision rules `submit` uses: thresholds of `thresholds.method`, min/max labels from config; None if not tuned."""
    if not exp.thresholds_path.exists():
        return None
    saved = json.loads(exp.thresholds_path.read_text())
    method = exp.config.thresholds.method
    thresholds = {name: np.asarray(head["methods"][method], dtype=np.float64) for name, head in saved["heads"].items()}
    return DecisionRules(thresholds, exp.config.thresholds.min_labels, exp.config.thresholds.max_labels)
