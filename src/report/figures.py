"""Figures from arrays and tables (each returns a matplotlib Figure on the Agg canvas; the report saves them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from src.artifacts import HeadThresholds
from src.formats.base import HeadSpec
from src.report.inputs import RunRecord
from src.report.ranking import CURVE_GRID, Ranking, class_curves
from src.report.tables import target_matrix
from src.report.text import count_text, finite, short_text, wrap_text

# Classes drawn one by one in the PR/ROC figure (the worst by average precision).
N_WORST_CURVES = 4
# Images per row of the example grid, and rows of right / wrong examples.
GRID_COLUMNS = 6


def training_curves_figure(runs: list[RunRecord], main_metric: str) -> Figure | None:
    """Loss (train solid, valid dashed) and the metric per epoch (valid solid, train dotted when recorded), one colour per run."""
    runs = [run for run in runs if run.epochs is not None and len(run.epochs)]
    if not runs:
        return None
    fig = Figure(figsize=(11, 4.2), dpi=100)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        epochs = run.epochs
        marker = "o" if len(epochs) <= 30 else None
        plot = _epoch_plotter(epochs, color, marker)
        plot(loss_ax, "train_loss", f"{run.name} train")
        if "valid_loss" in epochs:
            plot(loss_ax, "valid_loss", f"{run.name} valid", "--")
        if "train_score" in epochs and epochs["train_score"].notna().any():
            plot(metric_ax, "train_score", f"{run.name} train (augmented batches)", ":")
        if "score" in epochs and epochs["score"].notna().any():
            plot(metric_ax, "score", f"{run.name} valid")
            best = run.summary.get("best_epoch")
            if best in set(epochs["epoch"]):
                value = float(epochs.loc[epochs["epoch"] == best, "score"].iloc[0])
                metric_ax.scatter([best], [value], s=140, facecolors="none", edgecolors=color, linewidths=2)
    loss_ax.set(title="loss per epoch (solid train, dashed valid)", xlabel="epoch", ylabel="loss")
    metric_ax.set(title=f"{main_metric} per epoch (ring = best epoch)", xlabel="epoch", ylabel=main_metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _epoch_plotter(epochs, color: str, marker: str | None):
    """plot(ax, column, label, linestyle="-"): one epochs.csv column against the epoch, in one run's colour."""

    def plot(ax, column: str, label: str, linestyle: str = "-") -> None:
        ax.plot(epochs["epoch"], epochs[column], color=color, marker=marker, linestyle=linestyle, label=label)

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
    fig = Figure(figsize=(12, 5.2), dpi=100)
    curve_ax, honest_ax = fig.subplots(1, 2)
    _draw_global_curve(curve_ax, head, curve, grid, saved_head)
    if honest_rows:
        _draw_chosen_scores(curve_ax, honest_rows, chosen_method)
    _finish_global_curve(curve_ax, head, curve)
    rows = [row for row in honest_rows or [] if finite(row.get("optimistic"))]
    if rows:
        _draw_honest_bars(honest_ax, head, rows)
    else:
        honest_ax.text(0.5, 0.5, "no thresholds.json yet:\nrun the thresholds stage", ha="center", va="center")
        honest_ax.set_axis_off()
    fig.tight_layout()
    return fig


