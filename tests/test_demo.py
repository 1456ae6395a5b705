"""Demo competitions: answers kept apart, deterministic, atomic, for every format with a demo (each format's own
layout is tested in its tests/test_format_<name>.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from src import demo, demo_drawing
from src.demo import build_demo, list_formats
from src.errors import PipelineError
from src.formats import format_class, format_names

SMALL = {"n_train": 30, "n_test": 12}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, demo.DemoPaths]:
    root = tmp_path_factory.mktemp("demo")
    return {name: build_demo(name, root / f"demo-{name}", seed=3, **SMALL) for name in list_formats()}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_list_formats_comes_from_the_registry():
    assert list_formats() and set(list_formats()) <= set(format_names())
    assert all(format_class(name).demo_solution_names for name in list_formats())


@pytest.mark.parametrize("format_name", list_formats())
def test_answers_live_outside_the_competition(built, format_name):
    paths = built[format_name]
    assert paths.answers_root == paths.root.with_name(paths.root.name + "-answers")
    assert paths.solution_files and all(p.is_file() and p.parent == paths.answers_root for p in paths.solution_files)
    assert paths.root not in paths.answers_root.parents
    inside = {p.name for p in paths.root.rglob("*")}
    assert not inside & {p.name for p in paths.solution_files}


@pytest.mark.parametrize("format_name", list_formats())
def test_same_seed_same_bytes(tmp_path, format_name):
    small = {"n_train": 12, "n_test": 6}
    first = build_demo(format_name, tmp_path / "a" / "comp", seed=5, **small)
    second = build_demo(format_name, tmp_path / "b" / "comp", seed=5, **small)
    other = build_demo(format_name, tmp_path / "c" / "comp", seed=6, **small)
    assert _tree_bytes(first.root) == _tree_bytes(second.root)
    assert _tree_bytes(first.answers_root) == _tree_bytes(second.answers_root)
    assert _tree_bytes(first.root) != _tree_bytes(other.root)


def test_test_pool_is_unseen_handwriting():
    pools = demo_drawing.digit_pools(seed=0)
    for train, test in zip(pools.train, pools.test):
        assert len(test) > 0 and len(train) > len(test)
        seen = {row.tobytes() for row in train}
        assert not any(row.tobytes() in seen for row in test)
    assert sum(len(a) + len(b) for a, b in zip(pools.train, pools.test)) == 1797


def test_rebuild_is_a_noop_unless_overwrite(tmp_path):
    dest = tmp_path / "demo-imet"
    paths = build_demo("imet", dest, n_train=4, n_test=2)
    marker = paths.root / "train.csv"
    inode = marker.stat().st_ino
    assert build_demo("imet", dest, n_train=4, n_test=2) == paths
    assert marker.stat().st_ino == inode

    with pytest.raises(PipelineError, match="overwrite=True"):
        build_demo("imet", dest, seed=1, n_train=4, n_test=2)
    build_demo("imet", dest, seed=1, n_train=4, n_test=2, overwrite=True)
    assert marker.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-imet", "demo-imet-answers"]


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    dest = tmp_path / "real-competition"
    dest.mkdir()
    (dest / "train.csv").write_text("id,attribute_ids\n")
    with pytest.raises(PipelineError, match="overwrite=True"):
        build_demo("imet", dest, n_train=4, n_test=2)
    assert (dest / "train.csv").read_text() == "id,attribute_ids\n"


def test_crash_leaves_no_half_folder(tmp_path, monkeypatch):
    def write_then_fail(comp_dir, answers_dir, **_):
        (comp_dir / "train.csv").write_text("id,attribute_ids\n")
        raise RuntimeError("disk full")

    monkeypatch.setattr(format_class("imet"), "write_demo", staticmethod(write_then_fail))
    with pytest.raises(RuntimeError):
        build_demo("imet", tmp_path / "demo-imet", n_train=4, n_test=2)
    assert list(tmp_path.iterdir()) == []


def test_custom_answers_root_and_bad_arguments(tmp_path):
    paths = build_demo("folder", tmp_path / "comp", answers_root=tmp_path / "hidden" / "answers", n_train=4, n_test=4)
    assert paths.solution_files == (tmp_path / "hidden" / "answers" / "solution.csv",)
    with pytest.raises(PipelineError, match="inside"):
        build_demo("folder", tmp_path / "comp2", answers_root=tmp_path / "comp2" / "answers")
    with pytest.raises(PipelineError, match="unknown demo format"):
        build_demo("mnist", tmp_path / "x")
    for bad in ({"n_train": 0}, {"n_test": -1}, {"seed": -1}, {"n_train": 2.5}, {"n_test": True}):
        with pytest.raises(PipelineError):
            build_demo("imet", tmp_path / "y", **bad)


def test_demo_summary_shows_oof_at_half_tuned_honest_and_test_scores(tmp_path):
    import json
    from types import SimpleNamespace

    from src.artifacts import Layout, TunedThresholds
    from src.steps.demo import _summary

    layout = Layout(tmp_path, "demo")
    layout.oof_dir.mkdir(parents=True)
    layout.submission_dir.mkdir(parents=True)
    layout.oof_scores_path.write_text(
        json.dumps([{"rows": "fold 0", "at 0.5": 0.7}, {"rows": "overall", "at 0.5": 0.71}])
    )
    layout.threshold_scores_path.write_text(json.dumps([{"rows": "overall", "at 0.5": 0.71, "tuned (exact)": 0.86}]))
    layout.test_scores_path.write_text(json.dumps({"f2": 0.84}))
    saved = TunedThresholds.model_validate(
        {
            "method": "exact",
            "heads": {},
            "honest": {
                "attributes": [
                    {"method": "global", "optimistic": 0.80, "honest": 0.79},
                    {"method": "exact", "optimistic": 0.86, "honest": 0.83},
                ]
            },
        }
    )
    exp = SimpleNamespace(
        fmt=SimpleNamespace(main_metric="f2"),
        oof_scores_path=layout.oof_scores_path,
        threshold_scores_path=layout.threshold_scores_path,
        test_scores_path=layout.test_scores_path,
        read_thresholds=lambda required=False: saved,
        config=SimpleNamespace(thresholds=SimpleNamespace(method="exact")),
    )
    summary = _summary(exp, [tmp_path / "submission.csv"], 90.0)
    assert summary == {
        "OOF f2 at 0.5": "0.7100",
        "OOF f2 tuned (exact), optimistic": "0.8600",
        "honest (nested) attributes score, exact": "0.8300",
        "demo test f2": "0.8400",
        "submission": str(tmp_path / "submission.csv"),
        "wall time": "1.5 min",
    }
