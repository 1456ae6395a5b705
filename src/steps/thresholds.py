"""Stage `thresholds`: per-class thresholds on the OOF probabilities, by several methods, scored honestly.

Methods: `global` (one threshold for all classes), `exact` (vectorised coordinate ascent over every
class's cut points) and `optuna` (TPE study stored under oof/<exp>/, resumable). Per-class
thresholds are shrunk toward the global one by positives: t' = (n*t + m*g)/(n + m), m =
thresholds.shrink_strength, so a class seen 3 times barely moves from g. Each method is scored
on all OOF rows (optimistic: tuned and scored on the same rows) and by K-fold over the OOF rows
(honest: tuned on K-1 parts, scored on the held-out part).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from src import thresholds as th
from src.artifacts import Experiment, ScoreTable, TunedThresholds, tuned_column
from src.scores import fold_score_rows
from src.steps.common import table_text


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
        tuned, _ = th.optuna_thresholds(
            probs,
            targets,
            objective,
            cfg.optuna_trials,
            storage=storage,
            study_name=study_name or "nested",
            seed=exp.config.train.seed,
        )
        return shrunk(tuned, probs, targets)

    def relative_tuner(probs, targets):
        return th.relative_thresholds(probs, targets, objective)

    return {"global": global_tuner, "exact": exact_tuner, "optuna": optuna_tuner, "relative": relative_tuner}


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> None:
    cfg = exp.config.thresholds
    oof = exp.read_oof()
    heads = [head for head in exp.fmt.heads() if head.thresholded]
    groups = th.label_groups(cfg.groups, exp.fmt.heads())
    if heads:  # a softmax-only run has no methods to run: only the "nothing to tune" line below
        log(
            f"thresholds {exp.name}: {len(oof.ids)} OOF rows, heads {', '.join(h.name for h in heads)}; "
            f"methods {', '.join(cfg.methods)}"
            + (f" ({cfg.optuna_trials} trials, {exp.optuna_storage})" if "optuna" in cfg.methods else "")
            + f"; honest = {cfg.honest_folds}-fold over OOF rows"
        )
    result = {"method": cfg.method, "heads": {}, "honest": {}}
    for head in heads:
        result["heads"][head.name], result["honest"][head.name] = _tune_head(
            exp, head, oof.probs[head.name], oof.targets[head.name], log, groups[head.name]
        )
        log(
            f"[{head.name}] {head.threshold_objective.label}; global threshold "
            f"{result['heads'][head.name]['global']:.3f}:\n" + table_text(result["honest"][head.name])
        )
    tuned = TunedThresholds.model_validate(result)
    tuned.write(exp.thresholds_path)
    if heads:
        column = tuned_column(cfg.method)
        rules = {"at 0.5": None, column: tuned.rules(cfg.method, cfg.min_labels, cfg.max_labels, groups)}
        per_fold = ScoreTable(fold_score_rows(exp.fmt, oof.fold_of_row, oof.probs, oof.targets, rules))
        per_fold.write(exp.threshold_scores_path)
        log(
            f"OOF {exp.fmt.main_metric} with the '{cfg.method}' thresholds submit will use:\n"
            + table_text(per_fold.rows)
        )
    else:
        log(f"thresholds {exp.name}: no multi-label head, nothing to tune (softmax heads use argmax)")
    log(f"wrote {exp.thresholds_path}")


def _class_thresholds(found) -> np.ndarray:
    """The per-class thresholds of a tuner's result (the `relative` rule's ratio is saved beside them)."""
    return found.thresholds if isinstance(found, th.RelativeThresholds) else found


def _grouped_row(exp: Experiment, method: str, tuner, probs, targets, objective, groups) -> dict:
    """One method's thresholds with the label groups' limits after them: tuned on all rows and scored there
    (optimistic), and tuned on K-1 parts, limited and scored on the held-out part (honest)."""
    nested = th.nested_score(
        probs, targets, objective, tuner, exp.config.thresholds.honest_folds, exp.config.data.fold_seed, groups
    )
    limits = ", ".join(f"{g.name} [{g.min_labels}, {g.max_labels}]" for g in groups)
    return {"method": f"{method} + groups {limits}", "optimistic": nested["optimistic"], "honest": nested["honest"]}


def _tune_head(exp: Experiment, head, head_probs, head_targets, log=print, groups=()) -> tuple[dict, list[dict]]:
    """(thresholds.json entry of one head, its rows of optimistic and honest scores per method, and with `groups`
    each method again with the label groups' limits, scored the same two ways); each method's time is logged."""
    cfg = exp.config.thresholds
    objective = head.threshold_objective  # per-image F1 where the format names no objective
    tuners = _tuners(exp, head.name, objective)
    global_value, _ = th.best_global_threshold(head_probs, head_targets, objective)
    found, rows = {}, []
    for method in cfg.methods:
        log(f"[{head.name}] {method}: tuning on {head_probs.shape[0]} rows x {head_probs.shape[1]} classes ...")
        started = time.perf_counter()
        if method == "optuna":
            found[method] = tuners[method](
                head_probs, head_targets, storage=exp.optuna_storage, study_name=f"thresholds-{head.name}"
            )
        else:
            found[method] = tuners[method](head_probs, head_targets)
        tuned_s, started = time.perf_counter() - started, time.perf_counter()
        nested = th.nested_score(
            head_probs,
            head_targets,
            objective,
            tuners[method],
            n_splits=cfg.honest_folds,
            seed=exp.config.data.fold_seed,
        )
        log(
            f"[{head.name}] {method}: tuned in {tuned_s:.1f} s, honest {cfg.honest_folds}-fold in "
            f"{time.perf_counter() - started:.1f} s"
        )
        optimistic = th.score(head_probs, head_targets, found[method], objective)
        rows.append({"method": method, "optimistic": optimistic, "honest": nested["honest"]})
        if groups:
            rows.append(_grouped_row(exp, method, tuners[method], head_probs, head_targets, objective, groups))
    min_labels, max_labels, count_score = th.best_label_count_rule(head_probs, head_targets, objective, global_value)
    rows.append(
        {
            "method": f"global + labels per image in [{min_labels}, {max_labels}]",
            "optimistic": count_score,
            "honest": float("nan"),
        }
    )
    at_half = th.score(head_probs, head_targets, 0.5, objective)
    rows.append({"method": "0.5 (no tuning)", "optimistic": at_half, "honest": at_half})
    entry = {
        "class_names": list(head.class_names),
        "global": global_value,
        "methods": {method: _class_thresholds(values).tolist() for method, values in found.items()},
        "label_count_rule": {"min_labels": min_labels, "max_labels": max_labels},
    }
    if "relative" in found:
        entry["relative_ratio"] = found["relative"].ratio
    return entry, rows
