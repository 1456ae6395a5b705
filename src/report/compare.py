"""`report.compare`: this experiment beside others of the same output folder, from their saved artifacts only.

Each row names an experiment, what its saved training config sets differently from this run's (model, train,
augment and data keys; machine settings left out), its honest OOF score (the configured threshold method's nested
figure where thresholds were tuned, else the score at 0.5 / argmax, which tunes nothing) and its test score when the
demo's held-apart answers scored it; one sentence says what this run gains or loses against each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from src.artifacts import Layout, ScoreTable, read_run_config, read_test_scores
from src.config import training_settings
from src.errors import PipelineError


def comparison_rows(
    output_dir: Path, this: str, others: list[str], metric: str, method: str | None, how_to_make: Callable[[str], str]
) -> list[dict]:
    """One row per experiment, `this` first: experiment, what differs from this run's config, honest OOF `metric`,
    test `metric`. An experiment without its OOF scores is one line naming `how_to_make(name)`."""
    mine = Layout(output_dir, this)
    base = _run_config(mine)
    rows = []
    for name in [this, *others]:
        layout = Layout(output_dir, name)
        oof = ScoreTable.read(layout.oof_scores_path)
        if oof is None:
            raise PipelineError(
                f"config report.compare: experiment '{name}' has no {layout.oof_scores_path}; make it with: "
                f"{how_to_make(name)}"
            )
        test = read_test_scores(layout.test_scores_path) or {}
        rows.append(
            {
                "experiment": name if name != this else f"{name} (this report)",
                "differs from this run": "-" if name == this else differences(base, _run_config(layout)),
                f"honest OOF {metric}": _honest(layout, oof, method),
                f"test {metric}": test.get(metric, "n/a"),
            }
        )
    return rows


def comparison_sentences(rows: list[dict], metric: str) -> list[str]:
    """What this run (the first row) gains over each other experiment, on the OOF rows and on the test set."""
    this, sentences = rows[0], []
    for other in rows[1:]:
        oof_key, test_key = f"honest OOF {metric}", f"test {metric}"
        gain = this[oof_key] - other[oof_key]
        text = (
            f"Against {other['experiment']} ({other['differs from this run']}), this run's honest OOF {metric} is "
            f"{this[oof_key]:.4f} vs {other[oof_key]:.4f} ({gain:+.4f})"
        )
        if isinstance(this[test_key], float) and isinstance(other[test_key], float):
            text += f"; on the test set {this[test_key]:.4f} vs {other[test_key]:.4f} ({this[test_key] - other[test_key]:+.4f})"
        sentences.append(text + ".")
    return sentences


def differences(base: dict, other: dict) -> str:
    """`key: this run's value -> the other's` for every training setting the other run saved differently."""
    mine, theirs = training_settings(base), training_settings(other)
    changed = [
        f"{key}: {_shown(mine.get(key))} -> {_shown(theirs.get(key))}"
        for key in sorted(set(mine) | set(theirs))
        if mine.get(key) != theirs.get(key)
    ]
    return "; ".join(changed) if changed else "nothing in the training config"


def _shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        names = [item.get("name", str(item)) if isinstance(item, dict) else str(item) for item in value]
        return "[" + ", ".join(names) + "]" if names else "none"
    return str(value)


def _run_config(layout: Layout) -> dict:
    """The saved config of the experiment's first run (its folds and full fit share it)."""
    runs = [path for _, path in layout.fold_run_dirs()] + [layout.run_dir(None)]
    return next((config for config in map(read_run_config, runs) if config), {})


def _honest(layout: Layout, oof: ScoreTable, method: str | None) -> float | str:
    """The nested score of `method` averaged over the thresholded heads, else the OOF score at 0.5 / argmax."""
    try:
        honest = json.loads(layout.thresholds_path.read_text()).get("honest", {}) if method else {}
    except (OSError, ValueError):
        honest = {}
    figures = [row.get("honest") for rows in honest.values() for row in rows if row.get("method") == method]
    if figures and all(isinstance(value, (int, float)) for value in figures):
        return sum(figures) / len(figures)
    value = oof.overall("at 0.5")
    return value if value is not None else "n/a"
