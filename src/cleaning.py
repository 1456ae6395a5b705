"""OOF-driven data cleaning (iMet 1st place): leave out the training rows whose labels the previous stage's
out-of-fold predictions contradict most, i.e. the rows with the highest OOF loss.

Honest by construction: a row's OOF prediction comes from the fold model that never trained on it, and the rows a
run may drop are its own training rows only, ranked among themselves, so no run's validation rows (nor their OOF)
decide what it trains on. The rows left out are written beside the run (`dropped.csv`) for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.artifacts import OofPredictions
from src.errors import PipelineError

_EPS = 1e-6  # probabilities are float16 on disk: 0 and 1 occur


@dataclass(frozen=True)
class NoisyRows:
    """The training rows a run leaves out (positions in the training table) and their OOF loss."""

    rows: np.ndarray
    losses: np.ndarray
    threshold: float  # the OOF loss at and above which a training row was left out


def oof_losses(oof: OofPredictions, heads) -> np.ndarray:
    """Per OOF row the sum over heads of its loss: mean binary cross-entropy over a multi-label head's classes,
    cross-entropy of the true class for a single-label head (a row without a label there adds nothing)."""
    total = np.zeros(len(oof.ids), dtype=np.float64)
    for head in heads:
        probs = np.clip(oof.probs[head.name].astype(np.float64), _EPS, 1 - _EPS)
        targets = oof.targets[head.name]
        if head.thresholded:
            positive = targets.astype(bool)
            total += -np.where(positive, np.log(probs), np.log1p(-probs)).mean(axis=1)
        else:
            labels = np.asarray(targets, dtype=np.int64).reshape(-1)
            known = labels >= 0
            picked = probs[np.arange(len(labels)), np.where(known, labels, 0)]
            total += np.where(known, -np.log(picked), 0.0)
    return total


def noisy_training_rows(
    oof: OofPredictions, oof_path: Path, heads, ids: list[str], train_rows: np.ndarray, quantile: float
) -> NoisyRows:
    """The `quantile` share of `train_rows` (positions in `ids`) with the highest OOF loss in `oof`, ranked among
    those rows only; every training row must have an OOF prediction (the same images as the earlier stage)."""
    if not 0.0 < quantile < 1.0:
        raise PipelineError(f"train.drop_noisy.quantile is {quantile}; pass a share of the rows in (0, 1)")
    train_rows = np.sort(np.asarray(train_rows, dtype=np.int64))
    position = {image_id: index for index, image_id in enumerate(oof.ids)}
    missing = [ids[row] for row in train_rows if ids[row] not in position]
    if missing:
        raise PipelineError(
            f"{oof_path}: no OOF prediction for {len(missing)} training image(s) (e.g. {missing[0]}); "
            "train.drop_noisy needs an earlier stage trained on the same images"
        )
    losses = oof_losses(oof, heads)[[position[ids[row]] for row in train_rows]]
    n_drop = int(np.floor(quantile * len(train_rows)))
    if n_drop == 0:
        return NoisyRows(np.zeros(0, dtype=np.int64), np.zeros(0), float("inf"))
    order = np.argsort(-losses, kind="stable")[:n_drop]  # the highest losses; ties keep the earlier row
    dropped = np.sort(train_rows[order])
    return NoisyRows(dropped, losses[np.searchsorted(train_rows, dropped)], float(losses[order].min()))


DROPPED_CSV = "dropped.csv"  # beside a run's epochs.csv: the training images it left out, with their OOF loss


def write_dropped(run_dir: Path, ids: list[str], noisy: NoisyRows) -> Path:
    """`run_dir/dropped.csv` (id, oof_loss), highest loss first, written atomically."""
    import pandas as pd

    from src.atomic import atomic_path

    order = np.argsort(-noisy.losses, kind="stable")
    table = pd.DataFrame({"id": [ids[row] for row in noisy.rows[order]], "oof_loss": noisy.losses[order]})
    path = Path(run_dir) / DROPPED_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    return path
