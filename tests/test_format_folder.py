"""Folder-per-class format: natural class order, mixed image modes, configurable submission CSV, strict validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_refused_submission, open_images, small_demo
from PIL import Image
from sklearn import metrics as skm

from src import report
from src.data.images import load_rgb
from src.errors import PipelineError
from src.formats import create_format
from src.formats.folder import DEMO_MODES, natural_key

MODES = {"RGB": ".png", "L": ".png", "RGBA": ".png", "CMYK": ".jpg", "P": ".png"}


def save_image(path: Path, mode: str, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (180, 40, 90))
    image = image.convert("P") if mode == "P" else image.convert(mode)
    image.save(path)


def make_competition(
    root: Path, classes=("0", "1", "2", "10"), per_class=2, test=("b.png", "a.jpg", "c.png"), options=None
):
    """Classes get images in rotating modes and sizes; test images are a mix as well."""
    modes = list(MODES)
    for index, class_name in enumerate(classes):
        for number in range(per_class):
            mode = modes[(index + number) % len(modes)]
            save_image(root / "train" / class_name / f"img{number}{MODES[mode]}", mode, (10 + index, 14 + number))
    for index, name in enumerate(test):
        save_image(root / "test" / name, "CMYK" if name.endswith(".jpg") else modes[index % 3], (20, 9 + index))
    return create_format("folder", root, options)


def test_natural_class_order_and_ids(tmp_path):
    fmt = make_competition(tmp_path / "c")
    assert fmt.heads()[0].class_names == ("0", "1", "2", "10")
    table = fmt.read_train()
    assert table.ids[:3] == ["0/img0.png", "0/img1.png", "1/img0.png"]
    assert table.targets["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert fmt.read_test().ids == ["a.jpg", "b.png", "c.png"]
    assert sorted([str(n) for n in range(59)], key=natural_key) == [str(n) for n in range(59)]
    assert sorted(["class10", "Class2", "class1"], key=natural_key) == ["class1", "Class2", "class10"]


def test_every_mode_and_size_decodes_to_rgb(tmp_path):
    fmt = make_competition(tmp_path / "c", classes=("a", "b", "c", "d", "e"), per_class=1)
    table = fmt.read_train()
    found = set()
    for path in table.paths + fmt.read_test().paths:
        with Image.open(path) as image:
            found.add(image.mode)
        array = load_rgb(path)
        assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    assert found == set(MODES)


def test_hidden_and_os_junk_files_are_skipped(tmp_path):
    root = tmp_path / "c"
    fmt = make_competition(root)
    (root / "train" / ".DS_Store").write_text("x")
    (root / "train" / "1" / "Thumbs.db").write_text("x")
    (root / "test" / "._a.jpg").write_text("x")
    assert len(fmt.read_train()) == 8 and len(fmt.read_test()) == 3


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda root: save_image(root / "train" / "stray.png", "RGB", (4, 4)), "stray.png: a file directly in"),
        (lambda root: (root / "train" / "1" / "labels.txt").write_text("x"), "labels.txt: not an image file"),
        (lambda root: save_image(root / "train" / "1" / "deeper" / "x.png", "RGB", (4, 4)), "deeper: a folder inside"),
        (lambda root: (root / "train" / "11").mkdir(), "11: empty class folder"),
        (lambda root: save_image(root / "test" / "sub" / "x.png", "RGB", (4, 4)), "sub: a folder inside"),
    ],
)
def test_bad_layouts_stop_with_the_path_and_the_fix(tmp_path, break_it, message):
    root = tmp_path / "c"
    fmt = make_competition(root)
    break_it(root)
    with pytest.raises(PipelineError) as error:
        fmt.read_train()
        fmt.read_test()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_folders_are_named(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(PipelineError, match="train: folder not found"):
        create_format("folder", tmp_path / "c").heads()
    fmt = make_competition(tmp_path / "d", test=())
    with pytest.raises(PipelineError, match="test: folder not found"):
        fmt.read_test()
    (tmp_path / "d" / "test").mkdir()
    with pytest.raises(PipelineError, match="test: no test images"):
        fmt.read_test()


def test_classes_option_fixes_the_order_and_refuses_unknown_folders(tmp_path):
    fmt = make_competition(tmp_path / "c", options={"classes": ["10", "2", "1", "0", "99"]})
    assert fmt.heads()[0].class_names == ("10", "2", "1", "0", "99")
    assert fmt.read_train().targets["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    fmt = make_competition(tmp_path / "d", options={"classes": ["0", "1", "2"]})
    with pytest.raises(PipelineError, match="class folder '10' is not in format_options.classes"):
        fmt.heads()


def test_stems_as_ids_refuse_a_clash(tmp_path):
    fmt = make_competition(tmp_path / "c", test=("a.png", "a.jpg"), options={"id_with_extension": False})
    with pytest.raises(PipelineError, match="id 'a' also belongs to a.jpg"):
        fmt.read_test()


def test_option_errors(tmp_path):
    make_competition(tmp_path / "c")
    with pytest.raises(PipelineError, match="config format_options: .*three different non-empty names"):
        create_format("folder", tmp_path / "c", {"id_column": "label"})


def _labels_and_probs(n: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=n).astype(np.float32)
    return probs.argmax(axis=1), probs


def test_writer_round_trip_with_configured_columns(tmp_path):
    options = {
        "id_column": "file",
        "label_column": "class",
        "probability_column": "confidence",
        "submission_file": "preds.csv",
    }
    fmt = make_competition(tmp_path / "c", options=options)
    ids = fmt.read_test().ids
    labels, probs = _labels_and_probs(len(ids), 4)
    files = fmt.write_submission(tmp_path / "sub", ids, {"label": labels}, {"label": probs})
    assert [f.name for f in files] == ["preds.csv"] == fmt.submission_names()
    lines = files[0].read_text().splitlines()
    assert lines[0] == "file,class,confidence"
    names = ["0", "1", "2", "10"]
    for line, image_id, label, row in zip(lines[1:], ids, labels, probs):
        assert line == f"{image_id},{names[label]},{row[label]:.6f}"
    read_ids, read_labels = fmt.read_submission(files)
    assert read_ids == ids and read_labels["label"].tolist() == labels.tolist()
    np.testing.assert_allclose(fmt.read_probabilities(files[0]), probs[np.arange(len(ids)), labels], atol=1e-6)


@pytest.mark.parametrize(
    "text, message",
    [
        ("image,label,probability\na.jpg,1,0.5\nb.png,1,0.5\n", "2 rows for 3 test images"),
        (
            "image,label,probability\nb.png,1,0.5\na.jpg,1,0.5\nc.png,1,0.5\n",
            "line 2: image 'b.png' where 'a.jpg' is expected",
        ),
        ("image,label,probability\na.jpg,7,0.5\nb.png,1,0.5\nc.png,1,0.5\n", "line 2: label '7' is not a class"),
        (
            "image,label,probability\na.jpg,1,1.5\nb.png,1,0.5\nc.png,1,0.5\n",
            "line 2: probability '1.5' is not a number in [0, 1]",
        ),
        (
            "image,label,probability\na.jpg,1,high\nb.png,1,0.5\nc.png,1,0.5\n",
            "line 2: probability 'high' is not a number",
        ),
        ("image,label\na.jpg,1\nb.png,1\nc.png,1\n", "line 1: missing column(s) probability"),
        (
            "image,label,probability,extra\na.jpg,1,0.5,x\nb.png,1,0.5,x\nc.png,1,0.5,x\n",
            "line 1: unexpected column 'extra'",
        ),
        ("image,label,probability\na.jpg,1\nb.png,1,0.5\nc.png,1,0.5\n", "line 2: 2 columns, expected 3"),
    ],
)
def test_validator_refuses_bad_submissions(tmp_path, text, message):
    assert_refused_submission(make_competition(tmp_path / "c"), tmp_path / "submission.csv", text, message)


def test_validator_is_kind_to_crlf_bom_and_spaces(tmp_path):
    fmt = make_competition(tmp_path / "c")
    path = tmp_path / "submission.csv"
    path.write_bytes("\ufeffimage,label,probability\r\na.jpg , 10 ,1.0\r\nb.png,0, 0.25\r\nc.png,2,0\r\n\r\n".encode())
    ids, labels = fmt.read_submission([path])
    assert ids == ["a.jpg", "b.png", "c.png"] and labels["label"].tolist() == [3, 0, 2]


def test_a_bad_prediction_never_reaches_the_final_path(tmp_path):
    fmt = make_competition(tmp_path / "c")
    labels, probs = _labels_and_probs(3, 4)
    with pytest.raises(PipelineError, match="where 'a.jpg' is expected"):
        fmt.write_submission(tmp_path / "sub", ["b.png", "a.jpg", "c.png"], {"label": labels}, {"label": probs})
    assert not (tmp_path / "sub" / "submission.csv").exists()


def test_metrics_and_per_class_table_match_sklearn(tmp_path):
    fmt = make_competition(tmp_path / "c")
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, 80)
    pred = np.where(rng.random(80) < 0.6, true, rng.integers(0, 4, 80))
    scores = fmt.score_labels({"label": true}, {"label": pred})
    assert scores["accuracy"] == pytest.approx(skm.accuracy_score(true, pred)) == scores["label_accuracy"]
    assert scores["label_macro_f1"] == pytest.approx(
        skm.f1_score(true, pred, average="macro", labels=range(4), zero_division=0)
    )
    (head,) = fmt.heads()
    rows = {row["class"]: row for row in report.per_class_rows(head, np.eye(4)[pred], true, pred, None)}
    precision, recall, f1, support = skm.precision_recall_fscore_support(true, pred, labels=range(4), zero_division=0)
    names = ["0", "1", "2", "10"]
    assert sorted(rows) == sorted(names)
    assert [rows[name]["precision"] for name in names] == pytest.approx(precision)
    assert [rows[name]["recall"] for name in names] == pytest.approx(recall)
    assert [rows[name]["F1"] for name in names] == pytest.approx(f1)
    assert [rows[name]["support"] for name in names] == support.tolist()


def test_stratified_folds_keep_every_class_in_every_fold(tmp_path):
    fmt = make_competition(tmp_path / "c", per_class=6)
    table = fmt.read_train()
    folds = fmt.assign_folds(table, 3, seed=0)
    for fold in range(3):
        assert np.bincount(table.targets["label"][folds == fold], minlength=4).tolist() == [2, 2, 2, 2]


# --- the demo --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory, "folder")


def test_demo_layout_mixes_sizes_and_modes(demo):
    root = demo.root
    class_dirs = sorted(p.name for p in (root / "train").iterdir())
    assert class_dirs == [str(d) for d in range(10)]
    train_files = sorted((root / "train").glob("*/*"))
    test_files = sorted((root / "test").iterdir())
    assert len(train_files) == 30 and len(test_files) == 12
    assert all(p.is_file() for p in test_files)

    for files in (train_files, test_files):
        images = open_images(files)
        assert {image.mode for image in images} == set(DEMO_MODES)
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

    solution = pd.read_csv(demo.answers_root / "solution.csv")
    assert list(solution.columns) == ["image", "label", "probability"]
    assert sorted(solution.image) == [p.name for p in test_files]
    assert solution.label.between(0, 9).all() and (solution.probability == 1.0).all()
