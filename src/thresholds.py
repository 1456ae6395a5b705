"""Per-class thresholds chosen on out-of-fold probabilities.

Inputs are `probs`, an n_images x n_classes matrix of probabilities in [0, 1] (float16 is fine; the
work is done in float32 or float64), and `targets`, a same-shape matrix of bools or 0/1. A label is
predicted when `prob > threshold` (strictly greater), so a threshold of 1.0 never predicts a class.

What is maximised is an objective of `src.objectives` (per-image F-beta, per-column accuracy,
macro F-beta, ...). The searches ask it for scores from counts and never for its name: when it
couples the classes of an image (`couples_classes`) per-class thresholds come from coordinate
ascent, else each column's optimum is exact.

`exact_thresholds` puts every cut halfway between two consecutive distinct probabilities of its
column (1.0 for a class that should never be on), so no cut hangs on a value exactly at the threshold.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from src import metrics
from src.errors import PipelineError

if TYPE_CHECKING:
    import optuna
from src.objectives import Objective, PerImageObjective

# Search range of each Optuna threshold parameter.
OPTUNA_LOW, OPTUNA_HIGH = 0.01, 0.99
DATA_SHA256 = "data_sha256"  # the user attribute naming the data a stored study was tuned on
# Two scores closer than this (on the objective's own 0..1 scale) count as a tie.
_TOLERANCE = 1e-12
# Rows per block when histogramming probabilities, to bound memory on big matrices.
_ROW_BLOCK = 4096


@dataclass(frozen=True)
class LabelGroup:
    """Label-count limits within some classes (iMet: at most 3 `culture::` labels, at least 1 `tag::` label)."""

    name: str
    columns: tuple[int, ...]
    min_labels: int = 0
    max_labels: int | None = None


def label_groups(groups, heads) -> dict[str, tuple[LabelGroup, ...]]:
    """{head: its LabelGroups} from `thresholds.groups` (prefix, min_labels, max_labels) over the thresholded heads'
    class names; a prefix no class starts with is one config error line."""
    found: dict[str, tuple[LabelGroup, ...]] = {head.name: () for head in heads if head.thresholded}
    for index, group in enumerate(groups):
        matched = False
        for head in heads:
            columns = tuple(i for i, name in enumerate(head.class_names) if name.startswith(group.prefix))
            if head.thresholded and columns:
                limits = LabelGroup(group.prefix, columns, group.min_labels, group.max_labels)
                found[head.name] += (limits,)
                matched = True
        if not matched:
            raise PipelineError(
                f"config thresholds.groups[{index}].prefix: no class name starts with '{group.prefix}'; use a prefix "
                "of the label names (e.g. culture::)"
            )
    return found


@dataclass(frozen=True)
class RelativeThresholds:
    """A per-image rule (iMet 6th place): a label is on when its probability passes min(its threshold, `ratio` x the
    image's top probability), so a confident image keeps the threshold and an unsure one still names the labels
    near its top one (the top label itself is always on: `ratio` < 1)."""

    thresholds: np.ndarray
    ratio: float


RELATIVE_RATIOS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))  # the ratios `relative_thresholds` tries


def apply_thresholds(
    probs,
    thresholds,
    min_labels: int = 0,
    max_labels: int | None = None,
    groups: tuple[LabelGroup, ...] = (),
    relative_ratio: float | None = None,
) -> np.ndarray:
    """Bool n x c predictions: `probs > thresholds`, then each group's label-count limits within its columns,
    then the per-image limits over all classes.

    `thresholds` is a scalar or one value per class (a RelativeThresholds carries its own ratio); with
    `relative_ratio` each image's thresholds are lowered to at most that ratio of its top probability. If more
    than `max_labels` labels pass, only the `max_labels` passing ones with the highest probabilities stay. If
    fewer than `min_labels` pass, the highest-probability labels that did not pass are added until there are
    `min_labels`. Among equal probabilities the lower class index is taken first.
    """
    probs = _prob_matrix(probs)
    if isinstance(thresholds, RelativeThresholds):
        thresholds, relative_ratio = thresholds.thresholds, thresholds.ratio
    thresholds = _threshold_vector(thresholds, probs.shape[1])
    _check_label_limits(min_labels, max_labels, probs.shape[1])
    if relative_ratio is not None:
        if not 0.0 <= relative_ratio <= 1.0:
            raise PipelineError(f"relative ratio {relative_ratio}: pass a fraction of the top probability in [0, 1]")
        thresholds = np.minimum(thresholds, relative_ratio * probs.max(axis=1, keepdims=True))
    predicted = probs > thresholds
    for group in groups:
        columns = np.asarray(group.columns, dtype=np.int64)
        _check_label_limits(group.min_labels, group.max_labels, len(columns))
        predicted[:, columns] = _limit_labels(
            probs[:, columns], predicted[:, columns], group.min_labels, group.max_labels
        )
    return _limit_labels(probs, predicted, min_labels, max_labels)


def _limit_labels(probs: np.ndarray, predicted: np.ndarray, min_labels: int, max_labels: int | None) -> np.ndarray:
    """`predicted` with at most `max_labels` and at least `min_labels` per row, by probability."""
    if max_labels is not None:
        rows = np.flatnonzero(np.count_nonzero(predicted, axis=1) > max_labels)
        if rows.size:
            passing = np.where(predicted[rows], probs[rows], -np.inf)
            predicted[rows] = _top_k_mask(passing, max_labels)
    if min_labels > 0:
        rows = np.flatnonzero(np.count_nonzero(predicted, axis=1) < min_labels)
        if rows.size:
            # Passing labels rank first, so they are kept and the rest fill up to min_labels.
            ranked = np.where(predicted[rows], np.inf, probs[rows])
            predicted[rows] = _top_k_mask(ranked, min_labels)
    return predicted


def score(
    probs, targets, thresholds, objective: Objective, min_labels: int = 0, max_labels: int | None = None
) -> float:
    """The objective's score of `apply_thresholds(probs, thresholds, min_labels, max_labels)`."""
    probs, targets = _inputs(probs, targets)
    predicted = apply_thresholds(probs, thresholds, min_labels, max_labels)
    return objective.score(targets, predicted)


def score_curve(probs, targets, objective: Objective, thresholds) -> np.ndarray:
    """The objective's score with every class at each of `thresholds` (ascending), in one pass over the matrix.

    Equal to `score` at each threshold; one call replaces len(thresholds) calls (at 20,000 x 1,103,
    99 thresholds take well under a second instead of half a minute).
    """
    probs, targets = _inputs(probs, targets)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
        raise PipelineError("thresholds must be a non-empty ascending list of distinct values")
    return _global_curve(probs, targets, objective, thresholds)


def best_global_threshold(probs, targets, objective: Objective) -> tuple[float, float]:
    """The single threshold for all classes that scores best, and its score.

    Candidates: a grid of step 0.005 over (0, 1), 1.0 (nothing on), and the 5%..95% quantiles of
    the probabilities given to true labels (which covers models whose probabilities are all small).
    Every candidate is scored exactly, in one pass over the matrix; ties go to the highest threshold.
    """
    probs, targets = _inputs(probs, targets)
    candidates = _global_candidates(probs, targets)
    curve = _global_curve(probs, targets, objective, candidates)
    best = curve.max()
    index = int(np.flatnonzero(curve >= best - _TOLERANCE)[-1])
    threshold = float(candidates[index])
    return threshold, objective.score(targets, probs > threshold)


def relative_thresholds(probs, targets, objective: Objective, ratios=RELATIVE_RATIOS) -> RelativeThresholds:
    """The best (global threshold, ratio) pair of the per-image rule RelativeThresholds on these rows: for each ratio
    the labels near the top are on whatever the threshold, so one pass over the global candidates scores them all."""
    probs, targets = _inputs(probs, targets)
    candidates = _global_candidates(probs, targets)
    candidates = candidates[candidates < 1.0]  # a raised label (1.0) must pass every candidate
    best = (-np.inf, 1.0, float(ratios[0]))
    top = probs.max(axis=1, keepdims=True)
    for ratio in ratios:
        near_top = probs > ratio * top
        raised = np.where(near_top, np.float32(1.0), probs)
        curve = _global_curve(raised, targets, objective, candidates)
        index = int(np.flatnonzero(curve >= curve.max() - _TOLERANCE)[-1])
        if curve[index] > best[0] + _TOLERANCE:
            best = (float(curve[index]), float(candidates[index]), float(ratio))
    return RelativeThresholds(np.full(probs.shape[1], best[1], dtype=np.float64), best[2])


def exact_thresholds(
    probs, targets, objective: Objective, init=None, max_rounds: int = 10, progress: bool = False
) -> np.ndarray:
    """Per-class thresholds (float64 [c]) maximising the objective on these rows.

    Objectives that do not couple classes: the exact optimum of each column (`init` and
    `max_rounds` are not used). Objectives that do (`couples_classes`): coordinate ascent from
    `init` (default: the best global threshold for every class). Each step moves one class's
    threshold to its best cut given all the others, so the score never decreases; rounds over all
    classes repeat until a round improves no class by more than 1e-12 or `max_rounds` rounds have
    run. Among tied cuts the one predicting fewer labels wins.
    """
    probs, targets = _inputs(probs, targets)
    if not objective.couples_classes:
        return _separable_optimum(probs, targets, objective)
    if init is None:
        init = best_global_threshold(probs, targets, objective)[0]
    thresholds, _ = _coordinate_ascent(probs, targets, objective, init, max_rounds, progress)
    return thresholds


def optuna_thresholds(
    probs,
    targets,
    objective: Objective,
    n_trials: int,
    storage: str | None = None,
    study_name: str = "thresholds",
    seed: int = 0,
    init=None,
    progress: bool = False,
) -> tuple[np.ndarray, optuna.Study]:
    """Per-class thresholds from an Optuna TPE study, and the study.

    One float parameter `t_<c>` per class in [OPTUNA_LOW, OPTUNA_HIGH]. A new study's first trial is
    `init` (default: the best global threshold; clipped to that range). `storage` is an Optuna URL
    (`sqlite:///path/optuna.db`, a PostgreSQL URL) or None for memory; a study found there under
    `study_name` is resumed and only `n_trials` minus its completed trials are run, provided it was tuned on
    these very probabilities, targets and objective (their sha256 is kept in the study): a study of other data
    (a retrained model's new OOF) is deleted and started again, since its best trial belongs to that data. The
    sampler is seeded with `seed` on every call, so a resumed study is reproducible but not identical to an
    uninterrupted one. Returns the thresholds of the best trial.
    """
    import optuna  # only here: importing it takes about a second

    probs, targets = _inputs(probs, targets)
    if n_trials < 1:
        raise PipelineError(f"n_trials is {n_trials}; ask for at least one trial")
    names = [f"t_{index}" for index in range(probs.shape[1])]
    if init is None:
        init = best_global_threshold(probs, targets, objective)[0]
    init = np.clip(_threshold_vector(init, probs.shape[1]), OPTUNA_LOW, OPTUNA_HIGH)

    def trial_score(trial) -> float:
        thresholds = np.array([trial.suggest_float(name, OPTUNA_LOW, OPTUNA_HIGH) for name in names])
        return objective.score(targets, probs > thresholds)

    with _quiet_optuna():
        study = _study_of(probs, targets, objective, storage, study_name, seed)
        _check_study(study, names, study_name)
        if not study.trials:
            study.enqueue_trial(dict(zip(names, init.tolist())))
        completed = sum(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
        if n_trials > completed:
            study.optimize(trial_score, n_trials=n_trials - completed, show_progress_bar=progress)
    best_params = study.best_trial.params
    return np.array([best_params[name] for name in names], dtype=np.float64), study


def shrink_toward_global(class_thresholds, global_threshold: float, positives_per_class, strength: float) -> np.ndarray:
    """Pull each class's threshold toward the global one, the more the rarer the class.

    t_c' = (n_c * t_c + strength * g) / (n_c + strength), where n_c is the class's number of
    positive images and g the global threshold: a class with `strength` positives lands halfway,
    a class with none lands on g. strength=0 returns the class thresholds unchanged.
    """
    class_thresholds = np.asarray(class_thresholds, dtype=np.float64)
    positives = np.asarray(positives_per_class, dtype=np.float64)
    if class_thresholds.ndim != 1 or positives.shape != class_thresholds.shape:
        raise PipelineError(
            f"positives_per_class has shape {positives.shape} but class_thresholds has "
            f"{class_thresholds.shape}; pass one count per class"
        )
    if np.any(positives < 0):
        raise PipelineError("positives_per_class holds negative counts; pass counts of positive images")
    if not np.isfinite(strength) or strength < 0:
        raise PipelineError(f"shrink strength is {strength}; pass a number >= 0 (0 disables shrinking)")
    if strength == 0:
        return class_thresholds.copy()
    return (positives * class_thresholds + strength * global_threshold) / (positives + strength)


def nested_score(
    probs, targets, objective: Objective, tune: Callable, n_splits: int = 5, seed: int = 0, groups=()
) -> dict:
    """How much threshold tuning flatters the score: `optimistic` against `honest`.

    `tune(probs, targets) -> thresholds` is any tuner. optimistic: thresholds tuned on all rows,
    scored on all rows. honest: rows split by a shuffled, seeded KFold; thresholds tuned on the
    other parts predict each held-out part; the joined held-out predictions are scored on all rows.
    `per_split` holds each held-out part's own score. `groups`: label-count limits applied after the thresholds.
    """
    # sklearn.model_selection and optuna take seconds to import; only their callers pay for it.
    from sklearn.model_selection import KFold

    probs, targets = _inputs(probs, targets)
    if not 2 <= n_splits <= probs.shape[0]:
        raise PipelineError(f"n_splits is {n_splits}; pass 2..{probs.shape[0]} (the number of rows)")
    optimistic = objective.score(targets, apply_thresholds(probs, tune(probs, targets), groups=groups))
    held_out = np.zeros_like(targets)
    per_split = []
    for tune_rows, held_rows in KFold(n_splits, shuffle=True, random_state=seed).split(probs):
        thresholds = tune(probs[tune_rows], targets[tune_rows])
        held_out[held_rows] = apply_thresholds(probs[held_rows], thresholds, groups=groups)
        per_split.append(objective.score(targets[held_rows], held_out[held_rows]))
    honest = objective.score(targets, held_out)
    return {"optimistic": optimistic, "honest": honest, "per_split": per_split}


def best_label_count_rule(
    probs, targets, objective: Objective, threshold: float, max_min: int = 3, max_max: int = 10
) -> tuple[int, int | None, float]:
    """The best (min_labels, max_labels) for one global threshold, and its score.

    Tries min_labels 0..max_min with max_labels None (no cap) or min_labels..max_max (at least 1).
    Ties keep the earlier rule in that order, so (0, None) wins unless a limit truly helps.
    """
    probs, targets = _inputs(probs, targets)
    n_classes = probs.shape[1]
    if np.ndim(threshold) != 0:
        raise PipelineError("best_label_count_rule takes one global threshold; pass a float")
    if max_min < 0 or max_max < 1:
        raise PipelineError(f"max_min={max_min}, max_max={max_max}; pass max_min >= 0 and max_max >= 1")
    depth = min(max(max_min, max_max), n_classes)
    ranked = _ranked_top(probs, depth)
    passing = probs > threshold
    counts = np.count_nonzero(passing, axis=1)
    by_image = objective.couples_classes
    if by_image:
        # Per-image counts suffice: how many true labels are among each row's top k, for k <= depth.
        true_in_top = np.zeros((probs.shape[0], depth + 1), dtype=np.int64)
        np.cumsum(np.take_along_axis(targets, ranked, axis=1), axis=1, out=true_in_top[:, 1:])
        passing_tp = np.count_nonzero(passing & targets, axis=1)
        positives = np.count_nonzero(targets, axis=1)
    best = (0, None, -np.inf)
    for min_labels in range(min(max_min, n_classes) + 1):
        for max_labels in [None, *range(max(min_labels, 1), min(max_max, n_classes) + 1)]:
            # With one threshold the passing labels are a row's top ones, so a limit only
            # changes how many of the ranked top labels are on.
            keep = np.clip(counts, min_labels, n_classes if max_labels is None else max_labels)
            changed = np.flatnonzero(keep != counts)
            if by_image:
                tp = passing_tp.copy()
                tp[changed] = true_in_top[changed, keep[changed]]
                value = float(objective.mean_score(tp, keep - tp, positives - tp, n_classes - keep - positives + tp))
            else:
                predicted = passing.copy()
                predicted[changed] = False
                rows, ranks = np.nonzero(np.arange(depth) < keep[changed, None])
                predicted[changed[rows], ranked[changed[rows], ranks]] = True
                value = objective.score(targets, predicted)
            if value > best[2] + _TOLERANCE:
                best = (min_labels, max_labels, value)
    return best


def _inputs(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    probs = _prob_matrix(probs)
    targets = metrics.as_label_matrix(targets, "targets")
    if targets.shape != probs.shape:
        raise PipelineError(
            f"targets has shape {targets.shape} but probs has {probs.shape}; "
            "pass out-of-fold probabilities and targets for the same images and classes"
        )
    return probs, targets


def _prob_matrix(probs) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise PipelineError(f"probs has {probs.ndim} dimensions; pass an n_images x n_classes matrix")
    if not np.issubdtype(probs.dtype, np.floating):
        raise PipelineError(f"probs has dtype {probs.dtype}; pass float probabilities")
    if probs.dtype != np.float64:
        # float16 -> float32 is exact; float32 stays as it is.
        probs = probs.astype(np.float32, copy=False)
    if not np.all((probs >= 0) & (probs <= 1)):
        raise PipelineError("probs holds values outside [0, 1] or NaN; pass probabilities, not logits")
    return probs


def _threshold_vector(thresholds, n_classes: int) -> np.ndarray:
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim == 0:
        thresholds = np.full(n_classes, float(thresholds))
    if thresholds.shape != (n_classes,):
        raise PipelineError(
            f"thresholds has shape {thresholds.shape} but there are {n_classes} classes; "
            "pass one threshold or one per class"
        )
    if not np.all(np.isfinite(thresholds)):
        raise PipelineError("thresholds holds NaN or infinity; pass finite thresholds")
    return thresholds


def _check_label_limits(min_labels: int, max_labels: int | None, n_classes: int) -> None:
    if not 0 <= min_labels <= n_classes:
        raise PipelineError(f"min_labels is {min_labels}; pass 0..{n_classes} (the number of classes)")
    if max_labels is not None and not max(min_labels, 1) <= max_labels:
        raise PipelineError(
            f"max_labels is {max_labels} with min_labels {min_labels}; pass max_labels >= min_labels and >= 1"
        )


def _top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of each row's k largest values; among equal values the lower column index wins."""
    if k == 0:
        return np.zeros(values.shape, dtype=bool)
    kth = -np.partition(-values, k - 1, axis=1)[:, k - 1 : k]
    above = values > kth
    equal = values == kth
    room = k - np.count_nonzero(above, axis=1, keepdims=True)
    return above | (equal & (np.cumsum(equal, axis=1) <= room))


def _ranked_top(probs: np.ndarray, depth: int) -> np.ndarray:
    """n x depth column indices of each row's highest probabilities, best first (ties: lower index)."""
    top = np.nonzero(_top_k_mask(probs, depth))[1].reshape(probs.shape[0], depth)
    order = np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _global_candidates(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    grid = np.arange(1, 200) / 200
    positive_probs = probs[targets]
    # Cuts below the 5% quantile of true labels' probabilities would flood images with labels.
    quantiles = np.quantile(positive_probs, np.arange(5, 96) / 100) if positive_probs.size else []
    return np.unique(np.concatenate([grid, quantiles, [1.0]]))


def _global_curve(probs: np.ndarray, targets: np.ndarray, objective: Objective, candidates: np.ndarray) -> np.ndarray:
    """The objective's score at every candidate threshold (sorted ascending), from histograms.

    An entry is on at candidate j exactly when j < (number of candidates below its probability),
    so per-group counts of entries by that bin, summed from the top, give tp and predicted counts.
    """
    n_rows, n_classes = probs.shape
    n_bins = candidates.size + 1
    by_image = objective.couples_classes
    if by_image:
        curve = np.zeros(candidates.size)
    else:
        column_tp = np.zeros((n_classes, candidates.size))
        column_on = np.zeros((n_classes, candidates.size))
    for start in range(0, n_rows, _ROW_BLOCK):
        block_probs = probs[start : start + _ROW_BLOCK]
        block_targets = targets[start : start + _ROW_BLOCK]
        # Entries at or below the lowest candidate are off for every candidate.
        rows, cols = np.nonzero(block_probs > candidates[0])
        bins = np.searchsorted(candidates, block_probs[rows, cols], side="left")
        is_true = block_targets[rows, cols]
        if by_image:
            tp, on = _counts_above(rows, bins, is_true, block_probs.shape[0], n_bins)
            positives = np.count_nonzero(block_targets, axis=1)[:, None]
            image_scores = objective.group_scores(tp, on - tp, positives - tp, n_classes - on - positives + tp)
            curve += image_scores.sum(axis=0)
        else:
            tp, on = _counts_above(cols, bins, is_true, n_classes, n_bins)
            column_tp += tp
            column_on += on
    if by_image:
        return curve / n_rows
    positives = np.count_nonzero(targets, axis=0)[:, None]
    column_fp = column_on - column_tp
    return objective.mean_score(column_tp, column_fp, positives - column_tp, (n_rows - positives) - column_fp)


def _counts_above(groups, bins, is_true, n_groups: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group and candidate j: how many entries (tp: true entries) have bin > j; [g, n_bins - 1]."""
    keys = groups * n_bins + bins
    on = np.bincount(keys, minlength=n_groups * n_bins).reshape(n_groups, n_bins)
    tp = np.bincount(keys[is_true], minlength=n_groups * n_bins).reshape(n_groups, n_bins)
    # Sum from the top bin down, then shift: bin b counts for candidates 0..b-1.
    on = np.cumsum(on[:, ::-1], axis=1)[:, ::-1][:, 1:]
    tp = np.cumsum(tp[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return tp, on


@dataclass
class _Column:
    """One class's entries that can matter, sorted by descending probability.

    Below the lowest-scoring positive only negatives remain, and turning a negative on never raises
    any objective, so the best cut always lies within `order` (or cuts nothing at all).
    """

    order: np.ndarray  # row indices, highest probability first
    is_true: np.ndarray  # targets at those rows
    values: np.ndarray  # probabilities at those rows
    top: float  # the column's highest probability
    below: float | None  # the highest probability after `values`, None if there is none
    allowed: np.ndarray  # [len + 1]: may the cut fall after k entries (not inside equal values)?

    def cut(self, k: int) -> float:
        """Threshold turning exactly the first k entries on."""
        if k == 0:
            return max(1.0, self.top)
        if k < self.values.size:
            return (float(self.values[k - 1]) + float(self.values[k])) / 2
        if self.below is not None:
            return (float(self.values[k - 1]) + self.below) / 2
        return min(0.0, float(np.nextafter(float(self.values[k - 1]), -np.inf)))


def _sorted_columns(probs_by_class: np.ndarray, targets_by_class: np.ndarray) -> list[_Column]:
    """One `_Column` per class from c x n (class-major) probabilities and targets."""
    columns = []
    for probs_column, targets_column in zip(probs_by_class, targets_by_class):
        top = float(probs_column.max())
        if targets_column.any():
            lowest_true = probs_column[targets_column].min()
            order = np.flatnonzero(probs_column >= lowest_true)
            order = order[np.argsort(-probs_column[order])]
            rest = probs_column < lowest_true
            below = float(probs_column[rest].max()) if rest.any() else None
        else:
            order, below = np.empty(0, dtype=np.intp), None
        values = probs_column[order]
        allowed = np.ones(order.size + 1, dtype=bool)
        allowed[1:-1] = values[:-1] != values[1:]
        columns.append(_Column(order, targets_column[order], values, top, below, allowed))
    return columns


def _first_best(scores: np.ndarray, allowed: np.ndarray, tolerance: float) -> tuple[int, float]:
    """Index of the first allowed score within `tolerance` of the best allowed one, and that best."""
    scores = np.where(allowed, scores, -np.inf)
    best = float(scores.max())
    return int(np.argmax(scores >= best - tolerance)), best


def _separable_optimum(probs: np.ndarray, targets: np.ndarray, objective: Objective) -> np.ndarray:
    n_rows = targets.shape[0]
    positives = np.count_nonzero(targets, axis=0)
    columns = _sorted_columns(np.ascontiguousarray(probs.T), np.ascontiguousarray(targets.T))
    thresholds = np.empty(len(columns))
    for index, column in enumerate(columns):
        tp = np.concatenate([[0], np.cumsum(column.is_true)])
        fp = np.arange(tp.size) - tp
        column_scores = objective.group_scores(tp, fp, positives[index] - tp, n_rows - positives[index] - fp)
        k, _ = _first_best(column_scores, column.allowed, _TOLERANCE)
        thresholds[index] = column.cut(k)
    return thresholds


def _coordinate_ascent(
    probs: np.ndarray, targets: np.ndarray, objective: PerImageObjective, init, max_rounds: int, progress: bool
) -> tuple[np.ndarray, list[float]]:
    """Coordinate ascent of a per-image objective; returns the thresholds and the score after each round.

    Per image it keeps tp and the objective's running total s (for F-beta: predicted + beta^2 *
    positives, so F = (1 + beta^2) tp / s), which grows by one with each label turned on. A class's
    candidate cuts are scored at once: for every row of its sorted column the score change of
    turning it on, summed cumulatively down the column.
    """
    n_rows, n_classes = probs.shape
    if max_rounds < 0:
        raise PipelineError(f"max_rounds is {max_rounds}; pass a number >= 0")
    thresholds = _threshold_vector(init, n_classes).copy()
    predicted = probs > thresholds
    tp = np.count_nonzero(predicted & targets, axis=1).astype(np.float64)
    running = objective.running_start(np.count_nonzero(predicted, axis=1), np.count_nonzero(targets, axis=1))
    del predicted

    def gains(tp_rows, running_rows, is_true):
        # Score change of each row when this class turns on for it (one more tp, or one more fp).
        after = objective.running_scores(tp_rows + is_true, running_rows + 1)
        return after - objective.running_scores(tp_rows, running_rows)

    total = float(objective.running_scores(tp, running).sum())
    round_scores = [total / n_rows]
    tolerance = _TOLERANCE * n_rows
    probs_by_class = np.ascontiguousarray(probs.T)
    targets_by_class = np.ascontiguousarray(targets.T)
    columns = _sorted_columns(probs_by_class, targets_by_class)
    for round_index in range(max_rounds):
        improved = False
        for index in tqdm(
            range(n_classes), desc=f"thresholds round {round_index + 1}", disable=not progress, leave=False
        ):
            column = columns[index]
            on_rows = np.flatnonzero(probs_by_class[index] > thresholds[index])
            on_true = targets_by_class[index][on_rows]
            tp[on_rows] -= on_true
            running[on_rows] -= 1
            current = float(gains(tp[on_rows], running[on_rows], on_true).sum())
            cumulative = np.zeros(column.order.size + 1)
            if column.order.size:
                np.cumsum(gains(tp[column.order], running[column.order], column.is_true), out=cumulative[1:])
            k, best = _first_best(cumulative, column.allowed, tolerance)
            if best > current + tolerance:
                thresholds[index] = column.cut(k)
                on_rows, on_true = column.order[:k], column.is_true[:k]
                total += float(cumulative[k]) - current
                improved = True
            tp[on_rows] += on_true
            running[on_rows] += 1
        round_scores.append(total / n_rows)
        if not improved:
            break
    return thresholds, round_scores


def _study_of(probs: np.ndarray, targets: np.ndarray, objective: Objective, storage, study_name: str, seed: int):
    """The study `study_name` in `storage` for exactly this data (resumed), or a new one (another data's is deleted)."""
    import optuna

    digest = hashlib.sha256(f"{probs.shape} {probs.dtype} {targets.dtype} {objective.label}".encode())
    digest.update(np.ascontiguousarray(probs).tobytes())
    digest.update(np.ascontiguousarray(targets).tobytes())
    fingerprint = digest.hexdigest()

    def create():
        sampler = optuna.samplers.TPESampler(seed=seed)
        return optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", sampler=sampler, load_if_exists=True
        )

    study = create()
    if study.trials and study.user_attrs.get(DATA_SHA256) != fingerprint:
        optuna.delete_study(study_name=study_name, storage=storage)
        study = create()
    study.set_user_attr(DATA_SHA256, fingerprint)
    return study


def _check_study(study, names: list[str], study_name: str) -> None:
    import optuna

    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise PipelineError(f"Optuna study {study_name!r} minimises; pick another study_name")
    for trial in study.trials:
        if trial.params and set(trial.params) != set(names):
            raise PipelineError(
                f"Optuna study {study_name!r} was made for {len(trial.params)} classes, not {len(names)}; "
                "pick another study_name or storage"
            )


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
