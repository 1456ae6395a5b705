"""Stage `status`: what every experiment has made so far, read from the artifacts under output_dir.

One row per experiment found in output_dir/oof/ or configs/: folds trained (best epoch and score of
each), the full fit, the OOF score at 0.5 and tuned, the thresholds found, submissions written, the
kernel built and the report, with their paths. Reads files only; loads no model and no config class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import yaml

from src.config import DataConfig

EMPTY = "-"
# src.data.folds.folds_file's name, spelled here so that status does not import sklearn (seconds).
FOLDS_NAME = "folds-k{n_folds}-seed{seed}.csv"


def run(output_dir: Path, configs_dir: Path, log: Callable[[str], None] = print, clean_cache: bool = False) -> list[dict]:
    """One dict per experiment (sorted by name); logs a compact table, the paths and the image cache's size
    (deleting the cache first with `clean_cache`)."""
    output_dir, configs_dir = Path(output_dir), Path(configs_dir)
    names = set()
    oof_root = output_dir / "oof"
    if oof_root.is_dir():
        names |= {p.name for p in oof_root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    configs = {p.stem: p for p in sorted(configs_dir.glob("*.yaml"))} if configs_dir.is_dir() else {}
    names |= set(configs)
    rows = [experiment_status(output_dir, name, configs.get(name)) for name in sorted(names)]
    if rows:
        log(f"experiments under {output_dir.resolve()} (configs: {configs_dir}):")
        log(pd.DataFrame([_display(row) for row in rows]).to_string(index=False))
        for row in rows:
            made = [f"  {label}: {path}" for label, path in row["paths"].items()]
            if made:
                log(f"{row['experiment']}:\n" + "\n".join(made))
    else:
        log(f"no experiments under {oof_root} or {configs_dir}")
    _image_cache_line(oof_root / "_image_cache", clean_cache, log)
    return rows


def _image_cache_line(cache_dir: Path, clean: bool, log: Callable[[str], None]) -> None:
    from src.data.cache import cache_usage, clear_cache

    if clean:
        removed = clear_cache(cache_dir)
        busy = f"; {removed.in_use} being built, left alone" if removed.in_use else ""
        log(f"image cache: deleted {removed.entries} image set(s), {removed.bytes / 2**30:.2f} GB freed in {cache_dir}{busy}")
    usage = cache_usage(cache_dir)
    if usage.entries:
        log(f"image cache: {usage.entries} decoded image set(s), {usage.bytes / 2**30:.2f} GB in {cache_dir} "
            "(rebuilt on demand; `status --clean-cache` deletes them)")


def experiment_status(output_dir: Path, name: str, config_path: Optional[Path]) -> dict:
    """What one experiment has made (values and paths; missing things are None or empty)."""
    oof_dir = output_dir / "oof" / name
    paths: dict[str, str] = {}
    if config_path is not None:
        paths["config"] = str(config_path)
    folds = []
    fold_dirs = sorted((p for p in oof_dir.glob("fold-*") if p.is_dir() and p.name[5:].isdigit()),
                       key=lambda p: int(p.name[5:])) if oof_dir.is_dir() else []
    for path in fold_dirs:
        folds.append(run_status(path, int(path.name[5:])))
    full = run_status(oof_dir / "full", None) if (oof_dir / "full").is_dir() else None
    trained = [fold for fold in folds if fold["best_checkpoint"]]
    if fold_dirs:
        paths["runs"] = str(oof_dir)

    oof_scores = _read_json(oof_dir / "oof_scores.json")
    overall = next((row for row in oof_scores or [] if row.get("rows") == "overall"), {})
    if (oof_dir / "oof.npz").exists():
        paths["oof"] = str(oof_dir / "oof.npz")

    thresholds = _read_json(oof_dir / "thresholds.json")
    threshold_summary = None
    if thresholds is not None:
        paths["thresholds"] = str(oof_dir / "thresholds.json")
        threshold_summary = {
            "method": thresholds.get("method"),
            "global": {head: info.get("global") for head, info in thresholds.get("heads", {}).items()},
            "optimistic": {head: _chosen(rows, thresholds.get("method"), "optimistic")
                           for head, rows in thresholds.get("honest", {}).items()},
            "honest": {head: _chosen(rows, thresholds.get("method"), "honest")
                       for head, rows in thresholds.get("honest", {}).items()},
        }

    submission_dir = output_dir / "submissions" / name
    submission_files = sorted(str(p) for p in submission_dir.iterdir()
                              if p.is_file() and not p.name.startswith(".")
                              and p.name not in ("test_probs.npz", "test_scores.json")) if submission_dir.is_dir() else []
    if submission_files:
        paths["submission"] = ", ".join(submission_files)
    test_scores = _read_json(submission_dir / "test_scores.json")

    kernel_meta_path = output_dir / "kernels" / name / "kernel-metadata.json"
    kernel_meta = _read_json(kernel_meta_path)
    if kernel_meta_path.exists():
        paths["kernel"] = str(kernel_meta_path.parent)
    report_path = oof_dir / "report" / "index.html"
    if report_path.exists():
        paths["report"] = str(report_path)

    return {
        "experiment": name,
        "config": str(config_path) if config_path else None,
        "n_folds": _configured_folds(fold_dirs, config_path),
        "folds": folds,
        "folds_trained": len(trained),
        "full_fit": full,
        "oof_score": overall.get("at 0.5"),
        "oof_score_tuned": overall.get("tuned"),
        "thresholds": threshold_summary,
        "submission_files": submission_files,
        "test_scores": test_scores,
        "kernel": None if kernel_meta is None and not kernel_meta_path.exists() else (kernel_meta or {}).get("id", "built"),
        "report": str(report_path) if report_path.exists() else None,
        "paths": paths,
    }


def run_status(path: Path, fold: Optional[int]) -> dict:
    """One run folder: finished or not, epochs run, best epoch and score (summary.json, else epochs.csv)."""
    summary = _read_json(path / "summary.json") or {}
    epochs_run, best_epoch, best_score = summary.get("epochs_run"), summary.get("best_epoch"), summary.get("best_score")
    if not summary:  # still running or stopped early by --stop-after-epochs: epochs.csv says how far it got
        try:
            epochs = pd.read_csv(path / "epochs.csv")
        except (OSError, ValueError):
            epochs = None
        if epochs is not None and len(epochs):
            epochs_run = int(epochs["epoch"].max())
            if "score" in epochs and epochs["score"].notna().any():
                best = epochs.loc[epochs["score"].idxmax()]
                best_epoch, best_score = int(best["epoch"]), float(best["score"])
    return {"fold": fold, "path": str(path), "finished": bool(summary.get("finished", False)),
            "epochs_run": epochs_run, "best_epoch": best_epoch, "best_score": best_score,
            "best_checkpoint": (path / "best.pt").exists()}


def _display(row: dict) -> dict:
    """The compact one-line view of an experiment's status."""
    folds = row["folds"]
    expected = row["n_folds"]
    trained = f"{row['folds_trained']}/{expected}" if expected else str(row["folds_trained"])
    per_fold = " ".join(f"{f['fold']}:e{f['best_epoch']}={_number(f['best_score'])}" + ("" if f["finished"] else "…")
                        for f in folds if f["best_epoch"] is not None and f["best_epoch"] >= 0) or EMPTY
    thresholds = row["thresholds"]
    found = EMPTY
    if thresholds:
        parts = []
        for head, value in thresholds["global"].items():
            prefix = f"{head} " if len(thresholds["global"]) > 1 else ""
            parts.append(f"{prefix}{_number(thresholds['optimistic'].get(head))}/{_number(thresholds['honest'].get(head))}"
                         f" (global {_number(value, 3)})")
        found = f"{thresholds['method']}: " + "; ".join(parts) if parts else "none (argmax heads)"
    full = row["full_fit"]
    return {
        "experiment": row["experiment"],
        "folds": trained,
        "best epoch=score per fold": per_fold,
        "full": EMPTY if full is None else ("yes" if full["finished"] else f"e{full['epochs_run']}…"),
        "OOF@0.5": _number(row["oof_score"]),
        "tuned optimistic/honest": found,
        "submission": f"{len(row['submission_files'])} file(s)" if row["submission_files"] else EMPTY,
        "kernel": row["kernel"] or EMPTY,
        "report": "yes" if row["report"] else EMPTY,
    }


