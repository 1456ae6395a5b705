"""The interface every competition format implements, and the generic parts they share.

A format knows a competition's files: it reads training labels into per-head targets, lists the
test images, describes the model heads, scores predictions, and writes + validates the submission.
Heads are either `multilabel` (sigmoid, per-class thresholds) or `softmax` (one label, argmax).
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from src import metrics
from src.errors import PipelineError
from src.objectives import Objective, SamplesFbeta
from src.thresholds import apply_thresholds, best_global_threshold


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class HeadSpec:
    """One output head of the shared backbone."""

    name: str
    kind: Literal["multilabel", "softmax"]
    class_names: tuple[str, ...]
    objective: Objective | None = None  # multilabel heads: what thresholds maximise
    loss_weight: float = 1.0
    min_labels: int = 0  # multilabel heads: every image gets at least this many labels (top ones when too few pass)

    @property
    def n_outputs(self) -> int:
        return len(self.class_names)

    @property
    def thresholded(self) -> bool:
        return self.kind == "multilabel"

    @property
    def threshold_objective(self) -> Objective:
        """What this head's thresholds maximise: `objective`, or per-image F1 when the format names none."""
        return self.objective or SamplesFbeta(1.0)


@dataclass
class ImageTable:
    """Images with ids, and (for training data) per-head targets.

    Targets: multilabel head -> uint8 [n, c]; softmax head -> int64 [n].
    `split` holds an official partition where the competition has one (e.g. CelebA 0/1), else None.
    """

    ids: list[str]
    paths: list[Path]
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> ImageTable:
        return ImageTable(
            ids=[self.ids[i] for i in rows],
            paths=[self.paths[i] for i in rows],
            targets={name: values[rows] for name, values in self.targets.items()},
            split=None if self.split is None else self.split[rows],
        )


@dataclass(frozen=True)
class DecisionRules:
    """How probabilities become labels: per-head class thresholds and label-count limits."""

    thresholds: dict[str, np.ndarray]
    min_labels: int = 0
    max_labels: int | None = None
    groups: dict[str, tuple] = field(default_factory=dict)  # head -> its thresholds.LabelGroup limits
    relative_ratios: dict[str, float] = field(default_factory=dict)  # head -> the `relative` rule's ratio


