"""Stage `train`: one fold, all folds, or a full fit on all training data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from src.artifacts import Experiment, Layout, OofPredictions
from src.cleaning import noisy_training_rows, write_dropped
from src.engine import RunInputs, train_run
from src.engine.context import CallClock
from src.errors import PipelineError
from src.steps.common import decoded_images, fold_numbers


def run(
    exp: Experiment,
    fold: str,
    full: bool = False,
    resume: bool = False,
    stop_after_epochs: int | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """`fold` is 'all' or a fold number; `full` trains one model on every training image instead."""
    clock = CallClock()  # the time budget counts this whole call, its decoding and every run
    table, fold_of_row, targets = _table_and_runs(exp, fold, full, log)
    tc, model = exp.config.train, exp.config.model
    log(
        f"train {exp.name}: {model.name} ({model.pretrained or model.weights or 'scratch'}), "
        f"{exp.config.data.image_size}px, batch {tc.batch_size}x{tc.accumulate_steps}, {tc.epochs} epochs, loss {tc.loss.name}, "
        f"runs: {', '.join('full' if k is None else f'fold {k}' for k in targets)} -> {exp.oof_dir}"
    )
    earlier_oof = _earlier_oof(exp)  # before the images are decoded: a missing stage is one line at once
    images, readable = decoded_images(exp, table, quiet, log, "train images")
    for k in targets:
        train_rows = np.flatnonzero(readable & (fold_of_row != k)) if k is not None else np.flatnonzero(readable)
        if earlier_oof is not None:
            train_rows = _without_noisy_rows(exp, earlier_oof, table.ids, train_rows, exp.run_dir(k), log)
        valid_rows = np.flatnonzero(readable & (fold_of_row == k)) if k is not None else None
        run_dir = exp.run_dir(k)
        log(
            f"--- {'full fit' if k is None else f'fold {k}'}: {len(train_rows)} train / "
            f"{0 if valid_rows is None else len(valid_rows)} valid images -> {run_dir}"
        )
        state = train_run(
            RunInputs(exp.config, exp.fmt, images, table.targets, train_rows, valid_rows, run_dir, clock),
            resume=resume,
            stop_after_epochs=stop_after_epochs,
            quiet=quiet,
            log=log,
            skipped_files=[str(table.paths[i]) for i in np.flatnonzero(~readable)],
        )
        if state.finished and k is not None:
            log(
                f"fold {k}: best epoch {state.best_epoch}, {exp.fmt.main_metric} {state.best_score:.4f} -> {run_dir / 'best.pt'}"
            )
        elif state.finished:
            log(f"full fit done: {state.next_epoch} epochs -> {run_dir / 'best.pt'}")


def _earlier_oof(exp: Experiment):
    """train.drop_noisy's earlier experiment's oof.npz (its heads checked), or None without drop_noisy."""
    drop = exp.config.train.drop_noisy
    if drop is None:
        return None
    source = Layout(exp.config.output_dir, drop.experiment)
    command = f"python -m src.stage oof --config configs/{drop.experiment}.yaml"
    if not source.oof_path.is_file():
        raise PipelineError(f"{source.oof_path} is missing: train.drop_noisy ranks rows by it; make it with: {command}")
    oof = OofPredictions.read(source.oof_path, command)
    oof.check_heads(exp.fmt.heads(), source.oof_path, command)
    return oof


def _without_noisy_rows(exp: Experiment, oof, ids: list[str], train_rows: np.ndarray, run_dir, log) -> np.ndarray:
    """`train_rows` less the share drop_noisy leaves out (ranked among these rows only), listed in dropped.csv."""
    drop = exp.config.train.drop_noisy
    source = Layout(exp.config.output_dir, drop.experiment).oof_path
    noisy = noisy_training_rows(oof, source, exp.fmt.heads(), ids, train_rows, drop.quantile)
    path = write_dropped(run_dir, ids, noisy)
    log(
        f"drop_noisy: {len(noisy.rows)} of {len(train_rows)} training images left out (OOF loss >= "
        f"{noisy.threshold:.3f} in {source}) -> {path}"
    )
    return np.setdiff1d(train_rows, noisy.rows)


def subset_rows(fold_of_row: np.ndarray, size: int) -> np.ndarray:
    """About `size` rows: the first of each fold (each fold keeps a share), or the first `size` without folds."""
    groups = [np.flatnonzero(fold_of_row == k) for k in np.unique(fold_of_row)]
    per_group = -(-size // len(groups))
    return np.sort(np.concatenate([group[:per_group] for group in groups]))


def _table_and_runs(exp: Experiment, fold: str, full: bool, log) -> tuple:
    """(training table, fold of each row, the runs to train: fold numbers or [None] for the full fit)."""
    table = exp.fmt.read_train()
    fold_of_row = np.full(len(table), -1) if full else exp.fold_of_row(table.ids)
    if exp.config.data.train_subset is not None:
        rows = subset_rows(fold_of_row, exp.config.data.train_subset)
        table, fold_of_row = table.subset(rows), fold_of_row[rows]
        log(f"data.train_subset: {len(rows)} training images, the first of each fold (a quick check, not a run)")
    if full:
        return table, fold_of_row, [None]
    available = fold_numbers(fold_of_row)
    if fold == "all":
        return table, fold_of_row, available
    if not str(fold).isdigit() or int(fold) not in available:
        raise PipelineError(
            f"--fold {fold}: not a fold of {exp.folds_path} (folds: {', '.join(map(str, available))}, or 'all')"
        )
    return table, fold_of_row, [int(fold)]
