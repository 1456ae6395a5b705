"""The main metric per fold and overall, one column per set of decision rules (oof, thresholds, report)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fold_score_rows(
    fmt,
    fold_of_row: np.ndarray,
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    rules_by_name: dict[str, Any | None],
) -> list[dict]:
    """Rows {"rows": "fold K" | "overall", "images": n, <rules name>: main metric}; rules None = 0.5 / argmax."""
    rows = []
    folds = sorted(int(k) for k in np.unique(fold_of_row))
    parts = [(f"fold {k}", fold_of_row == k) for k in folds] + [("overall", np.ones(len(fold_of_row), bool))]
    for label, mask in parts:
        row: dict[str, Any] = {"rows": label, "images": int(mask.sum())}
        part_probs = {head: values[mask] for head, values in probs.items()}
        part_targets = {head: values[mask] for head, values in targets.items()}
        for name, rules in rules_by_name.items():
            row[name] = fmt.evaluate(part_targets, part_probs, rules)[fmt.main_metric]
        rows.append(row)
    return rows
