from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from sklearn import metrics as sk
from test_metrics import random_labels as random_metric_labels

from src import objectives
from src import thresholds as th
from src.errors import PipelineError
from src.objectives import ColumnAccuracy, ColumnFbeta, Objective, SamplesFbeta, from_name

ALL = [
    SamplesFbeta(2.0),
    SamplesFbeta(1.0, 1.0),
    SamplesFbeta(0.5, 0.3),
    ColumnAccuracy(),
    ColumnFbeta(1.0),
    ColumnFbeta(2.0, 1.0),
]


def random_labels(seed, n=60, c=9):
    """Two label matrices with empty rows and columns: in one matrix, in the other, and in both."""
    y_true, y_pred = random_metric_labels(seed, n, c)
    y_true[:, 0] = False
    y_pred[:, 1] = False
    y_true[:, 2] = y_pred[:, 2] = False
    return y_true, y_pred


def group_counts(objective, y_true, y_pred):
    """tp, fp, fn, tn of every group: per image when the objective couples classes, else per column."""
    axis = 1 if objective.couples_classes else 0
    tp = np.count_nonzero(y_true & y_pred, axis=axis)
    fp = np.count_nonzero(~y_true & y_pred, axis=axis)
    fn = np.count_nonzero(y_true & ~y_pred, axis=axis)
    tn = np.count_nonzero(~y_true & ~y_pred, axis=axis)
    return tp, fp, fn, tn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_fbeta_objectives_equal_sklearn(seed, beta, zero_division):
    y_true, y_pred = random_labels(seed)
    samples = sk.fbeta_score(y_true, y_pred, beta=beta, average="samples", zero_division=zero_division)
    macro = sk.fbeta_score(y_true, y_pred, beta=beta, average="macro", zero_division=zero_division)
    assert SamplesFbeta(beta, zero_division).score(y_true, y_pred) == pytest.approx(samples, abs=1e-12)
    assert ColumnFbeta(beta, zero_division).score(y_true, y_pred) == pytest.approx(macro, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_column_accuracy_equals_sklearn_per_column_mean(seed):
    y_true, y_pred = random_labels(seed)
    expected = np.mean([sk.accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])])
    assert ColumnAccuracy().score(y_true, y_pred.astype(np.uint8)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("objective", ALL, ids=repr)
def test_count_pieces_agree_with_score(objective):
    y_true, y_pred = random_labels(3)
    counts = group_counts(objective, y_true, y_pred)
    assert objective.mean_score(*counts) == pytest.approx(objective.score(y_true, y_pred), abs=1e-12)
    # Per group: the score of that group's image (or column) alone.
    groups = zip(y_true, y_pred) if objective.couples_classes else zip(y_true.T, y_pred.T)
    alone = [
        objective.score(t[None, :], p[None, :])
        if objective.couples_classes
        else objective.score(t[:, None], p[:, None])
        for t, p in groups
    ]
    np.testing.assert_allclose(objective.group_scores(*counts), alone, atol=1e-12)
    # Trailing axes (one column per candidate threshold) are kept.
    stacked = [np.stack([count, count], axis=-1) for count in counts]
    np.testing.assert_allclose(objective.mean_score(*stacked), [objective.score(y_true, y_pred)] * 2, atol=1e-12)


@pytest.mark.parametrize("objective", [o for o in ALL if o.couples_classes], ids=repr)
def test_running_total_gives_the_image_scores_and_grows_by_one_per_label(objective):
    y_true, y_pred = random_labels(4)
    tp = np.count_nonzero(y_true & y_pred, axis=1).astype(np.float64)
    running = objective.running_start(np.count_nonzero(y_pred, axis=1), np.count_nonzero(y_true, axis=1))
    np.testing.assert_allclose(
        objective.running_scores(tp, running),
        objective.group_scores(*group_counts(objective, y_true, y_pred)),
        atol=1e-12,
    )
    # Turning class 3 on everywhere it is off: one more label per such image, tp up where it is true.
    turned = y_pred.copy()
    turned[:, 3] = True
    added = ~y_pred[:, 3]
    after = objective.running_scores(tp + (added & y_true[:, 3]), running + added)
    np.testing.assert_allclose(after, objective.group_scores(*group_counts(objective, y_true, turned)), atol=1e-12)


def test_names_labels_and_report_pieces():
    assert [o.name for o in (SamplesFbeta(), ColumnAccuracy(), ColumnFbeta())] == [
        "samples_fbeta",
        "column_accuracy",
        "column_fbeta",
    ]
    assert objectives.names() == ("column_accuracy", "column_fbeta", "samples_fbeta")
    assert SamplesFbeta(2.0).label == "F2 per image (mean)"
    assert ColumnFbeta(1.0).label == "macro F1"
    assert ColumnAccuracy().label == "mean attribute accuracy"
    assert [o.metric_key for o in (SamplesFbeta(2.0), ColumnFbeta(0.5), ColumnAccuracy())] == ["f2", "f0.5", "accuracy"]
    assert [o.column_beta for o in (SamplesFbeta(2.0), ColumnFbeta(0.5), ColumnAccuracy())] == [2.0, 0.5, 1.0]
    assert [o.couples_classes for o in (SamplesFbeta(), ColumnFbeta(), ColumnAccuracy())] == [True, False, False]
    assert [o.counts_true_negatives for o in (SamplesFbeta(), ColumnFbeta(), ColumnAccuracy())] == [False, False, True]
    assert from_name("samples_fbeta", 2.0, zero_division=1.0) == SamplesFbeta(2.0, 1.0)
    assert from_name("column_accuracy") == ColumnAccuracy() != ColumnFbeta()
    assert SamplesFbeta(1.0) != ColumnFbeta(1.0)


def test_image_rightness():
    y_true, y_pred = random_labels(5, n=20)
    np.testing.assert_allclose(ColumnAccuracy().image_rightness(y_true, y_pred), (y_true == y_pred).mean(axis=1))
    # F-beta objectives: an image with nothing true and nothing predicted is fully right, whatever zero_division.
    expected = [sk.fbeta_score(t, p, beta=2.0, zero_division=1.0) for t, p in zip(y_true, y_pred)]
    np.testing.assert_allclose(SamplesFbeta(2.0, 0.0).image_rightness(y_true, y_pred), expected, atol=1e-12)
    np.testing.assert_allclose(ColumnFbeta(2.0).image_rightness(y_true, y_pred), expected, atol=1e-12)


@pytest.mark.parametrize("build", [SamplesFbeta, ColumnFbeta])
def test_bad_parameters_are_refused_in_one_line(build):
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(PipelineError, match="beta") as error:
            build(beta)
        assert "\n" not in str(error.value)
    for zero_division in (-0.1, 1.5):
        with pytest.raises(PipelineError, match=r"zero_division .*\[0, 1\]"):
            build(1.0, zero_division)
    with pytest.raises(PipelineError, match="unknown threshold objective 'samples_f2'; did you mean 'samples_fbeta'"):
        from_name("samples_f2")


def test_a_new_objective_is_one_class(monkeypatch):
    monkeypatch.setattr(objectives, "OBJECTIVES", objectives.OBJECTIVES.copy())

    @dataclass(frozen=True)
    class ColumnRecall(Objective):
        name: ClassVar[str] = "column_recall_test"
        label: ClassVar[str] = "mean recall"
        metric_key: ClassVar[str] = "recall"

        def score(self, targets, predicted):
            return float(self.mean_score(*group_counts(self, np.asarray(targets, bool), np.asarray(predicted, bool))))

        def group_scores(self, tp, fp, fn, tn):
            return np.divide(tp, tp + fn, out=np.ones(np.shape(tp)), where=np.asarray(tp + fn) > 0)

        def image_rightness(self, targets, predicted):
            return np.ones(len(targets))

    assert from_name("column_recall_test") == ColumnRecall()
    rng = np.random.default_rng(6)
    targets = rng.random((50, 4)) < 0.3
    probs = np.clip(0.5 * targets + 0.6 * rng.random((50, 4)), 0, 1)
    threshold, best = th.best_global_threshold(probs, targets, ColumnRecall())
    assert best == th.score(probs, targets, threshold, ColumnRecall())
    assert th.score(probs, targets, th.exact_thresholds(probs, targets, ColumnRecall()), ColumnRecall()) == 1.0
    with pytest.raises(ValueError, match="taken"):
        type("Again", (ColumnRecall,), {"name": "column_recall_test"})
