"""iMet reader (strict and kind), submission writer and validator."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from helpers import open_images, small_demo
from PIL import Image

from src.demo import build_demo
from src.errors import PipelineError
from src.formats import create_format


def make_competition(
    root,
    train_rows,
    test_ids=("t1", "t2"),
    labels=((0, "culture::a"), (1, "tag::b"), (2, "tag::c")),
    train_text=None,
    images=True,
):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("attribute_id,attribute_name\n" + "".join(f"{i},{n}\n" for i, n in labels))
    (root / "train.csv").write_text(
        train_text if train_text is not None else "id,attribute_ids\n" + "".join(f"{i},{a}\n" for i, a in train_rows)
    )
    (root / "sample_submission.csv").write_text("id,attribute_ids\n" + "".join(f"{i},0 1 2\n" for i in test_ids))
    for folder, ids in (("train", [i for i, _ in train_rows]), ("test", test_ids)):
        (root / folder).mkdir(exist_ok=True)
        if images:
            for image_id in ids:
                Image.new("RGB", (8, 8), (10, 20, 30)).save(root / folder / f"{image_id}.png")
    return create_format("imet", root)


def test_reads_targets_with_crlf_bom_and_extra_spaces(tmp_path):
    text = "\ufeffid,attribute_ids\r\na, 0  2 \r\nb,1\r\n\r\n"
    fmt = make_competition(tmp_path / "c", [("a", ""), ("b", "")], train_text=text)
    table = fmt.read_train()
    assert table.ids == ["a", "b"]
    assert table.targets["attributes"].tolist() == [[1, 0, 1], [0, 1, 0]]
    assert fmt.heads()[0].class_names == ("culture::a", "tag::b", "tag::c")


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("a", "0 7")], "line 2: attribute_ids id 7 is not a known class"),
        ([("a", "0 x")], "line 2: attribute_ids 'x' is not an integer"),
        ([("a", "0"), ("a", "1")], "line 3: duplicate id 'a' (first on line 2)"),
    ],
)
def test_bad_labels_are_refused_with_file_and_line(tmp_path, rows, message):
    fmt = make_competition(tmp_path / "c", rows)
    with pytest.raises(PipelineError) as error:
        fmt.read_train()
    assert message in str(error.value) and "train.csv" in str(error.value)


def test_malformed_csv_and_missing_column(tmp_path):
    fmt = make_competition(tmp_path / "c", [("a", "0")], train_text="id,attribute_ids\na,0,extra\n")
    with pytest.raises(PipelineError, match="line 2: 3 columns, expected 2"):
        fmt.read_train()
    fmt = make_competition(tmp_path / "d", [("a", "0")], train_text="image,labels\na,0\n")
    with pytest.raises(PipelineError, match="missing column"):
        fmt.read_train()


def test_missing_image_and_test_folder_mismatch(tmp_path):
    fmt = make_competition(tmp_path / "c", [("a", "0")])
    (tmp_path / "c" / "train" / "a.png").unlink()
    with pytest.raises(PipelineError, match=r"line 2: image .*a.png is missing"):
        fmt.read_train()
    fmt = make_competition(tmp_path / "d", [("a", "0")])
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "test" / "stray.png")
    with pytest.raises(PipelineError, match="not in sample_submission.csv"):
        fmt.read_test()


def test_submission_round_trip_and_exact_text(tmp_path):
    fmt = make_competition(tmp_path / "c", [("a", "0")])
    labels = {"attributes": np.array([[True, False, True], [False, False, False]])}
    files = fmt.write_submission(tmp_path / "sub", ["t1", "t2"], labels, {})
    assert files[0].read_text() == "id,attribute_ids\nt1,0 2\nt2,\n"
    ids, read_back = fmt.read_submission(files)
    assert ids == ["t1", "t2"] and np.array_equal(read_back["attributes"], labels["attributes"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,attribute_ids\nt2,0\nt1,1\n", "id 't2' where sample_submission.csv has 't1'"),
        ("id,attribute_ids\nt1,0\n", "1 rows, sample_submission.csv has 2"),
        ("id,attribute_ids\nt1,0\nt2,9\n", "id 9 is not a known class"),
        ("id,attribute_ids\nt1,0\n,1\n", "empty id"),
        ("id,attribute_ids\nt1,0\nt1,1\n", "duplicate id 't1'"),
        ("id,predicted\nt1,0\nt2,1\n", "missing column"),
        ("id,attribute_ids\nt1,0\nt2,1\nt3,1\n", "3 rows"),
    ],
)
def test_validator_rejects_each_kind_of_bad_submission(tmp_path, text, message):
    fmt = make_competition(tmp_path / "c", [("a", "0")])
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        fmt.read_submission([path])


def test_writer_refuses_to_replace_a_good_file_with_a_bad_one(tmp_path):
    fmt = make_competition(tmp_path / "c", [("a", "0")])
    good = fmt.write_submission(tmp_path / "sub", ["t1", "t2"], {"attributes": np.eye(2, 3, dtype=bool)}, {})[0]
    before = good.read_bytes()
    with pytest.raises(PipelineError):
        fmt.write_submission(tmp_path / "sub", ["t2", "t1"], {"attributes": np.eye(2, 3, dtype=bool)}, {})
    assert good.read_bytes() == before
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["submission.csv"]


# --- the demo --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory, "imet")


def test_demo_layout(demo):
    root = demo.root
    train = pd.read_csv(root / "train.csv", dtype=str)
    labels = pd.read_csv(root / "labels.csv")
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    solution = pd.read_csv(demo.answers_root / "solution.csv", dtype=str)

    assert list(train.columns) == ["id", "attribute_ids"] and len(train) == 30
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
    images = open_images((root / "train").glob("*.png"))
    assert {(image.size, image.mode, image.format) for image in images} == {((64, 64), "RGB", "PNG")}


def test_demo_class_frequencies_have_a_tail(tmp_path):
    paths = build_demo("imet", tmp_path / "imet", n_train=200, n_test=1)
    train = pd.read_csv(paths.root / "train.csv", dtype=str)
    counts = np.bincount([int(v) for ids in train.attribute_ids for v in ids.split()], minlength=10)[:10]
    assert counts.min() > 0 and counts.max() >= 3 * counts.min()
    assert counts[0] > counts[9]
