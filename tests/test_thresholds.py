import numpy as np
import pytest

from src import thresholds as th
from src.errors import PipelineError
from src.objectives import ColumnAccuracy, ColumnFbeta, SamplesFbeta, from_name

F2 = SamplesFbeta(beta=2.0)
OBJECTIVES = [F2, SamplesFbeta(beta=1.0, zero_division=1.0), ColumnAccuracy(), ColumnFbeta(beta=1.0)]


def scaled_data(seed, n=400, c=12):
    """Probabilities that rank well within each class but live on a different scale per class,
    so no single threshold fits all classes."""
    rng = np.random.default_rng(seed)
    frequency = rng.uniform(0.05, 0.4, c)
    targets = rng.random((n, c)) < frequency
    signal = np.where(targets, rng.beta(5, 2, (n, c)), rng.beta(2, 5, (n, c)))
    scale = np.geomspace(0.05, 1.0, c)
    return (signal * scale).astype(np.float32), targets


def long_tail_data(seed, n, c=1103, labels_per_image=4.5):
    """iMet-like: Zipf-like class frequencies, miscalibrated classes of varying difficulty."""
    rng = np.random.default_rng(seed)
    frequency = np.arange(1, c + 1) ** -1.1
    frequency = np.minimum(frequency / frequency.sum() * labels_per_image, 0.35)
    targets = rng.random((n, c), dtype=np.float32) < frequency.astype(np.float32)
    logits = (
        np.log(frequency / (1 - frequency))
        + rng.normal(0, 1, c)
        + rng.uniform(1.5, 4, c) * targets
        + rng.standard_normal((n, c), dtype=np.float32)
    )
    return (1 / (1 + np.exp(-logits))).astype(np.float16), targets


def cut_points(column):
    """Every threshold giving a different prediction on this column, fewest labels on first."""
    values = np.unique(column)[::-1].astype(np.float64)
    middles = [(float(a) + float(b)) / 2 for a, b in zip(values[:-1], values[1:])]
    return [max(1.0, values[0]), *middles, min(0.0, float(np.nextafter(values[-1], -np.inf)))]


def test_apply_thresholds_is_strict_and_per_class():
    probs = np.array([[0.5, 0.2], [0.6, 0.1]], dtype=np.float16)
    np.testing.assert_array_equal(th.apply_thresholds(probs, 0.5), [[False, False], [True, False]])
    np.testing.assert_array_equal(th.apply_thresholds(probs, [0.55, 0.15]), [[False, True], [True, False]])


def test_apply_thresholds_label_limits_with_one_threshold():
    rng = np.random.default_rng(0)
    probs = rng.random((50, 8))
    predicted = th.apply_thresholds(probs, 0.7, min_labels=2, max_labels=3)
    # The reference rule of the public iMet pipeline: (top max & above threshold) | top min.
    ranks = np.argsort(np.argsort(-probs, axis=1), axis=1)
    expected = ((ranks < 3) & (probs > 0.7)) | (ranks < 2)
    np.testing.assert_array_equal(predicted, expected)
    counts = predicted.sum(axis=1)
    assert set(counts) == {2, 3}


