"""The report: built from a tiny real experiment and from synthetic softmax / attribute heads.

Every figure must be a readable, non-blank PNG; every table must hold the numbers src.metrics
(and sklearn) compute for the same arrays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_config
from PIL import Image
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from src import metrics
from src.artifacts import Experiment
from src.config import load_config
from src.formats.base import CompetitionFormat, DecisionRules, HeadSpec
from src.objectives import ColumnAccuracy, ColumnFbeta, SamplesFbeta
from src.report import ReportInputs, RunRecord, build_report, class_curves, ranking_scores
from src.thresholds import apply_thresholds


def check_png(path: Path) -> None:
    """A decodable PNG with real content (not one flat colour)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.load()
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert min(pixels.shape) >= 200, (path, pixels.shape)
    assert pixels.std() > 5.0, f"{path} looks blank (std {pixels.std():.2f})"


def figures_of(report_dir: Path) -> list[Path]:
    """The PNGs report.md links; each must also be embedded in index.html."""
    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (report_dir / "report.md").read_text())
    assert names, "report.md links no figure"
    return [report_dir / name for name in names]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A finished tiny iMet experiment (folds -> train 2 folds -> oof -> thresholds) and its report."""
    from src.demo import build_demo
    from src.steps import folds, oof, report, thresholds, train

    tmp = tmp_path_factory.mktemp("report")
    paths = build_demo("imet", tmp / "demo-imet", n_train=90, n_test=20, seed=5)
    config_path = tiny_config(
        tmp,
        "imet",
        paths.root,
        {"data": {"n_folds": 2}, "train": {"epochs": 2}, "thresholds": {"optuna_trials": 4, "honest_folds": 2}},
    )
    exp = Experiment(load_config(config_path), config_path)
    quiet = lambda message: None  # noqa: E731
    folds.run(exp, log=quiet)
    train.run(exp, "all", quiet=True, log=quiet)
    oof.run(exp, quiet=True, log=quiet)
    thresholds.run(exp, quiet=True, log=quiet)
    html_path = report.run(exp, quiet=True, log=quiet)
    return SimpleNamespace(
        exp=exp,
        html=html_path,
        dir=html_path.parent,
        tmp=tmp,
        config=config_path,
        tables=json.loads((html_path.parent / "tables.json").read_text()),
    )


@pytest.mark.slow
def test_report_files_and_figures(experiment):
    report_dir = experiment.dir
    assert experiment.html == experiment.exp.oof_dir / "report" / "index.html"
    assert (report_dir / "report.md").exists()
    figures = figures_of(report_dir)
    expected = {"training_curves.png", "thresholds_attributes.png", "pr_roc_attributes.png", "examples.png"}
    assert expected <= {path.name for path in figures}
    html_text = experiment.html.read_text()
    for path in figures:
        check_png(path)
    # Self-contained: every figure embedded, nothing fetched from elsewhere.
    assert html_text.count("src='data:image/png;base64,") == len(figures)
    assert "http://" not in html_text and "https://" not in html_text
    for heading in (
        "Training curves",
        "OOF score per fold and overall",
        "Per-class table",
        "Resources",
        "Examples: right and wrong",
    ):
        assert heading in html_text


def test_score_tables_match_metrics(experiment):
    exp, tables = experiment.exp, experiment.tables
    oof = exp.read_oof()
    ids, fold_of_row, probs, targets = oof.ids, oof.fold_of_row, oof.probs, oof.targets
    saved = json.loads(exp.thresholds_path.read_text())
    head = exp.fmt.heads()[0]
    tuned = np.asarray(saved["heads"][head.name]["methods"]["exact"])
    global_value = saved["heads"][head.name]["global"]
    rows = {row["rows"]: row for row in tables["oof_scores"]}
    assert set(rows) == {"fold 0", "fold 1", "overall"}
    for label, mask in [("fold 0", fold_of_row == 0), ("fold 1", fold_of_row == 1), ("overall", fold_of_row >= 0)]:
        true, p = targets[head.name][mask], probs[head.name][mask]
        assert rows[label]["images"] == int(mask.sum())
        assert rows[label]["at 0.5"] == pytest.approx(metrics.fbeta_samples(true, p > 0.5, beta=2))
        assert rows[label]["at the global threshold"] == pytest.approx(
            metrics.fbeta_samples(true, p > global_value, beta=2)
        )
        assert rows[label]["tuned (exact)"] == pytest.approx(
            metrics.fbeta_samples(true, apply_thresholds(p, tuned), beta=2)
        )
    # The oof stage printed the same overall score at 0.5.
    oof_scores = json.loads((exp.oof_dir / "oof_scores.json").read_text())
    assert rows["overall"]["at 0.5"] == pytest.approx(oof_scores[-1]["at 0.5"], abs=1e-12)
    # The rendered tables show these numbers.
    markdown = (experiment.dir / "report.md").read_text()
    assert f"| overall | {len(ids)} | {rows['overall']['at 0.5']:.4f} |" in markdown
    # Honest (nested) figures are the thresholds stage's own.
    for shown, kept in zip(tables[f"honest_{head.name}"], saved["honest"][head.name], strict=True):
        assert shown["method"] == kept["method"]
        for key in ("optimistic", "honest"):
            assert (shown[key] if shown[key] is not None else np.nan) == pytest.approx(kept[key], nan_ok=True)


def test_per_class_table_matches_metrics(experiment):
    exp, tables = experiment.exp, experiment.tables
    oof = exp.read_oof()
    probs, targets = oof.probs, oof.targets
    head = exp.fmt.heads()[0]
    tuned = np.asarray(json.loads(exp.thresholds_path.read_text())["heads"][head.name]["methods"]["exact"])
    true, p = targets[head.name], probs[head.name]
    expected = metrics.per_class_scores(true, apply_thresholds(p, tuned), beta=2.0)
    rows = tables[f"per_class_{head.name}"]
    assert len(rows) == head.n_outputs
    f_scores = [row["F2"] for row in rows]
    assert f_scores == sorted(f_scores), "worst first"
    for row in rows:
        column = head.class_names.index(row["class"])
        assert row["support"] == expected["support"][column] == true[:, column].sum()
        assert row["precision"] == pytest.approx(expected["precision"][column])
        assert row["recall"] == pytest.approx(expected["recall"][column])
        assert row["F2"] == pytest.approx(expected["fscore"][column])
        assert row["threshold"] == pytest.approx(tuned[column])
        if 0 < row["support"] < len(true):
            assert row["AP"] == pytest.approx(average_precision_score(true[:, column], p[:, column]))
            assert row["AUC"] == pytest.approx(roc_auc_score(true[:, column], p[:, column]))
    # The CSV beside the report holds the same table.
    frame = pd.read_csv(experiment.dir / f"per_class_{head.name}.csv")
    assert list(frame["class"]) == [row["class"] for row in rows]


def test_resource_table(experiment):
    rows = {row["run"]: row for row in experiment.tables["resources"]}
    assert set(rows) == {"fold-0", "fold-1"}
    from src.model import build_model, count_parameters

    total, _ = count_parameters(build_model("test_resnet", experiment.exp.fmt.heads()))
    for name, row in rows.items():
        epochs = pd.read_csv(experiment.exp.oof_dir / name / "epochs.csv")
        assert row["model"] == "test_resnet" and row["image size"] == 32 and row["epochs"] == 2
        assert row["params"] == (f"{total / 1e3:.1f}k" if total < 1e6 else f"{total / 1e6:.2f}M")
        assert row["train images"] + row["valid images"] == 90
        summary = json.loads((experiment.exp.oof_dir / name / "summary.json").read_text())
        minutes, seconds = divmod(int(round(summary.get("train_seconds", epochs["seconds"].sum()))), 60)
        assert row["train time"] == (f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s")
        assert row["valid f2"] == f"{epochs['score'].max():.4f}"
        best = epochs.loc[epochs["epoch"] == summary["best_epoch"]].iloc[0]
        # The training-batch metric at the best epoch once the engine records it, n/a before.
        assert row["train f2"] == (f"{best['train_score']:.4f}" if pd.notna(best.get("train_score")) else "n/a")
        assert row["augmented samples seen"] == row["train images"] * row["epochs"]


def test_ranking_scores_equal_sklearn():
    """AP, AUC and curves from per-value counts equal sklearn's, ties and empty classes included."""
    rng = np.random.default_rng(1)
    n, c = 300, 7
    true = (rng.random((n, c)) < np.linspace(0.05, 0.7, c)).astype(np.uint8)
    true[:, 5] = 0  # no positives: AP and AUC undefined
    # float16 like the OOF file; coarse rounding makes many ties
    probs = np.round(np.clip(0.3 * true + 0.7 * rng.random((n, c)), 0, 1), 2).astype(np.float16).astype(np.float32)
    ranking = ranking_scores(true, probs)
    for column in range(c):
        if column == 5:
            assert np.isnan(ranking.ap[column]) and np.isnan(ranking.auc[column])
            continue
        assert ranking.ap[column] == pytest.approx(average_precision_score(true[:, column], probs[:, column]))
        assert ranking.auc[column] == pytest.approx(roc_auc_score(true[:, column], probs[:, column]))
        recall, precision, fpr, tpr = class_curves(true[:, column], probs[:, column])
        sk_precision, sk_recall, _ = precision_recall_curve(true[:, column], probs[:, column])
        np.testing.assert_allclose(recall[1:], sk_recall[::-1][1:])
        np.testing.assert_allclose(precision[1:], sk_precision[::-1][1:])
        sk_fpr, sk_tpr, _ = roc_curve(true[:, column], probs[:, column], drop_intermediate=False)
        np.testing.assert_allclose(np.c_[fpr, tpr], np.c_[sk_fpr, sk_tpr])
    assert ranking.micro_ap == pytest.approx(average_precision_score(true, probs, average="micro"))
    assert ranking.micro_auc == pytest.approx(roc_auc_score(true, probs, average="micro"))


