"""The report's tables as pure functions over arrays and saved records (the tests compare them with src.metrics)."""

from __future__ import annotations

from typing import Any

import numpy as np

from src import metrics
from src import thresholds as th
from src.formats.base import CompetitionFormat, DecisionRules, HeadSpec
from src.report.inputs import RunRecord
from src.report.ranking import Ranking, ranking_scores
from src.report.text import NA, count_text, duration_text, megabytes_text, row_value

# Grid of global thresholds for the metric-vs-threshold curve.
THRESHOLD_GRID = np.round(np.linspace(0.01, 0.99, 99), 4)


def metric_rows(
    fmt: CompetitionFormat,
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    rules: dict[str, DecisionRules | None],
) -> list[dict]:
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


def per_class_rows(
    head: HeadSpec,
    probs: np.ndarray,
    targets: np.ndarray,
    labels: np.ndarray,
    class_thresholds: np.ndarray | None,
    ranking: Ranking | None = None,
) -> list[dict]:
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
        threshold: Any = (
            "argmax"
            if not head.thresholded
            else (float(class_thresholds[column]) if class_thresholds is not None else 0.5)
        )
        rows.append(
            {
                "class": name,
                "support": int(scores["support"][column]),
                "predicted": int(pred[:, column].sum()),
                "precision": float(scores["precision"][column]),
                "recall": float(scores["recall"][column]),
                f_name: float(scores["fscore"][column]),
                "AP": float(ranking.ap[column]),
                "AUC": float(ranking.auc[column]),
                "threshold": threshold,
            }
        )
    # Worst first: lowest F, and among equal F the class with the most positives (the costliest miss).
    rows.sort(key=lambda row: (row[f_name], -row["support"]))
    return rows


def attribute_accuracy_rows(
    head: HeadSpec, probs: np.ndarray, targets: np.ndarray, labels: np.ndarray, class_thresholds: np.ndarray | None
) -> list[dict]:
    """Per attribute (CelebA-style heads): share positive, accuracy at 0.5 and at the tuned thresholds."""
    true = np.asarray(targets).astype(bool)
    at_half = metrics.per_column_accuracy(true, np.asarray(probs) > 0.5)
    tuned = metrics.per_column_accuracy(true, np.asarray(labels, dtype=bool))
    rows = []
    for column, name in enumerate(head.class_names):
        rows.append(
            {
                "attribute": name,
                "positive share": float(true[:, column].mean()),
                "accuracy at 0.5": float(at_half[column]),
                "accuracy tuned": float(tuned[column]),
                "threshold": float(class_thresholds[column]) if class_thresholds is not None else 0.5,
            }
        )
    rows.append(
        {
            "attribute": "mean",
            "positive share": float(true.mean()),
            "accuracy at 0.5": float(at_half.mean()),
            "accuracy tuned": float(tuned.mean()),
            "threshold": float("nan"),
        }
    )
    return rows


