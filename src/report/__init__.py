"""Figures and the experiment report (HTML, Markdown and an A4 PDF) from arrays and tables the stages saved.

`build_report(inputs, out_dir)` takes a `ReportInputs` (OOF probabilities and targets per head, the
decision rules, the saved thresholds, the per-run training records and the network's summary;
`src/steps/report.py` loads them from disk) and writes PNG figures, per-class CSVs, `index.html`
(figures embedded, so the file stands alone), `report.md` (figures linked beside it) and `report.pdf`
(A4, within a page budget). Nothing is trained or predicted here. Tables are computed with
`src.metrics` / `src.thresholds` on the same arrays, so they agree with the numbers the stages print;
AP, ROC AUC and the curves are exact and equal sklearn.metrics' (see `ranking_scores`). Plots use
matplotlib's Agg canvas directly (no pyplot, no display).

Modules: inputs (what goes in), tables, ranking, figures, network (torchinfo), document (the one
content model), build (the sections), markup (HTML + Markdown), pdf (reportlab), text (formatting).
"""

from src.report.build import DEFAULT_MAX_PAGES, MAX_TABLE_ROWS, build_report
from src.report.document import PDF_NEVER, Block, Document
from src.report.figures import (
    confusion_figure,
    example_grid_figure,
    network_figure,
    pr_roc_figure,
    threshold_figure,
    training_curves_figure,
)
from src.report.inputs import ReportInputs, RunRecord
from src.report.network import NetworkSummary, describe_network
from src.report.ranking import CURVE_GRID, Ranking, class_curves, curve_points, ranking_scores
from src.report.tables import (
    THRESHOLD_GRID,
    attribute_accuracy_rows,
    decided_matrix,
    global_threshold_curve,
    image_scores,
    losses_by_head,
    metric_rows,
    per_class_mean,
    per_class_rows,
    pick_examples,
    resource_rows,
    settings_rows,
    target_matrix,
)

__all__ = [
    "Block",
    "CURVE_GRID",
    "DEFAULT_MAX_PAGES",
    "Document",
    "MAX_TABLE_ROWS",
    "NetworkSummary",
    "PDF_NEVER",
    "Ranking",
    "ReportInputs",
    "RunRecord",
    "THRESHOLD_GRID",
    "attribute_accuracy_rows",
    "build_report",
    "class_curves",
    "confusion_figure",
    "curve_points",
    "decided_matrix",
    "describe_network",
    "example_grid_figure",
    "global_threshold_curve",
    "image_scores",
    "losses_by_head",
    "metric_rows",
    "network_figure",
    "per_class_mean",
    "per_class_rows",
    "pick_examples",
    "pr_roc_figure",
    "ranking_scores",
    "resource_rows",
    "settings_rows",
    "target_matrix",
    "threshold_figure",
    "training_curves_figure",
]
