"""DeepFashion format: strict and kind reader, two-file writer and validator, metrics, loss weighting, no pretrained weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import open_images, small_demo
from PIL import Image
from sklearn import metrics as skm

from src import report
from src.config import LossConfig, load_config
from src.errors import PipelineError
from src.formats import create_format
from src.formats.base import DecisionRules, HeadSpec
from src.formats.deepfashion import DEMO_ATTRIBUTES
from src.losses import MultiHeadLoss
from src.stage import main

ROOT = Path(__file__).resolve().parents[1]
HEADER = "file_path,category_label,attribute_label\n"


def make_competition(
    root: Path,
    train_text: str,
    test_text: str | None = "file_path\ntest/t1.jpg\ntest/t2.jpg\n",
    test_images=("t1.jpg", "t2.jpg"),
    options=None,
    skip_images=(),
):
    """A tiny competition: every train/test path named in the CSVs gets a small JPEG (unless skipped)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_bytes(train_text.encode("utf-8"))
    if test_text is not None:
        (root / "test.csv").write_bytes(test_text.encode("utf-8"))
    names = [line.split(",")[0].strip().lstrip("\ufeff") for line in train_text.splitlines()[1:] if line.strip()]
    names += [f"test/{name}" for name in test_images]
    for name in names:
        path = root / name.replace("\\", "/")
        if not name or name in skip_images or ".." in name:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 10), (200, 30, 30)).save(path)
    return create_format("deepfashion", root, {"n_categories": 4, "n_attributes": 5, **(options or {})})


def good_competition(root: Path, **kwargs):
    return make_competition(root, HEADER + "train/a.jpg,0,0 3\ntrain/b.jpg,1,\ntrain/c.jpg,3,4\n", **kwargs)