def test_global_threshold_curve_equals_thresholds_score():
    from src.report import global_threshold_curve
    from src.thresholds import score

    rng = np.random.default_rng(2)
    true = (rng.random((120, 9)) < 0.3).astype(np.uint8)
    probs = np.clip(0.4 * true + 0.6 * rng.random((120, 9)), 0, 1).astype(np.float32)
    grid = np.array([0.05, 0.2, 0.5, 0.73, 0.95])
    for objective in (SamplesFbeta(2.0), ColumnAccuracy(), ColumnFbeta(1.0)):
        head = HeadSpec("h", "multilabel", tuple("abcdefghi"), objective)
        expected = [score(probs, true, value, objective) for value in grid]
        np.testing.assert_allclose(global_threshold_curve(probs, true, head, grid), expected)


# --- synthetic heads: a softmax head and a CelebA-like attribute head -------------------------------


class TwoHeadFormat(CompetitionFormat):
    """Stands in for deepfashion/celeba/folder: one softmax head and one column-accuracy attribute head."""

    name = "two-head-test"
    main_metric = "score"

    def heads(self):
        return [
            HeadSpec("category", "softmax", ("shirt", "dress", "coat", "shoe")),
            HeadSpec("attributes", "multilabel", tuple(f"attr_{i}" for i in range(6)), ColumnAccuracy()),
        ]

    def read_train(self):
        raise NotImplementedError

    def read_test(self):
        raise NotImplementedError

    def write_submission(self, out_dir, ids, labels, probs):
        raise NotImplementedError

    def read_submission(self, files):
        raise NotImplementedError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synthetic")
    fmt = TwoHeadFormat(tmp)
    rng = np.random.default_rng(0)
    n = 240
    category = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) + 2.0 * np.eye(4)[category]
    category_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    attributes = (rng.random((n, 6)) < np.linspace(0.1, 0.6, 6)).astype(np.uint8)
    attribute_probs = np.clip(0.35 * attributes + rng.random((n, 6)) * 0.65, 0, 1)
    thresholds = np.linspace(0.3, 0.6, 6)
    rules = {"at 0.5": None, "tuned (exact)": DecisionRules({"attributes": thresholds})}
    epochs = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.2, 0.9, 0.7],
            "valid_loss": [1.1, 0.95, 0.9],
            "score": [0.5, 0.6, 0.58],
            "seconds": [3.0, 3.5, 3.2],
            "images_per_s": [100, 110, 105],
        }
    )
    runs = [
        RunRecord(
            "fold-0",
            0,
            tmp / "fold-0",
            epochs,
            {"best_epoch": 2, "best_score": 0.6, "epochs_run": 3, "device": "cpu", "peak_memory_mb": 512.0},
            {"model": {"name": "resnet18"}, "data": {"image_size": 64}, "train": {"batch_size": 32}},
            params=(11_200_000, 11_200_000),
        )
    ]
    inputs = ReportInputs(
        experiment="synthetic",
        fmt=fmt,
        ids=[f"img{i:03d}" for i in range(n)],
        fold_of_row=np.arange(n) % 3,
        probs={"category": category_probs.astype(np.float32), "attributes": attribute_probs.astype(np.float32)},
        targets={"category": category, "attributes": attributes},
        rules=rules,
        chosen_rules="tuned (exact)",
        chosen_method="exact",
        runs=runs,
    )
    rgb = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    thumbnails = {row: rgb for row in range(0, n, 2)}  # odd rows show the "image not found" placeholder
    html_path = build_report(inputs, tmp / "report", thumbnails=thumbnails)
    return SimpleNamespace(
        dir=html_path.parent,
        inputs=inputs,
        thresholds=thresholds,
        tables=json.loads((html_path.parent / "tables.json").read_text()),
    )