def _chosen(rows: list[dict], method: Optional[str], key: str) -> Optional[float]:
    return next((row.get(key) for row in rows if row.get("method") == method), None)


def _configured_folds(fold_dirs: list[Path], config_path: Optional[Path]) -> Optional[int]:
    """How many folds the experiment has: the folds file's held-out folds, else data.n_folds.

    The resolved config a run saved (overrides included) wins over the YAML file. The folds file
    matters where a format holds out fewer folds than data.n_folds (CelebA's official split: one).
    """
    data = None
    for path in fold_dirs:
        saved = _read_json(path / "config.json")
        if isinstance(saved, dict) and isinstance(saved.get("data"), dict):
            data = saved["data"]
            break
    if data is None and config_path is not None:
        try:
            raw = yaml.safe_load(config_path.read_text(encoding="utf-8-sig")) or {}
            data = raw.get("data") if isinstance(raw, dict) else None
        except (OSError, yaml.YAMLError):
            data = None
    if not isinstance(data, dict):
        return None
    try:
        n_folds = int(data.get("n_folds", DataConfig.model_fields["n_folds"].default))
        seed = int(data.get("fold_seed", DataConfig.model_fields["fold_seed"].default))
    except (TypeError, ValueError):
        return None
    if data.get("root"):
        path = Path(data["root"]) / FOLDS_NAME.format(n_folds=n_folds, seed=seed)
        official = Path(data["root"]) / "folds-official.csv"  # a format's own scheme (CelebA's official split)
        if not path.exists() and official.exists():
            path = official
        try:
            folds = pd.read_csv(path, usecols=["fold"])["fold"]
            return int(folds[folds >= 0].nunique())
        except (OSError, ValueError, KeyError):
            pass
    return n_folds


def _number(value, digits: int = 4) -> str:
    return EMPTY if value is None else f"{float(value):.{digits}f}"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return None