def test_reads_crlf_bom_spaces_and_empty_attributes(tmp_path):
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + "train/a.jpg , 2 ,  1  4 \r\ntrain/b.jpg,0,\r\n\r\n"
    fmt = make_competition(tmp_path / "c", text)
    table = fmt.read_train()
    assert table.ids == ["train/a.jpg", "train/b.jpg"]
    assert table.targets["category"].tolist() == [2, 0]
    assert table.targets["attributes"].tolist() == [[0, 1, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert table.paths[0] == tmp_path / "c" / "train" / "a.jpg"
    test = fmt.read_test()
    assert test.ids == ["test/t1.jpg", "test/t2.jpg"] and test.targets == {}


def test_two_heads_from_options(tmp_path):
    fmt = good_competition(
        tmp_path / "c",
        options={
            "category_weight": 2.0,
            "attribute_weight": 0.5,
            "attribute_names": list("vwxyz"),
            "at_least_one_attribute": True,
        },
    )
    category, attributes = fmt.heads()
    assert (category.name, category.kind, category.class_names, category.loss_weight) == (
        "category",
        "softmax",
        ("0", "1", "2", "3"),
        2.0,
    )
    assert (attributes.name, attributes.kind, attributes.loss_weight, attributes.min_labels) == (
        "attributes",
        "multilabel",
        0.5,
        1,
    )
    assert (
        attributes.class_names == tuple("vwxyz")
        and attributes.objective.name == "samples_fbeta"
        and attributes.objective.beta == 1
    )
    assert fmt.submission_names() == ["category.csv", "attribute.csv"]


def test_option_errors_name_the_key(tmp_path):
    good_competition(tmp_path / "c")
    with pytest.raises(PipelineError, match="format_options.attribute_names: .*2 names but n_attributes is 15"):
        create_format("deepfashion", tmp_path / "c", {"n_attributes": 15, "attribute_names": ["a", "b"]})
    with pytest.raises(PipelineError, match="format_options.n_categorie"):
        create_format("deepfashion", tmp_path / "c", {"n_categorie": 3})


def test_class_counts_come_from_the_options_the_names_or_the_ids_train_csv_uses(tmp_path):
    root = tmp_path / "c"
    good_competition(root)  # categories 0, 1, 3 and attributes 0, 3, 4 are used
    inferred = create_format("deepfashion", root, {})
    assert inferred.class_counts == (4, 5)
    category, attributes = inferred.heads()
    assert category.class_names == ("0", "1", "2", "3") and len(attributes.class_names) == 5
    assert inferred.read_train().targets["attributes"].shape == (3, 5)
    # a count the competition names wins over what train.csv happens to use (category 9 never seen)
    assert create_format("deepfashion", root, {"n_categories": 10, "n_attributes": 15}).class_counts == (10, 15)
    assert create_format("deepfashion", root, {"attribute_names": list("vwxyz")}).class_counts == (4, 5)
    with pytest.raises(
        PipelineError,
        match="attribute_label id 3 is not a known class; ids run 0..2: fix the row or set format_options.n_attributes",
    ):
        create_format("deepfashion", root, {"attribute_names": list("abc")}).read_train()


@pytest.mark.parametrize(
    "rows, message",
    [
        ("train/a.jpg,x,1\n", "line 2: category_label 'x' is not a non-negative integer id"),
        ("train/a.jpg,1,2 ²\n", "line 2: attribute_label '²' is not a non-negative integer id"),
        ("train/a.jpg,0,1\ntrain/b.jpg,0,\n", "only category 0 is used; .*set format_options.n_categories"),
        ("train/a.jpg,0,\ntrain/b.jpg,1,\n", "no row has an attribute; set format_options.n_attributes"),
    ],
)
def test_inferring_class_counts_stops_on_bad_ids_with_file_and_line(tmp_path, rows, message):
    fmt = make_competition(tmp_path / "c", HEADER + rows, options={"n_categories": None, "n_attributes": None})
    with pytest.raises(PipelineError, match=message):
        fmt.heads()


def test_test_images_from_the_folder_when_there_is_no_test_csv(tmp_path):
    fmt = good_competition(tmp_path / "c", test_text=None, test_images=("b.png", "a.jpg"))
    (tmp_path / "c" / "test" / ".DS_Store").write_text("junk")
    assert fmt.read_test().ids == ["test/a.jpg", "test/b.png"]
    (tmp_path / "c" / "test" / "notes.txt").write_text("not an image")
    with pytest.raises(PipelineError, match=r"notes.txt: not an image file"):
        fmt.read_test()


@pytest.mark.parametrize(
    "rows, message",
    [
        ("train/a.jpg,0,1,2\n", "train.csv line 2: 4 columns, expected 3"),
        ("train/a.jpg,0,1 5\n", "train.csv line 2: attribute_label id 5 is not a known class"),
        ("train/a.jpg,0,1 x\n", "train.csv line 2: attribute_label 'x' is not an integer"),
        ("train/a.jpg,0,\ntrain/b.jpg,4,\n", "train.csv line 3: category_label 4 is outside 0..3"),
        ("train/a.jpg,-1,\n", "train.csv line 2: category_label -1 is outside 0..3"),
        ("train/a.jpg,shirt,\n", "train.csv line 2: category_label 'shirt' is not an integer id"),
        ("train/a.jpg,0,\ntrain/a.jpg,1,\n", "train.csv line 3: duplicate id 'train/a.jpg' (first on line 2)"),
        (
            "train/a.jpg,0,\n../outside.jpg,1,\n",
            "train.csv line 3: path '../outside.jpg' escapes the competition folder",
        ),
        (",0,\n", "train.csv line 2: empty file_path"),
        (
            "train/a.jpg,0,\ntrain/./a.jpg,1,\n",  # the same image under a second id
            "train.csv line 3: path 'train/./a.jpg' is not in its plain form; write it as 'train/a.jpg'",
        ),
    ],
)
def test_bad_rows_stop_with_file_and_line(tmp_path, rows, message):
    fmt = make_competition(tmp_path / "c", HEADER + rows)
    with pytest.raises(PipelineError) as error:
        fmt.read_train()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_image_and_missing_column(tmp_path):
    fmt = make_competition(tmp_path / "c", HEADER + "train/a.jpg,0,\ntrain/b.jpg,1,\n", skip_images=("train/b.jpg",))
    with pytest.raises(PipelineError, match=r"train.csv line 3: image .*b.jpg is missing"):
        fmt.read_train()
    fmt = make_competition(tmp_path / "d", "file_path,category_label\ntrain/a.jpg,0\n")
    with pytest.raises(PipelineError, match="train.csv line 1: missing column\\(s\\) attribute_label"):
        fmt.read_train()
    fmt = good_competition(tmp_path / "e", test_text="file_path\ntest/t1.jpg\ntest/t3.jpg\n")
    with pytest.raises(PipelineError, match=r"test.csv line 3: image .*t3.jpg is missing"):
        fmt.read_test()


def test_writer_round_trip_and_exact_files(tmp_path):
    fmt = good_competition(tmp_path / "c")
    ids = fmt.read_test().ids
    labels = {"category": np.array([3, 0]), "attributes": np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=bool)}
    files = fmt.write_submission(tmp_path / "sub", ids, labels, {})
    assert [f.name for f in files] == ["category.csv", "attribute.csv"]
    assert files[0].read_text() == "file_path,category_label\ntest/t1.jpg,3\ntest/t2.jpg,0\n"
    assert files[1].read_text() == "file_path,attribute_label\ntest/t1.jpg,0 3\ntest/t2.jpg,\n"
    for order in (files, files[::-1]):  # told apart by header, not position
        read_ids, read_labels = fmt.read_submission(order)
        assert read_ids == ids
        np.testing.assert_array_equal(read_labels["category"], labels["category"])
        np.testing.assert_array_equal(read_labels["attributes"], labels["attributes"])
    assert not list((tmp_path / "sub").glob(".*.tmp"))


def test_validator_refuses_bad_submissions_before_moving_them_into_place(tmp_path):
    fmt = good_competition(tmp_path / "c")
    out = tmp_path / "sub"
    with pytest.raises(
        PipelineError, match="category.csv line 2: file_path 'test/t2.jpg' where the test listing has 'test/t1.jpg'"
    ):
        fmt.write_submission(
            out,
            ["test/t2.jpg", "test/t1.jpg"],
            {"category": np.array([0, 1]), "attributes": np.zeros((2, 5), bool)},
            {},
        )
    assert not out.exists() or not list(out.iterdir())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "category.csv").write_text("file_path,category_label\ntest/t1.jpg,0\ntest/t2.jpg,9\n")
    (bad / "attribute.csv").write_text("file_path,attribute_label\ntest/t1.jpg,0\n")
    with pytest.raises(PipelineError, match="category.csv line 3: category_label 9 is outside 0..3"):
        fmt.read_submission([bad / "category.csv", bad / "attribute.csv"])
    (bad / "category.csv").write_text("file_path,category_label\ntest/t1.jpg,0\ntest/t2.jpg,1\n")
    with pytest.raises(PipelineError, match="attribute.csv: 1 rows for 2 test images"):
        fmt.read_submission([bad / "category.csv", bad / "attribute.csv"])
    (bad / "other.csv").write_text("file_path,label\ntest/t1.jpg,0\ntest/t2.jpg,1\n")
    with pytest.raises(PipelineError, match="other.csv line 1: header file_path,label"):
        fmt.read_submission([bad / "category.csv", bad / "other.csv"])
    with pytest.raises(PipelineError, match="no attribute.csv"):
        fmt.read_submission([bad / "category.csv"])


