"""Figures and the experiment report (HTML + Markdown) from arrays and tables the stages saved.

`build_report(inputs, out_dir)` takes a `ReportInputs` (OOF probabilities and targets per head, the
decision rules, the saved thresholds and the per-run training records; `src/steps/report.py` loads
them from disk) and writes PNG figures, per-class CSVs, `index.html` (figures embedded, so the file
stands alone) and `report.md` (figures linked beside it). Nothing is trained or predicted here.
Tables are computed with `src.metrics` / `src.thresholds` on the same arrays, so they agree with
the numbers the stages print; AP, ROC AUC and the curves are exact and equal sklearn.metrics' (see
`ranking_scores`). Plots use matplotlib's Agg canvas directly (no pyplot, no display).
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from src import metrics
from src import thresholds as th
from src.artifacts import HeadThresholds, TunedThresholds
from src.atomic import atomic_path, write_text
from src.formats.base import CompetitionFormat, DecisionRules, HeadSpec
from src.scores import fold_score_rows

# Tables longer than this show the worst rows only; the full table goes to a CSV beside the report.
MAX_TABLE_ROWS = 40
# Classes drawn one by one in the PR/ROC figure (the worst by average precision).
N_WORST_CURVES = 4
# Images per row of the example grid, and rows of right / wrong examples.
GRID_COLUMNS = 6
GRID_ROWS_EACH = 2
THUMBNAIL_PX = 112
# Grid of global thresholds for the metric-vs-threshold curve.
THRESHOLD_GRID = np.round(np.linspace(0.01, 0.99, 99), 4)
NA = "n/a"


@dataclass
class RunRecord:
    """One training run (`fold-K` or `full`) as saved: epochs.csv, summary.json, config.json."""

    name: str
    fold: Optional[int]
    path: Path
    epochs: Optional[pd.DataFrame] = None
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    params: Optional[tuple[int, int]] = None  # (total, trainable), when known


@dataclass
class ReportInputs:
    """Everything the report shows, already loaded. `rules`: label -> DecisionRules (None = 0.5)."""

    experiment: str
    fmt: CompetitionFormat
    ids: list[str]
    fold_of_row: np.ndarray
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    rules: dict[str, Optional[DecisionRules]]
    chosen_rules: str  # the key of `rules` that submit uses (tables, grid and confusion use it)
    saved_thresholds: Optional[TunedThresholds] = None  # thresholds.json as written by the thresholds stage
    chosen_method: Optional[str] = None  # the tuning method whose thresholds `chosen_rules` applies (None: untuned)
    runs: list[RunRecord] = field(default_factory=list)
    image_paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # what was read, for the "files" section


# --------------------------------------------------------------------------------------------
# Tables (pure functions over arrays; the tests compare them with src.metrics)


def metric_rows(fmt: CompetitionFormat, probs: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                rules: dict[str, Optional[DecisionRules]]) -> list[dict]:
    """Every metric `fmt.evaluate` reports (per head and the main one), one column per set of decision rules."""
    scores = {name: fmt.evaluate(targets, probs, rule) for name, rule in rules.items()}
    keys = list(dict.fromkeys(key for values in scores.values() for key in values))
    return [{"metric": key, **{name: values.get(key) for name, values in scores.items()}} for key in keys]


def decided_matrix(head: HeadSpec, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Decided labels as an n x c bool matrix (one-hot for softmax heads)."""
    if head.thresholded:
        return np.asarray(labels, dtype=bool)
    return np.eye(head.n_outputs, dtype=bool)[np.asarray(labels)]


def target_matrix(head: HeadSpec, targets: np.ndarray) -> np.ndarray:
    """Targets as an n x c bool matrix (one-hot for softmax heads)."""
    if head.thresholded:
        return np.asarray(targets).astype(bool)
    return np.eye(head.n_outputs, dtype=bool)[np.asarray(targets)]


def per_class_rows(head: HeadSpec, probs: np.ndarray, targets: np.ndarray, labels: np.ndarray,
                   class_thresholds: Optional[np.ndarray], ranking: Optional["Ranking"] = None) -> list[dict]:
    """Per class: support, precision, recall, F-score, average precision, ROC AUC, threshold; worst F first.

    Softmax heads are scored one-vs-rest on the argmax decision (their threshold column says 'argmax').
    `ranking` (AP and AUC per class) is computed when not given.
    """
    true = target_matrix(head, targets)
    pred = decided_matrix(head, probs, labels)
    ranking = ranking if ranking is not None else ranking_scores(true, probs)
    beta = head.threshold_objective.column_beta
    scores = metrics.per_class_scores(true, pred, beta=beta)
    f_name = f"F{beta:g}"
    rows = []
    for column, name in enumerate(head.class_names):
        threshold: Any = "argmax" if not head.thresholded else (
            float(class_thresholds[column]) if class_thresholds is not None else 0.5)
        rows.append({"class": name, "support": int(scores["support"][column]), "predicted": int(pred[:, column].sum()),
                     "precision": float(scores["precision"][column]), "recall": float(scores["recall"][column]),
                     f_name: float(scores["fscore"][column]), "AP": float(ranking.ap[column]),
                     "AUC": float(ranking.auc[column]), "threshold": threshold})
    # Worst first: lowest F, and among equal F the class with the most positives (the costliest miss).
    rows.sort(key=lambda row: (row[f_name], -row["support"]))
    return rows


