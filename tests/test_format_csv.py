"""train.csv + sample_submission.csv format: class names as written, extensions found on disk, strict validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_refused_submission, open_images, small_demo
from PIL import Image

from src.errors import PipelineError
from src.formats import create_format
from src.formats.csv import DEMO_CLASSES

TRAIN = {"a1": "cat", "b2": "dog", "c3.png": "10", "d4": "2", "e5": "cat"}
TEST = ("t2", "t1.jpeg", "t3")


def save_image(path: Path, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (30, 120, 200)).save(path)


def make_competition(root: Path, train: dict | None = None, test=TEST, options=None):
    """train/ images with mixed extensions (one id already names its file), test/ likewise, both CSVs."""
    train = TRAIN if train is None else train
    suffixes = (".jpg", ".png", ".webp", ".JPEG")
    for index, image_id in enumerate(train):
        save_image(root / "train" / (image_id if "." in image_id else image_id + suffixes[index % len(suffixes)]))
    for image_id in test:
        save_image(root / "test" / (image_id if "." in image_id else image_id + ".png"))
    lines = ["id,label"] + [f"{image_id},{label}" for image_id, label in train.items()]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "sample_submission.csv").write_text("\n".join(["id,label"] + [f"{i},cat" for i in test]) + "\n")
    return create_format("csv", root, options)


def test_classes_in_natural_order_and_paths_by_extension(tmp_path):
    fmt = make_competition(tmp_path / "c")
    assert fmt.heads()[0].class_names == ("2", "10", "cat", "dog")
    assert fmt.heads()[0].kind == "softmax" and fmt.main_metric == "accuracy"
    table = fmt.read_train()
    assert table.ids == list(TRAIN)
    assert [p.name for p in table.paths] == ["a1.jpg", "b2.png", "c3.png", "d4.JPEG", "e5.jpg"]
    assert table.targets["label"].tolist() == [2, 3, 1, 0, 2]
    test = fmt.read_test()
    assert test.ids == list(TEST) and [p.name for p in test.paths] == ["t2.png", "t1.jpeg", "t3.png"]


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda root: (root / "train.csv").write_text("id,class\na1,cat\n"),
            "train.csv line 1: missing column(s) label",
        ),
        (lambda root: (root / "train.csv").write_text("id,label\na1,cat\nb2,\n"), "train.csv line 3: label is empty"),
        (lambda root: (root / "train.csv").write_text("id,label\n,cat\n"), "train.csv line 2: id is empty"),
        (lambda root: (root / "train.csv").write_text("id,label\na1,cat\na1,dog\n"), "line 3: duplicate id 'a1'"),
        (
            lambda root: (root / "train.csv").write_text("id,label\na1,cat\nzz,dog\n"),
            "train.csv line 3: no image for id 'zz'",
        ),
        (lambda root: (root / "train.csv").write_text("id,label\n../x,cat\n"), "escapes the competition folder"),
        (lambda root: save_image(root / "train" / "a1.png"), "id 'a1' matches a1.jpg and a1.png"),
        (lambda root: (root / "test" / "t3.png").unlink(), "sample_submission.csv line 4: no image for id 't3'"),
        (lambda root: (root / "sample_submission.csv").write_text("id,label\nt2,cat\nt2,cat\n"), "duplicate id 't2'"),
        (lambda root: (root / "sample_submission.csv").write_text("image,label\nt2,cat\n"), "missing column(s) id"),
    ],
)
def test_bad_input_is_one_line_naming_file_line_and_fix(tmp_path, break_it, message):
    root = tmp_path / "c"
    make_competition(root)
    break_it(root)
    fmt = create_format("csv", root)
    with pytest.raises(PipelineError) as error:
        fmt.read_train()
        fmt.read_test()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_files_and_folders_are_named(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    with pytest.raises(PipelineError, match="train.csv: file not found"):
        create_format("csv", root).heads()
    make_competition(tmp_path / "d")
    for folder in ("train", "test"):
        for path in (tmp_path / "d" / folder).iterdir():
            path.unlink()
        (tmp_path / "d" / folder).rmdir()
    fmt = create_format("csv", tmp_path / "d")
    with pytest.raises(PipelineError, match="train: folder not found"):
        fmt.read_train()
    with pytest.raises(PipelineError, match="test: folder not found"):
        fmt.read_test()


def test_options_rename_columns_and_files(tmp_path):
    root = tmp_path / "c"
    make_competition(root)
    for name in ("train.csv", "sample_submission.csv"):
        text = (root / name).read_text().replace("id,label", "image_id,class", 1)
        (root / name).write_text(text)
    options = {"id_column": "image_id", "label_column": "class", "submission_file": "preds.csv"}
    fmt = create_format("csv", root, options)
    assert len(fmt.read_train()) == len(TRAIN) and fmt.submission_names() == ["preds.csv"]
    with pytest.raises(PipelineError, match="config format_options: .*two different non-empty names"):
        create_format("csv", root, {"id_column": "label"})


def test_submission_round_trip_writes_names_in_sample_order_and_header(tmp_path):
    root = tmp_path / "c"
    fmt = make_competition(root)
    (root / "sample_submission.csv").write_text("label,id\ncat,t2\ncat,t1.jpeg\ncat,t3\n")  # the header's order wins
    fmt = create_format("csv", root)
    ids = fmt.read_test().ids
    labels = np.array([1, 3, 0])
    files = fmt.write_submission(tmp_path / "sub", ids, {"label": labels}, {"label": np.eye(4)[labels]})
    assert [f.name for f in files] == ["submission.csv"]
    assert files[0].read_text() == "label,id\n10,t2\ndog,t1.jpeg\n2,t3\n"
    read_ids, read_labels = fmt.read_submission(files)
    assert read_ids == ids and read_labels["label"].tolist() == labels.tolist()
    assert fmt.score_submission(files, files)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\nt2,cat\nt1.jpeg,cat\n", "2 rows, sample_submission.csv has 3"),
        ("id,label\nt1.jpeg,cat\nt2,cat\nt3,cat\n", "line 2: id 't1.jpeg' where sample_submission.csv has 't2'"),
        ("id,label\nt2,cat\nt1.jpeg,bird\nt3,cat\n", "line 3: label 'bird' is not a class of train.csv"),
        ("id,label,probability\nt2,cat,1\nt1.jpeg,cat,1\nt3,cat,1\n", "header id,label,probability; write id,label"),
        ("id\nt2\n", "missing column(s) label"),
    ],
)
def test_submission_validation_refuses(tmp_path, text, message):
    fmt = make_competition(tmp_path / "c")
    assert_refused_submission(fmt, tmp_path / "submission.csv", text, message)


# --- the demo --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory, "csv")


def test_demo_layout(demo):
    root = demo.root
    assert sorted(p.name for p in root.iterdir()) == ["sample_submission.csv", "test", "train", "train.csv"]
    train = pd.read_csv(root / "train.csv", dtype=str)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    solution = pd.read_csv(demo.answers_root / "solution.csv", dtype=str)
    assert list(train.columns) == list(sample.columns) == list(solution.columns) == ["id", "label"]
    assert len(train) == 30 and set(train.label) == set(DEMO_CLASSES)  # every class once there are 10 images
    assert sample.id.tolist() == sorted(sample.id) == solution.id.tolist() and len(sample) == 12
    assert sorted(p.stem for p in (root / "train").iterdir()) == sorted(train.id)
    assert sorted(p.stem for p in (root / "test").iterdir()) == sorted(sample.id)
    assert {p.suffix for p in (root / "train").iterdir()} == {".png", ".jpg"}
    assert len({image.mode for image in open_images((root / "train").iterdir())}) == 4

    fmt = create_format("csv", root)
    assert fmt.heads()[0].class_names == tuple(sorted(DEMO_CLASSES))
    assert len(fmt.read_train()) == 30 and fmt.read_test().ids == sample.id.tolist()
    ids, labels = fmt.read_submission(list(demo.solution_files))
    assert [fmt.class_names[i] for i in labels["label"]] == solution.label.tolist()


def test_pinned_classes_predict_without_train_csv_and_a_label_outside_them_is_one_line(tmp_path):
    """The course package pins the classes and ships sample_submission.csv with the test images: a copy without
    train.csv names the same heads and writes the same file; a training label outside pinned classes is refused."""
    import shutil

    fmt = make_competition(tmp_path / "c")
    pinned = fmt.standalone_options()
    assert pinned == {"classes": ["2", "10", "cat", "dog"]}
    assert fmt.test_input_files()[0] == tmp_path / "c" / "sample_submission.csv"
    labels = {"label": np.array([3, 0, 2])}
    expected = fmt.write_submission(tmp_path / "sub", fmt.read_test().ids, labels, {})[0].read_bytes()
    copy = tmp_path / "copy"
    for file in fmt.test_input_files():
        (copy / file.relative_to(tmp_path / "c")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, copy / file.relative_to(tmp_path / "c"))
    alone = create_format("csv", copy, pinned)
    assert alone.heads() == fmt.heads()
    assert alone.write_submission(tmp_path / "sub2", alone.read_test().ids, labels, {})[0].read_bytes() == expected
    narrow = create_format("csv", tmp_path / "c", {"classes": ["cat", "dog"]})
    with pytest.raises(PipelineError) as error:
        narrow.read_train()
    assert "train.csv line 4: label '10' is not in format_options.classes" in str(error.value)
    assert "\n" not in str(error.value)
