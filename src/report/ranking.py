"""Ranking quality: AP, ROC AUC and curves, exact and vectorised over classes.

OOF probabilities are stored as float16, whose bit patterns, read as integers, sort like the values
for numbers in [0, 1]. Counting positives and negatives per bit pattern and class (one bincount)
gives every class's exact PR and ROC curve at once: the same AP and AUC as sklearn's
average_precision_score / roc_auc_score (tests check it), in seconds for 20,000 x 1,103 where one
sklearn call per class takes minutes. Probabilities finer than float16 are rounded to it first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        pos, neg = _descending_counts(true[:, start : start + _COLUMN_BLOCK], probs[:, start : start + _COLUMN_BLOCK])
        micro_pos += pos.sum(axis=0)
        micro_neg += neg.sum(axis=0)
        block_ap, block_auc = _ap_auc(pos, neg)
        ap[start : start + len(pos)], auc[start : start + len(pos)] = block_ap, block_auc
        for row in np.flatnonzero(np.isfinite(block_ap)):
            recall, precision, fpr, tpr = curve_points(pos[row], neg[row])
            precision_sum += _interpolated_precision(recall, precision)
            tpr_sum += np.interp(CURVE_GRID, fpr, tpr)
            used += 1
    micro_ap, micro_auc = _ap_auc(micro_pos[None], micro_neg[None])
    recall, precision, fpr, tpr = curve_points(micro_pos, micro_neg)
    macro_tpr = tpr_sum / max(used, 1)
    macro_tpr[0] = 0.0 if used else macro_tpr[0]
    return Ranking(
        ap,
        auc,
        float(micro_ap[0]),
        float(micro_auc[0]),
        (recall, precision),
        (fpr, tpr),
        precision_sum / max(used, 1),
        macro_tpr,
    )


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
