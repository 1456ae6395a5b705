"""Stage `demo`: build a demo competition from real images that ship in scikit-learn, then run every stage on it."""
from __future__ import annotations

import json
import time
from typing import Callable

from src.demo import build_demo
from src.experiment import Experiment
from src.steps import folds, oof, report, submit, thresholds, train


def run(exp: Experiment, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    config = exp.config
    started = time.perf_counter()
    answers = config.data.solution[0].parent if config.data.solution else None
    paths = build_demo(config.format, config.data.root, answers_root=answers)
    log(f"demo competition ({config.format}) at {paths.root}; test answers kept apart in {answers}")
    exp.__dict__.pop("fmt", None)  # the folder may have just been created
    folds.run(exp, log=log)
    train.run(exp, "all", resume=True, quiet=quiet, log=log)
    train.run(exp, "all", full=True, resume=True, quiet=quiet, log=log)
    oof.run(exp, quiet=quiet, log=log)
    thresholds.run(exp, quiet=quiet, log=log)
    files = submit.run(exp, quiet=quiet, log=log)
    report_path = report.run(exp, quiet=quiet, log=log)
    summary = _summary(exp, files, time.perf_counter() - started)
    summary["report (open in a browser)"] = str(report_path)
    log("\n=== demo summary ===\n" + "\n".join(f"{key}: {value}" for key, value in summary.items()))
    return summary


def _summary(exp: Experiment, files, seconds: float) -> dict:
    metric = exp.fmt.main_metric
    oof_rows = json.loads((exp.oof_dir / "oof_scores.json").read_text())
    overall = next(row for row in oof_rows if row["rows"] == "overall")
    summary = {f"OOF {metric} at 0.5": f"{overall['at 0.5']:.4f}"}
    if "tuned" in overall:
        summary[f"OOF {metric} tuned ({exp.config.thresholds.method}), optimistic"] = f"{overall['tuned']:.4f}"
    thresholds = json.loads(exp.thresholds_path.read_text())
    for head, rows in thresholds["honest"].items():
        chosen = next(row for row in rows if row["method"] == exp.config.thresholds.method)
        if "tuned" not in overall:  # oof ran before thresholds: the tuned-on-all-OOF figure is in thresholds.json
            summary[f"OOF {head} score tuned ({exp.config.thresholds.method}), optimistic"] = f"{chosen['optimistic']:.4f}"
        summary[f"honest (nested) {head} score, {exp.config.thresholds.method}"] = f"{chosen['honest']:.4f}"
    scores_path = exp.submission_dir / "test_scores.json"
    if scores_path.exists():
        summary[f"demo test {metric}"] = f"{json.loads(scores_path.read_text())[metric]:.4f}"
    summary["submission"] = ", ".join(str(f) for f in files)
    summary["wall time"] = f"{seconds / 60:.1f} min"
    return summary
