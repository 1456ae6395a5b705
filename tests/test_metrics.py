import numpy as np
import pytest
from sklearn import metrics as sk

from src import metrics
from src.errors import PipelineError


def random_labels(seed, n=60, c=7, density=0.3):
    """Two random label matrices with some all-empty rows in each, and one row empty in both."""
    rng = np.random.default_rng(seed)
    y_true = rng.random((n, c)) < density
    y_pred = rng.random((n, c)) < density
    y_true[:5] = False
    y_pred[3:8] = False
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_fbeta_samples_matches_sklearn(seed, beta, zero_division):
    y_true, y_pred = random_labels(seed)
    expected = sk.fbeta_score(y_true, y_pred, beta=beta, average="samples", zero_division=zero_division)
    assert metrics.fbeta_samples(y_true, y_pred, beta, zero_division) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_fbeta_per_sample_matches_sklearn_row_by_row(zero_division):
    y_true, y_pred = random_labels(3, n=20)
    per_sample = metrics.fbeta_per_sample(y_true, y_pred, beta=2.0, zero_division=zero_division)
    expected = [sk.fbeta_score(t, p, beta=2.0, zero_division=zero_division) for t, p in zip(y_true, y_pred)]
    np.testing.assert_allclose(per_sample, expected, atol=1e-12)


def test_fbeta_from_counts_formula_and_empty_case():
    scores = metrics.fbeta_from_counts([2, 0, 0, 0], [1, 0, 3, 0], [1, 2, 0, 0], beta=2.0, zero_division=0.5)
    # 5 tp / (5 tp + 4 fn + 1 fp); no tp gives 0; nothing true or predicted gives zero_division.
    np.testing.assert_allclose(scores, [10 / (10 + 4 + 1), 0.0, 0.0, 0.5])


def test_per_class_scores_and_macro_match_sklearn():
    y_true, y_pred = random_labels(4)
    y_true[:, 2] = False  # a class with no support
    y_pred[:, 5] = False  # a class never predicted
    for beta in (1.0, 2.0):
        scores = metrics.per_class_scores(y_true, y_pred, beta=beta)
        precision, recall, fscore, support = sk.precision_recall_fscore_support(
            y_true, y_pred, beta=beta, average=None, zero_division=0
        )
        np.testing.assert_array_equal(scores["support"], support)
        np.testing.assert_allclose(scores["precision"], precision, atol=1e-12)
        np.testing.assert_allclose(scores["recall"], recall, atol=1e-12)
        np.testing.assert_allclose(scores["fscore"], fscore, atol=1e-12)
        expected = sk.fbeta_score(y_true, y_pred, beta=beta, average="macro", zero_division=0)
        assert metrics.macro_fbeta(y_true, y_pred, beta=beta) == pytest.approx(expected, abs=1e-12)


def test_single_label_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    n_classes = 6
    # Class 5 never occurs in either array but still counts in the macro mean.
    true_labels = rng.integers(0, 5, 80)
    pred_labels = np.where(rng.random(80) < 0.6, true_labels, rng.integers(0, 5, 80))
    assert metrics.accuracy(true_labels, pred_labels) == pytest.approx(sk.accuracy_score(true_labels, pred_labels))
    expected = sk.f1_score(true_labels, pred_labels, average="macro", labels=range(n_classes), zero_division=0)
    assert metrics.macro_f1_single(true_labels, pred_labels, n_classes) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_array_equal(
        metrics.confusion(true_labels, pred_labels, n_classes),
        sk.confusion_matrix(true_labels, pred_labels, labels=range(n_classes)),
    )


def test_binary_attribute_accuracy():
    y_true, y_pred = random_labels(6, c=5)
    per_column = metrics.per_column_accuracy(y_true, y_pred.astype(np.int8))
    expected = [sk.accuracy_score(y_true[:, j], y_pred[:, j]) for j in range(5)]
    np.testing.assert_allclose(per_column, expected)
    assert metrics.mean_accuracy(y_true, y_pred) == pytest.approx(np.mean(expected))


def test_bad_inputs_raise_pipeline_error():
    y_true, y_pred = random_labels(7)
    with pytest.raises(PipelineError, match="same shape"):
        metrics.fbeta_samples(y_true, y_pred[:, :-1])
    with pytest.raises(PipelineError, match="other than 0 and 1"):
        metrics.fbeta_samples(y_true, np.full(y_true.shape, 0.7))
    with pytest.raises(PipelineError, match="dimensions"):
        metrics.mean_accuracy(y_true[0], y_pred[0])
    with pytest.raises(PipelineError, match="outside"):
        metrics.confusion(np.array([0, 1, 3]), np.array([0, 1, 2]), n_classes=3)
    with pytest.raises(PipelineError, match="one prediction per image"):
        metrics.accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(PipelineError, match="beta"):
        metrics.fbeta_from_counts([1], [0], [0], beta=0.0)
