"""Stage `report`: figures, tables and an HTML + Markdown + PDF report of one experiment from its saved artifacts.

Reads oof/<exp>/{oof.npz, thresholds.json, fold-K/ and full/ (epochs.csv, summary.json, config.json)}
and the original training images of the few OOF rows shown as examples; builds the network once
(random weights) for its summary; writes oof/<exp>/report/ (index.html with the figures embedded,
report.md with the PNGs beside it, report.pdf on at most `report.max_pages` A4 pages, per-class
CSVs). Nothing is retrained or predicted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from src.artifacts import EPOCHS_CSV, REPORT_MD, Experiment, read_run_config, read_run_summary, tuned_column
from src.atomic import atomic_folder
from src.cleaning import DROPPED_CSV
from src.errors import PipelineError
from src.formats.base import DecisionRules
from src.report import NetworkSummary, ReportInputs, RunRecord, build_report, describe_network
from src.report.discussion import read_notes, resolve_notes
from src.report.document import Typography
from src.report.pdf import page_count


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build the report; return the path of index.html."""
    log(f"report {exp.name}: from {exp.oof_dir} (no retraining) -> {exp.report_dir}")
    inputs = load_inputs(exp, log)
    with atomic_folder(exp.report_dir) as staging:  # a refused PDF leaves the last report whole, not half rewritten
        build_report(inputs, staging, max_pages=exp.config.report.max_pages, typography=report_typography(exp), log=log)
    html_path = exp.report_html
    pages = page_count(exp.report_pdf)
    log(
        f"wrote {html_path} (open it in a browser), {exp.report_dir / REPORT_MD} and {exp.report_pdf} "
        f"({pages} A4 page{'s' if pages != 1 else ''}, budget {exp.config.report.max_pages})"
    )
    return html_path


def report_typography(exp: Experiment) -> Typography:
    """report.font and report.font_size, each from the format's course default where the config leaves it null."""
    font, size = exp.fmt.report_typography
    cfg = exp.config.report
    return Typography(cfg.font or font, float(cfg.font_size or size))


def load_inputs(exp: Experiment, log: Callable[[str], None] = print) -> ReportInputs:
    """Everything the report shows, read from the experiment's artifacts."""
    fmt = exp.fmt
    oof = exp.read_oof()
    heads = fmt.heads()
    sources = {"OOF probabilities": exp.oof_path}
    notes: list[str] = []
    # Softmax-only formats decide by argmax: "at 0.5" would be a misleading name for that column.
    chosen = "at 0.5" if any(head.thresholded for head in heads) else "argmax"
    rules: dict[str, DecisionRules | None] = {chosen: None}
    saved, method = exp.read_thresholds(), None
    if saved is not None:
        sources["thresholds"] = exp.thresholds_path
        if saved.heads:
            cfg = exp.config.thresholds
            method, chosen = cfg.method, tuned_column(cfg.method)
            rules["at the global threshold"] = DecisionRules(saved.global_thresholds())
            rules[chosen] = saved.rules(method, cfg.min_labels, cfg.max_labels)
    elif any(head.thresholded for head in heads):
        notes.append(
            f"{exp.thresholds_path} not found: scores are at 0.5 only; make it with {exp.command('thresholds')}"
        )
    # The student's discussion is read first: a wrong report.notes path fails before any work.
    notes_path = resolve_notes(exp.config.report.notes, exp.config_path)
    student_discussion = read_notes(notes_path) if notes_path is not None else []
    comparison = _comparison(exp, method)
    runs = load_runs(exp)
    for run in runs:
        sources[f"{run.name} epochs"] = run.path / EPOCHS_CSV
    image_paths: dict = {}
    try:
        table = fmt.read_train()
        image_paths = dict(zip(table.ids, table.paths))
        sources["training images"] = fmt.root
    except PipelineError as exc:
        notes.append(f"example images unavailable ({exc})")
    return ReportInputs(
        experiment=exp.name,
        fmt=fmt,
        ids=oof.ids,
        fold_of_row=oof.fold_of_row,
        probs=oof.probs,
        targets=oof.targets,
        rules=rules,
        chosen_rules=chosen,
        saved_thresholds=saved,
        chosen_method=method,
        runs=runs,
        image_paths=image_paths,
        notes=notes,
        sources=sources,
        network=_network(exp, runs, notes),
        author=exp.config.package.author,
        discussion=student_discussion,
        comparison=comparison,
    )


def _comparison(exp: Experiment, method: str | None) -> list[dict]:
    """report.compare's rows (none when it names no experiment); a missing one is refused with the command making it."""
    if not exp.config.report.compare:
        return []
    from src.report.compare import comparison_rows

    def how_to_make(name: str) -> str:
        config = exp.config_path.parent / f"{name}.yaml"
        if exp.config.data.solution and config.is_file():  # a demo config: its demo stage trains what it compares with
            return exp.command("demo")
        return f"python -m src.stage train --config {config} --fold all, then oof and thresholds with the same config"

    return comparison_rows(
        exp.output_dir, exp.name, exp.config.report.compare, exp.fmt.main_metric, method, how_to_make
    )


def _network(exp: Experiment, runs: list[RunRecord], notes: list[str]) -> NetworkSummary | None:
    """The network of the first run's saved config (else the experiment's), summarised at its image size."""
    saved = runs[0].config if runs else {}
    model, data = saved.get("model", {}), saved.get("data", {})
    name, drop_rate = model.get("name", exp.config.model.name), model.get("drop_rate", exp.config.model.drop_rate)
    try:
        return describe_network(
            name, exp.fmt.heads(), int(data.get("image_size", exp.config.data.image_size)), drop_rate
        )
    except Exception as exc:  # an unknown or renamed timm model: the report says so and goes on
        notes.append(f"no network summary ({str(exc).splitlines()[0][:160]})")
        return None


def load_runs(exp: Experiment) -> list[RunRecord]:
    """fold-K runs in fold order, then the full fit: their epochs.csv, summary.json, config.json, parameter counts."""
    runs = []
    full = exp.run_dir(None)
    for fold, path in exp.fold_run_dirs() + ([(None, full)] if full.is_dir() else []):
        run = RunRecord(
            name=path.name,
            fold=fold,
            path=path,
            epochs=_read_csv(path / EPOCHS_CSV),
            summary=read_run_summary(path),
            config=read_run_config(path),
            dropped=_read_csv(path / DROPPED_CSV),
        )
        run.params = _parameter_counts(exp, run)
        runs.append(run)
    return runs


_PARAMS_BY_MODEL: dict[tuple, tuple[int, int]] = {}


def _parameter_counts(exp: Experiment, run: RunRecord) -> tuple[int, int] | None:
    """(total, trainable) from summary.json when training saved them, else by building the model once per name."""
    if "parameters" in run.summary and "trainable_parameters" in run.summary:
        return int(run.summary["parameters"]), int(run.summary["trainable_parameters"])
    name = run.config.get("model", {}).get("name")
    if name is None:
        return None
    heads = exp.fmt.heads()
    key = (name, tuple((h.name, h.kind, h.n_outputs) for h in heads))
    if key not in _PARAMS_BY_MODEL:
        from src.model import build_model, count_parameters

        try:
            _PARAMS_BY_MODEL[key] = count_parameters(build_model(name, heads))
        except Exception:  # an unknown or renamed timm model: the table says n/a
            return None
    return _PARAMS_BY_MODEL[key]


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path) if path.exists() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None