@pytest.mark.slow
def test_softmax_head_confusion_and_per_class(synthetic):
    figures = {path.name for path in figures_of(synthetic.dir)}
    assert {
        "confusion_category.png",
        "pr_roc_category.png",
        "pr_roc_attributes.png",
        "thresholds_attributes.png",
        "examples.png",
        "training_curves.png",
    } <= figures
    for path in figures_of(synthetic.dir):
        check_png(path)
    true = synthetic.inputs.targets["category"]
    pred = synthetic.inputs.probs["category"].argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(true, pred, labels=range(4), zero_division=0)
    names = ("shirt", "dress", "coat", "shoe")
    for row in synthetic.tables["per_class_category"]:
        column = names.index(row["class"])
        assert row["threshold"] == "argmax"
        assert row["support"] == support[column]
        assert (row["precision"], row["recall"], row["F1"]) == pytest.approx(
            (precision[column], recall[column], f1[column])
        )
    # Main metric = mean of the heads' scores (softmax accuracy, attribute mean accuracy at the tuned thresholds).
    accuracy = metrics.accuracy(true, pred)
    overall = synthetic.tables["oof_scores"][-1]
    attr_tuned = metrics.mean_accuracy(
        synthetic.inputs.targets["attributes"], synthetic.inputs.probs["attributes"] > synthetic.thresholds
    )
    assert overall["tuned (exact)"] == pytest.approx((accuracy + attr_tuned) / 2)
    every_metric = {row["metric"]: row for row in synthetic.tables["oof_metrics"]}
    assert every_metric["category_accuracy"]["at 0.5"] == pytest.approx(accuracy)
    assert every_metric["category_macro_f1"]["tuned (exact)"] == pytest.approx(f1.mean())
    assert every_metric["attributes_accuracy"]["tuned (exact)"] == pytest.approx(attr_tuned)


