"""An experiment's layout and every artifact it makes, each a typed object with a reader and a writer.

The one module that knows file names and JSON keys. Data flows one way and so do these files:
folds file -> run folders (fold-K/, full/) -> oof.npz + oof_scores.json -> thresholds.json +
threshold_scores.json -> submissions/<exp>/ -> kernels/<exp>/ and the report. A reader validates
what it reads and refuses a damaged or stale file with one line naming it and the command that
writes it again. Only light imports here (numpy, pydantic): `status` reads these without torch.
"""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_serializer, model_validator

from src.atomic import atomic_path, write_text
from src.errors import PipelineError

# Files inside one training run's folder (written by the engine, read by oof, report, status, kernel).
LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pt", "best.pt"
EPOCHS_CSV, RUN_SUMMARY, RUN_CONFIG = "epochs.csv", "summary.json", "config.json"
TENSORBOARD_DIR = "tensorboard"  # the tensorboard callback's event files
FULL_RUN = "full"
TEST_FILES = ("test_probs.npz", "test_scores.json")  # beside the submission, never part of it
KAGGLE_SCORES = "kaggle.json"  # beside the submission: what the last upload got on the leaderboard
KERNEL_METADATA = "kernel-metadata.json"  # beside the kernel script: its id is the kernel ref
PUSH_RECORD, PARITY_RECORD = "push.json", "parity.json"  # in kernels/<exp>/ (push.json also in kernels/<exp>/train/)
# The report folder's files: the HTML (figures embedded), Markdown (PNGs beside it), the A4 PDF, the tables.
REPORT_HTML, REPORT_MD, REPORT_PDF, REPORT_TABLES = "index.html", "report.md", "report.pdf", "tables.json"
PACKAGE_DIR = "package"  # submissions/<exp>/package/: <name>/ (what the zip holds) and the zip beside it
WEIGHTS_ROOT = Path("input/weights")  # pretrained weights, one folder per timm tag (the weights stage writes them)
DATASET_METADATA = "dataset-metadata.json"  # in every folder that becomes a Kaggle dataset
# kernels/<exp>/: the flat weights dataset and its files (as the kernel reads them), the wheels dataset, the
# parity check's log and what `kernel output` downloads.
KERNEL_DATASET_DIR, KERNEL_WHEELS_DIR, PARITY_LOG, KERNEL_OUTPUT_DIR = "dataset", "wheels", "parity.log", "output"
KERNEL_MODEL_FILE, KERNEL_THRESHOLDS_FILE, KERNEL_CONFIG_FILE = "model.pt", "thresholds.json", "config.yaml"


def folds_file(root: Path, n_splits: int, seed: int, scheme: str = "") -> Path:
    """Folds file inside the competition folder; `scheme` (the format's `folds_scheme_of`) names a non-default
    split, e.g. a competition's official partition, so two ways of splitting never share one file."""
    if scheme:
        return Path(root) / f"folds-{scheme}.csv"
    return Path(root) / f"folds-k{n_splits}-seed{seed}.csv"


def bench_json_path(output_dir: Path, quick: bool) -> Path:
    """bench's results beside the image cache under oof/ (ignored by git): oof/_bench/bench[-quick].json."""
    return Path(output_dir) / "oof" / "_bench" / f"bench{'-quick' if quick else ''}.json"


def fold_run_name(fold: int | None) -> str:
    return FULL_RUN if fold is None else f"fold-{fold}"


