"""Figures from arrays and tables (each returns a matplotlib Figure on the Agg canvas; the report saves them)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from src.artifacts import HeadThresholds
from src.formats.base import HeadSpec
from src.report.inputs import RunRecord
from src.report.ranking import CURVE_GRID, Ranking, class_curves
from src.report.tables import target_matrix
from src.report.text import count_text, finite, short_text

# Classes drawn one by one in the PR/ROC figure (the worst by average precision).
N_WORST_CURVES = 4
# Images per row of the example grid (one row of right ones, one of wrong ones).
GRID_COLUMNS = 5
# A confusion matrix names its classes up to this many (at 8 pt they would overlap beyond).
MAX_NAMED_CLASSES = 40
# Figures are drawn at the size the PDF shows them: the frame's width (A4 less the margins), text at 8 pt and up.
FIGURE_WIDTH_IN = 7.1
FIGURE_FONT_PT = 8.0
# The network diagram's geometry in inches (its axes span the figure, one data unit = one inch).
CHAIN_BOX_IN, HEAD_BOX_IN, BOX_GAP_IN, ROW_GAP_IN = 1.05, 2.05, 0.3, 0.35
LINE_IN = FIGURE_FONT_PT * 1.25 / 72
BOX_PAD_IN = 0.07


def training_curves_figure(runs: list[RunRecord], main_metric: str) -> Figure | None:
    """Loss (train solid, valid dashed) and the metric per epoch (valid solid, train dotted when recorded), one colour
    per run; one legend below both plots (runs by colour, curves by line style)."""
    from matplotlib.lines import Line2D

    runs = [run for run in runs if run.epochs is not None and len(run.epochs)]
    if not runs:
        return None
    fig = Figure(figsize=(FIGURE_WIDTH_IN, 3.9), dpi=100)
    loss_ax, metric_ax = fig.subplots(1, 2)
    has_train_score = False
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        epochs = run.epochs
        plot = _epoch_plotter(epochs, color, "o" if len(epochs) <= 30 else None)
        plot(loss_ax, "train_loss")
        if "valid_loss" in epochs:
            plot(loss_ax, "valid_loss", "--")
        if "train_score" in epochs and epochs["train_score"].notna().any():
            plot(metric_ax, "train_score", ":")
            has_train_score = True
        if "score" in epochs and epochs["score"].notna().any():
            plot(metric_ax, "score")
            best = run.summary.get("best_epoch")
            if best in set(epochs["epoch"]):
                value = float(epochs.loc[epochs["epoch"] == best, "score"].iloc[0])
                metric_ax.scatter([best], [value], s=90, facecolors="none", edgecolors=color, linewidths=1.5)
    loss_ax.set_title("loss per epoch", fontsize=FIGURE_FONT_PT + 1)
    loss_ax.set(xlabel="epoch", ylabel="loss")
    metric_ax.set_title(f"{main_metric} per epoch (ring: best epoch)", fontsize=FIGURE_FONT_PT + 1)
    metric_ax.set(xlabel="epoch", ylabel=main_metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=FIGURE_FONT_PT)
        ax.xaxis.label.set_size(FIGURE_FONT_PT)
        ax.yaxis.label.set_size(FIGURE_FONT_PT)
    handles = [Line2D([], [], color=f"C{i % 10}", label=run.name) for i, run in enumerate(runs)]
    handles += [
        Line2D([], [], color="black", label="train loss, valid metric"),
        Line2D([], [], color="black", linestyle="--", label="valid loss"),
    ]
    if has_train_score:
        handles.append(Line2D([], [], color="black", linestyle=":", label="train metric (augmented batches)"))
    columns = min(len(handles), 4)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=FIGURE_FONT_PT, frameon=False)
    legend_in = math.ceil(len(handles) / columns) * LINE_IN * 1.4 + 0.1
    fig.tight_layout(rect=(0, legend_in / 3.9, 1, 1))
    return fig


def _epoch_plotter(epochs, color: str, marker: str | None):
    """plot(ax, column, linestyle="-"): one epochs.csv column against the epoch, in one run's colour."""

    def plot(ax, column: str, linestyle: str = "-") -> None:
        ax.plot(epochs["epoch"], epochs[column], color=color, marker=marker, markersize=4, linestyle=linestyle)

    return plot