def test_at_least_one_attribute_takes_the_top_one(tmp_path):
    probs = {
        "category": np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]], np.float32),
        "attributes": np.array([[0.2, 0.4, 0.1, 0.3, 0.0], [0.9, 0.1, 0.1, 0.8, 0.1]], np.float32),
    }
    rules = DecisionRules({"attributes": np.full(5, 0.5)})
    plain = good_competition(tmp_path / "a").decide(probs, rules)
    forced = good_competition(tmp_path / "b", options={"at_least_one_attribute": True}).decide(probs, rules)
    assert plain["category"].tolist() == [1, 0]
    assert plain["attributes"].tolist() == [[False] * 5, [True, False, False, True, False]]
    assert forced["attributes"].tolist() == [[False, True, False, False, False], [True, False, False, True, False]]


def test_metrics_match_sklearn(tmp_path):
    fmt = good_competition(tmp_path / "c")
    rng = np.random.default_rng(0)
    true = {"category": rng.integers(0, 4, 60), "attributes": rng.random((60, 5)) < 0.3}
    pred = {
        "category": np.where(rng.random(60) < 0.6, true["category"], rng.integers(0, 4, 60)),
        "attributes": np.where(rng.random((60, 5)) < 0.7, true["attributes"], rng.random((60, 5)) < 0.3),
    }
    scores = fmt.score_labels(true, pred)
    accuracy = skm.accuracy_score(true["category"], pred["category"])
    f1_samples = skm.f1_score(true["attributes"], pred["attributes"], average="samples", zero_division=0)
    assert scores["category_accuracy"] == pytest.approx(accuracy)
    assert scores["category_macro_f1"] == pytest.approx(
        skm.f1_score(true["category"], pred["category"], average="macro", labels=range(4), zero_division=0)
    )
    assert scores["attributes_f1"] == pytest.approx(f1_samples)
    assert scores["attributes_macro_f1"] == pytest.approx(
        skm.f1_score(true["attributes"], pred["attributes"], average="macro", zero_division=0)
    )
    assert scores["score"] == pytest.approx((accuracy + f1_samples) / 2)
    category_head, attribute_head = fmt.heads()
    probs = rng.random((60, 5))
    rows = {
        row["class"]: row
        for row in report.per_class_rows(attribute_head, probs, true["attributes"], pred["attributes"], None)
    }
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true["attributes"], pred["attributes"], zero_division=0
    )
    assert [rows[str(c)]["F1"] for c in range(5)] == pytest.approx(f1)
    assert [rows[str(c)]["support"] for c in range(5)] == support.tolist()
    rows = {
        row["class"]: row
        for row in report.per_class_rows(
            category_head, np.eye(4)[pred["category"]], true["category"], pred["category"], None
        )
    }
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true["category"], pred["category"], labels=range(4), zero_division=0
    )
    assert [rows[str(c)]["recall"] for c in range(4)] == pytest.approx(recall)
    assert [rows[str(c)]["precision"] for c in range(4)] == pytest.approx(precision)


