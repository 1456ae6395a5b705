"""Scoring weights on a run's held-out rows: the epoch's validation, and any callback that must score other
weights (checkpoint averaging)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from src.distributed import all_sum, gather_predictions
from src.faults import crash_point
from src.predict_loop import predict_probs

if TYPE_CHECKING:
    from src.engine.context import Run


def score_held_out(run: Run, model: nn.Module) -> tuple[float, dict[str, Any]]:
    """(score, {valid_loss, score, the format's metrics}) of `model` on the held-out rows, gathered across ranks."""
    crash_point("validation")
    valid = run.valid_data
    probs, valid_loss = predict_probs(
        model, valid.loader, run.heads, run.runtime, loss_fn=run.training.loss_fn, quiet=run.quiet, desc="validate"
    )
    probs = gather_predictions(run.distributed, valid.rank_rows, probs, len(valid.rows), valid.positions)
    loss_sum, seen = all_sum(run.distributed, (valid_loss or 0.0) * len(valid.rank_rows), len(valid.rank_rows))
    score, report = run.fmt.validation_score(valid.targets, probs)
    return score, {"valid_loss": loss_sum / max(seen, 1), "score": score, **report}