def threshold_figure(
    head: HeadSpec,
    curve: np.ndarray,
    grid: np.ndarray,
    saved_head: HeadThresholds | None,
    honest_rows: list[dict] | None,
    chosen_method: str,
) -> Figure:
    """Left: the objective vs one global threshold. Right: optimistic vs honest (nested) score per method."""
    fig = Figure(figsize=(FIGURE_WIDTH_IN, 4.9), dpi=100)
    curve_ax, honest_ax = fig.subplots(1, 2)
    _draw_global_curve(curve_ax, head, curve, grid, saved_head)
    if honest_rows:
        _draw_chosen_scores(curve_ax, honest_rows, chosen_method)
    _finish_global_curve(curve_ax, head, curve)
    rows = [row for row in honest_rows or [] if finite(row.get("optimistic"))]
    if rows:
        _draw_honest_bars(honest_ax, head, rows)
    else:
        honest_ax.text(0.5, 0.5, "no tuned thresholds yet:\nrun the thresholds stage", ha="center", va="center")
        honest_ax.set_axis_off()
    for ax in (curve_ax, honest_ax):
        _compact(ax)
    fig.tight_layout()
    return fig


def _draw_global_curve(
    ax, head: HeadSpec, curve: np.ndarray, grid: np.ndarray, saved_head: HeadThresholds | None
) -> None:
    """Draws the objective over `grid` for one global threshold, with 0.5 and the saved best global marked."""
    ax.plot(grid, curve, color="C0", linewidth=2, label="one global threshold, every class")
    ax.axvline(0.5, color="grey", linestyle=":", label=f"0.5: {np.interp(0.5, grid, curve):.4f}")
    if saved_head is not None:
        best = float(saved_head.global_threshold)
        ax.axvline(
            best, color="C1", linestyle="--", label=f"best global {best:.3f}: {np.interp(best, grid, curve):.4f}"
        )


def _draw_chosen_scores(ax, honest_rows: list[dict], chosen_method: str) -> None:
    """Draws the chosen method's per-class optimistic and (when known) honest scores as horizontal lines."""
    chosen = next((row for row in honest_rows if row["method"] == chosen_method), None)
    if chosen is None:
        return
    ax.axhline(
        chosen["optimistic"],
        color="C2",
        linestyle="-.",
        label=f"{chosen_method} per class, optimistic: {chosen['optimistic']:.4f}",
    )
    if finite(chosen.get("honest")):
        ax.axhline(
            chosen["honest"],
            color="C3",
            linestyle="-.",
            label=f"{chosen_method} per class, honest: {chosen['honest']:.4f}",
        )


def _finish_global_curve(ax, head: HeadSpec, curve: np.ndarray) -> None:
    """Titles, limits, grid and legend of the global-threshold plot, its height from `curve`'s top."""
    label = head.threshold_objective.label
    ax.set(
        title=f"[{head.name}] {label} vs one global threshold",
        xlabel="threshold",
        ylabel=label,
        xlim=(0, 1),
        ylim=(0, min(1.05, max(float(np.max(curve)), 0.05) * 1.35)),
    )
    ax.grid(alpha=0.3)
    _legend_below(ax, 1)