def global_threshold_curve(
    probs: np.ndarray, targets: np.ndarray, head: HeadSpec, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
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
        best = _best_epoch_row(epochs, summary.get("best_epoch"))
        params = run.params or (summary.get("parameters"), summary.get("trainable_parameters"))
        batch = summary.get("batch_size", train_cfg.get("batch_size"))
        accumulate = train_cfg.get("accumulate_steps", 1)
        seconds = summary.get("train_seconds")
        if seconds is None and epochs is not None and "seconds" in epochs:
            seconds = float(epochs["seconds"].sum())
        epochs_run = summary.get("epochs_run", NA if epochs is None else len(epochs))
        train_images = summary.get("train_images", NA)
        row = {
            "run": run.name,
            "model": summary.get("model", config.get("model", {}).get("name", NA)),
            "params": count_text(params[0]),
            "trainable": count_text(params[1]),
            "batch": NA
            if batch is None
            else (f"{batch}x{accumulate}" if accumulate and accumulate > 1 else str(batch)),
            "image size": summary.get("image_size", config.get("data", {}).get("image_size", NA)),
            "device": summary.get("device", NA),
            "processes": summary.get("processes", NA),
            "peak memory": megabytes_text(summary.get("peak_memory_mb")),
            "epochs": epochs_run,
            "train time": NA if seconds is None else duration_text(float(seconds)),
            "images/s": f"{epochs['images_per_s'].mean():.0f}"
            if epochs is not None and "images_per_s" in epochs
            else NA,
            "train images": train_images,
            "valid images": summary.get("valid_images", NA) if run.fold is not None else 0,
            "augmented samples seen": (
                train_images * epochs_run if isinstance(train_images, int) and isinstance(epochs_run, int) else NA
            ),
            "train loss": row_value(best, "train_loss"),
            "valid loss": row_value(best, "valid_loss"),
            f"train {main_metric}": row_value(best, "train_score"),
            f"valid {main_metric}": row_value(best, "score"),
        }
        f1_columns = [c for c in (epochs.columns if epochs is not None else []) if c.endswith("_macro_f1@global")]
        for column in f1_columns:
            row[f"valid {column.removesuffix('@global').replace('_macro_f1', '')} macro-F1"] = row_value(best, column)
        rows.append(row)
    return rows


def _best_epoch_row(epochs, best_epoch):
    """The epochs.csv row of the best epoch (the last one when the run names none), or None without epochs."""
    if epochs is None or not len(epochs):
        return None
    matching = epochs[epochs["epoch"] == best_epoch] if best_epoch is not None else epochs.iloc[0:0]
    return (matching if len(matching) else epochs.tail(1)).iloc[0]


def per_class_mean(rows: list[dict]) -> dict:
    """The macro average of a per-class table's scores (NaN AP/AUC of classes without both kinds left out)."""
    mean = {
        "class": "mean (macro)",
        "support": sum(row["support"] for row in rows),
        "predicted": sum(row["predicted"] for row in rows),
    }
    for key in [key for key in rows[0] if key not in mean and key != "threshold"] if rows else []:
        values = np.asarray([row[key] for row in rows], dtype=float)
        mean[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return {**mean, "threshold": ""}


def losses_by_head(config: dict, heads: list[HeadSpec]) -> dict[str, str]:
    """Each head's loss as the saved config sets it (the losses src/losses.py builds)."""
    loss = config.get("train", {}).get("loss", {})
    name = loss.get("name", "bce")
    multilabel = {
        "bce": "binary cross-entropy",
        "focal": f"focal (gamma {loss.get('focal_gamma', 2.0):g})",
        "soft_fbeta": f"soft F-beta per image (beta {loss.get('fbeta_beta', 2.0):g})",
        "asl": f"asymmetric (gamma- {loss.get('asl_gamma_neg', 4.0):g}, gamma+ {loss.get('asl_gamma_pos', 0.0):g}, "
        f"clip {loss.get('asl_clip', 0.05):g})",
    }.get(name, name)
    smoothing = loss.get("label_smoothing", 0.0)
    softmax = "cross-entropy" + (f" (label smoothing {smoothing:g})" if smoothing else "")
    return {
        head.name: (multilabel if head.thresholded else softmax)
        + (f", weight {head.loss_weight:g}" if head.loss_weight != 1.0 else "")
        for head in heads
    }


def settings_rows(config: dict, heads: list[HeadSpec], devices: list[str] | None = None) -> list[dict]:
    """The losses and training tricks of a run, one row each, from its saved (resolved) config; `devices` (the runs'
    summary.json device names) says whether AMP and channels_last were in use at all."""
    model, train, augment = config.get("model", {}), config.get("train", {}), config.get("augment", {})
    predict, tuning = config.get("predict", {}), config.get("thresholds", {})
    rows = _model_rows(config, model, train, heads)
    rows += _training_rows(model, train, augment, predict)
    if devices and all(device.startswith("cpu") for device in devices):  # both apply on CUDA only
        rows = [
            (
                key,
                "off: trained on the CPU in float32 (both apply on CUDA only)"
                if key.startswith("mixed precision")
                else value,
            )
            for key, value in rows
        ]
    if any(head.thresholded for head in heads):
        rows.append(
            (
                "decision thresholds",
                f"{tuning.get('method', 'exact')} per class, shrunk toward the global one "
                f"(strength {tuning.get('shrink_strength', NA)})",
            )
        )
    return [{"setting": key, "value": value} for key, value in rows]


def _model_rows(config: dict, model: dict, train: dict, heads: list[HeadSpec]) -> list[tuple[str, str]]:
    """The backbone and its weights, each head's loss and (several heads) how the losses are weighted, as
    (setting, value) rows from the saved config and its model and train sections."""
    weights = (
        f"pretrained {model['pretrained']}"
        if model.get("pretrained")
        else f"local weights {model['weights']}"
        if model.get("weights")
        else "from scratch (random init)"
    )
    rows = [
        (
            "backbone",
            f"{model.get('name', NA)}, {weights}"
            + (" (the rules forbid pretrained weights)" if model.get("forbid_pretrained") else ""),
        )
    ]
    rows += [(f"loss [{name}]", text) for name, text in losses_by_head(config, heads).items()]
    if len(heads) > 1:
        weighting = train.get("loss", {}).get("head_weighting", "fixed")
        rows.append(
            (
                "head weighting",
                "learned uncertainty weights (Kendall et al. 2018)"
                if weighting == "uncertainty"
                else "fixed: sum of weight x loss",
            )
        )
    return rows


def _training_rows(model: dict, train: dict, augment: dict, predict: dict) -> list[tuple[str, str]]:
    """Optimizer, schedule, batch, tricks, augmentations and test-time augmentation as (setting, value) rows,
    from the config's model, train, augment and predict sections."""
    accumulate = train.get("accumulate_steps", 1)
    return [
        ("optimizer", f"AdamW, lr {train.get('lr', NA)}, weight decay {train.get('weight_decay', NA)}"),
        (
            "schedule",
            f"{train.get('warmup_epochs', 0):g} warm-up epochs, then cosine decay over "
            f"{train.get('epochs', NA)} epochs"
            + (
                f"; early stopping after {train['early_stopping_patience']} epochs without gain"
                if train.get("early_stopping_patience")
                else ""
            ),
        ),
        ("batch", f"{train.get('batch_size', NA)}" + (f" x {accumulate} accumulated steps" if accumulate > 1 else "")),
        ("head-only warm-up", _head_only_text(train)),
        ("EMA of weights", f"decay {_ema_decay(train)}" if _ema_decay(train) else "off"),
        ("dropout before the heads", f"{model.get('drop_rate', 0.0):g}"),
        (
            "mixed precision, channels_last",
            f"AMP {'on' if train.get('amp', True) else 'off'}, channels_last "
            f"{'on' if train.get('channels_last', True) else 'off'} (CUDA only)",
        ),
        ("train augmentations", _transforms_text(augment.get("train", []))),
        ("eval augmentations", _transforms_text(augment.get("eval", []))),
        ("training tricks (callbacks)", _transforms_text(train.get("callbacks", []))),
        ("test-time augmentation", "horizontal flip, mean of 2 views" if predict.get("tta_flip") else "none"),
    ]


def _head_only_text(train: dict) -> str:
    """The freeze callback's head-only epochs (a config saved before it took over: train.head_warmup_epochs)."""
    freeze = next((item for item in train.get("callbacks", []) if item.get("name") == "freeze"), None)
    if freeze is None:
        return f"{train.get('head_warmup_epochs') or 0} epochs"
    part = "backbone" if freeze.get("stages") is None else f"first {freeze['stages']} stages"
    return (
        f"{freeze.get('epochs', 1)} epochs ({part} frozen"
        + (", then re-warmed from lr 0" if freeze.get("rewarm") else "")
        + ")"
    )


def _ema_decay(train: dict):
    """train.ema_decay, or the decay of an ema callback in train.callbacks."""
    ema = next((item for item in train.get("callbacks", []) if item.get("name") == "ema"), None)
    return train.get("ema_decay") or (ema or {}).get("decay", 0.999 if ema else None)


def _transforms_text(items: list[dict]) -> str:
    """[{name: X, p: 0.5}, ...] as 'X(p=0.5), ...'; 'none' for an empty list."""
    parts = []
    for item in items or []:
        options = ", ".join(f"{key}={value}" for key, value in item.items() if key != "name")
        parts.append(f"{item.get('name', '?')}({options})")
    return ", ".join(parts) or "none"


def _spread(rows: np.ndarray, count: int) -> np.ndarray:
    if len(rows) <= count:
        return np.asarray(rows, dtype=np.int64)
    return np.asarray(rows)[np.linspace(0, len(rows) - 1, count).round().astype(int)].astype(np.int64)


def dropped_row(inputs, heads: list[HeadSpec], row: int, loss: float) -> dict:
    """One training row train.drop_noisy left out: its id, OOF loss, its labels and the OOF's top predictions."""
    found = {"id": inputs.ids[row], "OOF loss": float(loss)}
    for head in heads:
        prefix = f"{head.name} " if len(heads) > 1 else ""
        probs, target = inputs.probs[head.name][row], inputs.targets[head.name][row]
        if head.thresholded:
            labelled = [head.class_names[c] for c in np.flatnonzero(np.asarray(target).astype(bool))]
            top = [head.class_names[c] for c in np.argsort(-probs, kind="stable")[: max(1, len(labelled))]]
        else:
            labelled = [head.class_names[int(target)]] if int(target) >= 0 else []
            top = [head.class_names[int(np.argmax(probs))]]
        found[f"{prefix}labels"] = ", ".join(labelled) or "-"
        found[f"{prefix}OOF top"] = ", ".join(top)
    return found