class Layout:
    """Where an experiment's artifacts live, from the output folder and the experiment's name alone."""

    def __init__(self, output_dir: Path, name: str):
        self.output_dir, self.name = Path(output_dir), name
        self.oof_dir = self.output_dir / "oof" / name
        self.cache_dir = self.output_dir / "oof" / "_image_cache"  # shared by every experiment
        # `kernel cache`: the training images' packed caches as datasets, one per competition and pixel settings
        self.shipped_caches_dir = self.output_dir / "kernels" / "_image-cache"
        self.submission_dir = self.output_dir / "submissions" / name
        self.kernel_dir = self.output_dir / "kernels" / name
        self.report_dir = self.oof_dir / "report"
        # By the stage that writes them: oof, thresholds (+ its Optuna study), report, submit, kernel.
        self.oof_path, self.oof_scores_path = self.oof_dir / "oof.npz", self.oof_dir / "oof_scores.json"
        self.kaggle_test_probs_path = self.oof_dir / KAGGLE_TEST_PROBS  # a training kernel's test predictions
        self.thresholds_path = self.oof_dir / "thresholds.json"
        self.threshold_scores_path, self.optuna_path = (
            self.oof_dir / "threshold_scores.json",
            self.oof_dir / "optuna.db",
        )
        self.report_html = self.report_dir / "index.html"
        self.report_pdf = self.report_dir / REPORT_PDF
        self.package_dir = self.submission_dir / PACKAGE_DIR  # package: the course's zip and its unzipped content
        self.test_probs_path, self.test_scores_path = (self.submission_dir / file for file in TEST_FILES)
        self.kernel_metadata_path = self.kernel_dir / KERNEL_METADATA
        self.kernel_push_path, self.parity_path = self.kernel_dir / PUSH_RECORD, self.kernel_dir / PARITY_RECORD
        self.kaggle_scores_path = self.submission_dir / KAGGLE_SCORES  # submit --kaggle, kernel submit
        self.wheels_dir = self.kernel_dir / KERNEL_WHEELS_DIR  # kernel build: the kernel's packages as a flat dataset
        self.parity_log_path, self.kernel_output_dir = self.kernel_dir / PARITY_LOG, self.kernel_dir / KERNEL_OUTPUT_DIR
        self.train_kernel_dir = self.kernel_dir / "train"  # kernel train: the training kernel (+ state/ for --resume)
        self.train_state_dir = self.train_kernel_dir / "state"  # --resume: the pulled run files, flat, as a dataset
        self.train_push_path, self.train_pull_path = (
            self.train_kernel_dir / PUSH_RECORD,
            self.train_kernel_dir / "pull.json",
        )
        self.train_check_log = self.train_kernel_dir / "check.log"  # the local run of the training script
        self.train_follow_path = self.train_kernel_dir / "follow.json"  # kernel train --follow: its sessions
        self.train_logs_dir = self.train_kernel_dir / "logs"  # --follow: a failed session's `kaggle kernels logs`
        self.gpu_check_path = self.output_dir / "oof" / "_bench" / "gpu-check.json"  # scripts/gpu_check.py's figures
        # Over every experiment of the output folder: honest OOF vs public score (status --plot).
        self.leaderboard_plot_path = self.output_dir / "oof" / "_leaderboard" / "cv-vs-public.png"

    def run_dir(self, fold: int | None) -> Path:
        return self.oof_dir / fold_run_name(fold)

    def fold_run_dirs(self) -> list[tuple[int, Path]]:
        """(fold, folder) of every fold-K run folder there, in fold order."""
        if not self.oof_dir.is_dir():
            return []
        found = [(int(p.name[5:]), p) for p in self.oof_dir.glob("fold-*") if p.is_dir() and p.name[5:].isdigit()]
        return sorted(found)

    def submission_files(self) -> list[Path]:
        """The submission file(s) written there (not the probabilities or scores beside them)."""
        if not self.submission_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.submission_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name not in (*TEST_FILES, KAGGLE_SCORES)
        )


