"""An experiment = a config + its format + the conventional paths of every artifact it makes.

Outputs are named after the config file: `oof/<exp>/` (runs, OOF arrays, thresholds, Optuna study),
`submissions/<exp>/`, `kernels/<exp>/`; the folds file lives in the competition folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from src.config import Config
from src.data.folds import folds_file
from src.errors import PipelineError
from src.formats import create_format
from src.formats.base import CompetitionFormat


@dataclass
class Experiment:
    config: Config
    config_path: Path

    @property
    def name(self) -> str:
        return self.config.experiment

    @cached_property
    def fmt(self) -> CompetitionFormat:
        return create_format(self.config.format, self.config.data.root, self.config.format_options)

    @property
    def oof_dir(self) -> Path:
        return self.config.output_dir / "oof" / self.name

    @property
    def submission_dir(self) -> Path:
        return self.config.output_dir / "submissions" / self.name

    @property
    def kernel_dir(self) -> Path:
        return self.config.output_dir / "kernels" / self.name

    @property
    def cache_dir(self) -> Path:
        return self.config.output_dir / "oof" / "_image_cache"

    @property
    def folds_path(self) -> Path:
        return folds_file(self.config.data.root, self.config.data.n_folds, self.config.data.fold_seed, self.fmt.folds_scheme())

    def run_dir(self, fold: int | None) -> Path:
        return self.oof_dir / ("full" if fold is None else f"fold-{fold}")

    @property
    def oof_path(self) -> Path:
        return self.oof_dir / "oof.npz"

    @property
    def thresholds_path(self) -> Path:
        return self.oof_dir / "thresholds.json"

    @property
    def optuna_storage(self) -> str:
        return self.config.thresholds.storage or f"sqlite:///{(self.oof_dir / 'optuna.db').resolve()}"

    def command(self, stage: str, extra: str = "") -> str:
        """The command line that makes an artifact (for 'run this first' messages)."""
        return f"python -m src.stage {stage}{(' ' + extra) if extra else ''} --config {self.config_path}"

    def require(self, path: Path, stage: str, extra: str = "") -> Path:
        """Refuse to start when a previous stage's artifact is missing; name the command that makes it."""
        if not path.exists():
            raise PipelineError(f"{path} is missing; make it first with: {self.command(stage, extra)}")
        return path