def _draw_honest_bars(ax, head: HeadSpec, rows: list[dict]) -> None:
    """Draws the optimistic and honest score of each method in `rows` as paired, labelled bars."""
    positions = np.arange(len(rows))
    optimistic = np.array([row["optimistic"] for row in rows], float)
    honest = np.array([row["honest"] if finite(row.get("honest")) else np.nan for row in rows], float)
    ax.bar(positions - 0.2, optimistic, width=0.4, color="C2", label="optimistic: tuned and scored on all OOF")
    ax.bar(
        positions + 0.2,
        np.nan_to_num(honest),
        width=0.4,
        color="C3",
        label="honest: tuned on other parts, scored held out",
    )
    for x, value in zip(positions, optimistic):
        ax.text(x - 0.2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=FIGURE_FONT_PT, rotation=90)
    for x, value in zip(positions, honest):
        if np.isfinite(value):
            ax.text(x + 0.2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=FIGURE_FONT_PT, rotation=90)
    names = [short_text(row["method"], 14) + ("*" if not finite(row.get("honest")) else "") for row in rows]
    ax.set_xticks(positions, names, fontsize=FIGURE_FONT_PT, rotation=30, ha="right")
    values = np.concatenate([optimistic, honest[np.isfinite(honest)]])
    ax.set_ylim(max(0.0, float(values.min()) - 0.1), min(1.0, float(values.max()) + 0.2))
    _legend_below(ax, 1, extra="* no honest figure" if not np.isfinite(honest).all() else None)
    ax.set(title=f"[{head.name}] optimistic vs honest", ylabel=head.threshold_objective.label)
    ax.grid(alpha=0.3, axis="y")


def _compact(ax) -> None:
    """Axis labels and ticks at the figures' text size, the title a point larger (the figure is drawn at the size
    it is placed, so these are their sizes on the page)."""
    ax.tick_params(labelsize=FIGURE_FONT_PT)
    ax.xaxis.label.set_size(FIGURE_FONT_PT)
    ax.yaxis.label.set_size(FIGURE_FONT_PT)
    ax.title.set_size(FIGURE_FONT_PT + 1)


def _legend_below(ax, columns: int, extra: str | None = None) -> None:
    """The axes' legend under it, at the figures' text size (a note as its last line when `extra`)."""
    handles, labels = ax.get_legend_handles_labels()
    if extra:
        from matplotlib.lines import Line2D

        handles, labels = [*handles, Line2D([], [], linestyle="none")], [*labels, extra]
    if handles:
        ax.legend(
            handles,
            labels,
            fontsize=FIGURE_FONT_PT,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=columns,
            frameon=False,
        )


def pr_roc_figure(head: HeadSpec, probs: np.ndarray, targets: np.ndarray, ranking: Ranking) -> Figure | None:
    """Precision-recall and ROC curves: micro, macro (mean over classes on a common grid), the worst classes by AP."""
    if not np.isfinite(ranking.ap).any():
        return None
    true = target_matrix(head, targets)
    usable = np.flatnonzero(np.isfinite(ranking.ap))
    fig = Figure(figsize=(FIGURE_WIDTH_IN, 4.5), dpi=100)
    pr_ax, roc_ax = fig.subplots(1, 2)
    _draw_average_curves(pr_ax, roc_ax, ranking, usable)
    if len(usable) > 1:
        _draw_worst_curves(pr_ax, roc_ax, head, probs, true, ranking, usable)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    _finish_pr_roc_axes(pr_ax, roc_ax, head)
    fig.tight_layout()
    return fig


def _draw_average_curves(pr_ax, roc_ax, ranking: Ranking, usable: np.ndarray) -> None:
    """Draws the micro curves and the macro ones (over the `usable` classes) on the PR and ROC axes."""
    macro_ap, macro_auc = np.mean(ranking.ap[usable]), np.mean(ranking.auc[usable])
    thick = {"linewidth": 2}
    pr_ax.plot(*ranking.micro_pr, color="black", label=f"micro (AP {ranking.micro_ap:.3f})", **thick)
    pr_label = f"macro, {len(usable)} classes (AP {macro_ap:.3f})"
    pr_ax.plot(CURVE_GRID, ranking.macro_precision, color="C0", label=pr_label, **thick)
    roc_ax.plot(*ranking.micro_roc, color="black", label=f"micro (AUC {ranking.micro_auc:.3f})", **thick)
    roc_ax.plot(CURVE_GRID, ranking.macro_tpr, color="C0", label=f"macro (AUC {macro_auc:.3f})", **thick)


