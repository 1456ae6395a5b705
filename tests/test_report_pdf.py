"""The report's PDF renderer, network summary and settings table on small hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from pypdf import PdfReader

from src.formats.base import HeadSpec
from src.report import Document, describe_network, losses_by_head, settings_rows
from src.report.pdf import render_pdf, visible_blocks, write_pdf


def page_texts(data_or_path) -> list[str]:
    import io

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    return [page.extract_text() for page in PdfReader(source).pages]


def test_a_table_is_never_cut_across_pages(tmp_path):
    doc = Document(tmp_path)
    doc.title("Table test")
    for index in range(9):
        doc.paragraph(f"Filler paragraph {index}. " + "Words to fill the page. " * 40)
    rows = [{"row": f"row-{i:02d}", "value": i / 7} for i in range(45)]
    doc.section("The long table")
    doc.table(rows, "long")
    data, pages = render_pdf(doc.blocks, tmp_path, 1.0, [])
    texts = page_texts(data)
    assert pages == len(texts) >= 2
    holding = [index for index, text in enumerate(texts) if "row-" in text]
    assert len(holding) == 1, "all 45 rows on one page"
    assert "row-00" in texts[holding[0]] and "row-44" in texts[holding[0]] and "The long table" in texts[holding[0]]


def test_blocks_past_the_budget_are_left_out_by_priority_named_and_put_back_where_they_fit(tmp_path):
    doc = Document(tmp_path)
    doc.title("Budget test")
    doc.section("Essential")
    doc.paragraph("must stay")
    for index in range(3):
        doc.section(f"Optional {index}", priority=2)
        fig = Figure(figsize=(8, 8))
        fig.subplots().plot(np.arange(10) ** (index + 1))
        doc.figure(f"f{index}.png", fig, f"figure {index}")
    doc.preformatted("never in the PDF")
    layout = write_pdf(doc.blocks, tmp_path, tmp_path / "out.pdf", max_pages=1)
    text = " ".join(page_texts(tmp_path / "out.pdf"))
    assert layout.pages == 1 and "must stay" in text and "never in the PDF" not in text
    # Left out whole, then put back most needed first while the page still holds it: the first figure fits.
    assert layout.left_out == ["Optional 1", "Optional 2"] and "Optional 0" in text and "figure 0" in text
    assert "Left out of this PDF to fit the page budget" in text and "Optional 2" in text
    assert "index.html" not in text, "the PDF travels without the HTML: it must not send the reader there"
    # A heading whose content is all left out goes too.
    assert [block.text for block in visible_blocks(doc.blocks, 0) if block.kind == "h2"] == ["Essential"]


def test_a_wide_table_with_few_rows_is_turned_on_its_side(tmp_path):
    doc = Document(tmp_path)
    doc.table(
        [
            {"run": "fold-0", **{f"field {i}": i for i in range(14)}},
            {"run": "fold-1", **{f"field {i}": i * 2 for i in range(14)}},
        ],
        "wide",
    )
    data, _ = render_pdf(doc.blocks, tmp_path, 1.0, [])
    text = page_texts(data)[0]
    # Read in row order: the runs head the columns, then one row per field (not one row per run).
    assert (
        text.index("run") < text.index("fold-0") < text.index("fold-1") < text.index("field 0") < text.index("field 13")
    )


def test_network_summary_counts_match_the_model():
    from src.model import build_model, count_parameters

    heads = [HeadSpec("category", "softmax", tuple("abcd")), HeadSpec("attributes", "multilabel", tuple("xyz"))]
    network = describe_network("test_efficientnet", heads, 32, drop_rate=0.2)
    total, trainable = count_parameters(build_model("test_efficientnet", heads))
    assert (network.total_params, network.trainable_params) == (total, trainable)
    parts = [row["part"] for row in network.parts]
    assert parts[0] == "stem" and parts[-1] == "neck + pool" and "blocks.0" in parts
    assert sum(row["params"] for row in network.parts) + sum(h["params"] for h in network.heads) == total
    assert [(h["head"], h["outputs"], h["params"]) for h in network.heads] == [
        ("category", 4, network.feature_width * 4 + 4),
        ("attributes", 3, network.feature_width * 3 + 3),
    ]
    assert "Total params" in network.text


def test_settings_name_the_losses_and_tricks_of_the_saved_config():
    heads = [
        HeadSpec("category", "softmax", tuple("ab")),
        HeadSpec("attributes", "multilabel", tuple("xy"), loss_weight=0.5),
    ]
    config = {
        "model": {"name": "resnet18", "pretrained": "resnet18.a1_in1k", "drop_rate": 0.1},
        "train": {
            "lr": 0.001,
            "weight_decay": 0.01,
            "epochs": 5,
            "warmup_epochs": 1,
            "batch_size": 32,
            "accumulate_steps": 2,
            "ema_decay": 0.999,
            "early_stopping_patience": 3,
            "loss": {"name": "focal", "focal_gamma": 2.0, "label_smoothing": 0.1, "head_weighting": "uncertainty"},
            "callbacks": [{"name": "mixup", "alpha": 0.2}],
        },
        "augment": {"train": [{"name": "HorizontalFlip", "p": 0.5}], "eval": []},
        "predict": {"tta_flip": True},
        "thresholds": {"method": "exact", "shrink_strength": 10},
    }
    assert losses_by_head(config, heads) == {
        "category": "cross-entropy (label smoothing 0.1)",
        "attributes": "focal (gamma 2), weight 0.5",
    }
    rows = {row["setting"]: row["value"] for row in settings_rows(config, heads)}
    assert rows["backbone"] == "resnet18, pretrained resnet18.a1_in1k"
    assert rows["head weighting"].startswith("learned uncertainty")
    assert rows["batch"] == "32 x 2 accumulated steps" and rows["EMA of weights"] == "decay 0.999"
    assert rows["train augmentations"] == "HorizontalFlip(p=0.5)" and rows["eval augmentations"] == "none"
    assert rows["training tricks (callbacks)"] == "mixup(alpha=0.2)"
    assert "early stopping after 3" in rows["schedule"] and rows["test-time augmentation"].startswith("horizontal flip")
    assert rows["mixed precision, channels_last"] == "AMP on, channels_last on (CUDA only)"
    on_cpu = {row["setting"]: row["value"] for row in settings_rows(config, heads, ["cpu (2 threads)"])}
    assert on_cpu["mixed precision, channels_last"] == "off: trained on the CPU (both apply on CUDA only)"
    on_gpu = {row["setting"]: row["value"] for row in settings_rows(config, heads, ["NVIDIA H200", "cpu (2 threads)"])}
    assert on_gpu["mixed precision, channels_last"] == "AMP on, channels_last on (CUDA only)"


@pytest.mark.parametrize(
    "text, markup",
    [("a `b` c", "a <font face='DejaVuSansMono'>b</font> c"), ("**x** < y & z", "<b>x</b> &lt; y &amp; z")],
)
def test_inline_markup_is_escaped(text, markup):
    from src.report.pdf import inline_markup

    assert inline_markup(text) == markup