class CompetitionFormat(ABC):
    """Base class: subclasses implement the file I/O; scoring and decisions are generic over heads."""

    name: ClassVar[str]
    main_metric: ClassVar[str] = "score"
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Where the course's zip puts each piece (`package` stage), over artifacts.PACKAGE_NAMES; {} = the defaults.
    course_package_names: ClassVar[dict[str, str | None]] = {}
    # The report PDF's typeface and body size in pt when report.font / report.font_size are null (the course's
    # rule where it has one: 'dejavu' (DejaVu Sans, embedded) or 'arial' (base-14 Helvetica, shown as Arial).
    report_typography: ClassVar[tuple[str, float]] = ("dejavu", 8.5)
    # The demo (src/demo.py builds it): the answers files `write_demo` writes, and its default train / test sizes.
    demo_solution_names: ClassVar[tuple[str, ...]] = ()
    demo_sizes: ClassVar[tuple[int, int]] = (1200, 300)
    # The shared end-to-end test's bar: the demo chain's test score must beat the best image-blind prediction by
    # this much; None leaves the format out of that test (its chain is tested on its own).
    demo_margin_over_chance: ClassVar[float | None] = None

    def __init__(self, root: Path, options: dict[str, Any] | None = None):
        self.root = Path(root)
        self.options = self.parse_options(options)
        if not self.root.is_dir():
            raise PipelineError(
                f"{self.root}: competition folder not found; set data.root to the folder holding the "
                "competition's files"
            )

    @classmethod
    def parse_options(cls, options: dict[str, Any] | None) -> BaseModel:
        """`format_options` from the config -> this format's validated Options; a bad value is one config line."""
        try:
            return cls.Options.model_validate(options or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(["format_options", *(str(part) for part in error["loc"])])
            raise PipelineError(f"config {key}: {error['msg']} for format '{cls.name}'; fix the value") from None

    # --- files -------------------------------------------------------------------------------
    @abstractmethod
    def heads(self) -> list[HeadSpec]:
        """The model heads this competition needs (class names read from the label files)."""

    @abstractmethod
    def read_train(self) -> ImageTable:
        """Training images with targets for every head."""

    @abstractmethod
    def read_test(self) -> ImageTable:
        """Test images (no targets), in submission order."""

    @abstractmethod
    def write_submission(
        self, out_dir: Path, ids: list[str], labels: dict[str, Any], probs: dict[str, np.ndarray]
    ) -> list[Path]:
        """Write the submission file(s) into `out_dir` (atomically) and return their paths."""

    @abstractmethod
    def read_submission(self, files: list[Path]) -> tuple[list[str], dict[str, Any]]:
        """Read submission files back into (ids, labels per head); validate them against the competition."""

    def submission_names(self) -> list[str]:
        """File names the submission consists of."""
        return ["submission.csv"]

    # --- a course package that predicts without the training files -------------------------
    def standalone_options(self) -> dict[str, Any]:
        """format_options that let this format name its heads without the training files (the course package's
        notebook predicts from the shipped test images alone); {} = the format needs its label files for that."""
        return {}

    def test_input_files(self) -> list[Path]:
        """Every file `read_test` and the submission validator read (under `root`): what a package ships so the
        test set can be predicted and checked from the zip alone."""
        return list(self.read_test().paths)

    # --- folds -------------------------------------------------------------------------------
    def stratify_matrix(self, table: ImageTable) -> np.ndarray:
        """A 0/1 matrix whose columns the folds should balance: every head's labels, one-hot for softmax."""
        blocks = []
        for head in self.heads():
            values = table.targets[head.name]
            blocks.append(values if head.kind == "multilabel" else np.eye(head.n_outputs, dtype=np.uint8)[values])
        return np.concatenate(blocks, axis=1)

    @classmethod
    def folds_scheme_of(cls, options: BaseModel) -> str:
        """Name of the non-default fold scheme these validated options choose (it names the folds file);
        '' = K stratified folds. The one place a format says how it splits; status reads it without any data."""
        return ""

    def folds_scheme(self) -> str:
        """This format's fold scheme under its own options (see `folds_scheme_of`)."""
        return self.folds_scheme_of(self.options)

    def assign_folds(self, table: ImageTable, n_splits: int, seed: int) -> np.ndarray:
        """Fold of every training row (-1 = never held out). Default: iterative stratification on all labels."""
        from src.data.folds import make_folds

        return make_folds(self.stratify_matrix(table), n_splits, seed)

    # --- demo --------------------------------------------------------------------------------
    @classmethod
    def write_demo(cls, comp_dir: Path, answers_dir: Path, seed: int, n_train: int, n_test: int) -> None:
        """Write a demo competition in this format's layout into the empty `comp_dir` and its test answers
        (`demo_solution_names`, in the submission format) into `answers_dir`; a pure function of the arguments."""
        raise PipelineError(f"format '{cls.name}' has no demo; write one in its module (write_demo)")

    # --- decisions and scores ----------------------------------------------------------------
    def decide(self, probs: dict[str, np.ndarray], rules: DecisionRules | None) -> dict[str, np.ndarray]:
        """Labels per head: thresholded bool matrix for multilabel heads, argmax for softmax heads."""
        labels = {}
        for head in self.heads():
            head_probs = probs[head.name]
            if head.thresholded:
                thresholds = rules.thresholds[head.name] if rules else 0.5
                min_labels = max(rules.min_labels if rules else 0, head.min_labels)
                max_labels = rules.max_labels if rules else None
                groups = rules.groups.get(head.name, ()) if rules else ()
                ratio = rules.relative_ratios.get(head.name) if rules else None
                labels[head.name] = apply_thresholds(head_probs, thresholds, min_labels, max_labels, groups, ratio)
            else:
                labels[head.name] = np.asarray(head_probs).argmax(axis=1)
        return labels

    def score_labels(self, targets: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of decided labels against targets; includes `self.main_metric` (mean of the heads' main scores)."""
        scores: dict[str, float] = {}
        main_parts = []
        for head in self.heads():
            true, pred = targets[head.name], labels[head.name]
            if head.thresholded:
                objective = head.threshold_objective
                value = objective.score(true, pred)
                scores[f"{head.name}_{objective.metric_key}"] = value
                scores[f"{head.name}_macro_f1"] = float(metrics.macro_fbeta(true, pred, beta=1.0))
            else:
                value = float(metrics.accuracy(true, pred))
                scores[f"{head.name}_accuracy"] = value
                scores[f"{head.name}_macro_f1"] = float(metrics.macro_f1_single(true, pred, head.n_outputs))
            main_parts.append(value)
        scores[self.main_metric] = float(np.mean(main_parts))
        return scores

    def evaluate(
        self, targets: dict[str, np.ndarray], probs: dict[str, np.ndarray], rules: DecisionRules | None
    ) -> dict[str, float]:
        """Metrics of probabilities under decision rules (None = threshold 0.5)."""
        return self.score_labels(targets, self.decide(probs, rules))

    def validation_score(
        self, targets: dict[str, np.ndarray], probs: dict[str, np.ndarray]
    ) -> tuple[float, dict[str, float]]:
        """The score that picks the best epoch: main metric with each multilabel head at its best global threshold."""
        thresholds = {}
        for head in self.heads():
            if head.thresholded:
                thresholds[head.name], _ = best_global_threshold(
                    probs[head.name], targets[head.name], head.threshold_objective
                )
        scores = self.evaluate(targets, probs, DecisionRules(thresholds))
        at_half = self.evaluate(targets, probs, None)
        report = {f"{key}@0.5": value for key, value in at_half.items()}
        report.update({f"{key}@global": value for key, value in scores.items()})
        return scores[self.main_metric], report

    def score_submission(self, submission_files: list[Path], solution_files: list[Path]) -> dict[str, float]:
        """Score a written submission against held-apart answers in the same format (demo test score)."""
        sub_ids, sub_labels = self.read_submission(submission_files)
        sol_ids, sol_labels = self.read_submission(solution_files)
        if sub_ids != sol_ids:
            raise PipelineError(f"{submission_files[0]}: ids differ from the solution's {solution_files[0]}")
        return self.score_labels(sol_labels, sub_labels)


# --- shared readers: strict and kind ------------------------------------------------------------


def read_label_text(path: Path, shown_as: Path | None = None, kind: str = "UTF-8 CSV") -> str:
    """A label file's text (a BOM is dropped); one clear line when it is missing or not UTF-8."""
    shown_as = shown_as or path
    if not path.is_file():
        raise PipelineError(f"{shown_as}: file not found; check data.root points at the competition folder")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{shown_as}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as {kind}"
        ) from None


def read_csv_rows(path: Path, required_columns: list[str]) -> list[dict[str, str]]:
    """Read a CSV (BOM, CRLF and stray spaces accepted) into rows; refuse missing columns or ragged rows.

    Each returned row also carries `__line__`, its 1-based line in the file.
    """
    text = read_label_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise PipelineError(f"{path} line {reader.line_num}: malformed CSV ({exc}); fix the quoting") from None
    rows = [[cell.strip() for cell in row] for row in rows]
    if not rows or not any(rows[0]):
        raise PipelineError(f"{path}: empty file; expected a header with columns {', '.join(required_columns)}")
    header = rows[0]
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise PipelineError(
            f"{path} line 1: missing column(s) {', '.join(missing)}; the header must name {', '.join(required_columns)}"
        )
    records = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(row):
            continue  # blank line (often a trailing one)
        if len(row) != len(header):
            raise PipelineError(
                f"{path} line {line_number}: {len(row)} columns, expected {len(header)} ({', '.join(header)}); fix the row"
            )
        record = dict(zip(header, row))
        record["__line__"] = str(line_number)
        records.append(record)
    return records


def parse_id_list(
    text: str, known: set[int], path: Path, line: str, column: str, fix: str = "check the labels file"
) -> list[int]:
    """Parse space-separated integer class ids; refuse non-integers and ids outside `known` (saying `fix`)."""
    values = []
    for token in text.split():
        try:
            value = int(token)
        except ValueError:
            raise PipelineError(
                f"{path} line {line}: {column} '{token}' is not an integer id; use space-separated ids"
            ) from None
        if value not in known:
            raise PipelineError(f"{path} line {line}: {column} id {value} is not a known class; {fix}")
        values.append(value)
    return values


def refuse_duplicates(ids: list[str], path: Path, lines: list[str] | None = None) -> None:
    """Stop at the first repeated id, naming both lines."""
    seen: dict[str, int] = {}
    for index, image_id in enumerate(ids):
        if image_id in seen:
            first = lines[seen[image_id]] if lines else seen[image_id] + 2
            here = lines[index] if lines else index + 2
            raise PipelineError(
                f"{path} line {here}: duplicate id '{image_id}' (first on line {first}); ids must be unique"
            )
        seen[image_id] = index


def safe_child(root: Path, relative: str, path: Path, line: str) -> Path:
    """`root / relative`, refusing absolute paths and `..` that would escape the competition folder, and paths not
    in their plain form (`train/./a.jpg`, `train//a.jpg`): those would name an image a second time under another id."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise PipelineError(
            f"{path} line {line}: path '{relative}' escapes the competition folder; use a path relative to it"
        )
    if candidate.as_posix() != relative:
        raise PipelineError(
            f"{path} line {line}: path '{relative}' is not in its plain form; write it as '{candidate.as_posix()}'"
        )
    return root / candidate


def require_images(paths: list[Path], source: Path, lines: list[str] | None = None) -> None:
    """Stop at the first missing image file (one directory listing per folder, not one stat per file)."""
    listings: dict[Path, set[str]] = {}
    for index, image_path in enumerate(paths):
        folder = image_path.parent
        if folder not in listings:
            listings[folder] = {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
        if image_path.name not in listings[folder]:
            where = f" line {lines[index]}" if lines else ""
            raise PipelineError(f"{source}{where}: image {image_path} is missing; restore the file or remove the row")


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Files that operating systems drop into folders; never images, never worth stopping for.
OS_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name.

    Hidden files and OS junk (Thumbs.db, desktop.ini) are skipped; a subfolder or a file that is not
    an image (by suffix, any case) stops with its name and the fix.
    """
    if not folder.is_dir():
        raise PipelineError(f"{folder}: folder not found; check data.root points at the competition folder")
    images = []
    for entry in sorted(folder.iterdir(), key=lambda path: path.name):
        if entry.name.startswith(".") or entry.name.lower() in OS_JUNK_FILES:
            continue
        if entry.is_dir():
            raise PipelineError(f"{entry}: a folder inside {folder}, which should hold only images; move it out")
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise PipelineError(
                f"{entry}: not an image file (suffix '{entry.suffix}'; expected one of "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}); move it out of {folder}"
            )
        images.append(entry)
    return images
