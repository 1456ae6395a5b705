"""CelebA format: the two text files read strictly and kindly, official and K-fold splits, subsets, predictions.txt."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_refused_submission, open_images, small_demo
from PIL import Image
from sklearn import metrics as skm

from src import report
from src.errors import PipelineError
from src.formats import create_format
from src.formats.celeba import DEMO_ATTRIBUTES

NAMES = ["Smiling", "Male", "Young", "Eyeglasses"]
# (image, partition, values or None when the attribute file has no row for it)
ROWS = [
    ("000001.jpg", 0, [1, -1, 1, -1]),
    ("000002.jpg", 0, [-1, 1, 1, -1]),
    ("000003.jpg", 0, [1, 1, -1, -1]),
    ("000004.jpg", 1, [-1, -1, 1, 1]),
    ("000005.jpg", 1, [1, -1, 1, -1]),
    ("000006.jpg", 2, None),
    ("000007.jpg", 2, [1, 1, 1, 1]),  # a test row that is present: ignored for training
]


def attr_text(rows=ROWS, names=NAMES, count=None, newline="\n") -> str:
    labelled = [(image, values) for image, _, values in rows if values is not None]
    lines = [str(len(labelled) if count is None else count), " ".join(names) + " "]
    # The real file right-aligns values: "  1" after "-1", hence runs of spaces.
    lines += [image + " " + " ".join(f"{v:2d}" for v in values) for image, values in labelled]
    return newline.join(lines) + newline


def partition_text(rows=ROWS, newline="\n") -> str:
    return newline.join(f"{image} {part}" for image, part, _ in rows) + newline


def make_competition(root: Path, attr: str | None = None, partition: str | None = None, options=None, skip_images=()):
    root.mkdir(parents=True, exist_ok=True)
    (root / "list_attr_celeba.txt").write_bytes((attr_text() if attr is None else attr).encode("utf-8"))
    (root / "list_eval_partition.txt").write_bytes(
        (partition_text() if partition is None else partition).encode("utf-8")
    )
    (root / "img_align_celeba").mkdir(exist_ok=True)
    for image, _, _ in ROWS:
        if image not in skip_images:
            Image.new("RGB", (9, 11), (120, 80, 60)).save(root / "img_align_celeba" / image)
    return create_format("celeba", root, options)


def test_reads_the_real_layout_with_crlf_bom_and_runs_of_spaces(tmp_path):
    fmt = make_competition(
        tmp_path / "c", attr="\ufeff" + attr_text(newline="\r\n"), partition=partition_text(newline="\r\n") + "\r\n"
    )
    table = fmt.read_train()
    assert table.ids == [image for image, part, _ in ROWS if part != 2]
    assert table.split.tolist() == [0, 0, 0, 1, 1]
    assert table.targets["attributes"].tolist() == [
        [1, 0, 1, 0],
        [0, 1, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 1],
        [1, 0, 1, 0],
    ]
    assert table.paths[0] == tmp_path / "c" / "img_align_celeba" / "000001.jpg"
    assert fmt.read_test().ids == ["000006.jpg", "000007.jpg"]
    (head,) = fmt.heads()
    assert (head.name, head.kind, head.class_names, head.objective.name) == (
        "attributes",
        "multilabel",
        tuple(NAMES),
        "column_accuracy",
    )
    assert fmt.submission_names() == ["predictions.txt"]


def test_count_line_may_count_every_image(tmp_path):
    fmt = make_competition(tmp_path / "c", attr=attr_text(count=len(ROWS)))
    assert len(fmt.read_train()) == 5


def test_subset_by_name_in_the_chosen_order(tmp_path):
    fmt = make_competition(tmp_path / "c", options={"attributes": ["Eyeglasses", "Smiling"]})
    assert fmt.heads()[0].class_names == ("Eyeglasses", "Smiling")
    assert fmt.read_train().targets["attributes"].tolist() == [[0, 1], [0, 0], [0, 1], [1, 0], [0, 1]]


@pytest.mark.parametrize(
    "subset, message",
    [
        (["Smilling"], "'Smilling' is not an attribute of .*list_attr_celeba.txt; did you mean 'Smiling'\\?"),
        (["Bald"], "'Bald' is not an attribute of .*known: Smiling, Male, Young, Eyeglasses"),
        (["Male", "Male"], "'Male' is listed twice"),
        ([], "empty list"),
    ],
)
def test_unknown_or_repeated_attribute_names_are_refused(tmp_path, subset, message):
    fmt = make_competition(tmp_path / "c", options={"attributes": subset})
    with pytest.raises(PipelineError, match=f"config format_options.attributes: .*{message}"):
        fmt.heads()


def _replace_line(text: str, number: int, new: str) -> str:
    lines = text.splitlines()
    lines[number - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "attr, partition, message",
    [
        (_replace_line(attr_text(), 3, "000001.jpg 1 -1 1"), None, "list_attr_celeba.txt line 3: 4 fields, expected 5"),
        (
            _replace_line(attr_text(), 4, "000002.jpg -1 1 0 -1"),
            None,
            "list_attr_celeba.txt line 4: Young is '0'; values must be 1 or -1",
        ),
        (_replace_line(attr_text(), 4, "000002.jpg -1 1 2 -1"), None, "list_attr_celeba.txt line 4: Young is '2'"),
        (
            _replace_line(attr_text(), 4, "000001.jpg -1 1 1 -1"),
            None,
            "list_attr_celeba.txt line 4: duplicate image '000001.jpg' (first on line 3)",
        ),
        (_replace_line(attr_text(), 1, "five"), None, "list_attr_celeba.txt line 1: expected the image count"),
        (_replace_line(attr_text(), 1, "99"), None, "list_attr_celeba.txt line 1: count 99 but 6 image rows follow"),
        (
            _replace_line(attr_text(), 2, "Smiling Male Young Smiling"),
            None,
            "list_attr_celeba.txt line 2: attribute 'Smiling' named twice",
        ),
        (
            attr_text(count=7) + "000099.jpg  1 1 1 1\n",
            None,
            "list_attr_celeba.txt line 9: image '000099.jpg' is not in list_eval_partition.txt",
        ),
        (
            None,
            _replace_line(partition_text(), 2, "000002.jpg 3"),
            "list_eval_partition.txt line 2: partition '3' for 000002.jpg",
        ),
        (
            None,
            _replace_line(partition_text(), 2, "000002.jpg 0 extra"),
            "list_eval_partition.txt line 2: 3 fields, expected 2",
        ),
        (
            None,
            _replace_line(partition_text(), 2, "000001.jpg 0"),
            "list_eval_partition.txt line 2: duplicate image '000001.jpg'",
        ),
        (
            None,
            _replace_line(partition_text(), 2, "../000002.jpg 0"),
            "list_eval_partition.txt line 2: path '../000002.jpg' escapes",
        ),
        (
            None,
            _replace_line(partition_text(), 6, "000006.jpg 1"),
            "list_eval_partition.txt line 6: image '000006.jpg' (partition 1) has no row in list_attr_celeba.txt",
        ),
    ],
)
def test_bad_files_stop_with_file_and_line(tmp_path, attr, partition, message):
    fmt = make_competition(tmp_path / "c", attr=attr, partition=partition)
    with pytest.raises(PipelineError) as error:
        fmt.read_train()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_images_are_named(tmp_path):
    fmt = make_competition(tmp_path / "c", skip_images=("000004.jpg", "000006.jpg"))
    with pytest.raises(PipelineError, match=r"list_eval_partition.txt line 4: image .*000004.jpg is missing"):
        fmt.read_train()
    with pytest.raises(PipelineError, match=r"list_eval_partition.txt line 6: image .*000006.jpg is missing"):
        fmt.read_test()


def test_official_folds_train_on_partition_0_and_hold_out_partition_1(tmp_path):
    fmt = make_competition(tmp_path / "c")
    table = fmt.read_train()
    assert fmt.assign_folds(table, 5, seed=0).tolist() == [-1, -1, -1, 0, 0]
    no_valid = make_competition(tmp_path / "d", partition=partition_text().replace(" 1\n", " 0\n"))
    with pytest.raises(PipelineError, match="no partition 1 \\(valid\\) images for fold_mode official"):
        no_valid.assign_folds(no_valid.read_train(), 5, seed=0)


def test_kfold_mode_folds_over_partitions_0_and_1(tmp_path):
    rows = [(f"{i:06d}.jpg", i % 2, [1 if (i >> bit) & 1 else -1 for bit in range(4)]) for i in range(1, 41)]
    root = tmp_path / "c"
    root.mkdir()
    (root / "list_attr_celeba.txt").write_text(attr_text(rows))
    (root / "list_eval_partition.txt").write_text(partition_text(rows) + "999999.jpg 2\n")
    (root / "img_align_celeba").mkdir()
    for image, _, _ in rows:
        Image.new("L", (4, 4)).save(root / "img_align_celeba" / image)
    fmt = create_format("celeba", root, {"fold_mode": "kfold"})
    table = fmt.read_train()
    folds = fmt.assign_folds(table, 4, seed=1)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3] and set(np.bincount(folds).tolist()) <= {9, 10, 11}
    for column in range(4):  # each attribute's positives spread over the folds
        assert np.bincount(folds[table.targets["attributes"][:, column] == 1], minlength=4).min() >= 4


def test_writer_keeps_the_original_order_and_round_trips(tmp_path):
    fmt = make_competition(tmp_path / "c")
    ids = fmt.read_test().ids
    labels = {"attributes": np.array([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)}
    files = fmt.write_submission(tmp_path / "sub", ids, labels, {})
    assert [f.name for f in files] == ["predictions.txt"]
    assert files[0].read_text() == "000006.jpg 1 -1 -1 1\n000007.jpg -1 1 1 -1\n"
    read_ids, read_labels = fmt.read_submission(files)
    assert read_ids == ids
    np.testing.assert_array_equal(read_labels["attributes"], labels["attributes"])


@pytest.mark.parametrize(
    "other, expected",
    [
        # training majority (partitions 0 and 1): Smiling 3/5 -> 1, Male 2/5 -> -1
        ("majority", "000006.jpg 1 -1 1 1\n000007.jpg 1 -1 -1 -1\n"),
        ("negative", "000006.jpg -1 -1 1 1\n000007.jpg -1 -1 -1 -1\n"),
    ],
)
def test_subset_writes_every_column_with_the_others_filled(tmp_path, other, expected):
    fmt = make_competition(tmp_path / "c", options={"attributes": ["Eyeglasses", "Young"], "other_attributes": other})
    labels = {"attributes": np.array([[1, 1], [0, 0]], dtype=bool)}
    files = fmt.write_submission(tmp_path / "sub", fmt.read_test().ids, labels, {})
    assert files[0].read_text() == expected
    _, read_labels = fmt.read_submission(files)
    np.testing.assert_array_equal(read_labels["attributes"], labels["attributes"])


def test_standalone_options_predict_the_same_file_without_the_attribute_file(tmp_path):
    """The course package's copy: the partition file and the test images, no attribute file; the options the package
    pins (every column's name, the value written for columns not predicted) give the same heads and the same file."""
    import shutil

    options = {"attributes": ["Eyeglasses", "Young"]}
    fmt = make_competition(tmp_path / "c", options=options)
    pinned = fmt.standalone_options()
    assert pinned == {"attribute_names": NAMES, "other_values": [1, -1, 1, -1]}
    assert set(fmt.test_input_files()) == {tmp_path / "c" / "list_eval_partition.txt", *fmt.read_test().paths}
    labels = {"attributes": np.array([[1, 1], [0, 0]], dtype=bool)}
    expected = fmt.write_submission(tmp_path / "sub", fmt.read_test().ids, labels, {})[0].read_bytes()
    copy = tmp_path / "copy"
    for file in fmt.test_input_files():
        (copy / file.relative_to(tmp_path / "c")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, copy / file.relative_to(tmp_path / "c"))
    alone = create_format("celeba", copy, {**options, **pinned})
    assert alone.heads() == fmt.heads() and alone.all_attribute_names() == NAMES
    written = alone.write_submission(tmp_path / "sub2", alone.read_test().ids, labels, {})
    assert written[0].read_bytes() == expected
    # Without the pinned names the copy cannot name its heads: the missing file is named.
    with pytest.raises(PipelineError, match="list_attr_celeba.txt"):
        create_format("celeba", copy, options).heads()


@pytest.mark.parametrize(
    "text, message",
    [
        ("000006.jpg 1 -1 -1 1\n", "1 rows for 2 test images"),
        (
            "000007.jpg 1 -1 -1 1\n000006.jpg 1 1 1 1\n",
            "line 1: image '000007.jpg' where list_eval_partition.txt has '000006.jpg'",
        ),
        ("000006.jpg 1 -1 -1 1\n000007.jpg 1 0 1 1\n", "line 2: Male is '0'; values must be 1 or -1"),
        ("000006.jpg 1 -1 -1\n000007.jpg 1 1 1 1\n", "line 1: 4 fields, expected 5"),
        ("000006.jpg 1 -1 -1 1\n000007.jpg 1 1 1 1\n000008.jpg 1 1 1 1\n", "line 3: more rows than the 2 test images"),
    ],
)
def test_validator_refuses_bad_predictions(tmp_path, text, message):
    assert_refused_submission(make_competition(tmp_path / "c"), tmp_path / "predictions.txt", text, message)


def test_validator_accepts_crlf_and_runs_of_spaces(tmp_path):
    fmt = make_competition(tmp_path / "c")
    path = tmp_path / "predictions.txt"
    path.write_bytes(b"\xef\xbb\xbf000006.jpg  1 -1 -1  1 \r\n000007.jpg -1  1  1 -1\r\n")
    ids, labels = fmt.read_submission([path])
    assert ids == ["000006.jpg", "000007.jpg"] and labels["attributes"].tolist() == [[1, 0, 0, 1], [0, 1, 1, 0]]


def test_metrics_and_per_attribute_table_match_sklearn(tmp_path):
    fmt = make_competition(tmp_path / "c")
    rng = np.random.default_rng(0)
    true = rng.random((50, 4)) < 0.4
    pred = np.where(rng.random((50, 4)) < 0.75, true, ~true)
    scores = fmt.score_labels({"attributes": true}, {"attributes": pred})
    per_attribute = [skm.accuracy_score(true[:, c], pred[:, c]) for c in range(4)]
    assert scores["mean_accuracy"] == pytest.approx(np.mean(per_attribute))
    assert scores["attributes_accuracy"] == pytest.approx(np.mean(per_attribute))
    assert scores["attributes_macro_f1"] == pytest.approx(skm.f1_score(true, pred, average="macro", zero_division=0))
    (head,) = fmt.heads()
    probs = np.where(pred, 0.8, 0.2)
    rows = report.attribute_accuracy_rows(head, probs, true, pred, np.full(4, 0.5))
    assert [row["attribute"] for row in rows] == NAMES + ["mean"]
    assert [row["accuracy tuned"] for row in rows[:4]] == pytest.approx(per_attribute)
    assert rows[4]["accuracy tuned"] == pytest.approx(scores["mean_accuracy"])


def test_reads_kaggles_copy_with_csv_label_files_and_a_nested_image_folder(tmp_path):
    txt = make_competition(tmp_path / "txt")
    root = tmp_path / "kaggle"
    root.mkdir()
    labelled = [(image, values) for image, _, values in ROWS if values is not None]
    (root / "list_attr_celeba.csv").write_text(
        "image_id,"
        + ",".join(NAMES)
        + "\r\n"
        + "".join(f"{image},{','.join(map(str, values))}\r\n" for image, values in labelled)
    )
    (root / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{image},{part}\n" for image, part, _ in ROWS)
    )
    nested = root / "img_align_celeba" / "img_align_celeba"
    nested.mkdir(parents=True)
    for image, _, _ in ROWS:
        Image.new("RGB", (9, 11), (120, 80, 60)).save(nested / image)
    kaggle = create_format("celeba", root, None)

    train, expected = kaggle.read_train(), txt.read_train()
    assert train.ids == expected.ids and train.split.tolist() == expected.split.tolist()
    np.testing.assert_array_equal(train.targets["attributes"], expected.targets["attributes"])
    assert train.paths[0] == nested / "000001.jpg" and kaggle.read_test().ids == txt.read_test().ids
    assert kaggle.heads() == txt.heads()

    (root / "list_attr_celeba.csv").write_text("image_id," + ",".join(NAMES) + "\n000001.jpg,1,-1,1\n")
    with pytest.raises(PipelineError, match=r"list_attr_celeba.csv line 2: 4 fields, expected 5"):
        create_format("celeba", root, None).read_train()


def _new_test_folder(root: Path, names) -> Path:
    folder = root / "new_test"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (9, 11), (30, 90, 150)).save(folder / name)
    return folder


