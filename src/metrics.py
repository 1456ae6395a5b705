"""Competition metrics as pure functions over numpy arrays.

Multi-label inputs are n x c matrices of bools (or 0/1 numbers): one row per image, one column per
class. Single-label inputs are int arrays of class indices. Every function returns numbers or arrays
and prints nothing; bad shapes or values raise `PipelineError`.
"""

from __future__ import annotations

import numpy as np

from src.errors import PipelineError


def fbeta_from_counts(tp, fp, fn, beta: float, zero_division: float = 0.0) -> np.ndarray:
    """F-beta for each element of the count arrays `tp`, `fp`, `fn` (broadcast together).

    F = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp); where the denominator is 0 (nothing true and
    nothing predicted) the result is `zero_division`. Returns float64.
    """
    _check_beta(beta)
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = np.asarray(fn, dtype=np.float64)
    weight = 1.0 + beta * beta
    numerator = weight * tp
    denominator = numerator + beta * beta * fn + fp
    shape = np.broadcast_shapes(numerator.shape, denominator.shape)
    out = np.full(shape, float(zero_division), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def fbeta_per_sample(y_true, y_pred, beta: float = 2.0, zero_division: float = 0.0) -> np.ndarray:
    """F-beta of each image (row) of two n x c label matrices; float64 array [n]."""
    y_true, y_pred = _label_pair(y_true, y_pred)
    tp = np.count_nonzero(y_true & y_pred, axis=1)
    n_true = np.count_nonzero(y_true, axis=1)
    n_pred = np.count_nonzero(y_pred, axis=1)
    return fbeta_from_counts(tp, n_pred - tp, n_true - tp, beta, zero_division)


def fbeta_samples(y_true, y_pred, beta: float = 2.0, zero_division: float = 0.0) -> float:
    """Per-image F-beta averaged over all images (the iMet 2019 score with beta=2).

    Images with no true or no predicted labels count too, exactly as
    `sklearn.metrics.fbeta_score(..., average='samples', zero_division=zero_division)`.
    """
    per_sample = fbeta_per_sample(y_true, y_pred, beta, zero_division)
    if per_sample.size == 0:
        raise PipelineError("fbeta_samples got 0 images; pass at least one row")
    return float(per_sample.mean())


def per_class_scores(y_true, y_pred, beta: float = 1.0, zero_division: float = 0.0) -> dict:
    """Per-column `support`, `precision`, `recall`, `fscore` of two n x c label matrices.

    Matches `sklearn.metrics.precision_recall_fscore_support(average=None)`; 0/0 gives
    `zero_division` (0 by default).
    """
    y_true, y_pred = _label_pair(y_true, y_pred)
    _check_beta(beta)
    tp = np.count_nonzero(y_true & y_pred, axis=0)
    support = np.count_nonzero(y_true, axis=0)
    n_pred = np.count_nonzero(y_pred, axis=0)
    return {
        "support": support.astype(np.int64),
        "precision": _safe_ratio(tp, n_pred, zero_division),
        "recall": _safe_ratio(tp, support, zero_division),
        "fscore": fbeta_from_counts(tp, n_pred - tp, support - tp, beta, zero_division),
    }


def macro_fbeta(y_true, y_pred, beta: float = 1.0, zero_division: float = 0.0) -> float:
    """Unweighted mean over columns of per-column F-beta (sklearn `average='macro'`)."""
    return float(per_class_scores(y_true, y_pred, beta, zero_division)["fscore"].mean())


def accuracy(true_labels, pred_labels) -> float:
    """Share of images whose predicted class index equals the true one."""
    true_labels, pred_labels = _single_label_pair(true_labels, pred_labels)
    return float(np.mean(true_labels == pred_labels))


def macro_f1_single(true_labels, pred_labels, n_classes: int) -> float:
    """Macro F1 over all `n_classes` classes, absent ones scoring 0.

    Matches `sklearn.metrics.f1_score(average='macro', labels=range(n_classes), zero_division=0)`.
    """
    matrix = confusion(true_labels, pred_labels, n_classes)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    return float(fbeta_from_counts(tp, fp, fn, beta=1.0, zero_division=0.0).mean())


def confusion(true_labels, pred_labels, n_classes: int) -> np.ndarray:
    """n_classes x n_classes int64 counts: row = true class, column = predicted class."""
    true_labels, pred_labels = _single_label_pair(true_labels, pred_labels)
    if n_classes < 1:
        raise PipelineError(f"n_classes is {n_classes}; pass a positive number of classes")
    for name, labels in (("true_labels", true_labels), ("pred_labels", pred_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise PipelineError(f"{name} holds class indices outside 0..{n_classes - 1}; check the label mapping")
    flat = np.bincount(true_labels * n_classes + pred_labels, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def per_column_accuracy(y_true, y_pred) -> np.ndarray:
    """Accuracy of each binary attribute (column) of two n x c label matrices; float64 [c]."""
    y_true, y_pred = _label_pair(y_true, y_pred)
    if y_true.shape[0] == 0:
        raise PipelineError("per_column_accuracy got 0 images; pass at least one row")
    return np.count_nonzero(y_true == y_pred, axis=0) / y_true.shape[0]


def mean_accuracy(y_true, y_pred) -> float:
    """Mean over attributes of per-attribute accuracy (the CelebA score)."""
    return float(per_column_accuracy(y_true, y_pred).mean())


def as_label_matrix(values, name: str = "y_true") -> np.ndarray:
    """Validate an n x c matrix of bools or 0/1 numbers and return it as bools; `name` goes in errors."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise PipelineError(f"{name} has {values.ndim} dimensions; pass an n_images x n_classes matrix")
    if values.dtype == bool:
        return values
    # A probability matrix passed by mistake must not be silently truncated to labels.
    if not np.all((values == 0) | (values == 1)):
        raise PipelineError(f"{name} holds values other than 0 and 1; binarize predictions first")
    return values.astype(bool)


def _label_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = as_label_matrix(y_true, "y_true")
    y_pred = as_label_matrix(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise PipelineError(
            f"y_pred has shape {y_pred.shape} but y_true has {y_true.shape}; pass label matrices of the same shape"
        )
    return y_true, y_pred


def _single_label_pair(true_labels, pred_labels) -> tuple[np.ndarray, np.ndarray]:
    true_labels = np.asarray(true_labels)
    pred_labels = np.asarray(pred_labels)
    for name, labels in (("true_labels", true_labels), ("pred_labels", pred_labels)):
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise PipelineError(f"{name} must be a 1-D array of int class indices")
    if true_labels.shape != pred_labels.shape:
        raise PipelineError(
            f"pred_labels has {pred_labels.size} entries but true_labels has {true_labels.size}; "
            "pass one prediction per image"
        )
    if true_labels.size == 0:
        raise PipelineError("got 0 images; pass at least one label")
    return true_labels.astype(np.int64), pred_labels.astype(np.int64)


def _safe_ratio(numerator, denominator, zero_division: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(denominator.shape, float(zero_division), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _check_beta(beta: float) -> None:
    if not np.isfinite(beta) or beta <= 0:
        raise PipelineError(f"beta is {beta}; pass a positive finite number (2 for F2)")