def _draw_worst_curves(
    pr_ax, roc_ax, head: HeadSpec, probs: np.ndarray, true: np.ndarray, ranking: Ranking, usable: np.ndarray
) -> None:
    """Draws the PR and ROC curves of the `usable` classes with the lowest AP, one colour each."""
    worst = usable[np.argsort(ranking.ap[usable], kind="stable")[:N_WORST_CURVES]]
    for rank, column in enumerate(worst):
        name, color = short_text(head.class_names[column], 20), f"C{rank + 1}"
        recall, precision, fpr, tpr = class_curves(true[:, column], probs[:, column])
        pr_ax.plot(
            recall,
            precision,
            color=color,
            linewidth=1,
            alpha=0.8,
            drawstyle="steps-pre",
            label=f"{name} (AP {ranking.ap[column]:.3f}, n={int(true[:, column].sum())})",
        )
        roc_ax.plot(fpr, tpr, color=color, linewidth=1, alpha=0.8, label=f"{name} (AUC {ranking.auc[column]:.3f})")


def _finish_pr_roc_axes(pr_ax, roc_ax, head: HeadSpec) -> None:
    """Titles, labels, limits, grids and legends (below each plot) of the PR and ROC axes."""
    kind = "one-vs-rest, " if not head.thresholded else ""
    limits = {"xlim": (0, 1), "ylim": (0, 1.02)}
    pr_ax.set(title=f"[{head.name}] precision-recall ({kind}OOF)", xlabel="recall", ylabel="precision", **limits)
    roc_ax.set(
        title=f"[{head.name}] ROC ({kind}OOF)", xlabel="false positive rate", ylabel="true positive rate", **limits
    )
    for ax in (pr_ax, roc_ax):
        ax.grid(alpha=0.3)
        _compact(ax)
        _legend_below(ax, 1)


def confusion_figure(head: HeadSpec, matrix: np.ndarray) -> Figure:
    """Row-normalised confusion matrix (colour = share of the true class), counts written when it fits."""
    n = len(matrix)
    width = FIGURE_WIDTH_IN if n > 8 else 5.6
    fig = Figure(figsize=(width, width - 0.6), dpi=100)
    ax = fig.subplots()
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, float), where=row_totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=FIGURE_FONT_PT,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
    if n <= MAX_NAMED_CLASSES:  # more names than that would not fit at 8 pt: the per-class table names them
        names = [short_text(name, 16) for name in head.class_names]
        ax.set_xticks(range(n), names, rotation=90, fontsize=FIGURE_FONT_PT)
        ax.set_yticks(range(n), names, fontsize=FIGURE_FONT_PT)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set(
        title=f"[{head.name}] confusion, OOF argmax (accuracy {accuracy:.4f})",
        xlabel="predicted class",
        ylabel="true class",
    )
    _compact(ax)
    fig.axes[-1].tick_params(labelsize=FIGURE_FONT_PT)
    fig.axes[-1].yaxis.label.set_size(FIGURE_FONT_PT)
    fig.tight_layout()
    return fig


