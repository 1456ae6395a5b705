"""The benchmark's quick mode runs end to end and reports every section; its pure helpers do what they say.

No timing thresholds here: figures depend on the machine and its load (the bench reports ratios for that).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from src import bench
from src.stage import stage_experiment, stage_rows
from src.steps import bench as bench_step

# Smaller than the demo config, so the quick run stays well inside a test's time.
TINY = [
    "model.name=test_resnet",
    "data.image_size=32",
    "train.batch_size=16",
    "predict.batch_size=32",
    "train.threads=1",
]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_bench_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    lines: list[str] = []
    returned = bench_step.run(
        stage_experiment(stage_rows()["bench"], None, TINY),
        quick=True,
        out_json=out,
        models="test_resnet,test_efficientnet",
        log=lines.append,
    )
    result = json.loads(out.read_text())
    assert result["mode"] == "quick" and result["setup"]["models"] == ["test_resnet", "test_efficientnet"]
    assert returned["goals"] == result["goals"]

    models = result["data_path"]["models"]
    assert list(models) == ["test_resnet", "test_efficientnet"]
    for name, model in models.items():
        training, inference = model["training"], model["inference"]
        assert training["num_workers"] == inference["num_workers"] == 0  # "auto" on CPU
        for key in ("real_images_per_s", "resident_images_per_s", "loader_only_images_per_s"):
            assert _positive(training[key]), (name, key)
        for key in ("predict_images_per_s", "predict_tta_images_per_s", "forward_only_images_per_s"):
            assert _positive(inference[key]), (name, key)
        for ratio in (training["ratio"], inference["ratio"], inference["tta_ratio"]):
            assert all(_positive(ratio[key]) for key in ("median", "q1", "q3", "pairs"))
            assert ratio["q1"] <= ratio["median"] <= ratio["q3"]
            assert ratio["ci95"][0] <= ratio["median"] <= ratio["ci95"][1]

    allocator = result["allocator"]["models"]
    assert list(allocator) == ["test_resnet"]  # quick mode: the first model only
    run = allocator["test_resnet"]
    assert run["pairs"] == bench.QUICK.allocator_pairs and run["reused"] is True  # glibc here
    for key in ("train_default", "train_reuse", "predict_default", "predict_reuse"):
        assert _positive(run[f"{key}_images_per_s"]), key
    assert all(_positive(run[part]["median"]) for part in ("training", "inference"))
    assert run["faults_per_train_step"]["reuse"] <= run["faults_per_train_step"]["default"] * 1.1 + 10

    thresholds = result["thresholds"]
    assert (thresholds["rows"], thresholds["classes"]) == (bench.QUICK.oof_rows, bench.IMET_CLASSES)
    for method in ("global", "exact", "optuna"):
        assert all(_positive(thresholds[method][key]) for key in ("seconds", "f2", "f2_fresh_rows")), method
        assert thresholds[method]["f2"] <= 1
    # Coordinate ascent starts from the global threshold and never lowers the score it maximises.
    assert thresholds["exact"]["f2"] >= thresholds["global"]["f2"]

    folds = result["folds"]
    assert [run["rows"] for run in folds["runs"]] == list(bench.QUICK.folds_ladder)
    for run in folds["runs"]:
        assert all(_positive(run[key]) for key in ("seconds", "peak_rss_mb", "rss_before_mb", "matrix_mb"))
        assert run["peak_rss_mb"] >= run["rss_before_mb"] * 0.99
    assert _positive(folds["imet_seconds_extrapolated"]) and _positive(folds["scaling_exponent"])

    stages = result["memory"]["stages"]
    assert list(stages) == [name for name, _ in bench.STAGE_RUNS[: bench.QUICK.stages]]
    for name, run in stages.items():
        assert run["exit_code"] == 0 and _positive(run["peak_rss_mb"]) and _positive(run["seconds"]), name

    assert [type(goal["met"]) for goal in result["goals"]] == [bool] * (2 * len(models) + 2)
    assert sum("test_efficientnet inference" in goal["goal"] for goal in result["goals"]) == 1
    table = "\n".join(lines)
    for word in (
        "data path",
        "test_efficientnet",
        "C allocator",
        "thresholds",
        "folds",
        "memory",
        "goal:",
        "quick mode",
    ):
        assert word in table


def test_models_are_timm_names_separated_by_commas():
    import pytest

    from src.errors import PipelineError

    assert bench_step.model_names(None) is None
    assert bench_step.model_names("resnet10t, resnet18,") == ["resnet10t", "resnet18"]
    with pytest.raises(PipelineError, match="resnet1000 is not a timm model name"):
        bench_step.model_names("resnet18,resnet1000")


def test_imet_like_frequencies_match_the_stated_shape():
    rates = bench.imet_like_frequencies()
    assert rates.shape == (bench.IMET_CLASSES,)
    assert np.all(np.diff(rates) <= 0)
    assert math.isclose(rates[0] * bench.IMET_ROWS, bench.IMET_TOP_COUNT)
    assert math.isclose(rates[-1] * bench.IMET_ROWS, 1.0)
    assert math.isclose(rates.sum(), bench.IMET_LABELS_PER_IMAGE, rel_tol=1e-6)


def test_synthetic_oof_is_seeded_and_every_image_has_a_label():
    probs, targets = bench.synthetic_oof(500, 50, seed=3, rows_seed=0)
    again, _ = bench.synthetic_oof(500, 50, seed=3, rows_seed=0)
    fresh, fresh_targets = bench.synthetic_oof(500, 50, seed=3, rows_seed=1)
    assert probs.dtype == np.float32 and targets.dtype == bool and probs.shape == targets.shape == (500, 50)
    assert np.array_equal(probs, again) and not np.array_equal(probs, fresh)
    assert targets.any(axis=1).all() and fresh_targets.any(axis=1).all()
    assert np.all((probs >= 0) & (probs <= 1))
    # Present labels score higher than absent ones on average (the model has signal).
    assert probs[targets].mean() > probs[~targets].mean()


def test_default_json_lives_under_the_ignored_oof_folder(tmp_path):
    assert bench_step.default_json(tmp_path, quick=True) == tmp_path / "oof" / "_bench" / "bench-quick.json"
    assert bench_step.default_json(tmp_path, quick=False) == tmp_path / "oof" / "_bench" / "bench.json"


def test_interleaved_rotates_order_and_ratio_summary_pairs_repeats():
    calls: list[str] = []
    sides = {"a": lambda: calls.append("a") or 10, "b": lambda: calls.append("b") or 10}
    rates = bench.interleaved(sides, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(values) == 4 and all(v > 0 for v in values) for values in rates.values())
    summary = bench.ratio_summary({"x": [1.0, 2.0, 3.0], "y": [2.0, 2.0, 2.0]}, "x", "y")
    assert summary == {"median": 1.0, "q1": 0.75, "q3": 1.25, "ci95": [0.5, 1.5], "pairs": 3}


def test_interleaved_runs_on_for_min_seconds_but_not_past_max_repeats():
    counts = {"a": 0}

    def side() -> int:
        counts["a"] += 1
        time.sleep(0.01)
        return 1

    assert len(bench.interleaved({"a": side}, 2, min_seconds=0.15)["a"]) >= 10
    assert len(bench.interleaved({"a": side}, 2, min_seconds=60.0, max_repeats=5)["a"]) == 5
    assert len(bench.interleaved({"a": side}, 3)["a"]) == 3


def test_median_interval_is_the_binomial_order_statistics():
    # Tables of the distribution-free interval: n = 10 -> ranks 2 and 9, n = 100 -> ranks 40 and 61 (1-based).
    assert bench.median_interval(list(range(10))) == (1.0, 8.0)
    assert bench.median_interval(list(range(100))[::-1]) == (39.0, 60.0)
    assert bench.median_interval([3.0, 1.0]) == (1.0, 3.0)  # too few for 95%: the whole range
    assert bench.median_interval(list(range(3000)))[0] > 1400  # no float overflow past n = 1023
    rng = np.random.default_rng(0)
    covered = [
        low <= 0.0 <= high
        for low, high in (bench.median_interval(rng.standard_normal(41).tolist()) for _ in range(1000))
    ]
    assert 0.93 <= np.mean(covered) <= 0.99


def test_goal_line_says_when_the_goal_is_inside_the_interval():
    goal = {
        "goal": "m training data-path ratio >= 0.95",
        "measured": 0.947,
        "met": False,
        "target": 0.95,
        "interval": [0.93, 0.96],
    }
    assert bench.goal_line(goal).endswith("NOT met (measured 0.947, 95% interval 0.930-0.960: the goal is inside it)")
    assert bench.goal_line({**goal, "measured": 0.97, "met": True, "interval": [0.96, 0.98]}).endswith(
        "met (measured 0.970, 95% interval 0.960-0.980)"
    )
    assert bench.goal_line({"goal": "exact", "measured": 1.5, "met": True}) == "goal: exact: met (measured 1.500)"


def test_cache_comparison_reports_bytes_and_read_speed_of_raw_and_packed_side_by_side(tmp_path):
    from PIL import Image

    paths = []
    for i in range(12):
        y, x = np.mgrid[0:40, 0 : 30 + i]
        image = np.stack([x * 6, y * 5, (x + y + i) * 3], -1).astype(np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    section = bench.bench_cache(paths, 32, tmp_path / "work", repeats=2, codecs=(("png", 0), ("jpeg", 90)))
    sets = section["sets"]
    assert list(sets) == ["raw", "png", "jpeg90"] and sets["raw"]["bytes_ratio"] == 1.0
    assert sets["raw"]["bytes"] >= 12 * 32 * 32 * 3 and sets["jpeg90"]["bytes"] < sets["raw"]["bytes"]
    for entry in sets.values():
        assert _positive(entry["images_per_s"]) and entry["speed_ratio"]["pairs"] == 2
    lines = bench.cache_lines(section)
    assert len(lines) == 4 and "jpeg90" in lines[-1] and "/ raw" in lines[0]