def test_apply_thresholds_label_limits_with_class_thresholds_and_ties():
    probs = np.array([[0.9, 0.3, 0.8, 0.2]])
    # Passing: 0.3, 0.8, 0.2; max 2 keeps the two highest passing ones, not the unpassed 0.9.
    np.testing.assert_array_equal(
        th.apply_thresholds(probs, [0.95, 0.1, 0.5, 0.1], max_labels=2), [[False, True, True, False]]
    )
    # Only 0.8 passes; min 2 adds the highest one that did not pass.
    np.testing.assert_array_equal(
        th.apply_thresholds(probs, [0.95, 0.5, 0.5, 0.5], min_labels=2), [[True, False, True, False]]
    )
    # Only 0.3 passes; it stays although it is not among the two highest probabilities.
    np.testing.assert_array_equal(
        th.apply_thresholds(probs, [0.95, 0.1, 0.95, 0.95], min_labels=2), [[True, True, False, False]]
    )
    tied = np.array([[0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(th.apply_thresholds(tied, 0.9, min_labels=2), [[True, True, False]])
    with pytest.raises(PipelineError, match="max_labels"):
        th.apply_thresholds(probs, 0.5, min_labels=3, max_labels=2)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_best_global_threshold_beats_every_grid_point(objective):
    probs, targets = scaled_data(1, n=150)
    threshold, best = th.best_global_threshold(probs, targets, objective)
    assert best == pytest.approx(th.score(probs, targets, threshold, objective), abs=1e-12)
    grid_scores = [th.score(probs, targets, t, objective) for t in np.linspace(0.01, 0.99, 99)]
    assert best >= max(grid_scores) - 1e-12


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_exact_beats_half_and_global_on_rescaled_classes(objective):
    probs, targets = scaled_data(2)
    exact = th.exact_thresholds(probs, targets, objective)
    exact_score = th.score(probs, targets, exact, objective)
    _, global_score = th.best_global_threshold(probs, targets, objective)
    assert exact_score > global_score + 0.01
    assert exact_score > th.score(probs, targets, 0.5, objective) + 0.01


def reference_samples_fbeta(probs, targets, thresholds, beta, zero_division):
    """The per-image F-beta written out image by image, independent of the vectorised code."""
    total = 0.0
    for row_probs, row_targets in zip(probs, targets):
        on = [p > t for p, t in zip(row_probs, thresholds)]
        tp = sum(o and y for o, y in zip(on, row_targets))
        denominator = (1 + beta**2) * tp + beta**2 * (sum(row_targets) - tp) + (sum(on) - tp)
        total += (1 + beta**2) * tp / denominator if denominator else zero_division
    return total / len(probs)


@pytest.mark.parametrize("objective", OBJECTIVES[:2])
def test_ascent_score_is_true_score_and_never_decreases(objective):
    probs, targets = scaled_data(3, n=120, c=10)
    targets[:6] = False  # images without labels exercise zero_division
    p32, t_bool = th._inputs(probs, targets)
    init, _ = th.best_global_threshold(probs, targets, objective)
    thresholds, round_scores = th._coordinate_ascent(p32, t_bool, objective, init, 10, False)
    assert np.all(np.diff(round_scores) >= 0) and round_scores[-1] > round_scores[0]
    reference = reference_samples_fbeta(probs, targets, thresholds, objective.beta, objective.zero_division)
    assert round_scores[-1] == pytest.approx(reference, abs=1e-12)
    assert th.score(probs, targets, thresholds, objective) == pytest.approx(reference, abs=1e-12)
    # The public function after r rounds: scores never go down from the global start.
    scores = [
        th.score(probs, targets, th.exact_thresholds(probs, targets, objective, max_rounds=r), objective)
        for r in range(4)
    ]
    assert scores[0] == pytest.approx(round_scores[0], abs=1e-12)
    assert all(later >= earlier - 1e-12 for earlier, later in zip(scores, scores[1:]))


@pytest.mark.parametrize("objective", OBJECTIVES[2:])
def test_separable_exact_equals_brute_force_per_column(objective):
    probs, targets = scaled_data(4, n=40, c=5)
    probs = np.round(probs, 2)  # ties: cuts must not split equal probabilities
    exact = th.exact_thresholds(probs, targets, objective)

    def column_score(j, t):
        predicted = (probs[:, j] > t)[:, None]
        return objective.score(targets[:, j : j + 1], predicted)

    for j in range(probs.shape[1]):
        brute = max(column_score(j, t) for t in cut_points(probs[:, j]))
        assert column_score(j, exact[j]) == pytest.approx(brute, abs=1e-12)
    assert th.score(probs, targets, exact, objective) == pytest.approx(
        np.mean([max(column_score(j, t) for t in cut_points(probs[:, j])) for j in range(5)]), abs=1e-12
    )


def brute_force_ascent(probs, targets, objective, init, max_rounds):
    """Coordinate ascent that re-scores the whole matrix for every cut of every class."""
    thresholds = np.full(probs.shape[1], init)
    current = th.score(probs, targets, thresholds, objective)
    for _ in range(max_rounds):
        improved = False
        for j in range(probs.shape[1]):
            candidates = cut_points(probs[:, j])
            scores = []
            for t in candidates:
                trial = thresholds.copy()
                trial[j] = t
                scores.append(th.score(probs, targets, trial, objective))
            best = max(scores)
            if best > current + 1e-12:
                first = next(i for i, s in enumerate(scores) if s >= best - 1e-12)
                thresholds[j] = candidates[first]
                current = scores[first]
                improved = True
        if not improved:
            break
    return thresholds


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("objective", OBJECTIVES[:2])
def test_incremental_ascent_equals_brute_force_ascent(seed, objective):
    probs, targets = scaled_data(seed, n=30, c=4)
    probs = np.round(probs, 2)
    targets[:3] = False
    init, _ = th.best_global_threshold(probs, targets, objective)
    fast = th.exact_thresholds(probs, targets, objective, init=init)
    slow = brute_force_ascent(probs, targets, objective, init, max_rounds=10)
    np.testing.assert_array_equal(fast, slow)


def test_optuna_resumes_from_sqlite(tmp_path):
    probs, targets = scaled_data(7, n=60, c=5)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first, study = th.optuna_thresholds(probs, targets, F2, n_trials=5, storage=storage, study_name="f2")
    assert len(study.trials) == 5
    init, _ = th.best_global_threshold(probs, targets, F2)
    assert study.trials[0].params == {f"t_{j}": init for j in range(5)}
    thresholds, study = th.optuna_thresholds(probs, targets, F2, n_trials=8, storage=storage, study_name="f2")
    assert len(study.trials) == 8
    assert th.score(probs, targets, thresholds, F2) == pytest.approx(study.best_value, abs=1e-12)
    assert study.best_value >= th.score(probs, targets, first, F2)


def test_a_stored_study_of_other_data_starts_again_instead_of_returning_its_old_best(tmp_path):
    """Re-tuning after the OOF changed: the study under the same name belonged to the old OOF, so its best trial
    (tuned on other probabilities) must not come back; the result is a fresh study's on the new data."""
    old_probs, old_targets = scaled_data(7, n=60, c=5)
    new_probs, new_targets = scaled_data(8, n=60, c=5)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    th.optuna_thresholds(old_probs, old_targets, F2, n_trials=6, storage=storage, study_name="f2")
    again, study = th.optuna_thresholds(new_probs, new_targets, F2, n_trials=6, storage=storage, study_name="f2")
    fresh, fresh_study = th.optuna_thresholds(
        new_probs, new_targets, F2, n_trials=6, storage=f"sqlite:///{tmp_path / 'fresh.db'}", study_name="f2"
    )
    assert len(study.trials) == 6 and study.best_value == fresh_study.best_value
    np.testing.assert_array_equal(again, fresh)
    assert study.best_value == pytest.approx(th.score(new_probs, new_targets, again, F2), abs=1e-12)
    # another shape of data is other data too: a new study, not an error
    fewer, _ = th.optuna_thresholds(
        new_probs[:, :4], new_targets[:, :4], F2, n_trials=3, storage=storage, study_name="f2"
    )
    assert fewer.shape == (4,)


def test_shrink_toward_global():
    shrunk = th.shrink_toward_global([0.2, 0.8, 0.5], 0.4, [0, 10, 1000], strength=10)
    np.testing.assert_allclose(shrunk, [0.4, (10 * 0.8 + 10 * 0.4) / 20, (1000 * 0.5 + 10 * 0.4) / 1010])
    np.testing.assert_array_equal(th.shrink_toward_global([0.2, 0.8], 0.4, [0, 5], strength=0), [0.2, 0.8])
    with pytest.raises(PipelineError):
        th.shrink_toward_global([0.2, 0.8], 0.4, [1], strength=1)


def test_nested_score_honest_is_lower_on_noise():
    rng = np.random.default_rng(8)
    probs = rng.random((200, 10)).astype(np.float32)
    targets = rng.random((200, 10)) < 0.2

    def tune(p, t):
        return th.exact_thresholds(p, t, F2)

    result = th.nested_score(probs, targets, F2, tune, n_splits=5, seed=0)
    assert result["honest"] < result["optimistic"]
    assert len(result["per_split"]) == 5
    # A tuner that learns nothing scores the same either way: the held-out parts cover every row.
    fixed = th.nested_score(probs, targets, F2, lambda p, t: np.full(10, 0.3), n_splits=4, seed=1)
    assert fixed["honest"] == pytest.approx(fixed["optimistic"], abs=1e-12)


@pytest.mark.parametrize("objective", [F2, OBJECTIVES[3]])
def test_best_label_count_rule_matches_brute_force(objective):
    probs, targets = scaled_data(9, n=200, c=15)
    probs = probs.astype(np.float16)  # ties among the top labels
    min_labels, max_labels, best = th.best_label_count_rule(probs, targets, objective, 0.3, max_min=2, max_max=4)
    assert best == pytest.approx(th.score(probs, targets, 0.3, objective, min_labels, max_labels), abs=1e-12)
    rules = [(lo, hi) for lo in range(3) for hi in [None, *range(max(lo, 1), 5)]]
    brute = max(th.score(probs, targets, 0.3, objective, lo, hi) for lo, hi in rules)
    assert best == pytest.approx(brute, abs=1e-12)
    assert best >= th.score(probs, targets, 0.3, objective)


def test_float16_input_gives_the_same_thresholds():
    probs, targets = scaled_data(10, n=100, c=6)
    half = probs.astype(np.float16)
    np.testing.assert_array_equal(
        th.exact_thresholds(half, targets, F2), th.exact_thresholds(half.astype(np.float32), targets, F2)
    )


def test_long_tail_scale_check():
    probs, targets = long_tail_data(11, n=4000)
    thresholds = th.exact_thresholds(probs, targets, F2)
    _, global_score = th.best_global_threshold(probs, targets, F2)
    assert th.score(probs, targets, thresholds, F2) > global_score


def test_bad_arguments_raise_pipeline_error():
    probs, targets = scaled_data(12, n=20, c=3)
    with pytest.raises(PipelineError, match="unknown threshold objective .samples_f2."):
        from_name("samples_f2")
    with pytest.raises(PipelineError, match="shape"):
        th.score(probs, targets[:, :2], 0.5, F2)
    with pytest.raises(PipelineError, match="logits"):
        th.score(probs * 5 - 1, targets, 0.5, F2)
    with pytest.raises(PipelineError, match="one threshold or one per class"):
        th.apply_thresholds(probs, [0.5, 0.5])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_score_curve_is_score_at_every_threshold_and_refuses_unsorted_ones(objective):
    probs, targets = scaled_data(5, n=150, c=12)
    grid = np.linspace(0.02, 0.98, 17)
    expected = [th.score(probs, targets, np.full(12, t), objective) for t in grid]
    np.testing.assert_allclose(th.score_curve(probs, targets, objective, grid), expected, atol=1e-12)
    with pytest.raises(PipelineError, match="ascending"):
        th.score_curve(probs, targets, objective, grid[::-1])


def test_label_groups_limit_labels_within_their_classes_before_the_overall_limits():
    probs = np.array([[0.9, 0.8, 0.7, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4, 0.45]])
    culture, tag = th.LabelGroup("c::", (0, 1, 2), 0, 1), th.LabelGroup("t::", (3, 4), 1, None)
    got = th.apply_thresholds(probs, 0.5, groups=(culture, tag))
    np.testing.assert_array_equal(got, [[1, 0, 0, 1, 0], [0, 0, 0, 0, 1]])  # top culture only; a tag added
    assert th.apply_thresholds(probs, 0.5, max_labels=1, groups=(culture, tag)).sum(axis=1).tolist() == [1, 1]
    np.testing.assert_array_equal(th.apply_thresholds(probs, 0.5), probs > 0.5)  # no groups: as before


def test_label_groups_are_found_by_prefix_and_an_unknown_prefix_is_one_line():
    from src.config import LabelGroupConfig
    from src.formats.base import HeadSpec

    heads = [
        HeadSpec("attributes", "multilabel", ("culture::a", "culture::b", "tag::x")),
        HeadSpec("c", "softmax", ("a",)),
    ]
    groups = th.label_groups([LabelGroupConfig(prefix="tag::", min_labels=1)], heads)
    assert groups == {"attributes": (th.LabelGroup("tag::", (2,), 1, None),)}
    with pytest.raises(PipelineError, match=r"config thresholds.groups\[0\].prefix: no class name starts with 'dim::'"):
        th.label_groups([LabelGroupConfig(prefix="dim::")], heads)


def test_relative_rule_is_the_per_image_minimum_of_threshold_and_ratio_of_the_top():
    probs = np.array([[0.9, 0.5, 0.3], [0.2, 0.15, 0.05]], dtype=np.float32)
    # Row 0 is confident: the threshold 0.4 decides. Row 1 is unsure: labels above 0.5 x 0.2 are on.
    rule = th.RelativeThresholds(np.full(3, 0.4), 0.5)
    assert th.apply_thresholds(probs, rule).tolist() == [[True, True, False], [True, True, False]]
    assert th.apply_thresholds(probs, 0.4, relative_ratio=0.5).tolist() == [[True, True, False], [True, True, False]]
    assert th.apply_thresholds(probs, 0.4).tolist() == [[True, True, False], [False, False, False]]
    with pytest.raises(PipelineError, match="relative ratio 1.5"):
        th.apply_thresholds(probs, 0.4, relative_ratio=1.5)


@pytest.mark.parametrize("objective", [F2, ColumnFbeta(beta=1.0)])
def test_relative_tuning_finds_the_brute_force_best_pair(objective):
    rng = np.random.default_rng(4)
    # Images whose probabilities are all scaled down by a random confidence: a fixed threshold misses them.
    targets = rng.random((300, 8)) < 0.25
    signal = np.where(targets, rng.beta(5, 2, targets.shape), rng.beta(2, 5, targets.shape))
    probs = (signal * rng.uniform(0.1, 1.0, (300, 1))).astype(np.float32)
    found = th.relative_thresholds(probs, targets, objective)
    assert found.ratio in th.RELATIVE_RATIOS and np.all(found.thresholds == found.thresholds[0])
    tuned = th.score(probs, targets, found, objective)
    candidates = th._global_candidates(probs, targets)
    brute = max(
        th.score(probs, targets, th.RelativeThresholds(np.full(8, t), r), objective)
        for r in th.RELATIVE_RATIOS
        for t in candidates[candidates < 1.0]
    )
    assert tuned == pytest.approx(brute, abs=1e-12)
    assert tuned > th.best_global_threshold(probs, targets, objective)[1]  # the rule helps on such images
    nested = th.nested_score(probs, targets, objective, lambda p, t: th.relative_thresholds(p, t, objective))
    assert nested["honest"] <= nested["optimistic"] + 1e-12