def example_grid_figure(
    heads: list[HeadSpec],
    rows_right: np.ndarray,
    rows_wrong: np.ndarray,
    thumbnails: dict[int, np.ndarray | None],
    ids: list[str],
    targets: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    scores: np.ndarray,
) -> Figure:
    """OOF images, right ones (green) then wrong ones (red), titled with true and predicted labels."""
    groups = [("right", rows_right, "#1a7f37"), ("wrong", rows_wrong, "#cf222e")]
    n_rows = sum(math.ceil(len(rows) / GRID_COLUMNS) for _, rows, _ in groups if len(rows)) or 1
    # Each row: a square image as wide as its column, under its caption (one line, then each head's lines).
    caption_lines = 1 + sum(1 if h.thresholded and h.threshold_objective.counts_true_negatives else 2 for h in heads)
    row_in = FIGURE_WIDTH_IN / GRID_COLUMNS - 0.1 + caption_lines * LINE_IN + 0.3
    fig = Figure(figsize=(FIGURE_WIDTH_IN, row_in * n_rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(n_rows, GRID_COLUMNS)).reshape(n_rows, GRID_COLUMNS)
    for ax in axes.ravel():
        ax.set_axis_off()
    line = 0
    for group, rows, color in groups:
        for start in range(0, len(rows), GRID_COLUMNS):
            for column, row in enumerate(rows[start : start + GRID_COLUMNS]):
                ax = axes[line, column]
                image = thumbnails.get(int(row))
                if image is None:
                    ax.text(0.5, 0.5, "image\nnot found", ha="center", va="center", transform=ax.transAxes)
                else:
                    ax.imshow(image)
                    _square_view(ax, image.shape[0], image.shape[1])
                # "best" when not even the best images are fully right (an early or weak model).
                verdict = "wrong" if group == "wrong" else ("right" if scores[row] >= 1.0 - 1e-9 else "best")
                text = [f"{verdict} {scores[row]:.2f} {Path(ids[row]).name}"]
                for head in heads:
                    text += _label_lines(head, targets[head.name][row], labels[head.name][row], len(heads) > 1)
                # Each line cut to the column's width at 8 pt, so neighbouring captions never run into each other.
                lines = [_fit_line(line, FIGURE_WIDTH_IN / GRID_COLUMNS - 0.15) for line in text]
                ax.set_title("\n".join(lines), fontsize=FIGURE_FONT_PT, color=color, loc="left")
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
            line += 1
    fig.tight_layout()
    return fig


def _fit_line(line: str, width_in: float) -> str:
    """`line` cut (with an ellipsis) to at most `width_in` inches at the figures' text size."""
    while len(line) > 1 and _text_width_in(line, FIGURE_FONT_PT) > width_in:
        line = line[:-2] + "…"
    return line


def _square_view(ax, height: int, width: int) -> None:
    """Shows an image centred in a square view, so every cell of the grid (and its caption) has the same height."""
    side = max(height, width)
    ax.set_xlim(-0.5 - (side - width) / 2, width - 0.5 + (side - width) / 2)
    ax.set_ylim(height - 0.5 + (side - height) / 2, -0.5 - (side - height) / 2)


def _label_lines(head: HeadSpec, true, pred, with_head: bool) -> list[str]:
    prefix = f"{head.name}: " if with_head else ""
    names = head.class_names
    if not head.thresholded:
        mark = "" if int(true) == int(pred) else " x"
        return [f"{prefix}T {short_text(names[int(true)], 20)}", f"{prefix}P {short_text(names[int(pred)], 20)}{mark}"]
    true_set = np.flatnonzero(np.asarray(true).astype(bool))
    pred_set = np.flatnonzero(np.asarray(pred, dtype=bool))
    if head.threshold_objective.counts_true_negatives:
        wrong = np.flatnonzero(np.asarray(true).astype(bool) != np.asarray(pred, dtype=bool))
        if not len(wrong):
            return [f"{prefix}all {len(names)} right"]
        return [f"{prefix}wrong: " + _name_list([names[i] for i in wrong], 12)]
    return [
        f"{prefix}T " + _name_list([names[i] for i in true_set], 16),
        f"{prefix}P " + _name_list([names[i] for i in pred_set], 16),
    ]


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


def network_figure(network, losses: dict[str, str]) -> Figure:
    """The network as boxes: input -> stem -> stages -> pooling -> features, then one box per head (with its loss).

    Drawn at the page's width in inches with 8 pt text; every box is as tall as its text, wrapped to its width."""
    chain = _network_chain(network)
    heads = [_head_box_text(head, losses) for head in network.heads]
    per_row = max(1, int((FIGURE_WIDTH_IN - HEAD_BOX_IN - 0.5 + BOX_GAP_IN) // (CHAIN_BOX_IN + BOX_GAP_IN)))
    title = (
        f"{network.model}: {network.total_params:,} parameters ({network.trainable_params:,} trainable), "
        f"{network.mult_adds / 1e6:,.1f} M multiply-adds per {network.image_size} px image"
    )
    title_lines = wrap_to_width(title, FIGURE_WIDTH_IN - 0.1, FIGURE_FONT_PT)
    top = -(0.1 + len(title_lines) * LINE_IN + 0.12)
    chain_rows = [chain[start : start + per_row] for start in range(0, len(chain), per_row)]
    row_heights = [max(_box_height(box, CHAIN_BOX_IN) for box in row) for row in chain_rows]
    last_row_top = top - sum(row_heights[:-1]) - ROW_GAP_IN * (len(chain_rows) - 1)
    head_heights = [_box_height(box, HEAD_BOX_IN) for box in heads]
    bottom = min(last_row_top - row_heights[-1], last_row_top - sum(head_heights) - BOX_GAP_IN * max(len(heads) - 1, 0))
    height = -bottom + 0.1
    fig = Figure(figsize=(FIGURE_WIDTH_IN, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set(xlim=(0, FIGURE_WIDTH_IN), ylim=(-height, 0))
    ax.text(0.05, -0.1, "\n".join(title_lines), ha="left", va="top", fontsize=FIGURE_FONT_PT, linespacing=1.25)
    features = _draw_chain(ax, chain_rows, row_heights, top)
    _draw_heads(ax, heads, head_heights, features, last_row_top)
    return fig


def wrap_to_width(text: str, width_in: float, size: float, bold: bool = False) -> list[str]:
    """`text` (its own line breaks kept) as lines no wider than `width_in` inches at `size` pt, by measuring the
    rendered words (a word wider than a line is cut into pieces that fit)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split():
            for piece in _pieces(word, width_in, size, bold):
                candidate = f"{line} {piece}".strip()
                if line and _text_width_in(candidate, size, bold) > width_in:
                    lines.append(line)
                    line = piece
                else:
                    line = candidate
        lines.append(line)
    return lines


def _pieces(word: str, width_in: float, size: float, bold: bool) -> list[str]:
    if _text_width_in(word, size, bold) <= width_in:
        return [word]
    pieces, piece = [], ""
    for char in word:
        if piece and _text_width_in(piece + char, size, bold) > width_in:
            pieces.append(piece)
            piece = ""
        piece += char
    return [*pieces, piece]


@lru_cache(maxsize=4096)
def _text_width_in(text: str, size: float, bold: bool = False) -> float:
    """The rendered width of one line of text in inches (matplotlib's own font metrics)."""
    return _text_to_path().get_text_width_height_descent(text, _font(size, bold), ismath=False)[0] / 72


@lru_cache(maxsize=8)
def _font(size: float, bold: bool):
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=size, weight="bold" if bold else "normal")


@lru_cache(maxsize=1)
def _text_to_path():
    from matplotlib.textpath import TextToPath

    return TextToPath()


def _network_chain(network) -> list[tuple[str, str, str, str]]:
    """The boxes from input to features, each (title, middle text, bottom text, colour)."""
    chain = [("input", f"image 3x{network.image_size}x{network.image_size}", "", "#e6e9ed")]
    chain += [
        (
            part["part"],
            part["modules"],
            f"out {part['output']}\n{_params_text(part['params'])}",
            "#dbe9f6" if part["part"] in ("stem", "pool", "neck + pool") else "#b7d3ee",
        )
        for part in network.parts
    ]
    dropout = f"\ndropout {network.drop_rate:g}" if network.drop_rate else ""
    chain.append(("features", f"{network.feature_width} per image{dropout}", "", "#e6e9ed"))
    return chain


def _head_box_text(head: dict, losses: dict[str, str]) -> tuple[str, str, str, str]:
    softmax = head["activation"].startswith("softmax")
    return (
        f"head {head['head']}",
        f"{head['layer']}, {'softmax' if softmax else 'sigmoid'}",
        f"{head['outputs']} outputs, {_params_text(head['params'])}\nloss: {losses.get(head['head'], '?')}",
        "#fde2c4" if softmax else "#d3f0d6",
    )


def _box_lines(box: tuple[str, str, str, str], width_in: float) -> tuple[list[str], list[str]]:
    """(bold title lines, body lines) of a box's text wrapped inside its width."""
    title, middle, bottom, _ = box
    inner = width_in - 2 * BOX_PAD_IN
    body = wrap_to_width(middle, inner, FIGURE_FONT_PT) + (
        wrap_to_width(bottom, inner, FIGURE_FONT_PT) if bottom else []
    )
    return wrap_to_width(title, inner, FIGURE_FONT_PT, bold=True), body


def _box_height(box: tuple[str, str, str, str], width_in: float) -> float:
    title, body = _box_lines(box, width_in)
    return (len(title) + len(body)) * LINE_IN + 2 * BOX_PAD_IN + 0.04


def _draw_chain(ax, rows: list[list], row_heights: list[float], top: float) -> tuple[float, float, float]:
    """Draws the chain's boxes row by row, each linked to the one before; returns the last box's (x, top, height)."""
    previous = None
    y = top
    for row, height in zip(rows, row_heights):
        for column, box in enumerate(row):
            x = 0.05 + column * (CHAIN_BOX_IN + BOX_GAP_IN)
            _box(ax, x, y, CHAIN_BOX_IN, height, box)
            if previous is not None:
                px, py, ph = previous
                if py == y:
                    _arrow(ax, (px + CHAIN_BOX_IN, y - LINE_IN), (x, y - LINE_IN))
                else:  # to the next row: from the last box's foot to the first box's top, through the gap
                    _arrow(ax, (px + CHAIN_BOX_IN / 2, py - ph), (x + CHAIN_BOX_IN / 2, y))
            previous = (x, y, height)
        y -= height + ROW_GAP_IN
    return previous


def _draw_heads(ax, heads: list, heights: list[float], features: tuple[float, float, float], top: float) -> None:
    """Draws one box per head (layer, activation, outputs, loss) at the right, each linked from the features box."""
    fx, fy, fh = features
    x, y = FIGURE_WIDTH_IN - HEAD_BOX_IN - 0.05, top
    for box, height in zip(heads, heights):
        _box(ax, x, y, HEAD_BOX_IN, height, box)
        _arrow(ax, (fx + CHAIN_BOX_IN, fy - min(fh, height) / 2), (x, y - min(fh, height) / 2))
        y -= height + BOX_GAP_IN


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Draws a grey arrow from `start` to `end` (data coordinates)."""
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#57606a", lw=1.1))


def _box(ax, x: float, y: float, width: float, height: float, box: tuple[str, str, str, str]) -> None:
    """Draws a rounded box with its top-left corner at (x, y): the bold title lines, then the body lines, all
    wrapped inside it (the box was sized to them)."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x, y - height),
            width,
            height,
            boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=box[3],
            edgecolor="#57606a",
            linewidth=0.8,
        )
    )
    title, body = _box_lines(box, width)
    line_y = y - BOX_PAD_IN - 0.02
    for lines, weight in ((title, "bold"), (body, "normal")):
        for line in lines:
            ax.text(x + width / 2, line_y, line, ha="center", va="top", fontsize=FIGURE_FONT_PT, fontweight=weight)
            line_y -= LINE_IN


def _params_text(count: int) -> str:
    return f"{count_text(count)} params" if count else "no params"


def thumbnail_grid_figure(images: list[np.ndarray | None], captions: list[str]) -> Figure:
    """Images in rows of GRID_COLUMNS, each under a one-line caption at the figures' text size."""
    n_rows = max(1, math.ceil(len(images) / GRID_COLUMNS))
    row_in = FIGURE_WIDTH_IN / GRID_COLUMNS - 0.1 + LINE_IN + 0.3
    fig = Figure(figsize=(FIGURE_WIDTH_IN, row_in * n_rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(n_rows, GRID_COLUMNS)).reshape(n_rows, GRID_COLUMNS)
    for ax in axes.ravel():
        ax.set_axis_off()
    for index, (image, caption) in enumerate(zip(images, captions)):
        ax = axes[index // GRID_COLUMNS, index % GRID_COLUMNS]
        if image is None:
            ax.text(0.5, 0.5, "image\nnot found", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(image)
            _square_view(ax, image.shape[0], image.shape[1])
        ax.set_title(_fit_line(caption, FIGURE_WIDTH_IN / GRID_COLUMNS - 0.15), fontsize=FIGURE_FONT_PT, loc="left")
    fig.tight_layout()
    return fig