def test_attribute_accuracy_table(synthetic):
    true = synthetic.inputs.targets["attributes"]
    probs = synthetic.inputs.probs["attributes"]
    at_half = metrics.per_column_accuracy(true, probs > 0.5)
    tuned = metrics.per_column_accuracy(true, probs > synthetic.thresholds)
    rows = synthetic.tables["attribute_accuracy_attributes"]
    assert [row["attribute"] for row in rows] == [f"attr_{i}" for i in range(6)] + ["mean"]
    for column, row in enumerate(rows[:-1]):
        assert row["accuracy at 0.5"] == pytest.approx(at_half[column])
        assert row["accuracy tuned"] == pytest.approx(tuned[column])
        assert row["threshold"] == pytest.approx(synthetic.thresholds[column])
    assert rows[-1]["accuracy tuned"] == pytest.approx(tuned.mean())
    resources = synthetic.tables["resources"][0]
    assert (resources["device"], resources["peak memory"], resources["params"]) == ("cpu", "512 MB", "11.20M")
    assert resources["train time"] == "10s"


def test_status_lists_the_real_experiment(experiment):
    from src.steps import status

    lines: list[str] = []
    rows = status.show(experiment.exp.config.output_dir, experiment.config.parent, lines.append)
    row = next(row for row in rows if row["experiment"] == experiment.exp.name)
    oof_scores = json.loads((experiment.exp.oof_dir / "oof_scores.json").read_text())
    assert (row["folds_trained"], row["n_folds"]) == (2, 2)
    assert row["oof_score"] == oof_scores[-1]["at 0.5"]
    for fold in row["folds"]:
        summary = json.loads((Path(fold["path"]) / "summary.json").read_text())
        assert (fold["best_epoch"], fold["best_score"]) == (summary["best_epoch"], summary["best_score"])
    assert row["thresholds"]["method"] == "exact" and row["report"] == str(experiment.html)
    assert f"{oof_scores[-1]['at 0.5']:.4f}" in lines[1]


