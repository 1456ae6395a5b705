"""Short sentences that say what the report's numbers say, written from the same arrays and records as its tables.

Each function returns a list of sentences (empty when the data it needs is missing), so a section says
nothing rather than something made up: best and worst classes and by how much, the gap between the
optimistic and the honest threshold figures, whether validation loss rose while training loss fell, the
largest confusions of a single-label head, and the resources used. `read_notes` turns the student's own
Markdown discussion (`report.notes`) into headings and paragraphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.errors import PipelineError
from src.report.inputs import RunRecord
from src.report.text import duration_text, finite

# A validation loss this much above its minimum (relative) by the last epoch counts as risen.
RISE_TOLERANCE = 0.02
# Confusions named in the confusion-matrix sentence.
N_CONFUSIONS = 3


def spread_sentences(rows: list[dict], name_key: str, score_key: str, what: tuple[str, str]) -> list[str]:
    """Best and worst of per-class `rows` by `score_key` (classes without support left out) and the gap between them;
    `what` names one row and several ("class", "classes")."""
    scored = [row for row in rows if finite(row.get(score_key)) and row.get("support", 1) != 0]
    if len(scored) < 2:
        return []
    ordered = sorted(scored, key=lambda row: float(row[score_key]))
    worst, best = ordered[0], ordered[-1]
    gap = float(best[score_key]) - float(worst[score_key])
    sentence = (
        f"The best {what[0]} is {best[name_key]} ({score_key} {float(best[score_key]):.3f}) and the worst "
        f"{worst[name_key]} ({float(worst[score_key]):.3f}), {gap:.3f} apart"
    )
    values = np.asarray([float(row[score_key]) for row in scored])
    below = int((values < values.mean()).sum())
    return [f"{sentence}; {below} of {len(scored)} {what[1]} are below the mean of {values.mean():.3f}."]


def threshold_sentences(honest_rows: list[dict], chosen_method: str | None, label: str) -> list[str]:
    """The chosen method's optimistic and honest (nested) figures and the gap between them, and what tuning bought
    over 0.5 (rows as thresholds.json's honest table: method, optimistic, honest)."""
    chosen = next((row for row in honest_rows if row.get("method") == chosen_method), None)
    if chosen is None or not finite(chosen.get("optimistic")):
        return []
    optimistic = float(chosen["optimistic"])
    sentences = []
    if finite(chosen.get("honest")):
        honest = float(chosen["honest"])
        sentences.append(
            f"Per-class thresholds by `{chosen_method}` reach {label} {optimistic:.4f} when tuned and scored on the "
            f"same OOF rows, and {honest:.4f} when each part is scored with thresholds tuned on the others: the "
            f"optimistic figure overstates by {optimistic - honest:+.4f}."
        )
    at_half = next((row for row in honest_rows if str(row.get("method", "")).startswith("0.5")), None)
    if at_half is not None and finite(at_half.get("optimistic")):
        reference = float(chosen["honest"]) if finite(chosen.get("honest")) else optimistic
        sentences.append(
            f"Against one threshold of 0.5 ({float(at_half['optimistic']):.4f}) tuning gains {reference - float(at_half['optimistic']):+.4f}"
            + (" on the honest figure." if finite(chosen.get("honest")) else " (optimistic).")
        )
    return sentences


def fold_sentences(score_rows: list[dict], column: str, metric: str) -> list[str]:
    """How far apart the folds' scores are under the decision rules `column` (rows as scores.fold_score_rows)."""
    folds = [row for row in score_rows if str(row.get("rows", "")).startswith("fold") and finite(row.get(column))]
    if len(folds) < 2:
        return []
    low = min(folds, key=lambda row: float(row[column]))
    high = max(folds, key=lambda row: float(row[column]))
    spread = float(high[column]) - float(low[column])
    return [
        f"Over the folds, {metric} ({column}) ranges from {float(low[column]):.4f} ({low['rows']}) to "
        f"{float(high[column]):.4f} ({high['rows']}), {spread:.4f} apart: differences between models smaller than "
        "that are within the noise of the split."
    ]


def overfitting_sentences(runs: list[RunRecord]) -> list[str]:
    """Per run with a validation loss: whether it rose after its lowest epoch while the training loss kept falling."""
    risen, steady = [], []
    for run in runs:
        epochs = run.epochs
        if epochs is None or "valid_loss" not in epochs or "train_loss" not in epochs or len(epochs) < 3:
            continue
        valid, train = epochs["valid_loss"].to_numpy(float), epochs["train_loss"].to_numpy(float)
        if not (np.isfinite(valid).all() and np.isfinite(train).all()):
            continue
        lowest = int(np.argmin(valid))
        rose = valid[-1] > valid[lowest] * (1 + RISE_TOLERANCE) and lowest < len(valid) - 1
        if rose and train[-1] < train[lowest]:
            risen.append(
                f"{run.name}: lowest at epoch {int(epochs['epoch'].iloc[lowest])} ({valid[lowest]:.4f}), "
                f"{valid[-1]:.4f} by epoch {int(epochs['epoch'].iloc[-1])} while training loss fell from "
                f"{train[lowest]:.4f} to {train[-1]:.4f}"
            )
        else:
            steady.append(run.name)
    sentences = []
    if risen:
        sentences.append(
            "Validation loss rose while training loss fell, a sign of overfitting after its lowest epoch, in "
            + "; ".join(risen)
            + "."
        )
    if steady:
        sentences.append(
            f"Validation loss did not rise while training loss fell in {', '.join(steady)}"
            + (" (no sign of overfitting there)." if risen else ": no sign of overfitting.")
        )
    return sentences


def freezing_sentences(runs: list[RunRecord], metric: str) -> list[str]:
    """Per run whose backbone was partly frozen (epochs.csv's `trainable` not 'all'): what it scored at the end of
    the frozen epochs and what training everything brought after them, best held-out score and epoch."""
    parts = []
    for run in runs:
        epochs = run.epochs
        if epochs is None or "trainable" not in epochs or "score" not in epochs:
            continue
        frozen = (epochs["trainable"].astype(str) != "all").to_numpy()
        if not frozen.any() or frozen.all() or not frozen[0]:
            continue
        last_frozen = int(np.flatnonzero(frozen)[-1])
        scores = epochs["score"].to_numpy(float)
        after = last_frozen + 1 + int(np.nanargmax(scores[last_frozen + 1 :]))
        parts.append(
            f"{run.name}: {scores[last_frozen]:.4f} after {last_frozen + 1} epoch(s) training "
            f"{epochs['trainable'].iloc[last_frozen]} only, {scores[after]:.4f} at epoch {int(epochs['epoch'].iloc[after])} "
            f"with everything training ({scores[after] - scores[last_frozen]:+.4f})"
        )
    if not parts:
        return []
    return [f"The freezing schedule, held-out {metric}: " + "; ".join(parts) + "."]


def confusion_sentences(matrix: np.ndarray, class_names: tuple[str, ...] | list[str]) -> list[str]:
    """The largest off-diagonal cells of a confusion matrix (rows true, columns predicted) with their share of the
    true class."""
    matrix = np.asarray(matrix)
    if matrix.size == 0 or matrix.sum() == 0:
        return []
    off = matrix.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    if off.sum() == 0:
        return [f"Every one of the {int(matrix.sum())} OOF images is predicted as its true class."]
    order = np.argsort(-off, axis=None, kind="stable")[:N_CONFUSIONS]
    parts = []
    for flat in order:
        true, pred = divmod(int(flat), off.shape[1])
        if off[true, pred] == 0:
            break
        share = off[true, pred] / max(int(matrix[true].sum()), 1)
        parts.append(f"{class_names[true]} taken for {class_names[pred]} ({off[true, pred]} images, {share:.0%})")
    errors = int(off.sum())
    return [
        f"{errors} of {int(matrix.sum())} OOF images are confused; the largest confusions: " + "; ".join(parts) + "."
    ]


def resource_sentences(runs: list[RunRecord]) -> list[str]:
    """Training time over all runs, the devices they ran on and the largest peak memory."""
    seconds = [float(run.summary["train_seconds"]) for run in runs if finite(run.summary.get("train_seconds"))]
    if not seconds:
        return []
    devices = sorted({str(run.summary["device"]) for run in runs if run.summary.get("device")})
    memory = [float(run.summary["peak_memory_mb"]) for run in runs if finite(run.summary.get("peak_memory_mb"))]
    sentence = f"Training took {duration_text(sum(seconds))} over {len(seconds)} run{'s' if len(seconds) != 1 else ''}"
    if devices:
        sentence += f" on {', '.join(devices)}"
    if memory:
        sentence += f", with a peak memory of {max(memory):,.0f} MB"
    return [sentence + "."]


def read_notes(path: Path) -> list[tuple[str, str]]:
    """The student's Markdown discussion as (kind, text) blocks: 'h3' for a '#' heading, 'p' for a paragraph (lines
    joined; a '- ' item is a paragraph of its own). A missing or unreadable file is one config line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc.__class__.__name__})"
        raise PipelineError(
            f"config report.notes: {path} {reason}; point it at a UTF-8 Markdown file (relative to the config file) "
            "or set it to null"
        ) from None
    blocks: list[tuple[str, str]] = []
    paragraph: list[str] = []

    def close() -> None:
        if paragraph:
            blocks.append(("p", " ".join(paragraph)))
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            close()
        elif stripped.startswith("#"):
            close()
            blocks.append(("h3", stripped.lstrip("#").strip()))
        elif stripped[:2] in ("- ", "* "):
            close()
            paragraph.append("• " + stripped[2:].strip())
        else:
            paragraph.append(stripped)
    close()
    return [block for block in blocks if block[1]]


def resolve_notes(notes: str | None, config_path: Path) -> Path | None:
    """`report.notes` as a path: relative to the config file's folder where the file is there, else to the working
    directory; None when the config sets none."""
    if not notes:
        return None
    path = Path(notes).expanduser()
    if path.is_absolute():
        return path
    beside = Path(config_path).parent / path
    return beside if beside.exists() or not path.exists() else path


__all__ = [
    "confusion_sentences",
    "fold_sentences",
    "overfitting_sentences",
    "read_notes",
    "resolve_notes",
    "resource_sentences",
    "spread_sentences",
    "threshold_sentences",
]