def _draw_global_curve(
    ax, head: HeadSpec, curve: np.ndarray, grid: np.ndarray, saved_head: HeadThresholds | None
) -> None:
    """Draws the objective over `grid` for one global threshold, with 0.5 and the saved best global marked."""
    ax.plot(grid, curve, color="C0", linewidth=2, label="one global threshold for every class")
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
        label=f"'{chosen_method}' per-class, optimistic: {chosen['optimistic']:.4f}",
    )
    if finite(chosen.get("honest")):
        ax.axhline(
            chosen["honest"],
            color="C3",
            linestyle="-.",
            label=f"'{chosen_method}' per-class, honest: {chosen['honest']:.4f}",
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
    ax.legend(fontsize=8, loc="best")


def _draw_honest_bars(ax, head: HeadSpec, rows: list[dict]) -> None:
    """Draws the optimistic and honest score of each method in `rows` as paired, labelled bars."""
    positions = np.arange(len(rows))
    optimistic = np.array([row["optimistic"] for row in rows], float)
    honest = np.array([row["honest"] if finite(row.get("honest")) else np.nan for row in rows], float)
    ax.bar(positions - 0.2, optimistic, width=0.4, color="C2", label="optimistic: tuned and scored on all OOF rows")
    ax.bar(
        positions + 0.2,
        np.nan_to_num(honest),
        width=0.4,
        color="C3",
        label="honest (nested): tuned on other parts, scored on the held-out part",
    )
    for x, value in zip(positions, optimistic):
        ax.text(x - 0.2, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
    for x, value in zip(positions, honest):
        if np.isfinite(value):
            ax.text(x + 0.2, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
    names = [wrap_text(row["method"], 14) + ("" if finite(row.get("honest")) else "\n(no honest)") for row in rows]
    ax.set_xticks(positions, names, fontsize=7)
    values = np.concatenate([optimistic, honest[np.isfinite(honest)]])
    ax.set_ylim(max(0.0, float(values.min()) - 0.1), min(1.0, float(values.max()) + 0.12))
    ax.legend(fontsize=7, loc="upper left")
    ax.set(title=f"[{head.name}] optimistic vs honest, per method", ylabel=head.threshold_objective.label)
    ax.grid(alpha=0.3, axis="y")


def pr_roc_figure(head: HeadSpec, probs: np.ndarray, targets: np.ndarray, ranking: Ranking) -> Figure | None:
    """Precision-recall and ROC curves: micro, macro (mean over classes on a common grid), the worst classes by AP."""
    if not np.isfinite(ranking.ap).any():
        return None
    true = target_matrix(head, targets)
    usable = np.flatnonzero(np.isfinite(ranking.ap))
    fig = Figure(figsize=(12, 6.2), dpi=100)
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
    pr_label = f"macro over {len(usable)} classes (mean AP {macro_ap:.3f})"
    pr_ax.plot(CURVE_GRID, ranking.macro_precision, color="C0", label=pr_label, **thick)
    roc_ax.plot(*ranking.micro_roc, color="black", label=f"micro (AUC {ranking.micro_auc:.3f})", **thick)
    roc_ax.plot(CURVE_GRID, ranking.macro_tpr, color="C0", label=f"macro (mean AUC {macro_auc:.3f})", **thick)


def _draw_worst_curves(
    pr_ax, roc_ax, head: HeadSpec, probs: np.ndarray, true: np.ndarray, ranking: Ranking, usable: np.ndarray
) -> None:
    """Draws the PR and ROC curves of the `usable` classes with the lowest AP, one colour each."""
    worst = usable[np.argsort(ranking.ap[usable], kind="stable")[:N_WORST_CURVES]]
    for rank, column in enumerate(worst):
        name, color = short_text(head.class_names[column], 24), f"C{rank + 1}"
        recall, precision, fpr, tpr = class_curves(true[:, column], probs[:, column])
        pr_ax.plot(
            recall,
            precision,
            color=color,
            linewidth=1,
            alpha=0.8,
            drawstyle="steps-pre",
            label=f"worst {rank + 1}: {name} (AP {ranking.ap[column]:.3f}, n={int(true[:, column].sum())})",
        )
        roc_ax.plot(
            fpr,
            tpr,
            color=color,
            linewidth=1,
            alpha=0.8,
            label=f"worst {rank + 1}: {name} (AUC {ranking.auc[column]:.3f})",
        )


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
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)


def confusion_figure(head: HeadSpec, matrix: np.ndarray) -> Figure:
    """Row-normalised confusion matrix (colour = share of the true class), counts written when it fits."""
    n = len(matrix)
    side = float(np.clip(0.45 * n + 2.5, 5.0, 16.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
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
                        fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
    if n <= 60:
        names = [short_text(name, 18) for name in head.class_names]
        ax.set_xticks(range(n), names, rotation=90, fontsize=7 if n > 20 else 9)
        ax.set_yticks(range(n), names, fontsize=7 if n > 20 else 9)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set(
        title=f"[{head.name}] confusion matrix, OOF argmax (accuracy {accuracy:.4f})",
        xlabel="predicted class",
        ylabel="true class",
    )
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
    fig = Figure(figsize=(2.3 * GRID_COLUMNS, 3.1 * n_rows), dpi=100)
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
                # "best" when not even the best images are fully right (an early or weak model).
                verdict = "wrong" if group == "wrong" else ("right" if scores[row] >= 1.0 - 1e-9 else "best")
                text = [f"{verdict.upper()} ({scores[row]:.2f}) {short_text(Path(ids[row]).name, 16)}"]
                for head in heads:
                    text += _label_lines(head, targets[head.name][row], labels[head.name][row], len(heads) > 1)
                ax.set_title("\n".join(text), fontsize=7, color=color, loc="left")
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
            line += 1
    fig.tight_layout()
    return fig


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
        return [f"{prefix}wrong: " + _name_list([names[i] for i in wrong], 30)]
    return [
        f"{prefix}T " + _name_list([names[i] for i in true_set], 30),
        f"{prefix}P " + _name_list([names[i] for i in pred_set], 30),
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
    """The network as boxes: input -> stem -> stages -> pooling -> features, then one box per head (with its loss)."""
    chain = _network_chain(network)
    per_row = min(len(chain), 6)  # wrapped into short rows: the PDF shrinks a wide figure's text too much
    rows, step = math.ceil(len(chain) / per_row), 1.4
    heads_x = per_row * step + 0.1
    feature_row = (len(chain) - 1) // per_row
    height = max(rows, feature_row + len(network.heads) * 0.85) * step
    fig = Figure(figsize=(0.8 * (heads_x + 2.1), 0.45 + 0.8 * height), dpi=100)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set(xlim=(-0.05, heads_x + 2.05), ylim=(-height + 0.25, 0.3))
    features_at = _draw_chain(ax, chain, per_row, step)
    _draw_heads(ax, network.heads, losses, features_at, heads_x, step)
    ax.set_title(
        f"{network.model}: {network.total_params:,} parameters ({network.trainable_params:,} trainable), "
        f"{network.mult_adds / 1e6:,.1f} M multiply-adds per {network.image_size} px image",
        fontsize=9,
        loc="left",
    )
    fig.tight_layout()
    return fig


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


def _draw_chain(ax, chain: list[tuple[str, str, str, str]], per_row: int, step: float) -> tuple[float, float]:
    """Draws the `chain` boxes `per_row` to a row, each linked to the one before; returns the last box's corner."""
    centres = []
    for index, (title, middle, bottom, color) in enumerate(chain):
        x, y = (index % per_row) * step, -(index // per_row) * step
        _box(ax, x, y, 1.12, 1.1, color, title, middle, bottom)
        if centres:
            px, py = centres[-1]
            same_row = py == y
            _arrow(
                ax,
                (px + 1.12, py - 0.55) if same_row else (px + 0.56, py - 1.1),
                (x, y - 0.55) if same_row else (x + 0.56, y),
            )
        centres.append((x, y))
    return centres[-1]


def _draw_heads(
    ax, heads: list[dict], losses: dict[str, str], features_at: tuple[float, float], heads_x: float, step: float
) -> None:
    """Draws one box per head (layer, activation, outputs, loss) at `heads_x`, each linked from the features box."""
    fx, fy = features_at
    for index, head in enumerate(heads):
        y = fy - index * 0.85 * step
        softmax = head["activation"].startswith("softmax")
        _box(
            ax,
            heads_x,
            y,
            1.95,
            1.1,
            "#fde2c4" if softmax else "#d3f0d6",
            f"head {short_text(head['head'], 18)}",
            f"{head['layer']}, {'softmax' if softmax else 'sigmoid'}",
            f"{head['outputs']} outputs, {_params_text(head['params'])}\nloss: {short_text(losses.get(head['head'], '?'), 34)}",
        )
        _arrow(ax, (fx + 1.12, fy - 0.55), (heads_x, y - 0.55))


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Draws a grey arrow from `start` to `end` (data coordinates)."""
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", color="#57606a", lw=1.1))


def _box(ax, x: float, y: float, width: float, height: float, color: str, title: str, middle: str, bottom: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x, y - height),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.06",
            facecolor=color,
            edgecolor="#57606a",
            linewidth=0.8,
        )
    )
    ax.text(x + width / 2, y - 0.16, short_text(title, 18), ha="center", va="center", fontsize=8.5, fontweight="bold")
    ax.text(
        x + width / 2,
        y - 0.48,
        wrap_text(short_text(middle, 44), 18 if width < 1.5 else 30),
        ha="center",
        va="center",
        fontsize=7.5,
    )
    if bottom:
        ax.text(x + width / 2, y - height + 0.22, bottom, ha="center", va="center", fontsize=7.5, color="#24292f")


def _params_text(count: int) -> str:
    return f"{count_text(count)} params" if count else "no params"
