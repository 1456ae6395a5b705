"""Fuzz every reader with hypothesis: whatever the bytes, only PipelineError comes out (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from src.config import load_config
from src.data.images import load_rgb
from src.errors import PipelineError
from src.formats import create_format, format_names

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

csv_cells = st.text(alphabet=st.sampled_from(list('0123 ab,"\r\n\t-.\ufeff/x9')), max_size=80)


def _competition(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("attribute_id,attribute_name\n0,a\n1,b\n")
    (root / "train").mkdir(exist_ok=True)
    (root / "test").mkdir(exist_ok=True)
    for name in ("a", "b", "0", "1"):
        Image.new("RGB", (4, 4)).save(root / "train" / f"{name}.png")
    (root / "sample_submission.csv").write_text("id,attribute_ids\na,0\n")
    Image.new("RGB", (4, 4)).save(root / "test" / "a.png")


@FUZZ
@given(body=csv_cells)
def test_imet_train_csv_reader(tmp_path_factory, body):
    root = tmp_path_factory.mktemp("fz")
    _competition(root)
    (root / "train.csv").write_text("id,attribute_ids\n" + body, encoding="utf-8", newline="")
    try:
        table = create_format("imet", root).read_train()
        assert table.targets["attributes"].shape[1] == 2
    except PipelineError:
        pass


@FUZZ
@given(data=st.binary(max_size=200))
def test_imet_labels_and_submission_bytes(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fz")
    _competition(root)
    fmt = create_format("imet", root)
    submission = root / "submission.csv"
    submission.write_bytes(data)
    for action in (lambda: fmt.read_submission([submission]),):
        try:
            action()
        except PipelineError:
            pass
    (root / "labels.csv").write_bytes(data)
    try:
        create_format("imet", root).heads()
    except PipelineError:
        pass


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif"]))
def test_image_loader(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(data)
    try:
        array = load_rgb(path)
        assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    except PipelineError:
        pass


yaml_text = st.text(alphabet=st.sampled_from(list("abcdefgimnoprstu_.:- \n[]{}0123456789'\"#")), max_size=120)


@FUZZ
@given(text=yaml_text, override=st.text(alphabet=st.sampled_from(list("abdeinrt_.=0129[]")), max_size=20))
def test_config_loader(tmp_path_factory, text, override):
    path = tmp_path_factory.mktemp("cfg") / "exp.yaml"
    path.write_text("competition: x\nformat: imet\ndata:\n  root: input/x\n" + text)
    try:
        load_config(path, [override] if override else [])
    except PipelineError:
        pass


def test_fuzz_covers_every_registered_format():
    # Formats added later get their own fuzz tests in their test files; this guards the registry itself.
    assert "imet" in format_names()