def test_a_new_test_folder_is_predicted_in_file_name_order_without_the_partition_images(tmp_path):
    root = tmp_path / "c"
    # The course's new test set: a folder that may also hold images the partition file lists (skipped).
    fmt = make_competition(root, options={"test_dir": "new_test"})
    _new_test_folder(root, ["b_2.jpg", "000001.jpg", "a_1.jpg", "c_3.png"])
    (root / "new_test" / "Thumbs.db").write_bytes(b"")
    test = fmt.read_test()
    assert test.ids == ["a_1.jpg", "b_2.jpg", "c_3.png"]
    assert test.paths == [root / "new_test" / name for name in test.ids]
    assert len(fmt.read_train()) == 5  # training still follows the partition file
    labels = {"attributes": np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)}
    files = fmt.write_submission(tmp_path / "sub", test.ids, labels, {})
    assert files[0].read_text().splitlines()[0] == "a_1.jpg 1 -1 -1 1"
    assert fmt.read_submission(files)[0] == test.ids
    assert_refused_submission(
        fmt,
        tmp_path / "predictions.txt",
        "000006.jpg 1 -1 -1 1\n",
        "image '000006.jpg' where new_test (file-name order) has 'a_1.jpg'",
    )


def test_a_test_list_picks_images_of_the_folder(tmp_path):
    root = tmp_path / "c"
    _new_test_folder(root, ["x.jpg", "y.jpg", "z.jpg"])
    (root / "wanted.txt").write_text("z.jpg\r\nx.jpg\n\n")
    fmt = make_competition(root, options={"test_dir": "new_test", "test_list": "wanted.txt"})
    assert fmt.read_test().ids == ["x.jpg", "z.jpg"]