@dataclass
class Experiment(Layout):
    """A config + its format + the layout of every artifact it makes (outputs named after the config file)."""

    config: Any
    config_path: Path

    def __post_init__(self):
        Layout.__init__(self, self.config.output_dir, self.config.experiment)

    @cached_property
    def fmt(self):
        from src.formats import create_format

        if not Path(self.config.data.root).is_dir():
            raise PipelineError(self.missing_root_message())
        return create_format(self.config.format, self.config.data.root, self.config.format_options)

    def missing_root_message(self) -> str:
        """What to do when data.root is not there: download the competition (or build the demo) into it."""
        root, slug = Path(self.config.data.root), self.config.competition
        if root.name.startswith("demo-"):
            how = f"build the demo data with: {self.command('demo')}"
        elif root.name == slug:
            how = f"download it with: python -m src.stage download --competition {slug} --dest {shlex.quote(str(root.parent))}"
        else:
            how = (
                f"download it with: python -m src.stage download --competition {slug} (into input/{slug}/), then "
                f"set data.root=input/{slug}"
            )
        return f"{root}: competition folder not found; set data.root to the folder holding the competition's files, or {how}"

    @property
    def folds_path(self) -> Path:
        data = self.config.data
        return folds_file(data.root, data.n_folds, data.fold_seed, self.fmt.folds_scheme())

    @property
    def optuna_storage(self) -> str:
        return self.config.thresholds.storage or f"sqlite:///{self.optuna_path.resolve()}"

    def command(self, stage: str, extra: str = "") -> str:
        """The command line that makes an artifact (for 'run this first' messages), with the overrides this
        experiment was loaded with (a hint that drops `data.root=...` would write to another folder)."""
        words = [*shlex.split(stage), *shlex.split(extra), "--config", str(self.config_path)]
        return "python -m src.stage " + shlex.join([*words, *self.config.overrides])

    def require(self, path: Path, stage: str, extra: str = "") -> Path:
        """Refuse to start when a previous stage's artifact is missing; name the command that makes it."""
        if not path.exists():
            raise PipelineError(f"{path} is missing; make it first with: {self.command(stage, extra)}")
        return path

    def require_fresh(self, path: Path, sources: list[Path], stage: str, extra: str = "") -> Path:
        """`require`, and refuse an artifact older than any existing file it is made from (a stale one)."""
        self.require(path, stage, extra)
        made = path.stat().st_mtime_ns
        newer = next((source for source in sources if source.exists() and source.stat().st_mtime_ns > made), None)
        if newer is not None:
            raise PipelineError(
                f"{path} is older than {newer}, which it is made from (stale); make it again with: "
                f"{self.command(stage, extra)}"
            )
        return path

    def fold_of_row(self, ids: list[str]) -> np.ndarray:
        """Fold of every training id from the folds file (-1 = never held out)."""
        from src.data.folds import read_folds

        return read_folds(self.require(self.folds_path, "folds"), ids)

    def best_checkpoint(self, fold: int | None) -> Path:
        """A run's best.pt, refused with the train command when it is not there."""
        extra = "--full" if fold is None else f"--fold {fold}"
        return self.require(self.run_dir(fold) / BEST_CHECKPOINT, "train", extra)

    def submission_checkpoint(self) -> Path:
        """The ONE checkpoint `submit.checkpoint` names ('full' or 'fold-K')."""
        choice = self.config.submit.checkpoint
        return self.best_checkpoint(None if choice == FULL_RUN else int(choice.split("-")[1]))

    def read_oof(self) -> OofPredictions:
        """oof.npz, checked against the format's heads and classes (a stale file is refused)."""
        oof = OofPredictions.read(self.require(self.oof_path, "oof"), self.command("oof"))
        oof.check_heads(self.fmt.heads(), self.oof_path, self.command("oof"))
        return oof

    def read_thresholds(
        self, required: bool = False, path: Path | None = None, rewrite_command: str | None = None
    ) -> TunedThresholds | None:
        """thresholds.json (or the copy at `path`, e.g. the offline kernel's) checked against the format's heads;
        None when not tuned yet (unless `required`). `rewrite_command` is what a damaged file's error names."""
        path = self.thresholds_path if path is None else path
        if not path.exists() and not required:
            return None
        saved = TunedThresholds.read(self.require(path, "thresholds"), rewrite_command or self.command("thresholds"))
        saved.check_heads(self.fmt.heads(), path, self.command("thresholds"))
        if path == self.thresholds_path and self.oof_path.exists() and _newer(self.oof_path, path):
            raise PipelineError(
                f"{path}: tuned on an older {self.oof_path.name} (oof ran again since); tune again with: "
                f"{self.command('thresholds')}"
            )
        return saved

    def decision_rules(self, path: Path | None = None, rewrite_command: str | None = None):
        """The rules submit applies: the `thresholds.method` thresholds + min/max labels; None when untuned.
        `path`, `rewrite_command`: as `read_thresholds`."""
        saved = self.read_thresholds(path=path, rewrite_command=rewrite_command)
        cfg = self.config.thresholds
        if saved is None:
            return None
        for name, head in saved.heads.items():
            if cfg.method not in head.methods:
                raise PipelineError(
                    f"{path or self.thresholds_path}: head {name} has no '{cfg.method}' thresholds (it has "
                    f"{', '.join(head.methods)}); tune again with: {rewrite_command or self.command('thresholds')}, "
                    "or set thresholds.method to one of those"
                )
            if cfg.method == "relative" and head.relative_ratio is None:
                raise PipelineError(
                    f"{path or self.thresholds_path}: head {name} has 'relative' thresholds but no relative_ratio "
                    f"(damaged); tune again with: {rewrite_command or self.command('thresholds')}"
                )
        from src.thresholds import label_groups

        return saved.rules(cfg.method, cfg.min_labels, cfg.max_labels, label_groups(cfg.groups, self.fmt.heads()))