def test_empty_image_f1_option(tmp_path):
    true = {"category": np.array([0, 1]), "attributes": np.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool)}
    pred = {"category": np.array([0, 1]), "attributes": np.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool)}
    assert good_competition(tmp_path / "a").score_labels(true, pred)["attributes_f1"] == pytest.approx(0.5)
    kind = good_competition(tmp_path / "b", options={"empty_image_f1": 1.0})
    assert kind.score_labels(true, pred)["attributes_f1"] == pytest.approx(1.0)


def test_folds_balance_category_and_attributes_together(tmp_path):
    rows = "".join(f"train/{i}.jpg,{i % 4},{'2' if i % 3 == 0 else ''}\n" for i in range(48))
    fmt = make_competition(tmp_path / "c", HEADER + rows)
    table = fmt.read_train()
    assert fmt.stratify_matrix(table).shape == (48, 4 + 5)
    folds = fmt.assign_folds(table, 4, seed=0)
    for fold in range(4):
        held = folds == fold
        assert np.bincount(table.targets["category"][held], minlength=4).tolist() == [3, 3, 3, 3]
        assert table.targets["attributes"][held, 2].sum() == 4


HEADS = [
    HeadSpec("category", "softmax", tuple("abc"), loss_weight=2.0),
    HeadSpec("attributes", "multilabel", tuple("wxyz")),
]


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "category": torch.randn(16, 3, generator=generator) * 3,
        "attributes": torch.randn(16, 4, generator=generator),
    }
    targets = {
        "category": torch.randint(0, 3, (16,), generator=generator),
        "attributes": torch.randint(0, 2, (16, 4), generator=generator),
    }
    return outputs, targets


def test_fixed_weighting_is_the_weighted_sum():
    loss = MultiHeadLoss(HEADS, LossConfig())
    outputs, targets = _batch()
    total, parts = loss(outputs, targets)
    assert float(total) == pytest.approx(2.0 * float(parts["category"]) + float(parts["attributes"]))
    assert loss.head_weights() == {"category": 2.0, "attributes": 1.0} and list(loss.parameters()) == []