def attribute_accuracy_rows(head: HeadSpec, probs: np.ndarray, targets: np.ndarray, labels: np.ndarray,
                            class_thresholds: Optional[np.ndarray]) -> list[dict]:
    """Per attribute (CelebA-style heads): share positive, accuracy at 0.5 and at the tuned thresholds."""
    true = np.asarray(targets).astype(bool)
    at_half = metrics.per_column_accuracy(true, np.asarray(probs) > 0.5)
    tuned = metrics.per_column_accuracy(true, np.asarray(labels, dtype=bool))
    rows = []
    for column, name in enumerate(head.class_names):
        rows.append({"attribute": name, "positive share": float(true[:, column].mean()),
                     "accuracy at 0.5": float(at_half[column]), "accuracy tuned": float(tuned[column]),
                     "threshold": float(class_thresholds[column]) if class_thresholds is not None else 0.5})
    rows.append({"attribute": "mean", "positive share": float(true.mean()), "accuracy at 0.5": float(at_half.mean()),
                 "accuracy tuned": float(tuned.mean()), "threshold": float("nan")})
    return rows


def global_threshold_curve(probs: np.ndarray, targets: np.ndarray, head: HeadSpec,
                           grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """The head's objective at each global threshold of `grid` (ascending), equal to thresholds.score at each."""
    return th.score_curve(probs, targets, head.threshold_objective, grid)


def image_scores(heads: list[HeadSpec], targets: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> np.ndarray:
    """How right each image is, in [0, 1], averaged over heads.

    Multi-label heads: the objective's `image_rightness` (per-image F-beta, or the share of
    attributes right); softmax heads: 1 if the argmax is the true class, else 0.
    """
    parts = []
    for head in heads:
        true, pred = targets[head.name], labels[head.name]
        if not head.thresholded:
            parts.append((np.asarray(true) == np.asarray(pred)).astype(np.float64))
        else:
            parts.append(head.threshold_objective.image_rightness(true, pred))
    return np.mean(parts, axis=0)


def pick_examples(scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(right rows, wrong rows), disjoint: up to `count` each, spread over the fully right / the worst images."""
    if len(scores) < 2 * count:  # few OOF rows: half each, so no image shows up twice
        count = max(len(scores) // 2, 1)
    order = np.argsort(-scores, kind="stable")
    perfect = order[scores[order] >= 1.0 - 1e-9]
    right = _spread(perfect if len(perfect) >= count else order[:count], count)
    rest = order[::-1][~np.isin(order[::-1], right)]
    wrong_pool = rest[scores[rest] < 1.0 - 1e-9][: count * 4]
    # The worst ones first, then evenly spread so the grid is not one kind of mistake.
    half = count // 2
    wrong = np.concatenate([wrong_pool[:half], _spread(wrong_pool[half:], count - half)])
    return right, wrong[:count].astype(np.int64)


def resource_rows(runs: list[RunRecord], main_metric: str) -> list[dict]:
    """One row per run: model, parameters, batch, image size, device, memory, time, sizes, losses, metrics.

    summary.json's resource keys (parameters, device, peak_memory_mb, train_seconds, ...) when training
    wrote them, else what config.json and epochs.csv tell; "n/a" for what neither holds.
    """
    rows = []
    for run in runs:
        epochs, summary, config = run.epochs, run.summary, run.config
        train_cfg = config.get("train", {})
        best_epoch = summary.get("best_epoch")
        best = None
        if epochs is not None and len(epochs):
            matching = epochs[epochs["epoch"] == best_epoch] if best_epoch is not None else epochs.iloc[0:0]
            best = (matching if len(matching) else epochs.tail(1)).iloc[0]
        params = run.params or (summary.get("parameters"), summary.get("trainable_parameters"))
        batch = summary.get("batch_size", train_cfg.get("batch_size"))
        accumulate = train_cfg.get("accumulate_steps", 1)
        seconds = summary.get("train_seconds")
        if seconds is None and epochs is not None and "seconds" in epochs:
            seconds = float(epochs["seconds"].sum())
        row = {
            "run": run.name,
            "model": summary.get("model", config.get("model", {}).get("name", NA)),
            "params": _count(params[0]),
            "trainable": _count(params[1]),
            "batch": NA if batch is None else (f"{batch}x{accumulate}" if accumulate and accumulate > 1 else str(batch)),
            "image size": summary.get("image_size", config.get("data", {}).get("image_size", NA)),
            "device": summary.get("device", NA),
            "processes": summary.get("processes", NA),
            "peak memory": _megabytes(summary.get("peak_memory_mb")),
            "epochs": summary.get("epochs_run", NA if epochs is None else len(epochs)),
            "train time": NA if seconds is None else _duration(float(seconds)),
            "images/s": f"{epochs['images_per_s'].mean():.0f}" if epochs is not None and "images_per_s" in epochs else NA,
            "train images": summary.get("train_images", NA),
            "valid images": summary.get("valid_images", NA) if run.fold is not None else 0,
            "train loss": _value(best, "train_loss"),
            "valid loss": _value(best, "valid_loss"),
            f"train {main_metric}": _value(best, "train_score"),
            f"valid {main_metric}": _value(best, "score"),
        }
        f1_columns = [c for c in (epochs.columns if epochs is not None else []) if c.endswith("_macro_f1@global")]
        for column in f1_columns:
            row[f"valid {column.removesuffix('@global').replace('_macro_f1', '')} macro-F1"] = _value(best, column)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Ranking quality: AP, ROC AUC and curves, exact and vectorised over classes
#
# OOF probabilities are stored as float16, whose bit patterns, read as integers, sort like the values
# for numbers in [0, 1]. Counting positives and negatives per bit pattern and class (one bincount)
# gives every class's exact PR and ROC curve at once: the same AP and AUC as sklearn's
# average_precision_score / roc_auc_score (tests check it), in seconds for 20,000 x 1,103 where one
# sklearn call per class takes minutes. Probabilities finer than float16 are rounded to it first.

_CODES = int(np.float16(1.0).view(np.uint16)) + 1  # float16 patterns of 0.0 .. 1.0
_COLUMN_BLOCK = 64
CURVE_GRID = np.linspace(0.0, 1.0, 201)


@dataclass
class Ranking:
    """Per class `ap`, `auc` (NaN where a class has no positives or no negatives), micro figures and curves,
    and the macro curves (mean over classes with both) on CURVE_GRID."""

    ap: np.ndarray
    auc: np.ndarray
    micro_ap: float
    micro_auc: float
    micro_pr: tuple[np.ndarray, np.ndarray]  # (recall, precision)
    micro_roc: tuple[np.ndarray, np.ndarray]  # (fpr, tpr)
    macro_precision: np.ndarray  # interpolated precision at recall = CURVE_GRID
    macro_tpr: np.ndarray  # true positive rate at false positive rate = CURVE_GRID


def ranking_scores(true, probs) -> Ranking:
    """AP, AUC and PR/ROC curves of every column of an n x c probability matrix against n x c 0/1 targets."""
    true = np.asarray(true).astype(bool)
    probs = np.asarray(probs)
    n, c = true.shape
    ap, auc = np.full(c, np.nan), np.full(c, np.nan)
    micro_pos, micro_neg = np.zeros(_CODES), np.zeros(_CODES)
    precision_sum, tpr_sum, used = np.zeros_like(CURVE_GRID), np.zeros_like(CURVE_GRID), 0
    for start in range(0, c, _COLUMN_BLOCK):
        pos, neg = _descending_counts(true[:, start:start + _COLUMN_BLOCK], probs[:, start:start + _COLUMN_BLOCK])
        micro_pos += pos.sum(axis=0)
        micro_neg += neg.sum(axis=0)
        block_ap, block_auc = _ap_auc(pos, neg)
        ap[start:start + len(pos)], auc[start:start + len(pos)] = block_ap, block_auc
        for row in np.flatnonzero(np.isfinite(block_ap)):
            recall, precision, fpr, tpr = curve_points(pos[row], neg[row])
            precision_sum += _interpolated_precision(recall, precision)
            tpr_sum += np.interp(CURVE_GRID, fpr, tpr)
            used += 1
    micro_ap, micro_auc = _ap_auc(micro_pos[None], micro_neg[None])
    recall, precision, fpr, tpr = curve_points(micro_pos, micro_neg)
    macro_tpr = tpr_sum / max(used, 1)
    macro_tpr[0] = 0.0 if used else macro_tpr[0]
    return Ranking(ap, auc, float(micro_ap[0]), float(micro_auc[0]), (recall, precision), (fpr, tpr),
                   precision_sum / max(used, 1), macro_tpr)


def class_curves(true_column, prob_column) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, fpr, tpr) of one class, one point per distinct probability (highest first)."""
    pos, neg = _descending_counts(np.asarray(true_column)[:, None], np.asarray(prob_column)[:, None])
    return curve_points(pos[0], neg[0])


def curve_points(pos: np.ndarray, neg: np.ndarray):
    """Curve points from counts per value, highest value first; starts at (recall 0, precision 1) / (0, 0)."""
    keep = (pos + neg) > 0
    tp, fp = np.cumsum(pos)[keep], np.cumsum(neg)[keep]
    positives, negatives = max(tp[-1], 1) if len(tp) else 1, max(fp[-1], 1) if len(fp) else 1
    recall = np.r_[0.0, tp / positives]
    precision = np.r_[1.0, tp / np.maximum(tp + fp, 1)]
    return recall, precision, np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def _descending_counts(true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[columns, _CODES] positives and negatives per float16 value, highest value first."""
    columns = true.shape[1]
    # + 0.0 turns a -0.0 into 0.0, whose bit pattern is the smallest.
    codes = (np.clip(probs, 0.0, 1.0).astype(np.float16) + np.float16(0.0)).view(np.uint16).astype(np.int64)
    flat = (codes + np.arange(columns) * _CODES).ravel()
    total = np.bincount(flat, minlength=columns * _CODES).reshape(columns, _CODES)
    pos = np.bincount(flat, weights=true.ravel(), minlength=columns * _CODES).reshape(columns, _CODES)
    return pos[:, ::-1], (total - pos)[:, ::-1]


def _ap_auc(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP = sum over positives of the precision at their value / P; AUC = P(pos > neg) + P(tie) / 2."""
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    positives, negatives = tp[:, -1], fp[:, -1]
    defined = (positives > 0) & (negatives > 0)
    precision = tp / np.maximum(tp + fp, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (pos * precision).sum(axis=1) / positives
        auc = (pos * (negatives[:, None] - fp + 0.5 * neg)).sum(axis=1) / (positives * negatives)
    return np.where(defined, ap, np.nan), np.where(defined, auc, np.nan)


def _interpolated_precision(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Best precision at recall >= r, at r = CURVE_GRID (recall rises along the arrays)."""
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return np.interp(CURVE_GRID, recall, envelope)


# --------------------------------------------------------------------------------------------
# Figures (each returns a Figure; `build_report` saves them)


def training_curves_figure(runs: list[RunRecord], main_metric: str) -> Optional[Figure]:
    """Loss (train solid, valid dashed) and validation metric per epoch, one colour per run."""
    runs = [run for run in runs if run.epochs is not None and len(run.epochs)]
    if not runs:
        return None
    fig = Figure(figsize=(11, 4.2), dpi=100)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        epochs = run.epochs
        marker = "o" if len(epochs) <= 30 else None
        loss_ax.plot(epochs["epoch"], epochs["train_loss"], color=color, marker=marker, label=f"{run.name} train")
        if "valid_loss" in epochs:
            loss_ax.plot(epochs["epoch"], epochs["valid_loss"], color=color, marker=marker, linestyle="--",
                         label=f"{run.name} valid")
        if "score" in epochs and epochs["score"].notna().any():
            metric_ax.plot(epochs["epoch"], epochs["score"], color=color, marker=marker, label=run.name)
            best = run.summary.get("best_epoch")
            if best in set(epochs["epoch"]):
                value = float(epochs.loc[epochs["epoch"] == best, "score"].iloc[0])
                metric_ax.scatter([best], [value], s=140, facecolors="none", edgecolors=color, linewidths=2)
    loss_ax.set(title="loss per epoch (solid train, dashed valid)", xlabel="epoch", ylabel="loss")
    metric_ax.set(title=f"validation {main_metric} per epoch (ring = best epoch)", xlabel="epoch", ylabel=main_metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def threshold_figure(head: HeadSpec, curve: np.ndarray, grid: np.ndarray, saved_head: Optional[HeadThresholds],
                     honest_rows: Optional[list[dict]], chosen_method: str) -> Figure:
    """Left: the objective vs one global threshold. Right: optimistic vs honest (nested) score per method."""
    fig = Figure(figsize=(12, 5.2), dpi=100)
    curve_ax, honest_ax = fig.subplots(1, 2)
    label = head.threshold_objective.label
    curve_ax.plot(grid, curve, color="C0", linewidth=2, label="one global threshold for every class")
    curve_ax.axvline(0.5, color="grey", linestyle=":", label=f"0.5: {np.interp(0.5, grid, curve):.4f}")
    if saved_head is not None:
        best = float(saved_head.global_threshold)
        curve_ax.axvline(best, color="C1", linestyle="--", label=f"best global {best:.3f}: {np.interp(best, grid, curve):.4f}")
    if honest_rows:
        chosen = next((row for row in honest_rows if row["method"] == chosen_method), None)
        if chosen is not None:
            curve_ax.axhline(chosen["optimistic"], color="C2", linestyle="-.",
                             label=f"'{chosen_method}' per-class, optimistic: {chosen['optimistic']:.4f}")
            if _finite(chosen.get("honest")):
                curve_ax.axhline(chosen["honest"], color="C3", linestyle="-.",
                                 label=f"'{chosen_method}' per-class, honest: {chosen['honest']:.4f}")
    curve_ax.set(title=f"[{head.name}] {label} vs one global threshold", xlabel="threshold", ylabel=label,
                 xlim=(0, 1), ylim=(0, min(1.05, max(float(np.max(curve)), 0.05) * 1.35)))
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(fontsize=8, loc="best")
    rows = [row for row in honest_rows or [] if _finite(row.get("optimistic"))]
    if rows:
        positions = np.arange(len(rows))
        optimistic = np.array([row["optimistic"] for row in rows], float)
        honest = np.array([row["honest"] if _finite(row.get("honest")) else np.nan for row in rows], float)
        honest_ax.bar(positions - 0.2, optimistic, width=0.4, color="C2", label="optimistic: tuned and scored on all OOF rows")
        honest_ax.bar(positions + 0.2, np.nan_to_num(honest), width=0.4, color="C3",
                      label="honest (nested): tuned on other parts, scored on the held-out part")
        for x, value in zip(positions, optimistic):
            honest_ax.text(x - 0.2, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
        for x, value in zip(positions, honest):
            if np.isfinite(value):
                honest_ax.text(x + 0.2, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
        names = [_wrap(row["method"], 14) + ("" if _finite(row.get("honest")) else "\n(no honest)") for row in rows]
        honest_ax.set_xticks(positions, names, fontsize=7)
        values = np.concatenate([optimistic, honest[np.isfinite(honest)]])
        honest_ax.set_ylim(max(0.0, float(values.min()) - 0.1), min(1.0, float(values.max()) + 0.12))
        honest_ax.legend(fontsize=7, loc="upper left")
        honest_ax.set(title=f"[{head.name}] optimistic vs honest, per method", ylabel=label)
        honest_ax.grid(alpha=0.3, axis="y")
    else:
        honest_ax.text(0.5, 0.5, "no thresholds.json yet:\nrun the thresholds stage", ha="center", va="center")
        honest_ax.set_axis_off()
    fig.tight_layout()
    return fig


def pr_roc_figure(head: HeadSpec, probs: np.ndarray, targets: np.ndarray, ranking: Ranking) -> Optional[Figure]:
    """Precision-recall and ROC curves: micro, macro (mean over classes on a common grid), the worst classes by AP."""
    if not np.isfinite(ranking.ap).any():
        return None
    true = target_matrix(head, targets)
    usable = np.flatnonzero(np.isfinite(ranking.ap))
    fig = Figure(figsize=(12, 6.2), dpi=100)
    pr_ax, roc_ax = fig.subplots(1, 2)
    pr_ax.plot(*ranking.micro_pr, color="black", linewidth=2, label=f"micro (AP {ranking.micro_ap:.3f})")
    pr_ax.plot(CURVE_GRID, ranking.macro_precision, color="C0", linewidth=2,
               label=f"macro over {len(usable)} classes (mean AP {np.mean(ranking.ap[usable]):.3f})")
    roc_ax.plot(*ranking.micro_roc, color="black", linewidth=2, label=f"micro (AUC {ranking.micro_auc:.3f})")
    roc_ax.plot(CURVE_GRID, ranking.macro_tpr, color="C0", linewidth=2,
                label=f"macro (mean AUC {np.mean(ranking.auc[usable]):.3f})")
    if len(usable) > 1:
        worst = usable[np.argsort(ranking.ap[usable], kind="stable")[:N_WORST_CURVES]]
        for rank, column in enumerate(worst):
            name, color = _short(head.class_names[column], 24), f"C{rank + 1}"
            recall, precision, fpr, tpr = class_curves(true[:, column], probs[:, column])
            pr_ax.plot(recall, precision, color=color, linewidth=1, alpha=0.8, drawstyle="steps-pre",
                       label=f"worst {rank + 1}: {name} (AP {ranking.ap[column]:.3f}, n={int(true[:, column].sum())})")
            roc_ax.plot(fpr, tpr, color=color, linewidth=1, alpha=0.8,
                        label=f"worst {rank + 1}: {name} (AUC {ranking.auc[column]:.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    kind = "one-vs-rest, " if not head.thresholded else ""
    pr_ax.set(title=f"[{head.name}] precision-recall ({kind}OOF)", xlabel="recall", ylabel="precision",
              xlim=(0, 1), ylim=(0, 1.02))
    roc_ax.set(title=f"[{head.name}] ROC ({kind}OOF)", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1.02))
    for ax in (pr_ax, roc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def confusion_figure(head: HeadSpec, matrix: np.ndarray) -> Figure:
    """Row-normalised confusion matrix (colour = share of the true class), counts written when it fits."""
    n = len(matrix)
    side = float(np.clip(0.45 * n + 2.5, 5.0, 16.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    ax = fig.subplots()
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, float), where=row_totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    if n <= 60:
        names = [_short(name, 18) for name in head.class_names]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7 if n > 20 else 9)
        ax.set_yticks(range(n), names, fontsize=7 if n > 20 else 9)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set(title=f"[{head.name}] confusion matrix, OOF argmax (accuracy {accuracy:.4f})",
           xlabel="predicted class", ylabel="true class")
    fig.tight_layout()
    return fig


def example_grid_figure(heads: list[HeadSpec], rows_right: np.ndarray, rows_wrong: np.ndarray,
                        thumbnails: dict[int, Optional[np.ndarray]], ids: list[str], targets: dict[str, np.ndarray],
                        labels: dict[str, np.ndarray], scores: np.ndarray) -> Figure:
    """OOF images, right ones (green) then wrong ones (red), titled with true and predicted labels."""
    groups = [("right", rows_right, "#1a7f37"), ("wrong", rows_wrong, "#cf222e")]
    n_rows = sum(math.ceil(len(rows) / GRID_COLUMNS) for _, rows, _ in groups if len(rows)) or 1
    fig = Figure(figsize=(2.3 * GRID_COLUMNS, 3.1 * n_rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(n_rows, GRID_COLUMNS)).reshape(n_rows, GRID_COLUMNS)
    for ax in axes.ravel():
        ax.set_axis_off()
    line = 0
    for group, rows, color in groups:
        for start in range(0, len(rows), GRID_COLUMNS):
            for column, row in enumerate(rows[start:start + GRID_COLUMNS]):
                ax = axes[line, column]
                image = thumbnails.get(int(row))
                if image is None:
                    ax.text(0.5, 0.5, "image\nnot found", ha="center", va="center", transform=ax.transAxes)
                else:
                    ax.imshow(image)
                # "best" when not even the best images are fully right (an early or weak model).
                verdict = "wrong" if group == "wrong" else ("right" if scores[row] >= 1.0 - 1e-9 else "best")
                text = [f"{verdict.upper()} ({scores[row]:.2f}) {_short(Path(ids[row]).name, 16)}"]
                for head in heads:
                    text += _label_lines(head, targets[head.name][row], labels[head.name][row], len(heads) > 1)
                ax.set_title("\n".join(text), fontsize=7, color=color, loc="left")
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
            line += 1
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# The report


def build_report(inputs: ReportInputs, out_dir: Path, thumbnails: Optional[dict[int, Optional[np.ndarray]]] = None) -> Path:
    """Write figures, CSVs, `report.md` and `index.html` into `out_dir`; return the HTML path.

    `thumbnails` maps an OOF row to an RGB image for the example grid; when None they are read
    from `inputs.image_paths` (the original files) for the chosen rows only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt, heads = inputs.fmt, inputs.fmt.heads()
    doc = _Document(out_dir)
    chosen = inputs.rules[inputs.chosen_rules]
    labels = fmt.decide(inputs.probs, chosen)
    metric = fmt.main_metric

    doc.title(f"Experiment report: {inputs.experiment}")
    folds = sorted(int(k) for k in np.unique(inputs.fold_of_row))
    doc.paragraph(f"Format `{fmt.name}`, main metric `{metric}`. {len(inputs.ids)} out-of-fold (OOF) images over "
                  f"{len(folds)} fold{'s' if len(folds) != 1 else ''}; every OOF probability comes from the fold "
                  f"model that did not train on that image. Decisions below use **{inputs.chosen_rules}** (what "
                  "`submit` uses) unless a column says otherwise. Made from saved artifacts only; nothing was retrained.")
    for note in inputs.notes:
        doc.paragraph(f"Note: {note}")

    score_rows = fold_score_rows(fmt, inputs.fold_of_row, inputs.probs, inputs.targets, inputs.rules)
    overall = score_rows[-1]
    headline = [{"figure": f"OOF {metric}, {name}", "value": overall[name]} for name in inputs.rules]
    for head in heads:
        for row in inputs.saved_thresholds.honest.get(head.name, []) if inputs.saved_thresholds else []:
            if row.method == inputs.chosen_method and _finite(row.honest):
                headline.append({"figure": f"[{head.name}] {head.threshold_objective.label}, {row.method} thresholds, "
                                           "honest (nested)", "value": row.honest})
    doc.section("Summary")
    doc.table(headline, "summary")

    _training_section(doc, inputs.runs, metric)

    doc.section("OOF score per fold and overall")
    tuned_note = (" Tuned thresholds are chosen on these same rows, so their column is optimistic; the honest "
                  "(nested) figure below tunes on the other parts and scores the held-out part."
                  if len(inputs.rules) > 1 else "")
    doc.paragraph(f"`{metric}` on the OOF rows of each fold and on all of them, for each set of decision rules.{tuned_note}")
    doc.table(score_rows, "oof_scores")
    doc.subsection("Every metric of the format, all OOF rows")
    doc.table(metric_rows(fmt, inputs.probs, inputs.targets, inputs.rules), "oof_metrics")

    for head in heads:
        _head_sections(doc, inputs, head, labels)

    _examples_section(doc, inputs, heads, labels, thumbnails)

    _resources_section(doc, inputs, metric)
    return doc.write()


def _training_section(doc: "_Document", runs: list[RunRecord], metric: str) -> None:
    doc.section("Training curves")
    doc.figure("training_curves.png", training_curves_figure(runs, metric),
               "Loss and validation metric per epoch, one colour per fold.")
    # A full fit has no validation rows: its "best" epoch is simply the last one.
    fold_runs = [{"run": run.name, "best epoch": run.summary.get("best_epoch", NA) if run.fold is not None else "last",
                  f"best valid {metric}": run.summary.get("best_score", NA) if run.fold is not None else NA,
                  "epochs run": run.summary.get("epochs_run", NA), "finished": run.summary.get("finished", NA)}
                 for run in runs]
    if fold_runs:
        doc.table(fold_runs, "runs")


def _examples_section(doc: "_Document", inputs: ReportInputs, heads: list[HeadSpec], labels: dict[str, np.ndarray],
                      thumbnails: Optional[dict[int, Optional[np.ndarray]]]) -> None:
    doc.section("Examples: right and wrong (OOF)")
    scores = image_scores(heads, inputs.targets, labels)
    right, wrong = pick_examples(scores, GRID_COLUMNS * GRID_ROWS_EACH)
    if thumbnails is None:
        thumbnails = _load_thumbnails(inputs, np.concatenate([right, wrong]))
    doc.paragraph("Green: images the model got fully right (its best ones when none is); red: the worst ones. "
                  "The number is how right the image is (per-image score, averaged over heads). "
                  "T = true labels, P = predicted"
                  + ("; for attribute heads only the attributes it got wrong are listed." if any(
                      h.thresholded and h.threshold_objective.counts_true_negatives for h in heads) else "."))
    if any(image is not None for image in thumbnails.values()):
        doc.figure("examples.png", example_grid_figure(heads, right, wrong, thumbnails, inputs.ids, inputs.targets,
                                                       labels, scores), "OOF images predicted right and wrong.")
    else:
        doc.paragraph("(No example grid: the training images could not be read; check data.root.)")


def _resources_section(doc: "_Document", inputs: ReportInputs, metric: str) -> None:
    doc.section("Resources")
    resources = resource_rows(inputs.runs, metric)
    if resources:
        doc.paragraph("Per training run, from summary.json, config.json and epochs.csv. Training time is the sum of "
                      "the epoch times; losses and metrics are at the best epoch; images/s is the mean over epochs. "
                      "n/a: not recorded by the training run.")
        doc.table(resources, "resources")
    else:
        doc.paragraph("No training runs found.")

    if inputs.sources:
        doc.section("Files read")
        doc.table([{"artifact": name, "path": str(path)} for name, path in inputs.sources.items()], "files")


def _head_sections(doc: "_Document", inputs: ReportInputs, head: HeadSpec, labels: dict[str, np.ndarray]) -> None:
    probs, targets = inputs.probs[head.name], inputs.targets[head.name]
    saved = inputs.saved_thresholds
    saved_head = saved.heads.get(head.name) if saved else None
    method = inputs.chosen_method
    chosen_rule = inputs.rules[inputs.chosen_rules]
    class_thresholds = None
    if head.thresholded and chosen_rule is not None:
        class_thresholds = np.broadcast_to(np.asarray(chosen_rule.thresholds[head.name], float), (head.n_outputs,))
    kind = "multi-label (sigmoid, per-class thresholds)" if head.thresholded else "single-label (softmax, argmax)"
    doc.section(f"Head `{head.name}`: {kind}, {head.n_outputs} classes")

    if head.thresholded:
        honest_rows = [row.model_dump() for row in saved.honest.get(head.name, [])] if saved else None
        if honest_rows:
            best_global = f" Best global threshold: {saved_head.global_threshold:.3f}." if saved_head else ""
            doc.paragraph(f"Thresholds by method (from thresholds.json); {head.threshold_objective.label}. *optimistic*: tuned "
                          "and scored on all OOF rows; *honest*: K-fold over the OOF rows, tuned on the other parts "
                          f"and scored on the held-out part. Submit uses `{method}`.{best_global}")
            doc.table(honest_rows, f"honest_{head.name}")
        else:
            doc.paragraph("No thresholds.json yet: run the thresholds stage for tuned thresholds and the honest figure.")
        # The saved best global threshold joins the grid so the figure shows its exact score.
        grid = np.unique(np.r_[THRESHOLD_GRID, [saved_head.global_threshold] if saved_head else []])
        curve = global_threshold_curve(probs, targets, head, grid)
        doc.figure(f"thresholds_{_slug(head.name)}.png",
                   threshold_figure(head, curve, grid, saved_head, honest_rows, method),
                   f"[{head.name}] metric vs one global threshold, and optimistic vs honest per method.")

    ranking = ranking_scores(target_matrix(head, targets), probs)
    rows = per_class_rows(head, probs, targets, labels[head.name], class_thresholds, ranking)
    csv_name = f"per_class_{_slug(head.name)}.csv"
    _write_csv(doc.out_dir / csv_name, rows)
    shown = rows if len(rows) <= MAX_TABLE_ROWS + 10 else rows[:MAX_TABLE_ROWS]
    doc.subsection(f"Per-class table, worst first ({inputs.chosen_rules if head.thresholded else 'argmax'})")
    where = (f"All {len(rows)} classes are in `{csv_name}`." if len(shown) == len(rows) else
             f"The {len(shown)} worst of {len(rows)} classes; all are in `{csv_name}`.")
    doc.paragraph("Support = true OOF images of the class, predicted = images given the class; AP (average "
                  f"precision) and AUC (ROC) rank the class's probabilities, whatever the threshold. {where}")
    doc.table(shown, f"per_class_{head.name}", full_rows=rows)

    if head.thresholded and head.threshold_objective.counts_true_negatives:
        doc.subsection("Per-attribute accuracy")
        doc.table(attribute_accuracy_rows(head, probs, targets, labels[head.name], class_thresholds),
                  f"attribute_accuracy_{head.name}")

    if not head.thresholded:
        matrix = metrics.confusion(targets, labels[head.name], head.n_outputs)
        doc.subsection("Confusion matrix")
        doc.figure(f"confusion_{_slug(head.name)}.png", confusion_figure(head, matrix),
                   f"[{head.name}] rows: true class, columns: predicted class.")

    doc.subsection("Precision-recall and ROC curves")
    doc.figure(f"pr_roc_{_slug(head.name)}.png", pr_roc_figure(head, probs, targets, ranking),
               f"[{head.name}] micro, macro and the {N_WORST_CURVES} worst classes by average precision.")


def _load_thumbnails(inputs: ReportInputs, rows: np.ndarray) -> dict[int, Optional[np.ndarray]]:
    from PIL import Image

    from src.data.images import load_rgb
    from src.errors import PipelineError

    thumbnails: dict[int, Optional[np.ndarray]] = {}
    for row in rows:
        path = inputs.image_paths.get(inputs.ids[int(row)])
        try:
            image = Image.fromarray(load_rgb(path)) if path is not None else None
        except PipelineError:
            image = None
        if image is not None:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
            if max(image.size) < THUMBNAIL_PX:  # small images (e.g. 32 px) are enlarged to stay legible
                scale = THUMBNAIL_PX / max(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
        thumbnails[int(row)] = None if image is None else np.asarray(image)
    return thumbnails


# --------------------------------------------------------------------------------------------
# One document, two renderings


class _Document:
    """Blocks (headings, paragraphs, tables, figures) rendered to Markdown and to self-contained HTML."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.blocks: list[tuple] = []
        self.figures: list[Path] = []
        self.tables: dict[str, list[dict]] = {}

    def title(self, text: str) -> None:
        self.blocks.append(("h1", text))

    def section(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def subsection(self, text: str) -> None:
        self.blocks.append(("h3", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, rows: list[dict], name: str, full_rows: Optional[list[dict]] = None) -> None:
        """Show `rows`; `tables.json` keeps `full_rows` (default `rows`) under `name` with unrounded numbers."""
        self.tables[name] = full_rows if full_rows is not None else rows
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            self.blocks.append(("table", columns, [[_cell(row.get(c, NA)) for c in columns] for row in rows]))

    def figure(self, name: str, fig: Optional[Figure], caption: str) -> None:
        if fig is None:
            self.paragraph(f"({caption} Nothing to draw.)")
            return
        path = self.out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, facecolor="white")
        self.figures.append(path)
        self.blocks.append(("figure", name, caption))

    def write(self) -> Path:
        write_text(self.out_dir / "tables.json", json.dumps(_jsonable(self.tables), indent=1))
        write_text(self.out_dir / "report.md", self.markdown())
        html_path = self.out_dir / "index.html"
        write_text(html_path, self.html())
        return html_path

    def markdown(self) -> str:
        parts = []
        for block in self.blocks:
            kind = block[0]
            if kind in ("h1", "h2", "h3"):
                parts.append("#" * int(kind[1]) + " " + block[1])
            elif kind == "p":
                parts.append(block[1])
            elif kind == "table":
                columns, rows = block[1], block[2]
                lines = ["| " + " | ".join(_md_escape(c) for c in columns) + " |",
                         "|" + "|".join("---:" if _numeric_column(rows, i) else "---" for i in range(len(columns))) + "|"]
                lines += ["| " + " | ".join(_md_escape(value) for value in row) + " |" for row in rows]
                parts.append("\n".join(lines))
            elif kind == "figure":
                alt = block[2].replace("[", "(").replace("]", ")")  # brackets would end the alt text
                parts.append(f"![{alt}]({block[1]})\n\n*{block[2]}*")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind in ("h1", "h2", "h3"):
                body.append(f"<{kind}>{_inline(block[1])}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "table":
                columns, rows = block[1], block[2]
                numeric = [_numeric_column(rows, i) for i in range(len(columns))]
                head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                lines = []
                for row in rows:
                    cells = "".join(f"<td class='{'num' if numeric[i] else 'txt'}'>{html.escape(v)}</td>"
                                    for i, v in enumerate(row))
                    lines.append(f"<tr>{cells}</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode((self.out_dir / block[1]).read_bytes()).decode("ascii")
                body.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                            f"<figcaption>{html.escape(block[2])} ({html.escape(block[1])})</figcaption></figure>")
        title = html.escape(next((b[1] for b in self.blocks if b[0] == "h1"), "report"))
        return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
                f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d0d7de;padding:3px 8px}th{background:#f6f8fa;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafbfc}
figure{margin:1em 0}img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#59636e;font-size:13px}
code{background:#f6f8fa;padding:0 .3em;border-radius:4px}
"""


# --------------------------------------------------------------------------------------------
# Small helpers


def _label_lines(head: HeadSpec, true, pred, with_head: bool) -> list[str]:
    prefix = f"{head.name}: " if with_head else ""
    names = head.class_names
    if not head.thresholded:
        mark = "" if int(true) == int(pred) else " x"
        return [f"{prefix}T {_short(names[int(true)], 20)}", f"{prefix}P {_short(names[int(pred)], 20)}{mark}"]
    true_set = np.flatnonzero(np.asarray(true).astype(bool))
    pred_set = np.flatnonzero(np.asarray(pred, dtype=bool))
    if head.threshold_objective.counts_true_negatives:
        wrong = np.flatnonzero(np.asarray(true).astype(bool) != np.asarray(pred, dtype=bool))
        if not len(wrong):
            return [f"{prefix}all {len(names)} right"]
        return [f"{prefix}wrong: " + _name_list([names[i] for i in wrong], 30)]
    return [f"{prefix}T " + _name_list([names[i] for i in true_set], 30),
            f"{prefix}P " + _name_list([names[i] for i in pred_set], 30)]


def _name_list(names: list[str], width: int) -> str:
    if not names:
        return "(none)"
    shown, used = [], 0
    for name in names:
        if shown and used + len(name) > width:
            return ", ".join(shown) + f" +{len(names) - len(shown)}"
        shown.append(name)
        used += len(name) + 2
    return ", ".join(shown)


def _spread(rows: np.ndarray, count: int) -> np.ndarray:
    if len(rows) <= count:
        return np.asarray(rows, dtype=np.int64)
    return np.asarray(rows)[np.linspace(0, len(rows) - 1, count).round().astype(int)].astype(np.int64)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as null, anything else unknown as its text."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value if value is None or isinstance(value, str) else str(value)


def _cell(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return NA if not math.isfinite(float(value)) else f"{float(value):.4f}"
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating)) and math.isfinite(float(value))


def _numeric_column(rows: list[list[str]], index: int) -> bool:
    values = [row[index] for row in rows if row[index] != NA]
    return bool(values) and all(_is_number(value) for value in values)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Markdown-ish `code` and **bold** for the HTML rendering."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    return escaped


def _value(row, column: str, fmt: str = "{:.4f}") -> str:
    if row is None or column not in row.index or pd.isna(row[column]):
        return NA
    return fmt.format(float(row[column]))


def _count(value) -> str:
    if value is None:
        return NA
    value = int(value)
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else str(value)


def _megabytes(value) -> str:
    return NA if value is None else f"{float(value):,.0f} MB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _short(text: str, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
