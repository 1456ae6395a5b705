"""What the report is made from, already loaded: the OOF arrays, decision rules, training runs, the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from src.artifacts import TunedThresholds
from src.formats.base import CompetitionFormat, DecisionRules
from src.report.network import NetworkSummary


@dataclass
class RunRecord:
    """One training run (`fold-K` or `full`) as saved: epochs.csv, summary.json, config.json."""

    name: str
    fold: int | None
    path: Path
    epochs: pd.DataFrame | None = None
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    params: tuple[int, int] | None = None  # (total, trainable), when known
    dropped: pd.DataFrame | None = None  # dropped.csv: the training rows train.drop_noisy left out (id, oof_loss)


@dataclass
class ReportInputs:
    """Everything the report shows, already loaded. `rules`: label -> DecisionRules (None = 0.5)."""

    experiment: str
    fmt: CompetitionFormat
    ids: list[str]
    fold_of_row: np.ndarray
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    rules: dict[str, DecisionRules | None]
    chosen_rules: str  # the key of `rules` that submit uses (tables, grid and confusion use it)
    saved_thresholds: TunedThresholds | None = None  # thresholds.json as written by the thresholds stage
    chosen_method: str | None = None  # the tuning method whose thresholds `chosen_rules` applies (None: untuned)
    runs: list[RunRecord] = field(default_factory=list)
    image_paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # what was read, for the "files" section
    network: NetworkSummary | None = None  # the model's stages, heads and counts (the model section)
    author: str | None = None  # the author line under the title (package.author)
    discussion: list[tuple[str, str]] = field(default_factory=list)  # report.notes as ('h3' | 'p', text) blocks
    comparison: list[dict] = field(default_factory=list)  # report.compare: this experiment's row, then the others
