"""Stage `demo`: build a demo competition from real images that ship in scikit-learn, then run every stage on it."""

from __future__ import annotations

import time
from collections.abc import Callable

from src.artifacts import WEIGHTS_ROOT, Experiment, ScoreTable, read_test_scores, tuned_column
from src.demo import build_demo
from src.demo_pretrain import ensure_demo_weights
from src.steps import folds, oof, report, submit, thresholds, train


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    config = exp.config
    started = time.perf_counter()
    answers = config.data.solution[0].parent if config.data.solution else None
    paths = build_demo(config.format, config.data.root, answers_root=answers)
    log(f"demo competition ({config.format}) at {paths.root}; test answers kept apart in {answers}")
    exp.__dict__.pop("fmt", None)  # the folder may have just been created
    # The demo's pretrained weights are made here, offline (src/demo_pretrain.py); another tag is the weights stage's.
    ensure_demo_weights(config.model.pretrained, exp.output_dir / "oof" / "_demo_pretrain", WEIGHTS_ROOT, log)
    folds.run(exp, log=log)
    train.run(exp, "all", resume=True, quiet=quiet, log=log)
    train.run(exp, "all", full=True, resume=True, quiet=quiet, log=log)
    oof.run(exp, quiet=quiet, log=log)
    thresholds.run(exp, quiet=quiet, log=log)
    files = submit.run(exp, quiet=quiet, log=log)
    for other in compared_demos(exp):
        log(f"report.compare: training {other.name} ({other.config_path}) for the report's comparison")
        _chain(other, quiet, log)
    report_path = report.run(exp, quiet=quiet, log=log)
    summary = _summary(exp, files, time.perf_counter() - started)
    summary["report (open in a browser)"] = str(report_path)
    log("\n=== demo summary ===\n" + "\n".join(f"{key}: {value}" for key, value in summary.items()))
    return summary


def compared_demos(exp: Experiment) -> list[Experiment]:
    """The experiments report.compare names that have a config beside this one (with this run's overrides)."""
    from src.config import load_config

    found = []
    for name in exp.config.report.compare:
        path = exp.config_path.parent / f"{name}.yaml"
        if path.is_file():
            found.append(Experiment(load_config(path, list(exp.config.overrides)), path))
    return found


def _chain(exp: Experiment, quiet: bool, log: Callable[[str], None]) -> None:
    """folds -> train (every fold, and the full fit when it submits from it) -> oof -> thresholds -> submit."""
    folds.run(exp, log=log)
    train.run(exp, "all", resume=True, quiet=quiet, log=log)
    if exp.config.submit.checkpoint == "full":
        train.run(exp, "all", full=True, resume=True, quiet=quiet, log=log)
    oof.run(exp, quiet=quiet, log=log)
    thresholds.run(exp, quiet=quiet, log=log)
    submit.run(exp, quiet=quiet, log=log)


def _summary(exp: Experiment, files, seconds: float) -> dict:
    metric, method = exp.fmt.main_metric, exp.config.thresholds.method
    oof_scores = ScoreTable.read(exp.oof_scores_path)
    summary = {f"OOF {metric} at 0.5": f"{oof_scores.overall('at 0.5'):.4f}"}
    tuned_scores = ScoreTable.read(exp.threshold_scores_path)
    if tuned_scores is not None:
        summary[f"OOF {metric} tuned ({method}), optimistic"] = f"{tuned_scores.overall(tuned_column(method)):.4f}"
    saved = exp.read_thresholds(required=True)
    for head in saved.honest:
        chosen = saved.score_of(head, method)
        summary[f"honest (nested) {head} score, {method}"] = f"{chosen.honest:.4f}"
    test_scores = read_test_scores(exp.test_scores_path)
    if test_scores is not None:
        summary[f"demo test {metric}"] = f"{test_scores[metric]:.4f}"
    summary["submission"] = ", ".join(str(f) for f in files)
    summary["wall time"] = f"{seconds / 60:.1f} min"
    return summary
