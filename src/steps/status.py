"""Stage `status`: what every experiment has made so far, read from the artifacts under output_dir.

One row per experiment found in output_dir/oof/ or configs/: folds trained (best epoch and score of
each), the full fit, the OOF score at 0.5 and tuned, the thresholds found, submissions written, the
kernel built and the report, with their paths. Reads files only (`--refresh-scores` first asks Kaggle for
pending leaderboard scores); loads no model and no config class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from src.artifacts import (
    BEST_CHECKPOINT,
    EPOCHS_CSV,
    Layout,
    LeaderboardRecord,
    ScoreTable,
    TunedThresholds,
    folds_file,
    read_kernel_ref,
    read_run_config,
    read_run_summary,
    read_test_scores,
    tuned_column,
)
from src.config import DataConfig, load_yaml_bounded
from src.errors import PipelineError

EMPTY = "-"


def run(
    exp=None,
    output_dir: Path | None = None,
    configs: Path = Path("configs"),
    clean_cache: bool = False,
    plot: bool = False,
    refresh_scores: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """The stage: `output_dir` defaults to the config's output_dir, else the current folder; `refresh_scores` first
    asks Kaggle for the uploads still pending in each kaggle.json; `plot` also draws the honest OOF score against
    the public leaderboard score of every experiment into a PNG."""
    if output_dir is None:
        output_dir = exp.config.output_dir if exp is not None else Path(".")
    if refresh_scores:
        refresh_leaderboards(output_dir, experiment_names(output_dir, configs)[0], log)
    rows = show(output_dir, configs, log, clean_cache)
    if plot:
        plot_cv_vs_public(rows, Layout(output_dir, "").leaderboard_plot_path, log)
    return rows


def show(
    output_dir: Path, configs_dir: Path, log: Callable[[str], None] = print, clean_cache: bool = False
) -> list[dict]:
    """One dict per experiment (sorted by name); logs a compact table, the paths and the image cache's size
    (deleting the cache first with `clean_cache`)."""
    output_dir, configs_dir = Path(output_dir), Path(configs_dir)
    names, configs = experiment_names(output_dir, configs_dir)
    oof_root = output_dir / "oof"
    rows = [experiment_status(output_dir, name, configs.get(name)) for name in names]
    if rows:
        log(f"experiments under {output_dir.resolve()} (configs: {configs_dir}):")
        log(pd.DataFrame([_display(row) for row in rows]).to_string(index=False))
        log(SCORE_LEGEND)
        for row in rows:
            made = [f"  {label}: {path}" for label, path in row["paths"].items()]
            if made:
                log(f"{row['experiment']}:\n" + "\n".join(made))
    else:
        log(f"no experiments under {oof_root} or {configs_dir}")
    for line in broken_configs(configs):
        log(line)
    _image_cache_line(Layout(output_dir, ""), clean_cache, log)
    return rows


SCORE_LEGEND = (
    "scores: per fold = the fold's held-out rows at its best epoch (labels at 0.5, argmax for single-label heads); OOF@0.5 = every fold's held-out "
    "rows together at 0.5; tuned = the OOF with the tuned thresholds, optimistic (tuned and scored on the same rows) "
    "/ honest (nested); CV honest / public LB = that honest OOF score beside Kaggle's public score"
)


def broken_configs(configs: dict[str, Path]) -> list[str]:
    """One line per config in configs/ that does not load (a bad key or value), naming what is wrong."""
    from src.config import load_config

    lines = []
    for name, path in sorted(configs.items()):
        try:
            load_config(path)
        except PipelineError as exc:
            lines.append(f"config {name} does not load: {exc}")
    return lines


def experiment_names(output_dir: Path, configs_dir: Path) -> tuple[list[str], dict[str, Path]]:
    """(sorted names of the experiments under output_dir/oof/ or with a config in configs_dir, {name: config path})."""
    output_dir, configs_dir = Path(output_dir), Path(configs_dir)
    names = set()
    oof_root = output_dir / "oof"
    if oof_root.is_dir():
        names |= {p.name for p in oof_root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    configs = {p.stem: p for p in sorted(configs_dir.glob("*.yaml"))} if configs_dir.is_dir() else {}
    return sorted(names | set(configs)), configs


def refresh_leaderboards(output_dir: Path, names: list[str], log: Callable[[str], None] = print) -> None:
    """One look at Kaggle (one submission listing per competition) for every upload still pending in the experiments'
    kaggle.json; a record that changed is rewritten, and each of those uploads gets its score line."""
    from src.kaggle.local import leaderboard

    listed: dict = {}
    pending_anywhere = False
    for name in names:
        path = Layout(output_dir, name).kaggle_scores_path
        record = LeaderboardRecord.read(path)
        pending = [entry.status == "pending" for entry in record.submissions] if record else []
        if not any(pending):
            continue
        pending_anywhere = True
        entries = leaderboard.refresh_scores(record.submissions, log, listed)
        if entries != record.submissions:
            LeaderboardRecord(submissions=entries).write(path)
        for entry, was_pending in zip(entries, pending):
            if was_pending:
                log(f"{name}: {leaderboard.score_line(entry)}")
    if not pending_anywhere:
        log("leaderboard: no upload is waiting for a score")


def _image_cache_line(layout: Layout, clean: bool, log: Callable[[str], None]) -> None:
    from src.data.cache import cache_usage, clear_cache

    cache_dir = layout.cache_dir
    if clean:
        removed = clear_cache(cache_dir)
        busy = f"; {removed.in_use} being built, left alone" if removed.in_use else ""
        log(
            f"image cache: deleted {removed.entries} image set(s), {removed.bytes / 2**30:.2f} GB freed in {cache_dir}{busy}"
        )
    usage = cache_usage(cache_dir)
    if usage.entries:
        log(
            f"image cache: {usage.entries} decoded image set(s), {usage.bytes / 2**30:.2f} GB in {cache_dir} "
            "(rebuilt on demand; `status --clean-cache` deletes them)"
        )
    for what, size in usage.sets:
        log(f"  {_readable_size(size):>10}  {what}")
    _shipped_cache_lines(layout.shipped_caches_dir, log)


def _shipped_cache_lines(folder: Path, log: Callable[[str], None]) -> None:
    """The training images' packed caches `kernel cache` made as datasets (hard links: no second copy of the bytes
    while the decoded set above is there), each with whether and as what it was uploaded."""
    from src.artifacts import PushRecord
    from src.data.cache import size_on_disk

    shipped = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    if shipped:
        log(f"image-cache datasets (kernel cache) in {folder}:")
    for dataset in shipped:
        size = size_on_disk(dataset)
        record = dataset.with_name(dataset.name + ".push.json")
        ref = PushRecord.read(record).images_ref if record.is_file() else None
        log(f"  {_readable_size(size):>10}  {dataset.name}: {f'uploaded as {ref}' if ref else 'not uploaded yet'}")


def _readable_size(count: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def experiment_status(output_dir: Path, name: str, config_path: Path | None) -> dict:
    """What one experiment has made (values and paths; missing things are None or empty)."""
    layout = Layout(output_dir, name)
    fold_dirs = layout.fold_run_dirs()
    folds = [run_status(path, fold) for fold, path in fold_dirs]
    full_dir = layout.run_dir(None)
    thresholds, threshold_summary = _thresholds(layout)
    oof_scores = ScoreTable.read(layout.oof_scores_path)
    tuned_scores = ScoreTable.read(layout.threshold_scores_path)
    submission_files = [str(p) for p in layout.submission_files()]
    kernel = read_kernel_ref(layout)
    uploaded = LeaderboardRecord.read(layout.kaggle_scores_path)
    candidates = {
        "config": config_path,
        "runs": layout.oof_dir if fold_dirs else None,
        "oof": layout.oof_path,
        "thresholds": layout.thresholds_path,
        "submission": ", ".join(submission_files) or None,
        "leaderboard": layout.kaggle_scores_path,
        "kernel": layout.kernel_dir if kernel else None,
        "report": layout.report_html,
        "package": ", ".join(str(p) for p in sorted(layout.package_dir.glob("*.zip"))) or None,
    }
    paths = {
        label: str(path)
        for label, path in candidates.items()
        if path is not None and (label in ("config", "submission", "runs", "kernel", "package") or Path(path).exists())
    }
    return {
        "experiment": name,
        "config": str(config_path) if config_path else None,
        "n_folds": _configured_folds([path for _, path in fold_dirs], config_path),
        "folds_scheme": _folds_scheme(_experiment_config([path for _, path in fold_dirs], config_path)),
        "folds": folds,
        "folds_trained": sum(1 for fold in folds if fold["best_checkpoint"]),
        "full_fit": run_status(full_dir, None) if full_dir.is_dir() else None,
        "oof_score": oof_scores.overall("at 0.5") if oof_scores else None,
        "oof_score_tuned": tuned_scores.overall(tuned_column(thresholds.method))
        if tuned_scores and thresholds
        else None,
        "thresholds": threshold_summary,
        "submission_files": submission_files,
        "test_scores": read_test_scores(layout.test_scores_path),
        "kernel": kernel,
        "leaderboard": leaderboard_rows(uploaded, threshold_summary),
        "report": str(layout.report_html) if layout.report_html.exists() else None,
        "paths": paths,
    }


def _thresholds(layout: Layout) -> tuple[TunedThresholds | None, dict | None]:
    """(thresholds.json, its summary for the table); a damaged file shows as such instead of stopping status."""
    if not layout.thresholds_path.exists():
        return None, None
    try:
        saved = TunedThresholds.read(layout.thresholds_path, "the thresholds stage")
    except PipelineError:
        return None, {"method": "damaged", "global": {}, "optimistic": {}, "honest": {}}
    scores = {head: saved.score_of(head, saved.method) for head in saved.honest}
    return saved, {
        "method": saved.method,
        "global": {head: info.global_threshold for head, info in saved.heads.items()},
        "optimistic": {head: score.optimistic if score else None for head, score in scores.items()},
        "honest": {head: score.honest if score else None for head, score in scores.items()},
    }


def leaderboard_rows(uploaded: LeaderboardRecord | None, thresholds: dict | None) -> list[dict]:
    """Per uploaded file: its competition, the honest OOF score of the head it answers (the configured
    method's, from thresholds.json; a single file answers the only tuned head) and its leaderboard scores."""
    if uploaded is None:
        return []
    honest = (thresholds or {}).get("honest", {})
    rows = []
    for entry in uploaded.submissions:
        head = entry.head if entry.head is not None else (next(iter(honest)) if len(honest) == 1 else None)
        rows.append(
            {
                "head": entry.head,
                "competition": entry.competition,
                "honest": honest.get(head),
                "public": entry.public_score,
                "private": entry.private_score,
                "status": entry.status,
            }
        )
    return rows


def plot_cv_vs_public(rows: list[dict], path: Path, log: Callable[[str], None] = print) -> Path | None:
    """Honest OOF score (x) against public leaderboard score (y), one point per experiment and uploaded file,
    with y = x drawn in; written to `path` (PNG). None (and a line saying why) when no experiment has both."""
    points = [
        (row["experiment"] + (f" {lb['head']}" if lb["head"] else ""), lb["honest"], lb["public"], lb["competition"])
        for row in rows
        for lb in row["leaderboard"]
        if lb["honest"] is not None and lb["public"] is not None
    ]
    if not points:
        log(
            "CV vs leaderboard: no experiment has both an honest OOF score (thresholds) and a public score "
            "(submit --kaggle) yet: nothing plotted"
        )
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.atomic import atomic_path

    figure, axes = plt.subplots(figsize=(6, 6))
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    low, high = min(xs + ys), max(xs + ys)
    pad = max(0.01, 0.05 * (high - low))
    axes.plot([low - pad, high + pad], [low - pad, high + pad], color="0.7", linestyle="--", label="public = CV")
    for competition in sorted({p[3] for p in points}):  # one colour per competition: their metrics differ
        mine = [p for p in points if p[3] == competition]
        axes.scatter([p[1] for p in mine], [p[2] for p in mine], zorder=3, label=competition)
    for label, x, y, _ in points:
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set(
        xlabel="OOF score, honest (nested thresholds)",
        ylabel="public leaderboard score",
        title="CV vs public leaderboard",
        xlim=(low - pad, high + pad),
        ylim=(low - pad, high + pad),
    )
    axes.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    log(f"CV vs leaderboard ({len(points)} point(s)): {path}")
    return path


def run_status(path: Path, fold: int | None) -> dict:
    """One run folder: finished or not, epochs run, best epoch and score (summary.json, else epochs.csv)."""
    summary = read_run_summary(path)
    epochs_run, best_epoch, best_score = summary.get("epochs_run"), summary.get("best_epoch"), summary.get("best_score")
    if not summary:  # still running or stopped early by --stop-after-epochs: epochs.csv says how far it got
        try:
            epochs = pd.read_csv(path / EPOCHS_CSV)
        except (OSError, ValueError):
            epochs = None
        if epochs is not None and len(epochs):
            epochs_run = int(epochs["epoch"].max())
            if "score" in epochs and epochs["score"].notna().any():
                best = epochs.loc[epochs["score"].idxmax()]
                best_epoch, best_score = int(best["epoch"]), float(best["score"])
    return {
        "fold": fold,
        "path": str(path),
        "finished": bool(summary.get("finished", False)),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "best_score": best_score,
        "best_checkpoint": (path / BEST_CHECKPOINT).exists(),
    }


def _display(row: dict) -> dict:
    """The compact one-line view of an experiment's status."""
    folds = row["folds"]
    expected = row["n_folds"]
    trained = f"{row['folds_trained']}/{expected}" if expected else str(row["folds_trained"])
    if row.get("folds_scheme"):
        trained += f" ({row['folds_scheme']} split)"
    per_fold = (
        " ".join(
            f"{f['fold']}:e{f['best_epoch']}={_number(f['best_score'])}" + ("" if f["finished"] else "…")
            for f in folds
            if f["best_epoch"] is not None and f["best_epoch"] >= 0
        )
        or EMPTY
    )
    thresholds = row["thresholds"]
    found = EMPTY
    if thresholds:
        parts = []
        for head, value in thresholds["global"].items():
            prefix = f"{head} " if len(thresholds["global"]) > 1 else ""
            parts.append(
                f"{prefix}{_number(thresholds['optimistic'].get(head))}/{_number(thresholds['honest'].get(head))}"
                f" (global {_number(value, 3)})"
            )
        found = f"{thresholds['method']}: " + "; ".join(parts) if parts else "none (argmax heads)"
    full = row["full_fit"]
    return {
        "experiment": row["experiment"],
        "folds": trained,
        "per fold fold:epoch=score": per_fold,
        "full": EMPTY if full is None else ("yes" if full["finished"] else f"e{full['epochs_run']}…"),
        "OOF@0.5": _number(row["oof_score"]),
        "tuned optimistic/honest": found,
        "submission": f"{len(row['submission_files'])} file(s)" if row["submission_files"] else EMPTY,
        "CV honest / public LB": _leaderboard_cell(row["leaderboard"]),
        "kernel": row["kernel"] or EMPTY,
        "report": "yes" if row["report"] else EMPTY,
    }


def _leaderboard_cell(entries: list[dict]) -> str:
    """'honest / public' per uploaded file ('pending' until Kaggle has scored it)."""
    cells = []
    for entry in entries:
        public = entry["status"] if entry["status"] != "complete" else _number(entry["public"])
        prefix = f"{entry['head']} " if entry["head"] else ""
        cells.append(f"{prefix}{_number(entry['honest'])} / {public}")
    return "; ".join(cells) or EMPTY


def _configured_folds(fold_dirs: list[Path], config_path: Path | None) -> int | None:
    """How many folds the experiment has: the folds file's held-out folds, else data.n_folds.

    The folds file matters where a format holds out fewer folds than data.n_folds (an official split: one);
    its name comes from the format's fold scheme (`folds_scheme_of`), as the folds stage names it.
    """
    config = _experiment_config(fold_dirs, config_path)
    data = config.get("data")
    if not isinstance(data, dict):
        return None
    try:
        n_folds = int(data.get("n_folds", DataConfig.model_fields["n_folds"].default))
        seed = int(data.get("fold_seed", DataConfig.model_fields["fold_seed"].default))
    except (TypeError, ValueError):
        return None
    scheme = _folds_scheme(config)
    if data.get("root"):
        path = folds_file(Path(data["root"]), n_folds, seed, scheme)
        try:
            folds = pd.read_csv(path, usecols=["fold"])["fold"]
            return int(folds[folds >= 0].nunique())
        except (OSError, ValueError, KeyError):
            pass
    return None if scheme else n_folds  # a format's own split ignores data.n_folds: unknown until its file exists


def _experiment_config(fold_dirs: list[Path], config_path: Path | None) -> dict:
    """The resolved config a run saved (overrides included), else the YAML file's; {} when neither is readable."""
    for path in fold_dirs:
        saved = read_run_config(path)
        if isinstance(saved.get("data"), dict):
            return saved
    if config_path is not None:
        try:
            raw = load_yaml_bounded(config_path.read_text(encoding="utf-8-sig"), config_path) or {}
            return raw if isinstance(raw, dict) else {}
        except (OSError, yaml.YAMLError, PipelineError):  # an unreadable or alias-bomb config shows as unknown
            return {}
    return {}


def _folds_scheme(config: dict) -> str:
    """The fold scheme the config's format chooses with its options; '' (K folds) when they name no valid format."""
    from src.formats import folds_scheme_of

    options = config.get("format_options")
    try:
        return folds_scheme_of(str(config.get("format")), options if isinstance(options, dict) else None)
    except PipelineError:
        return ""


def _number(value, digits: int = 4) -> str:
    return EMPTY if value is None else f"{float(value):.{digits}f}"