@pytest.mark.parametrize(
    "options, folder, listed, message",
    [
        (
            {"test_dir": "nowhere"},
            None,
            None,
            "config format_options.test_dir: .*nowhere is not a folder; point it at the new test images",
        ),
        (
            {"test_dir": "new_test"},
            [],
            None,
            "config format_options.test_dir: .*new_test holds no images; put the new test",
        ),
        ({"test_dir": "new_test"}, ["000001.jpg"], None, "holds only images that list_eval_partition.txt lists"),
        (
            {"test_dir": "new_test", "test_list": "missing.txt"},
            ["x.jpg"],
            None,
            "config format_options.test_list: .*missing.txt not found",
        ),
        (
            {"test_dir": "new_test", "test_list": "list.txt"},
            ["x.jpg"],
            "x.jpg\ny.jpg\n",
            "list.txt line 2: image 'y.jpg' is not in .*new_test; copy it there or remove the line",
        ),
        (
            {"test_dir": "new_test", "test_list": "list.txt"},
            ["x.jpg"],
            "x.jpg\nx.jpg\n",
            "list.txt line 2: 'x.jpg' listed twice",
        ),
        ({"test_dir": "new_test", "test_list": "list.txt"}, ["x.jpg"], "\n", "list.txt: no image names"),
    ],
)
def test_a_bad_test_folder_or_list_stops_with_one_line(tmp_path, options, folder, listed, message):
    root = tmp_path / "c"
    if folder is not None:
        _new_test_folder(root, folder)
    if listed is not None:
        (root / "list.txt").write_text(listed)
    fmt = make_competition(root, options=options)
    with pytest.raises(PipelineError, match=message) as error:
        fmt.read_test()
    assert "\n" not in str(error.value)