def test_pick_examples_are_disjoint_and_ordered():
    from src.report import pick_examples

    scores = np.r_[np.ones(30), np.linspace(0.0, 0.9, 50)]
    right, wrong = pick_examples(scores, 12)
    assert len(right) == len(wrong) == 12 and not set(right) & set(wrong)
    assert np.all(scores[right] == 1.0) and np.all(scores[wrong] < 1.0)
    assert scores[wrong[0]] == 0.0  # the worst image comes first
    few = np.linspace(0.2, 0.9, 9)  # few rows, none fully right: the best half and the worst half
    right, wrong = pick_examples(few, 12)
    assert len(right) == len(wrong) == 4 and few[right].min() > few[wrong].max()


# --- the PDF: A4, within the page budget, searchable, made from the same content -----------------


def pdf_text(path: Path) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    assert all(
        round(float(page.mediabox.width)) == 595 and round(float(page.mediabox.height)) == 842 for page in reader.pages
    ), "A4 pages"
    return len(reader.pages), " ".join(page.extract_text() for page in reader.pages)


def test_report_pdf_holds_the_report_within_the_budget(experiment):
    pages, text = pdf_text(experiment.dir / "report.pdf")
    assert 1 <= pages <= experiment.exp.config.report.max_pages == 5
    summary = experiment.tables["summary"]
    assert f"{summary[0]['value']:.4f}" in text  # the OOF F2 at 0.5, as the summary table prints it
    for heading in (
        "Summary",
        "Model, losses and tricks",
        "Training curves",
        "Per-class table",
        "Precision-recall",
        "Examples: right and wrong",
        "Resources",
    ):
        assert heading in text, heading
    # The model section: torchinfo's total, the loss and optimizer from the saved config.
    network = experiment.tables["network"]
    assert {row["part"] for row in network} >= {"stem", "layer1", "layer4", "head attributes"}
    assert "binary cross-entropy" in text and "AdamW" in text
    from src.model import build_model, count_parameters

    total, _ = count_parameters(build_model("test_resnet", experiment.exp.fmt.heads()))
    assert f"{total:,} parameters" in text
    # The resource table is there, turned on its side (one column per run), train score n/a until the engine records it.
    assert "augmented samples seen" in text and "fold-0" in text


@pytest.mark.slow
def test_a_tighter_budget_leaves_detail_out_and_too_tight_a_budget_is_refused(synthetic, tmp_path):
    from src.errors import PipelineError

    full_pages, _ = pdf_text(synthetic.dir / "report.pdf")
    build_report(
        synthetic.inputs, tmp_path / "less", thumbnails={0: np.zeros((40, 40, 3), np.uint8)}, max_pages=full_pages - 1
    )
    pages, text = pdf_text(tmp_path / "less" / "report.pdf")
    assert pages <= full_pages - 1
    assert "Left out of this PDF to fit the page budget" in text
    mean = synthetic.tables["attribute_accuracy_attributes"][-1]["accuracy tuned"]
    assert f"{mean:.4f}" in text  # the per-attribute table and its average are never left out
    with pytest.raises(PipelineError, match="config report.max_pages: .* raise report.max_pages \\(now 1\\)"):
        build_report(synthetic.inputs, tmp_path / "one", max_pages=1)


