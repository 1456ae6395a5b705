"""The report's content, section by section, from a `ReportInputs`; written as HTML, Markdown and PDF.

PDF priorities (see document.py): 0 = what a course report must hold (summary, the model and its
diagram, losses and tricks, curves per epoch, the per-class / per-attribute table with its average,
PR/ROC, right and wrong examples, resources); 1-3 = detail the PDF leaves out first when pages run
short (fold scores, threshold methods, confusion matrices, every metric, the files read).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from src import metrics
from src.formats.base import HeadSpec
from src.report import discussion, figures, tables
from src.report.document import DEFAULT_TYPOGRAPHY, PDF_NEVER, Document, Typography
from src.report.inputs import ReportInputs, RunRecord
from src.report.ranking import ranking_scores
from src.report.text import NA, finite, slug, write_csv
from src.scores import fold_score_rows

# Tables longer than this show the worst rows only; the full table goes to a CSV beside the report.
MAX_TABLE_ROWS = 40
GRID_ROWS_EACH = 1
THUMBNAIL_PX = 112
DEFAULT_MAX_PAGES = 5


def build_report(
    inputs: ReportInputs,
    out_dir: Path,
    thumbnails: dict[int, np.ndarray | None] | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
    typography: Typography = DEFAULT_TYPOGRAPHY,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write figures, CSVs, `report.md`, `index.html` and `report.pdf` (at most `max_pages` A4 pages, set in
    `typography`) into `out_dir`; return the HTML path. `log` gets one line per thing the PDF leaves out.

    `thumbnails` maps an OOF row to an RGB image for the example grid; when None they are read
    from `inputs.image_paths` (the original files) for the chosen rows only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt, heads = inputs.fmt, inputs.fmt.heads()
    doc = Document(out_dir)
    labels = fmt.decide(inputs.probs, inputs.rules[inputs.chosen_rules])
    metric = fmt.main_metric
    doc.title(f"Experiment report: {inputs.experiment}")
    if inputs.author:
        doc.paragraph(f"**Author: {inputs.author}**")
    folds = sorted(int(k) for k in np.unique(inputs.fold_of_row))
    doc.paragraph(
        f"Format `{fmt.name}`, main metric `{metric}`. {len(inputs.ids)} out-of-fold (OOF) images over "
        f"{len(folds)} fold{'s' if len(folds) != 1 else ''}; every OOF probability comes from the fold "
        f"model that did not train on that image. Decisions below use **{inputs.chosen_rules}** (what "
        "`submit` uses) unless a column says otherwise. Made from saved artifacts only; nothing was retrained."
    )
    for note in inputs.notes:
        doc.paragraph(f"Note: {note}", priority=1)
    score_rows = fold_score_rows(fmt, inputs.fold_of_row, inputs.probs, inputs.targets, inputs.rules)
    _summary_section(doc, inputs, heads, score_rows[-1])
    _comparison_section(doc, inputs)
    _model_section(doc, inputs, heads)
    _training_section(doc, inputs.runs, metric)
    _cleaning_section(doc, inputs, heads)
    doc.section("OOF score per fold and overall", priority=1)
    tuned_note = (
        " Tuned thresholds are chosen on these same rows, so their column is optimistic; the honest "
        "(nested) figure below tunes on the other parts and scores the held-out part."
        if len(inputs.rules) > 1
        else ""
    )
    doc.paragraph(
        f"`{metric}` on the OOF rows of each fold and on all of them, for each set of decision rules.{tuned_note}"
    )
    _sentences(doc, discussion.fold_sentences(score_rows, inputs.chosen_rules, metric))
    doc.table(score_rows, "oof_scores")
    doc.subsection("Every metric of the format, all OOF rows", priority=2)
    doc.table(tables.metric_rows(fmt, inputs.probs, inputs.targets, inputs.rules), "oof_metrics")
    for head in heads:
        _head_sections(doc, inputs, head, labels)
    _examples_section(doc, inputs, heads, labels, thumbnails)
    _discussion_section(doc, inputs)
    _resources_section(doc, inputs, metric)
    return doc.write(max_pages, typography, log)


DROPPED_SHOWN = 10  # rows of the dropped-rows table, and images of its grid (the highest OOF losses)


def _cleaning_section(doc: Document, inputs: ReportInputs, heads: list[HeadSpec]) -> None:
    """train.drop_noisy: per run how many training rows were left out, the ones with the highest OOF loss, their
    labels and a few of their images (labels an earlier stage's OOF contradicts most: noise, or hard images)."""
    runs = [run for run in inputs.runs if run.dropped is not None]
    if not runs:
        return
    doc.section("Training rows left out (train.drop_noisy)", priority=1)
    doc.paragraph(
        "Each run left out its own training rows with the highest loss under an earlier experiment's OOF "
        "predictions (its validation rows are never ranked nor left out). Per run, then the rows left out most "
        "surely, with the labels they carry and the earlier model's top predictions."
    )
    doc.table(
        [
            {
                "run": run.name,
                "rows left out": len(run.dropped),
                "lowest OOF loss left out": run.dropped["oof_loss"].min(),
            }
            for run in runs
        ],
        "dropped_runs",
    )
    shown = max(runs, key=lambda run: len(run.dropped)).dropped.head(DROPPED_SHOWN)
    position = {image_id: row for row, image_id in enumerate(inputs.ids)}
    rows = [position[image_id] for image_id in shown["id"] if image_id in position]
    doc.table([tables.dropped_row(inputs, heads, row, loss) for row, loss in zip(rows, shown["oof_loss"])], "dropped")
    thumbnails = _load_thumbnails(inputs, np.asarray(rows, dtype=np.int64))
    captions = [f"{Path(inputs.ids[row]).name} loss {loss:.2f}" for row, loss in zip(rows, shown["oof_loss"])]
    doc.figure(
        "dropped_examples.png",
        figures.thumbnail_grid_figure([thumbnails.get(row) for row in rows], captions),
        "Training images left out, highest OOF loss first.",
        priority=2,
    )


def _discussion_section(doc: Document, inputs: ReportInputs) -> None:
    """The student's own discussion (report.notes), where the results have all been shown."""
    if not inputs.discussion:
        return
    doc.section("Discussion")
    for kind, text in inputs.discussion:
        if kind == "h3":
            doc.subsection(text)
        else:
            doc.paragraph(text)


def _sentences(doc: Document, sentences: list[str], priority: int | None = None) -> None:
    """Generated discussion: one paragraph of the sentences the data supports (none when it supports none)."""
    if sentences:
        doc.paragraph(" ".join(sentences), priority)


def _summary_section(doc: Document, inputs: ReportInputs, heads: list[HeadSpec], overall: dict) -> None:
    headline = [{"figure": f"OOF {inputs.fmt.main_metric}, {name}", "value": overall[name]} for name in inputs.rules]
    for head in heads:
        for row in inputs.saved_thresholds.honest.get(head.name, []) if inputs.saved_thresholds else []:
            if row.method == inputs.chosen_method and finite(row.honest):
                headline.append(
                    {
                        "figure": f"[{head.name}] {head.threshold_objective.label}, {row.method} thresholds, "
                        "honest (nested)",
                        "value": row.honest,
                    }
                )
    doc.section("Summary")
    doc.table(headline, "summary")
    for head in heads if inputs.saved_thresholds else []:
        rows = [row.model_dump() for row in inputs.saved_thresholds.honest.get(head.name, [])]
        sentences = discussion.threshold_sentences(rows, inputs.chosen_method, head.threshold_objective.label)
        _sentences(
            doc, [f"[{head.name}] {sentences[0]}", *sentences[1:]] if len(heads) > 1 and sentences else sentences
        )


def _comparison_section(doc: Document, inputs: ReportInputs) -> None:
    """report.compare: this run beside the experiments it is compared with (e.g. fine-tuned vs from scratch)."""
    if not inputs.comparison:
        return
    from src.report.compare import comparison_sentences

    metric = inputs.fmt.main_metric
    doc.section("Compared with other experiments")
    doc.paragraph(
        "Each experiment's honest OOF score (nothing tuned on the rows it scores) and its test score where known, "
        "with what its training config sets differently from this run's."
    )
    _sentences(doc, comparison_sentences(inputs.comparison, metric))
    doc.table(inputs.comparison, "comparison")


def _model_section(doc: Document, inputs: ReportInputs, heads: list[HeadSpec]) -> None:
    """The network (torchinfo's counts, a diagram) and the losses and tricks of the saved config."""
    network, config = inputs.network, inputs.runs[0].config if inputs.runs else {}
    doc.section("Model, losses and tricks")
    losses = tables.losses_by_head(config, heads)
    if network is not None:
        doc.paragraph(
            f"One `{network.model}` backbone (timm) shared by {len(network.heads)} head"
            f"{'s' if len(network.heads) != 1 else ''}: {network.total_params:,} parameters, "
            f"{network.trainable_params:,} trainable, {network.mult_adds / 1e6:,.1f} M multiply-adds per "
            f"{network.image_size} px image (torchinfo). Output sizes are channels x height x width for one image."
        )
        doc.figure(
            "network.png",
            figures.network_figure(network, losses),
            "The network: backbone stages, pooled features, heads.",
            fallback=FALLBACK["network diagram"],
            label="network diagram",
        )
    else:
        doc.paragraph("(The network could not be built from the saved config, so no summary or diagram.)")
    if config:
        doc.subsection("Losses and training tricks (from the run's saved config)")
        devices = [str(run.summary.get("device", "")) for run in inputs.runs if run.summary]
        doc.table(tables.settings_rows(config, heads, devices), "settings")
    if network is not None:
        # After the settings: the layer table repeats the diagram's numbers, so it is detail the PDF may leave out.
        doc.subsection("Layers and parameters (torchinfo)", priority=1)
        doc.table(
            network.parts
            + [
                {
                    "part": f"head {h['head']}",
                    "modules": f"{h['layer']} ({h['activation']})",
                    "output": str(h["outputs"]),
                    "params": h["params"],
                }
                for h in network.heads
            ],
            "network",
        )
        doc.preformatted(network.text)


# Essential figures the PDF still leaves out, in this order, when the required content alone is over the page budget
# (e.g. a long report.notes at 10 pt): the example images first, then secondary figures, the network diagram last.
FALLBACK = {"example images": 1, "precision-recall and ROC curves": 2, "training curves": 3, "network diagram": 4}


def _training_section(doc: Document, runs: list[RunRecord], metric: str) -> None:
    doc.section("Training curves")
    has_train = any(run.epochs is not None and "train_score" in run.epochs for run in runs)
    _sentences(doc, discussion.overfitting_sentences(runs) + discussion.freezing_sentences(runs, metric))
    doc.figure(
        "training_curves.png",
        figures.training_curves_figure(runs, metric),
        f"Loss and {metric} per epoch, one colour per run"
        + (" (dotted: on the augmented training batches during the epoch)." if has_train else "."),
        fallback=FALLBACK["training curves"],
        label="training curves",
    )
    # A full fit has no validation rows: its "best" epoch is simply the last one.
    fold_runs = [
        {
            "run": run.name,
            "best epoch": run.summary.get("best_epoch", NA) if run.fold is not None else "last",
            f"best valid {metric}": run.summary.get("best_score", NA) if run.fold is not None else NA,
            "epochs run": run.summary.get("epochs_run", NA),
            "finished": run.summary.get("finished", NA),
        }
        for run in runs
    ]
    if fold_runs:
        doc.table(fold_runs, "runs", priority=2)


def _examples_section(
    doc: Document,
    inputs: ReportInputs,
    heads: list[HeadSpec],
    labels: dict[str, np.ndarray],
    thumbnails: dict[int, np.ndarray | None] | None,
) -> None:
    doc.section("Examples: right and wrong (OOF)")
    scores = tables.image_scores(heads, inputs.targets, labels)
    right, wrong = tables.pick_examples(scores, figures.GRID_COLUMNS * GRID_ROWS_EACH)
    if thumbnails is None:
        thumbnails = _load_thumbnails(inputs, np.concatenate([right, wrong]))
    fallback = FALLBACK["example images"]
    doc.paragraph(
        "Green: images the model got fully right (its best ones when none is); red: the worst ones. "
        "The number is how right the image is (per-image score, averaged over heads). "
        "T = true labels, P = predicted"
        + (
            "; for attribute heads only the attributes it got wrong are listed."
            if any(h.thresholded and h.threshold_objective.counts_true_negatives for h in heads)
            else "."
        ),
        fallback=fallback,
    )
    if any(image is not None for image in thumbnails.values()):
        doc.figure(
            "examples.png",
            figures.example_grid_figure(heads, right, wrong, thumbnails, inputs.ids, inputs.targets, labels, scores),
            "OOF images predicted right and wrong.",
            fallback=fallback,
            label="example images",
        )
    else:
        doc.paragraph("(No example grid: the training images could not be read; check data.root.)")


def _resources_section(doc: Document, inputs: ReportInputs, metric: str) -> None:
    doc.section("Resources")
    resources = tables.resource_rows(inputs.runs, metric)
    if resources:
        _sentences(doc, discussion.resource_sentences(inputs.runs))
        doc.paragraph(
            "Per training run, from its saved summary, config and per-epoch log. Training time is the sum of "
            "the epoch times; peak memory is the CUDA allocator's peak on a GPU, the process's resident set "
            "on CPU; losses and metrics are at the best epoch; images/s is the mean over epochs. Every "
            "epoch sees each training image once under a fresh random augmentation, so the samples seen "
            "are train images x epochs; validation images are not augmented. "
            f"`train {metric}` is the per-epoch log's train_score at the best epoch: the format's validation score "
            "(multi-label heads at their best global threshold) over that epoch's training batches as the "
            "model saw them, augmented and in training mode; n/a where the run did not record it (a run "
            "from before it was recorded, or one with a mixing callback such as mixup, whose targets are blends).",
            priority=1,
        )
        doc.table(resources, "resources")
    else:
        doc.paragraph("No training runs found.")
    if inputs.sources:
        doc.section("Files read", priority=PDF_NEVER)  # this machine's paths: not for the PDF a grader reads
        doc.table([{"artifact": name, "path": str(path)} for name, path in inputs.sources.items()], "files")


def _head_sections(doc: Document, inputs: ReportInputs, head: HeadSpec, labels: dict[str, np.ndarray]) -> None:
    probs, targets = inputs.probs[head.name], inputs.targets[head.name]
    chosen_rule = inputs.rules[inputs.chosen_rules]
    class_thresholds = None
    if head.thresholded and chosen_rule is not None:
        class_thresholds = np.broadcast_to(np.asarray(chosen_rule.thresholds[head.name], float), (head.n_outputs,))
    kind = "multi-label (sigmoid, per-class thresholds)" if head.thresholded else "single-label (softmax, argmax)"
    doc.section(f"Head `{head.name}`: {kind}, {head.n_outputs} classes")
    if head.thresholded:
        _thresholds_part(doc, inputs, head)
    ranking = ranking_scores(tables.target_matrix(head, targets), probs)
    accuracy_head = head.thresholded and head.threshold_objective.counts_true_negatives
    if accuracy_head:
        doc.subsection("Per-attribute accuracy")
        doc.paragraph("Accuracy of each attribute on the OOF images; the last row is the average over attributes.")
        accuracy_rows = tables.attribute_accuracy_rows(head, probs, targets, labels[head.name], class_thresholds)
        _sentences(
            doc,
            discussion.spread_sentences(accuracy_rows[:-1], "attribute", "accuracy tuned", ("attribute", "attributes")),
        )
        doc.table(accuracy_rows, f"attribute_accuracy_{head.name}")
    _per_class_part(doc, inputs, head, labels, class_thresholds, ranking, priority=1 if accuracy_head else 0)
    if not head.thresholded:
        matrix = metrics.confusion(targets, labels[head.name], head.n_outputs)
        doc.subsection("Confusion matrix", priority=1 if head.n_outputs <= 20 else 2)
        _sentences(doc, discussion.confusion_sentences(matrix, head.class_names))
        doc.figure(
            f"confusion_{slug(head.name)}.png",
            figures.confusion_figure(head, matrix),
            f"[{head.name}] rows: true class, columns: predicted class.",
        )
    doc.subsection("Precision-recall and ROC curves")
    doc.figure(
        f"pr_roc_{slug(head.name)}.png",
        figures.pr_roc_figure(head, probs, targets, ranking),
        f"[{head.name}] micro, macro and the {figures.N_WORST_CURVES} worst classes by average precision.",
        fallback=FALLBACK["precision-recall and ROC curves"],
        label=f"[{head.name}] precision-recall and ROC curves",
    )


def _thresholds_part(doc: Document, inputs: ReportInputs, head: HeadSpec) -> None:
    saved, method = inputs.saved_thresholds, inputs.chosen_method
    saved_head = saved.heads.get(head.name) if saved else None
    probs, targets = inputs.probs[head.name], inputs.targets[head.name]
    doc.subsection("Thresholds: optimistic and honest", priority=1)
    saved_rows = [row.model_dump() for row in saved.honest.get(head.name, [])] if saved else None
    # Shown with the label-count rule in words; tables.json keeps thresholds.json's own method names.
    honest_rows = [{**row, "method": method_label(row["method"])} for row in saved_rows] if saved_rows else None
    if honest_rows:
        best_global = f" Best global threshold: {saved_head.global_threshold:.3f}." if saved_head else ""
        doc.paragraph(
            f"Thresholds by method (from the thresholds stage); {head.threshold_objective.label}. *optimistic*: tuned "
            "and scored on all OOF rows; *honest*: K-fold over the OOF rows, tuned on the other parts "
            f"and scored on the held-out part. Submit uses `{method}`.{best_global}"
        )
        doc.table(honest_rows, f"honest_{head.name}", full_rows=saved_rows)
    else:
        doc.paragraph("No tuned thresholds yet: run the thresholds stage for them and for the honest figure.")
    # The saved best global threshold joins the grid so the figure shows its exact score.
    grid = np.unique(np.r_[tables.THRESHOLD_GRID, [saved_head.global_threshold] if saved_head else []])
    curve = tables.global_threshold_curve(probs, targets, head, grid)
    doc.figure(
        f"thresholds_{slug(head.name)}.png",
        figures.threshold_figure(head, curve, grid, saved_head, honest_rows, method),
        f"[{head.name}] metric vs one global threshold, and optimistic vs honest per method.",
        priority=2,
    )


def _per_class_part(
    doc: Document,
    inputs: ReportInputs,
    head: HeadSpec,
    labels: dict[str, np.ndarray],
    class_thresholds: np.ndarray | None,
    ranking,
    priority: int,
) -> None:
    probs, targets = inputs.probs[head.name], inputs.targets[head.name]
    rows = tables.per_class_rows(head, probs, targets, labels[head.name], class_thresholds, ranking)
    csv_name = f"per_class_{slug(head.name)}.csv"
    write_csv(doc.out_dir / csv_name, rows)
    shown = rows if len(rows) <= MAX_TABLE_ROWS + 10 else rows[:MAX_TABLE_ROWS]
    doc.subsection(f"Per-class table, worst first ({inputs.chosen_rules if head.thresholded else 'argmax'})", priority)
    where = (
        f"All {len(rows)} classes are in `{csv_name}`."
        if len(shown) == len(rows)
        else f"The {len(shown)} worst of {len(rows)} classes; all are in `{csv_name}`."
    )
    lead = (
        "Support = true OOF images of the class, predicted = images given the class; AP (average "
        "precision) and AUC (ROC) rank the class's probabilities, whatever the threshold."
    )
    last = "The last row is the mean over all classes (macro average)."
    shown_only = "" if len(shown) == len(rows) else f" The {len(shown)} worst of {len(rows)} classes."
    # The CSV stays beside the HTML; the PDF travels without it, so it does not point there.
    doc.paragraph(f"{lead} {where} {last}", pdf_text=f"{lead}{shown_only} {last}")
    f_name = next(key for key in rows[0] if key.startswith("F")) if rows else "F1"
    _sentences(doc, discussion.spread_sentences(rows, "class", f_name, ("class", "classes")))
    doc.table(shown + [tables.per_class_mean(rows)], f"per_class_{head.name}", full_rows=rows)


def _load_thumbnails(inputs: ReportInputs, rows: np.ndarray) -> dict[int, np.ndarray | None]:
    from PIL import Image

    from src.data.images import load_rgb
    from src.errors import PipelineError

    thumbnails: dict[int, np.ndarray | None] = {}
    for row in rows:
        path = inputs.image_paths.get(inputs.ids[int(row)])
        try:
            image = Image.fromarray(load_rgb(path)) if path is not None else None
        except PipelineError:
            image = None
        if image is not None:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
            if max(image.size) < THUMBNAIL_PX:  # small images (e.g. 32 px) are enlarged to stay legible
                scale = THUMBNAIL_PX / max(image.size)
                image = image.resize(
                    (round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST
                )
        thumbnails[int(row)] = None if image is None else np.asarray(image)
    return thumbnails


def method_label(method: str) -> str:
    """A threshold method's name as the report shows it: the label-count rule in words ('[0, None]' says nothing)."""
    import re

    match = re.fullmatch(r"global \+ labels per image in \[(\d+), (\w+)\]", method)
    if match is None:
        return method
    low, high = int(match.group(1)), None if match.group(2) == "None" else int(match.group(2))
    if low == 0 and high is None:
        return "global, no labels-per-image limit (none helps)"
    limits = [f"at least {low}" if low else "", f"at most {high}" if high is not None else ""]
    return "global, " + " and ".join(part for part in limits if part) + " labels per image"