# --- the demo --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory, "celeba")


def test_demo_layout_hides_test_labels(demo):
    root = demo.root
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    assert len(names) == 40 == len(set(names)) and names == list(DEMO_ATTRIBUTES)
    assert int(lines[0]) == len(lines) - 2 == 30
    assert re.search(r"\.jpg +-?1(  1| -1)", lines[2])  # values right-aligned, "  1" after a value

    attrs = pd.read_csv(root / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    assert attrs.shape == (30, 40) and set(np.unique(attrs.to_numpy())) <= {-1, 1}
    partition = pd.read_csv(root / "list_eval_partition.txt", sep=" ", header=None, names=["image", "partition"])
    images = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    assert partition.image.tolist() == images and images[0] == "000001.jpg"
    assert set(partition.partition) == {0, 1, 2}
    test_images = partition.image[partition.partition == 2].tolist()
    assert len(test_images) == 12
    assert not set(test_images) & set(attrs.index)
    assert set(attrs.index) == set(partition.image[partition.partition < 2])

    rows = [line.split(" ") for line in (demo.answers_root / "predictions.txt").read_text().splitlines()]
    assert [row[0] for row in rows] == test_images
    assert all(len(row) == 41 and set(row[1:]) <= {"1", "-1"} for row in rows)
    found = open_images(root / "img_align_celeba" / name for name in images)
    assert {image.format for image in found} == {"JPEG"}
