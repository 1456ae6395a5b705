"""Demo competitions: real layouts, readable labels, answers kept apart, deterministic, atomic."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from src import demo, demo_drawing
from src.demo import build_demo, list_formats
from src.errors import PipelineError

SMALL = {"n_train": 30, "n_test": 12}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, demo.DemoPaths]:
    root = tmp_path_factory.mktemp("demo")
    return {name: build_demo(name, root / f"demo-{name}", seed=3, **SMALL) for name in list_formats()}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _open_all(paths) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            image.load()
            images.append(image)
    return images


def test_list_formats():
    assert list_formats() == ("celeba", "deepfashion", "folder", "imet")


def test_imet_layout(built):
    paths = built["imet"]
    root = paths.root
    train = pd.read_csv(root / "train.csv", dtype=str)
    labels = pd.read_csv(root / "labels.csv")
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    solution = pd.read_csv(paths.answers_root / "solution.csv", dtype=str)

    assert list(train.columns) == ["id", "attribute_ids"] and len(train) == SMALL["n_train"]
    assert list(labels.columns) == ["attribute_id", "attribute_name"]
    assert labels.attribute_id.tolist() == list(range(len(labels)))
    assert labels.attribute_name.str.match(r"^(digit|tag)::").all()
    assert all(re.fullmatch(r"[0-9a-f]{16}", image_id) for image_id in train.id)
    for ids in pd.concat([train.attribute_ids, solution.attribute_ids]):
        values = [int(v) for v in ids.split()]
        assert values == sorted(set(values)) and values and max(values) < len(labels)
        assert any(v < 10 for v in values)  # every mosaic holds at least one digit

    assert list(sample.columns) == ["id", "attribute_ids"] and (sample.attribute_ids == "0 1 2").all()
    assert sorted(sample.id) == sorted(solution.id) == sorted(p.stem for p in (root / "test").glob("*.png"))
    assert sorted(train.id) == sorted(p.stem for p in (root / "train").glob("*.png"))
    assert not set(train.id) & set(solution.id)
    images = _open_all((root / "train").glob("*.png"))
    assert {(image.size, image.mode, image.format) for image in images} == {((64, 64), "RGB", "PNG")}


def test_imet_class_frequencies_have_a_tail(tmp_path):
    paths = build_demo("imet", tmp_path / "imet", n_train=200, n_test=1)
    train = pd.read_csv(paths.root / "train.csv", dtype=str)
    counts = np.bincount([int(v) for ids in train.attribute_ids for v in ids.split()], minlength=10)[:10]
    assert counts.min() > 0 and counts.max() >= 3 * counts.min()
    assert counts[0] > counts[9]


def test_deepfashion_layout(built):
    paths = built["deepfashion"]
    root = paths.root
    train = pd.read_csv(root / "train.csv", dtype={"attribute_label": str}, keep_default_na=False)
    test = pd.read_csv(root / "test.csv")
    category = pd.read_csv(paths.answers_root / "category.csv")
    attribute = pd.read_csv(paths.answers_root / "attribute.csv", dtype={"attribute_label": str}, keep_default_na=False)

    assert list(train.columns) == ["file_path", "category_label", "attribute_label"]
    assert list(test.columns) == ["file_path"] and len(test) == SMALL["n_test"]
    assert train.file_path.str.fullmatch(r"train/\d{6}\.jpg").all()
    assert test.file_path.str.fullmatch(r"test/\d{6}\.jpg").all()
    assert train.category_label.between(0, 9).all() and category.category_label.between(0, 9).all()
    for labels in pd.concat([train.attribute_label, attribute.attribute_label]):
        values = [int(v) for v in labels.split()]
        assert values == sorted(set(values)) and all(0 <= v < 15 for v in values)
    assert len(demo.DEEPFASHION_ATTRIBUTES) == 15

    assert list(category.columns) == ["file_path", "category_label"]
    assert list(attribute.columns) == ["file_path", "attribute_label"]
    assert category.file_path.tolist() == attribute.file_path.tolist() == test.file_path.tolist()
    images = _open_all(root / p for p in pd.concat([train.file_path, test.file_path]))
    assert {(image.format, image.mode) for image in images} == {("JPEG", "RGB")}


def test_celeba_layout_hides_test_labels(built):
    paths = built["celeba"]
    root = paths.root
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    assert len(names) == 40 == len(set(names)) and names == list(demo.CELEBA_ATTRIBUTES)
    assert int(lines[0]) == len(lines) - 2 == SMALL["n_train"]
    assert re.search(r"\.jpg +-?1(  1| -1)", lines[2])  # values right-aligned, "  1" after a value

    attrs = pd.read_csv(root / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    assert attrs.shape == (SMALL["n_train"], 40) and set(np.unique(attrs.to_numpy())) <= {-1, 1}
    partition = pd.read_csv(root / "list_eval_partition.txt", sep=" ", header=None, names=["image", "partition"])
    images = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    assert partition.image.tolist() == images and images[0] == "000001.jpg"
    assert set(partition.partition) == {0, 1, 2}
    test_images = partition.image[partition.partition == 2].tolist()
    assert len(test_images) == SMALL["n_test"]
    assert not set(test_images) & set(attrs.index)
    assert set(attrs.index) == set(partition.image[partition.partition < 2])

    rows = [line.split(" ") for line in (paths.answers_root / "predictions.txt").read_text().splitlines()]
    assert [row[0] for row in rows] == test_images
    assert all(len(row) == 41 and set(row[1:]) <= {"1", "-1"} for row in rows)
    found = _open_all(root / "img_align_celeba" / name for name in images)
    assert {image.format for image in found} == {"JPEG"}


def test_folder_layout_mixes_sizes_and_modes(built):
    paths = built["folder"]
    root = paths.root
    class_dirs = sorted(p.name for p in (root / "train").iterdir())
    assert class_dirs == [str(d) for d in range(10)]
    train_files = sorted((root / "train").glob("*/*"))
    test_files = sorted((root / "test").iterdir())
    assert len(train_files) == SMALL["n_train"] and len(test_files) == SMALL["n_test"]
    assert all(p.is_file() for p in test_files)

    for files in (train_files, test_files):
        images = _open_all(files)
        assert {image.mode for image in images} == set(demo.FOLDER_MODES)
        for path, image in zip(files, images):
            assert path.suffix in {".png", ".jpg"}
            assert (image.format == "JPEG") == (path.suffix == ".jpg")
            if image.mode == "CMYK":
                assert path.suffix == ".jpg"
            if image.mode == "RGBA":
                assert path.suffix == ".png"
            assert all(24 <= side <= 80 for side in image.size)
        assert len({image.size for image in images}) > 3
    assert {p.suffix for p in train_files} == {".png", ".jpg"}

    solution = pd.read_csv(paths.answers_root / "solution.csv")
    assert list(solution.columns) == ["image", "label", "probability"]
    assert sorted(solution.image) == [p.name for p in test_files]
    assert solution.label.between(0, 9).all() and (solution.probability == 1.0).all()


@pytest.mark.parametrize("format_name", ["imet", "deepfashion", "celeba", "folder"])
def test_answers_live_outside_the_competition(built, format_name):
    paths = built[format_name]
    assert paths.answers_root == paths.root.with_name(paths.root.name + "-answers")
    assert paths.solution_files and all(p.is_file() and p.parent == paths.answers_root for p in paths.solution_files)
    assert paths.root not in paths.answers_root.parents
    inside = {p.name for p in paths.root.rglob("*")}
    assert not inside & {p.name for p in paths.solution_files}


@pytest.mark.parametrize("format_name", ["imet", "deepfashion", "celeba", "folder"])
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

    monkeypatch.setitem(demo._FORMATS, "imet", demo._DemoFormat(write_then_fail, ("solution.csv",)))
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
    layout.oof_scores_path.write_text(json.dumps([{"rows": "fold 0", "at 0.5": 0.7}, {"rows": "overall", "at 0.5": 0.71}]))
    layout.threshold_scores_path.write_text(json.dumps([{"rows": "overall", "at 0.5": 0.71, "tuned (exact)": 0.86}]))
    layout.test_scores_path.write_text(json.dumps({"f2": 0.84}))
    saved = TunedThresholds.model_validate({"method": "exact", "heads": {}, "honest": {"attributes": [
        {"method": "global", "optimistic": 0.80, "honest": 0.79}, {"method": "exact", "optimistic": 0.86, "honest": 0.83}]}})
    exp = SimpleNamespace(fmt=SimpleNamespace(main_metric="f2"), oof_scores_path=layout.oof_scores_path,
                          threshold_scores_path=layout.threshold_scores_path, test_scores_path=layout.test_scores_path,
                          read_thresholds=lambda required=False: saved,
                          config=SimpleNamespace(thresholds=SimpleNamespace(method="exact")))
    summary = _summary(exp, [tmp_path / "submission.csv"], 90.0)
    assert summary == {"OOF f2 at 0.5": "0.7100", "OOF f2 tuned (exact), optimistic": "0.8600",
                       "honest (nested) attributes score, exact": "0.8300", "demo test f2": "0.8400",
                       "submission": str(tmp_path / "submission.csv"), "wall time": "1.5 min"}