def test_report_with_author_notes_and_arial_reads_as_a_course_hand_in(experiment, tmp_path):
    """package.author, report.notes and report.font/font_size through the stage's loading, read back from the PDF."""
    from test_report_pdf import pdf_font_sizes

    from src.errors import PipelineError
    from src.report.document import Typography
    from src.steps.report import load_inputs, report_typography

    (experiment.config.parent / "my-notes.md").write_text(
        "# What I learned\n\nThe honest figure is the one to quote.\n", encoding="utf-8"
    )
    overrides = ["package.author=RollNumber_06", "report.notes=my-notes.md", "report.font=arial", "report.font_size=10"]
    exp = Experiment(load_config(experiment.config, overrides), experiment.config)
    assert report_typography(exp) == Typography("arial", 10.0)
    build_report(load_inputs(exp, log=lambda message: None), tmp_path, typography=report_typography(exp))
    pages, text = pdf_text(tmp_path / "report.pdf")
    assert pages <= 5
    assert "Author: RollNumber_06" in text
    assert "Discussion" in text and "What I learned" in text and "The honest figure is the one to quote." in text
    # Generated prose: the per-class spread, the threshold gap, the resources (2 epochs say nothing of overfitting).
    assert "The best class is" in text and "overstates by" in text and "Training took" in text
    # The PDF travels without the HTML, the CSVs and the run's JSON files: it points at none of them.
    for name in ("index.html", ".csv", ".json", "labels per image in [0, None]"):
        assert name not in text, name
    sizes = pdf_font_sizes(tmp_path / "report.pdf")
    assert {name.split("+")[-1].lstrip("/") for name, _ in sizes} <= {"Helvetica", "Helvetica-Bold"}
    assert min(point for _, point in sizes) >= 8.0 and ("/Helvetica", 10.0) in sizes
    missing = Experiment(load_config(experiment.config, ["report.notes=nowhere.md"]), experiment.config)
    with pytest.raises(PipelineError, match=r"^config report.notes: .*nowhere.md not found"):
        load_inputs(missing, log=lambda message: None)


def test_the_rows_drop_noisy_left_out_are_listed_with_their_labels(experiment, tmp_path):
    """A run's dropped.csv (train.drop_noisy) becomes a section: rows per run, the surest ones with labels, images."""
    import pandas as pd

    from src.cleaning import DROPPED_CSV
    from src.steps.report import load_inputs

    exp = experiment.exp
    ids = exp.read_oof().ids
    dropped = pd.DataFrame({"id": ids[:3], "oof_loss": [0.9, 0.7, 0.5]})
    dropped.to_csv(exp.run_dir(0) / DROPPED_CSV, index=False)
    try:
        build_report(load_inputs(exp, log=lambda message: None), tmp_path)
    finally:
        (exp.run_dir(0) / DROPPED_CSV).unlink()
    tables = json.loads((tmp_path / "tables.json").read_text())
    assert tables["dropped_runs"] == [{"run": "fold-0", "rows left out": 3, "lowest OOF loss left out": 0.5}]
    shown = tables["dropped"]
    assert [row["id"] for row in shown] == ids[:3] and [row["OOF loss"] for row in shown] == [0.9, 0.7, 0.5]
    [head] = exp.fmt.heads()
    labels = exp.read_oof().targets[head.name][0]
    assert shown[0]["labels"] == ", ".join(head.class_names[c] for c in np.flatnonzero(labels)) or "-"
    check_png(tmp_path / "dropped_examples.png")
    assert "Training rows left out (train.drop_noisy)" in (tmp_path / "report.md").read_text()


def test_a_refused_rebuild_leaves_the_last_report_whole(experiment):
    """The PDF is laid out last; refused (notes too long for report.max_pages), the report stage used to have
    rewritten index.html, report.md and tables.json already, beside the old PDF. Now nothing of the folder changes."""
    from src.errors import PipelineError
    from src.steps import report

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(experiment.dir.iterdir()) if p.is_file()}

    before = files()
    (experiment.config.parent / "long-notes.md").write_text("Long notes. " * 3_000, encoding="utf-8")
    too_long = Experiment(
        load_config(experiment.config, ["report.notes=long-notes.md", "report.max_pages=1"]), experiment.config
    )
    with pytest.raises(PipelineError, match="shorten report.notes"):
        report.run(too_long, quiet=True, log=lambda message: None)

    assert files() == before
    assert sorted(p.name for p in experiment.dir.parent.iterdir() if p.name.startswith(".")) == []