def test_uncertainty_weighting_learns_log_variances_toward_the_head_losses():
    loss = MultiHeadLoss(HEADS, LossConfig(head_weighting="uncertainty", uncertainty_lr=0.1))
    outputs, targets = _batch()
    total, parts = loss(outputs, targets)
    # s = 0 at the start: the total is the fixed weighted sum
    assert float(total.detach()) == pytest.approx(2.0 * float(parts["category"]) + float(parts["attributes"]))
    (group,) = loss.parameter_group()
    assert group["params"] == [loss.log_vars] and group["weight_decay"] == 0.0 and group["lr"] == 0.1
    optimizer = torch.optim.AdamW(loss.parameter_group())  # what the trainer does, alongside the model's groups
    for _ in range(150):
        leaf = {name: value.clone().requires_grad_() for name, value in outputs.items()}
        total, parts = loss(leaf, targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    head_losses = [float(parts["category"].detach()), float(parts["attributes"].detach())]
    np.testing.assert_allclose(loss.log_vars.detach().numpy(), np.log(head_losses), atol=0.05)
    assert loss.head_weights()["category"] == pytest.approx(2.0 / head_losses[0], rel=0.06)
    assert MultiHeadLoss(HEADS, LossConfig()).parameter_group() == []


def test_configs_forbid_pretrained_weights():
    for name in ("deepfashion", "demo-deepfashion"):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        assert config.format == "deepfashion" and config.model.forbid_pretrained and config.model.weights is None


def test_train_stage_refuses_a_weight_file_when_pretrained_is_forbidden(tmp_path, capsys):
    root = tmp_path / "c"
    good_competition(root)
    weights = tmp_path / "resnet.safetensors"
    weights.write_bytes(b"not really weights")
    assert main(_full_fit_on(root, tmp_path / "out", f"model.weights={weights}")) == 2
    error = capsys.readouterr().err
    assert "forbid_pretrained is true" in error and "model.weights=null" in error
    assert not (tmp_path / "out" / "oof" / "demo-deepfashion" / "full" / "last.pt").exists()


def _full_fit_on(root: Path, out: Path, *extra: str) -> list[str]:
    """argv of a quiet `train --full` of the DeepFashion demo config on the small competition at `root`."""
    config = str(ROOT / "configs" / "demo-deepfashion.yaml")
    return [
        "train",
        "--config",
        config,
        "--full",
        "--quiet",
        f"data.root={root}",
        f"output_dir={out}",
        "format_options.n_categories=4",
        "format_options.n_attributes=5",
        "format_options.attribute_names=null",
        "data.image_size=16",
        *extra,
    ]


def _uncertainty_train(root: Path, out: Path, *extra: str) -> list[str]:
    return _full_fit_on(
        root,
        out,
        "model.name=test_efficientnet",
        "train.epochs=3",
        "train.batch_size=2",
        "train.threads=1",
        "train.loss.head_weighting=uncertainty",
        "train.loss.uncertainty_lr=0.05",
        *extra,
    )


def test_learned_loss_weights_are_checkpointed_and_resume_exactly(tmp_path):
    root = tmp_path / "c"
    good_competition(root)
    assert main(_uncertainty_train(root, tmp_path / "a")) == 0
    assert main(_uncertainty_train(root, tmp_path / "b", "--stop-after-epochs", "1")) == 0
    assert main(_uncertainty_train(root, tmp_path / "b", "--resume")) == 0

    run_a, run_b = (tmp_path / side / "oof" / "demo-deepfashion" / "full" for side in "ab")
    last_a, last_b = (torch.load(run / "last.pt", map_location="cpu", weights_only=True) for run in (run_a, run_b))
    log_vars = last_a["loss"]["log_vars"]
    assert log_vars.shape == (2,) and bool((log_vars != 0).all())  # learned, and saved
    assert torch.equal(log_vars, last_b["loss"]["log_vars"])  # resumed from the saved values, not from 0
    for key in last_a["model"]:
        assert torch.equal(last_a["model"][key], last_b["model"][key]), key
    epochs = (run_a / "epochs.csv").read_text().splitlines()
    assert "weight_category" in epochs[0] and "weight_attributes" in epochs[0] and len(epochs) == 4


def test_resume_with_another_head_weighting_is_one_clear_error(tmp_path, capsys):
    root = tmp_path / "c"
    good_competition(root)
    assert main(_uncertainty_train(root, tmp_path / "a", "--stop-after-epochs", "1")) == 0
    capsys.readouterr()
    assert main(_uncertainty_train(root, tmp_path / "a", "--resume", "train.loss.head_weighting=fixed")) == 2
    error = capsys.readouterr().err
    assert "last.pt: this run was saved with other trained values" in error and "config.json" in error


# --- the demo --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory, "deepfashion")


def test_demo_layout(demo):
    root = demo.root
    train = pd.read_csv(root / "train.csv", dtype={"attribute_label": str}, keep_default_na=False)
    test = pd.read_csv(root / "test.csv")
    category = pd.read_csv(demo.answers_root / "category.csv")
    attribute = pd.read_csv(demo.answers_root / "attribute.csv", dtype={"attribute_label": str}, keep_default_na=False)

    assert list(train.columns) == ["file_path", "category_label", "attribute_label"]
    assert list(test.columns) == ["file_path"] and len(test) == 12
    assert train.file_path.str.fullmatch(r"train/\d{6}\.jpg").all()
    assert test.file_path.str.fullmatch(r"test/\d{6}\.jpg").all()
    assert train.category_label.between(0, 9).all() and category.category_label.between(0, 9).all()
    for labels in pd.concat([train.attribute_label, attribute.attribute_label]):
        values = [int(v) for v in labels.split()]
        assert values == sorted(set(values)) and all(0 <= v < 15 for v in values)
    assert len(DEMO_ATTRIBUTES) == 15

    assert list(category.columns) == ["file_path", "category_label"]
    assert list(attribute.columns) == ["file_path", "attribute_label"]
    assert category.file_path.tolist() == attribute.file_path.tolist() == test.file_path.tolist()
    images = open_images(root / p for p in pd.concat([train.file_path, test.file_path]))
    assert {(image.format, image.mode) for image in images} == {("JPEG", "RGB")}