# ---- course package (package stage) -------------------------------------------------------------

# The pieces of a course's zip and where each goes in it: {name} is the package name (the student's
# roll number), {file} a submission file's own name; None leaves the piece out. `package.names` in the
# config overrides a piece, or one submission file by its name.
PACKAGE_PIECES = ("submission", "report", "notebook", "readme", "code", "zip")
PACKAGE_NAMES = {
    "submission": "{file}",
    "report": "report.pdf",
    "notebook": None,
    "readme": "Readme.txt",
    "code": "code",
    "zip": "{name}.zip",
}


def package_names(course_names: dict[str, str | None], overrides: dict[str, str | None]) -> dict[str, str | None]:
    """Every piece's name pattern: the defaults, the course's layout (the format's `course_package_names`), then the
    config's overrides."""
    return {**PACKAGE_NAMES, **course_names, **overrides}


# ---- OOF predictions -----------------------------------------------------------------------------


@dataclass
class OofPredictions:
    """Each training image's held-out probabilities per head (float32 in memory, float16 on disk)."""

    ids: list[str]
    fold_of_row: np.ndarray
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]

    def write(self, path: Path) -> None:
        """One compressed .npz with ids, folds, probabilities and targets (atomic)."""
        arrays = {"ids": np.asarray(self.ids, dtype=str), "fold": self.fold_of_row.astype(np.int16)}
        arrays.update({f"probs__{name}": values.astype(np.float16) for name, values in self.probs.items()})
        arrays.update({f"target__{name}": values for name, values in self.targets.items()})
        _write_npz(path, arrays)

    @classmethod
    def read(cls, path: Path, remake: str) -> OofPredictions:
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = [str(value) for value in data["ids"]]
                fold = data["fold"].astype(np.int64)
                probs = {key[7:]: data[key].astype(np.float32) for key in data.files if key.startswith("probs__")}
                targets = {key[8:]: data[key] for key in data.files if key.startswith("target__")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a truncated npz is a bad zip
            raise PipelineError(f"{path}: unreadable OOF file ({exc}); write it again with: {remake}") from None
        if len(fold) != len(ids) or any(len(v) != len(ids) for v in [*probs.values(), *targets.values()]):
            raise PipelineError(f"{path}: arrays of different lengths (damaged?); write it again with: {remake}")
        return cls(ids, fold, probs, targets)

    def check_heads(self, heads, path: Path, remake: str) -> None:
        """Refuse OOF arrays made for other heads or classes than the format has now (stale file)."""
        for head in heads:
            if head.name not in self.probs or head.name not in self.targets:
                raise PipelineError(f"{path}: no OOF arrays for head {head.name}; write it again with: {remake}")
            if self.probs[head.name].shape[1] != head.n_outputs:
                raise PipelineError(
                    f"{path}: head {head.name} has {self.probs[head.name].shape[1]} classes, the "
                    f"format has {head.n_outputs} (labels changed?); write it again with: {remake}"
                )


# ---- score tables (oof_scores.json, threshold_scores.json) --------------------------------------


@dataclass
class ScoreTable:
    """The main metric per fold and overall: rows {"rows": "fold K" | "overall", "images": n, <column>: score}."""

    rows: list[dict]

    def write(self, path: Path) -> None:
        write_text(path, json.dumps(self.rows, indent=2))

    @classmethod
    def read(cls, path: Path) -> ScoreTable | None:
        """The table, or None when missing or unreadable (status and summaries show what exists)."""
        rows = _read_json(path)
        return cls(rows) if isinstance(rows, list) and all(isinstance(r, dict) for r in rows) else None

    def overall(self, column: str) -> float | None:
        row = next((row for row in self.rows if row.get("rows") == "overall"), {})
        return row.get(column)


# ---- tuned thresholds (thresholds.json) -----------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def write(self, path: Path) -> None:
        write_text(path, json.dumps(self.model_dump(), indent=1) + "\n")

    @classmethod
    def _read_or_none(cls, path: Path):
        """The record at `path`, or None when it is missing or damaged."""
        try:
            return cls.model_validate(_read_json(path)) if Path(path).exists() else None
        except ValidationError:
            return None


class LabelCountRule(_Record):
    min_labels: int
    max_labels: int | None


class HeadThresholds(_Record):
    class_names: list[str]
    global_threshold: float = Field(alias="global")
    methods: dict[str, list[float]]
    label_count_rule: LabelCountRule
    # The `relative` method's ratio: its labels pass min(threshold, ratio x the image's top probability).
    relative_ratio: float | None = Field(None, ge=0.0, le=1.0)

    @model_serializer(mode="wrap")
    def _ratio_only_when_tuned(self, handler) -> dict:
        """A file without the `relative` method has no ratio key (its bytes stay what they were before the key)."""
        dumped = handler(self)
        if dumped.get("relative_ratio") is None:
            dumped.pop("relative_ratio", None)
        return dumped

    @model_validator(mode="after")
    def _thresholds_are_probabilities(self) -> HeadThresholds:
        """One threshold per class, each a probability: 5.0 would switch a class off, -1 on, NaN mean nothing."""
        for method, values in {"global": [self.global_threshold], **self.methods}.items():
            if method != "global" and len(values) != len(self.class_names):
                raise ValueError(f"'{method}' has {len(values)} thresholds for {len(self.class_names)} classes")
            bad = next((value for value in values if not 0.0 <= value <= 1.0), None)  # NaN fails too
            if bad is not None:
                raise ValueError(f"a '{method}' threshold is {bad}, outside [0, 1]")
        return self


class MethodScore(_Record):
    """One tuning method's score on the OOF rows: optimistic (tuned on them) and honest (nested)."""

    method: str
    optimistic: float
    honest: float


class TunedThresholds(_Record):
    """thresholds.json: per head the class thresholds of every method; per head each method's scores."""

    method: str
    heads: dict[str, HeadThresholds]
    honest: dict[str, list[MethodScore]]

    def write(self, path: Path) -> None:
        write_text(path, json.dumps(self.model_dump(by_alias=True), indent=1))

    @classmethod
    def read(cls, path: Path, remake: str) -> TunedThresholds:
        raw = _read_json(path)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise PipelineError(
                f"{path}: {_first_error(exc)} (damaged or from another version); write it again with: {remake}"
            ) from None

    def check_heads(self, heads, path: Path, remake: str) -> None:
        """Refuse thresholds tuned for other classes than the format's heads have now (stale file)."""
        for head in heads:
            if not head.thresholded:
                continue
            saved = self.heads.get(head.name)
            if saved is None or tuple(saved.class_names) != tuple(head.class_names):
                raise PipelineError(
                    f"{path}: tuned for other classes than head {head.name} has now "
                    f"(labels changed?); tune again with: {remake}"
                )

    def class_thresholds(self, method: str) -> dict[str, np.ndarray]:
        return {name: np.asarray(head.methods[method], dtype=np.float64) for name, head in self.heads.items()}

    def global_thresholds(self) -> dict[str, np.ndarray]:
        return {name: np.full(len(head.class_names), float(head.global_threshold)) for name, head in self.heads.items()}

    def rules(self, method: str, min_labels: int = 0, max_labels: int | None = None, groups=None):
        """How submit decides with `method`'s thresholds; `groups`: {head: thresholds.LabelGroup limits}."""
        from src.formats.base import DecisionRules

        ratios = {name: head.relative_ratio for name, head in self.heads.items()} if method == "relative" else {}
        return DecisionRules(self.class_thresholds(method), min_labels, max_labels, dict(groups or {}), ratios)

    def score_of(self, head: str, method: str) -> MethodScore | None:
        return next((row for row in self.honest.get(head, []) if row.method == method), None)


def tuned_column(method: str) -> str:
    """The score tables' column for OOF scores at a method's tuned thresholds."""
    return f"tuned ({method})"


# ---- test predictions and scores ---------------------------------------------------------------


def write_test_probs(path: Path, ids: list[str], probs: dict[str, np.ndarray]) -> None:
    """The test probabilities submit decided from (float16), beside the submission."""
    _write_npz(
        path, {"ids": np.asarray(ids, dtype=str), **{f"probs__{k}": v.astype(np.float16) for k, v in probs.items()}}
    )


KAGGLE_TEST_PROBS = "test_probs.kaggle.npz"


def write_predicted_test(path: Path, ids: list[str], probs: dict[str, np.ndarray], made_with: dict) -> None:
    """Test probabilities a training kernel predicted (float32, as submit decides from them) and what made them
    (`made_with`: the checkpoint's sha256 and the predict settings), so submit uses them only for that model."""
    arrays = {"ids": np.asarray(ids, dtype=str), "made_with": np.asarray(json.dumps(made_with, sort_keys=True))}
    _write_npz(path, {**arrays, **{f"probs__{k}": v.astype(np.float32) for k, v in probs.items()}})


def read_predicted_test(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict] | None:
    """(ids, probabilities, made_with) of write_predicted_test's file; None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(value) for value in data["ids"]]
            made_with = json.loads(str(data["made_with"]))
            probs = {key[7:]: data[key] for key in data.files if key.startswith("probs__")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return ids, probs, made_with


def write_test_scores(path: Path, scores: dict) -> None:
    write_text(path, json.dumps(scores, indent=2))


def read_test_scores(path: Path) -> dict | None:
    scores = _read_json(path)
    return scores if isinstance(scores, dict) else None


# ---- Kaggle leaderboard (kaggle.json) ------------------------------------------------------------


class LeaderboardEntry(_Record):
    """One uploaded file and what Kaggle made of it; scores stay None until Kaggle has scored it
    (`status`: pending, complete, error; the private score shows once the competition has closed)."""

    competition: str
    file: str
    head: str | None = None  # the format's head this file answers, when a format writes one file per head
    message: str
    ref: int | None = None
    # The highest submission ref the competition listed before this upload (0: none): its row is above it, so a later
    # `status --refresh-scores` finds it again without the list of refs the upload saw.
    listed_before: int | None = None
    submitted: str | None = None
    status: str = "pending"
    public_score: float | None = None
    private_score: float | None = None


class LeaderboardRecord(_Record):
    """kaggle.json: every file the last `submit --kaggle` (or `kernel submit`) uploaded."""

    submissions: list[LeaderboardEntry]

    @classmethod
    def read(cls, path: Path) -> LeaderboardRecord | None:
        """The record, or None when missing or damaged (status shows what exists)."""
        return cls._read_or_none(path)


# ---- Kaggle pushes and local kernel checks (kernels/<exp>/push.json, parity.json, train/push.json, train/pull.json)

# The datasets a push uploads: weights, wheels, a training kernel's state, the training images' packed cache.
UPLOADS = ("dataset", "wheels", "state", "images")


class PushRecord(_Record):
    """push.json: what the last push sent, so an unchanged dataset is not uploaded again: per dataset of `UPLOADS` its
    ref and file sums (flat `<key>_ref` / `<key>_files`, as the first records were written), then the kernel version
    pushed; the inference kernel adds its script's sum, competition and file names, a training kernel its runs."""

    dataset_ref: str | None = None
    dataset_files: dict[str, str] | None = None
    wheels_ref: str | None = None
    wheels_files: dict[str, str] | None = None
    state_ref: str | None = None
    state_files: dict[str, str] | None = None
    images_ref: str | None = None
    images_files: dict[str, str] | None = None
    kernel_ref: str | None = None
    kernel_url: str | None = None
    version: int | None = None
    script_sha256: str | None = None
    competition: str | None = None
    submission_names: list[str] | None = None
    runs: dict[str, Any] | None = None

    def uploaded(self, key: str) -> tuple[str | None, dict[str, str] | None]:
        """(ref, file sums) of the dataset `key` (one of `UPLOADS`) as last uploaded; (None, None) if never."""
        return getattr(self, f"{_upload_key(key)}_ref"), getattr(self, f"{key}_files")

    def with_upload(self, key: str, ref: str, files: dict[str, str]) -> PushRecord:
        return self.model_copy(update={f"{_upload_key(key)}_ref": ref, f"{key}_files": dict(files)})

    def write(self, path: Path) -> None:  # unset uploads left out, as the first records were written
        write_text(path, json.dumps(self.model_dump(exclude_none=True), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> PushRecord:
        """The record; an empty one when there is none (nothing pushed yet); a damaged one is refused by name."""
        if not Path(path).exists():
            return cls()
        try:
            return cls.model_validate(_read_json(path))
        except ValidationError as error:
            raise PipelineError(
                f"{path}: not a push record ({_first_error(error)}); delete it: the next push "
                "uploads its datasets again"
            ) from None


def _upload_key(key: str) -> str:
    if key not in UPLOADS:
        raise ValueError(f"unknown upload {key!r}: one of {', '.join(UPLOADS)}")
    return key


class ParityRecord(_Record):
    """parity.json: the last local run of the inference kernel and whether its files equalled submit's; the
    fingerprint covers script, dataset and submission, so a pass stands only for those exact bytes."""

    passed: bool
    detail: str
    fingerprint: dict[str, Any]  # script and dataset sums, submission sums, interpreter and package versions
    seconds: float

    @classmethod
    def read(cls, path: Path) -> ParityRecord | None:
        """The record, or None when missing or damaged (the check then runs again)."""
        return cls._read_or_none(path)


class PulledRuns(RootModel[dict[str, dict[str, str]]]):
    """train/pull.json: per run folder the last `kernel pull` brought (fold-K, full), the sha256 of each of its files;
    a local run folder is replaced by a pull only while it still holds exactly those."""

    def write(self, path: Path) -> None:
        write_text(path, json.dumps(self.root, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> PulledRuns:
        if not Path(path).exists():
            return cls({})
        try:
            return cls.model_validate(_read_json(path))
        except ValidationError as error:
            raise PipelineError(
                f"{path}: not a record of pulled runs ({_first_error(error)}); it guards local run "
                "folders from being replaced: move the run folders a pull should replace out of "
                "oof/<exp>/, delete it, then pull again"
            ) from None


def _newer(path: Path, than: Path) -> bool:
    """Whether `path` was written after `than` (a second's slack for coarse file-system clocks)."""
    return path.stat().st_mtime > than.stat().st_mtime + 1.0


def _first_error(error: ValidationError) -> str:
    """'key.path: what is wrong' of a validation error's first problem ('top level: ...' for the file as a whole)."""
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc']) or 'top level'}: {first['msg']}"


# ---- a training kernel's runs (kaggle-run.json) -----------------------------------------------------

TRAINING_MANIFEST = "kaggle-run.json"  # in the training kernel's output, beside oof/


class TrainingManifest(_Record):
    """What a training kernel trained on and wrote: the config's training part (`portable_config`), the folds
    file's sha256, and per run folder (fold-K, full) the sha256 of every file in it."""

    experiment: str
    config: dict[str, Any]
    folds_sha256: str | None
    runs: dict[str, dict[str, str]]
    # The OOF predictions the kernel made once every fold was trained (oof.npz, oof_scores.json): name -> sha256.
    predictions: dict[str, str] = Field(default_factory=dict)
    # The image-cache dataset the runs read their training images from ("ref (codec)"); None: decoded on Kaggle.
    image_cache: str | None = None

    @classmethod
    def read(cls, path: Path, remake: str) -> TrainingManifest:
        try:
            return cls.model_validate(_read_json(path))
        except ValidationError:
            raise PipelineError(f"{path}: missing or not a training kernel's manifest; {remake}") from None


TRAINING_SECTIONS = ("competition", "format", "format_options", "data", "model", "train", "augment", "predict")


def portable_config(config: dict) -> dict:
    """The part of a resolved config that shapes a training run, without what differs between this machine
    and Kaggle (data.root, the held-apart answers, where a prebuilt image cache lies): what a training kernel carries
    and is compared on."""
    local = ("root", "solution", "prebuilt_cache")
    data = {key: value for key, value in config.get("data", {}).items() if key not in local}
    return {**{key: config[key] for key in TRAINING_SECTIONS if key in config}, "data": data}


# ---- run folders ------------------------------------------------------------------------------


def read_run_summary(run_dir: Path) -> dict:
    """A run's summary.json as written at its end ({} while it runs or when unreadable)."""
    summary = _read_json(Path(run_dir) / RUN_SUMMARY)
    return summary if isinstance(summary, dict) else {}


def read_run_config(run_dir: Path) -> dict:
    """The resolved config a run saved at its start ({} when missing)."""
    saved = _read_json(Path(run_dir) / RUN_CONFIG)
    return saved if isinstance(saved, dict) else {}


def read_kernel_ref(layout: Layout) -> str | None:
    """The built kernel's id ('built' when its metadata lacks one); None when no kernel was built."""
    if not layout.kernel_metadata_path.exists():
        return None
    meta = _read_json(layout.kernel_metadata_path)
    return (meta or {}).get("id", "built") if isinstance(meta, (dict, type(None))) else "built"


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text()) if Path(path).exists() else None
    except (OSError, ValueError):
        return None
