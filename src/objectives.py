"""What a threshold search maximises: one small class per objective, found by name.

An objective scores a bool n x c prediction matrix against the targets (`score`). It is also the
mean over groups of a per-group score computed from that group's tp / fp / fn / tn counts
(`group_scores`, `mean_score`): the groups are images when the objective couples the classes of
an image (`couples_classes`: each threshold depends on all the others, so thresholds.py runs
coordinate ascent), else columns (each class's threshold is chosen on its own column). The count
forms are what the vectorised searches in `src.thresholds` evaluate; they agree with `score`.

Per-image objectives also give each image's score from its tp and a running total that grows by
one with every label turned on (`running_start`, `running_scores`), which the coordinate ascent
updates incrementally. A new objective is one new subclass here with a new `name`; `from_name`
finds it. Names are stable ids (saved files and configs may hold them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from src import metrics
from src.errors import PipelineError
from src.registry import Registry

OBJECTIVES: Registry[type[Objective]] = Registry("threshold objective")


class Objective(ABC):
    """Base class: `name`, `label`, `score` and the count-based pieces (see the module docstring).

    Turning a negative label on must never raise the score: the searches skip every cut below a
    column's lowest-scoring positive.
    """

    name: ClassVar[str]  # stable id, e.g. "samples_fbeta"
    couples_classes: ClassVar[bool] = False  # True: groups are images, else columns
    counts_true_negatives: ClassVar[bool] = False  # True: a right "off" counts as much as a right "on"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a subclass that names itself is an objective (abstract bases do not)
            OBJECTIVES.register(cls)

    @property
    @abstractmethod
    def label(self) -> str:
        """Human text for reports and logs, e.g. 'F2 per image (mean)'."""

    @property
    @abstractmethod
    def metric_key(self) -> str:
        """Suffix of the head's score key in a format's scores (`<head>_<metric_key>`), e.g. 'f2'."""

    @property
    def column_beta(self) -> float:
        """The beta of the per-class F-score a report shows beside this objective."""
        return 1.0

    @abstractmethod
    def score(self, targets, predicted) -> float:
        """The objective's value for two n x c label matrices (bools or 0/1)."""

    @abstractmethod
    def group_scores(self, tp, fp, fn, tn) -> np.ndarray:
        """Each group's score (float64) from its counts; arrays broadcast elementwise."""

    def mean_score(self, tp, fp, fn, tn) -> float | np.ndarray:
        """The objective from the counts of every group, groups along axis 0 (trailing axes kept)."""
        return self.group_scores(tp, fp, fn, tn).mean(axis=0)

    @abstractmethod
    def image_rightness(self, targets, predicted) -> np.ndarray:
        """How right each image is, in [0, 1] (report examples); nothing true and nothing predicted is 1."""


class PerImageObjective(Objective):
    """An objective averaged over images whose per-image score couples that image's classes."""

    couples_classes: ClassVar[bool] = True

    @abstractmethod
    def running_start(self, predicted_counts, true_counts) -> np.ndarray:
        """Each image's running total (float64) from its predicted and true label counts."""

    @abstractmethod
    def running_scores(self, tp, running) -> np.ndarray:
        """Each image's score from its tp and running total (which grows by one per label turned on)."""


@dataclass(frozen=True)
class _Fbeta:
    """F-beta parameters and the count formula shared by the per-image and per-column F-beta.

    `zero_division` is the F-beta of a group (image or column) with nothing true and nothing
    predicted, as sklearn's argument of that name (0 unless the competition says).
    """

    beta: float = 1.0
    zero_division: float = 0.0
    label_template: ClassVar[str]  # the label with the beta as {beta:g}
    metric: ClassVar[Callable[..., float]]  # (targets, predicted, beta, zero_division) -> score, from src.metrics

    def __post_init__(self):
        if not np.isfinite(self.beta) or self.beta <= 0:
            raise PipelineError(f"threshold objective beta is {self.beta}; pass a positive number (2 for F2)")
        if not 0.0 <= self.zero_division <= 1.0:
            raise PipelineError(f"threshold objective zero_division is {self.zero_division}; pass a value in [0, 1]")

    @property
    def label(self) -> str:
        return self.label_template.format(beta=self.beta)

    @property
    def metric_key(self) -> str:
        return f"f{self.beta:g}"

    def score(self, targets, predicted) -> float:
        return self.metric(targets, predicted, self.beta, self.zero_division)

    @property
    def column_beta(self) -> float:
        return float(self.beta)

    def group_scores(self, tp, fp, fn, tn) -> np.ndarray:
        return metrics.fbeta_from_counts(tp, fp, fn, self.beta, self.zero_division)

    def image_rightness(self, targets, predicted) -> np.ndarray:
        return metrics.fbeta_per_sample(targets, predicted, beta=self.beta, zero_division=1.0)


@dataclass(frozen=True)
class SamplesFbeta(_Fbeta, PerImageObjective):
    """Per-image F-beta averaged over images (iMet: beta=2; DeepFashion attributes: beta=1).

    Running total of an image: s = predicted + beta^2 * true labels, so F = (1 + beta^2) tp / s.
    """

    name: ClassVar[str] = "samples_fbeta"
    label_template: ClassVar[str] = "F{beta:g} per image (mean)"
    metric: ClassVar[Callable[..., float]] = staticmethod(metrics.fbeta_samples)

    def running_start(self, predicted_counts, true_counts) -> np.ndarray:
        return (predicted_counts + self.beta**2 * true_counts).astype(np.float64)

    def running_scores(self, tp, running) -> np.ndarray:
        out = np.full(np.shape(tp), self.zero_division, dtype=np.float64)
        np.divide((1.0 + self.beta**2) * tp, running, out=out, where=running > 0)
        return out


@dataclass(frozen=True)
class ColumnAccuracy(Objective):
    """Per-column accuracy averaged over columns (CelebA); separable per class."""

    name: ClassVar[str] = "column_accuracy"
    counts_true_negatives: ClassVar[bool] = True
    label: ClassVar[str] = "mean attribute accuracy"
    metric_key: ClassVar[str] = "accuracy"

    def score(self, targets, predicted) -> float:
        return metrics.mean_accuracy(targets, predicted)

    def group_scores(self, tp, fp, fn, tn) -> np.ndarray:
        return np.asarray(tp + tn, dtype=np.float64) / (tp + fp + fn + tn)

    def mean_score(self, tp, fp, fn, tn) -> float | np.ndarray:
        # Right answers averaged over columns, then over rows (every column counts the same rows).
        correct = np.asarray(tp + tn, dtype=np.float64)
        return correct.mean(axis=0) / np.asarray(tp + fp + fn + tn)[0]

    def image_rightness(self, targets, predicted) -> np.ndarray:
        return (np.asarray(targets).astype(bool) == np.asarray(predicted, dtype=bool)).mean(axis=1)


@dataclass(frozen=True)
class ColumnFbeta(_Fbeta, Objective):
    """Macro F-beta: per-column F-beta averaged over columns; separable per class."""

    name: ClassVar[str] = "column_fbeta"
    label_template: ClassVar[str] = "macro F{beta:g}"
    metric: ClassVar[Callable[..., float]] = staticmethod(metrics.macro_fbeta)


def names() -> tuple[str, ...]:
    """Every objective's name, sorted."""
    return tuple(OBJECTIVES.names())


def from_name(name: str, *args, **kwargs) -> Objective:
    """The objective called `name` built with the given parameters (e.g. `from_name('samples_fbeta', 2.0)`)."""
    return OBJECTIVES.create(name, *args, **kwargs)
