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
    assert on_cpu["mixed precision, channels_last"] == "off: trained on the CPU in float32 (both apply on CUDA only)"
    on_gpu = {row["setting"]: row["value"] for row in settings_rows(config, heads, ["NVIDIA H200", "cpu (2 threads)"])}
    assert on_gpu["mixed precision, channels_last"] == "AMP on, channels_last on (CUDA only)"


@pytest.mark.parametrize(
    "text, markup",
    [("a `b` c", "a <font face='DejaVuSansMono'>b</font> c"), ("**x** < y & z", "<b>x</b> &lt; y &amp; z")],
)
def test_inline_markup_is_escaped(text, markup):
    from src.report.pdf import inline_markup

    assert inline_markup(text) == markup


# --- typography: the fonts and sizes read back from the PDF, figures' text as placed ------------------------


def pdf_font_sizes(data_or_path) -> dict[tuple[str, float], int]:
    """{(base font, size in pt): characters set in it} over every page, from the content streams' Tf and Tj/TJ
    operators (a text matrix or transformation that scales text would change the size: the test refuses those)."""
    import io

    from pypdf.generic import ContentStream

    reader = PdfReader(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path))
    counts: dict[tuple[str, float], int] = {}
    for page in reader.pages:
        fonts = page["/Resources"]["/Font"]
        current = None
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"Tf":
                current = (str(fonts[operands[0]].get_object()["/BaseFont"]), float(operands[1]))
            elif operator == b"Tm":
                assert abs(float(operands[0])) == 1 and abs(float(operands[3])) == 1, f"scaled text matrix {operands}"
            elif operator in (b"Tj", b"'", b'"', b"TJ") and current is not None:
                text = operands[-1]
                shown = (
                    sum(len(part) for part in text if not isinstance(part, (int, float)))
                    if operator == b"TJ"
                    else len(text)
                )
                counts[current] = counts.get(current, 0) + shown
    return counts


def figure_blocks(tmp_path):
    """A Document holding one of each of the report's figures, drawn from small hand-made inputs."""
    import pandas as pd

    from src.report import figures
    from src.report.inputs import RunRecord
    from src.report.ranking import ranking_scores

    rng = np.random.default_rng(0)
    multi = HeadSpec("attributes", "multilabel", tuple(f"Attribute_number_{i}" for i in range(12)))
    single = HeadSpec("category", "softmax", tuple(f"class_{i}" for i in range(6)))
    many = HeadSpec("many", "softmax", tuple(f"a_rather_long_class_name_{i}" for i in range(30)))
    doc = Document(tmp_path)
    epochs = pd.DataFrame(
        {
            "epoch": range(1, 9),
            "train_loss": np.linspace(1.0, 0.2, 8),
            "valid_loss": [0.9, 0.7, 0.6, 0.55, 0.6, 0.7, 0.8, 0.9],
            "score": np.linspace(0.5, 0.8, 8),
            "train_score": np.linspace(0.5, 0.95, 8),
        }
    )
    runs = [RunRecord(f"fold-{k}", k, tmp_path, epochs=epochs, summary={"best_epoch": 4}) for k in range(5)]
    doc.figure("curves.png", figures.training_curves_figure(runs, "mean_accuracy"), "curves")
    true = rng.random((200, 12)) < 0.3
    probs = np.clip(true * 0.4 + rng.random((200, 12)) * 0.6, 0, 1)
    ranking = ranking_scores(true, probs)
    doc.figure("pr.png", figures.pr_roc_figure(multi, probs, true.astype(np.uint8), ranking), "pr")
    grid = np.linspace(0.01, 0.99, 99)
    honest = [
        {"method": "exact", "optimistic": 0.81, "honest": 0.79},
        {"method": "global, at least 1 and at most 3 labels per image", "optimistic": 0.8, "honest": float("nan")},
        {"method": "0.5 (no tuning)", "optimistic": 0.7, "honest": 0.7},
    ]
    doc.figure("th.png", figures.threshold_figure(multi, np.sin(grid * 3), grid, None, honest, "exact"), "th")
    for head in (single, many):
        matrix = rng.integers(0, 30, (head.n_outputs, head.n_outputs))
        doc.figure(f"confusion_{head.name}.png", figures.confusion_figure(head, matrix), "confusion")
    rows = np.arange(10)
    thumbs = {int(r): rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for r in rows}
    labels = {"attributes": probs > 0.5, "category": rng.integers(0, 6, 200)}
    targets = {"attributes": true.astype(np.uint8), "category": rng.integers(0, 6, 200)}
    scores = rng.random(200)
    ids = [f"images/a_long_file_name_{i:05d}.jpg" for i in range(200)]
    grid_fig = figures.example_grid_figure([single, multi], rows[:5], rows[5:], thumbs, ids, targets, labels, scores)
    doc.figure("examples.png", grid_fig, "examples")
    network = describe_network("test_efficientnet", [single, multi], 32, drop_rate=0.2)
    losses = {"category": "cross-entropy (label smoothing 0.1)", "attributes": "binary cross-entropy, weight 4"}
    doc.figure("network.png", figures.network_figure(network, losses), "network")
    return doc


def test_every_figure_text_is_at_least_8pt_as_placed_on_the_page(tmp_path):
    from src.report.pdf import figure_placement

    doc = figure_blocks(tmp_path)
    placed = [block for block in doc.blocks if block.kind == "figure"]
    assert len(placed) == 7
    for block in placed:
        width, _ = figure_placement(block, tmp_path)
        scale = width / (block.size_in[0] * 72)
        assert block.min_font * scale >= 8.0 - 1e-6, f"{block.name}: smallest text {block.min_font * scale:.2f} pt"


def test_network_box_text_stays_inside_its_box():
    from matplotlib.patches import FancyBboxPatch

    from src.report import figures

    heads = [HeadSpec("category", "softmax", tuple("abcd")), HeadSpec("attributes", "multilabel", tuple("xyz"))]
    network = describe_network("test_efficientnet", heads, 32, drop_rate=0.2)
    losses = {
        "category": "cross-entropy (label smoothing 0.1)",
        "attributes": "binary cross-entropy, weight 4 and a loss name longer than any box is wide",
    }
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures.network_figure(network, losses)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [patch.get_window_extent(renderer) for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    texts = [text for text in ax.texts if text.get_text().strip()]
    inside = 0
    for text in texts:
        extent = text.get_window_extent(renderer)
        holder = [box for box in boxes if box.contains(*extent.intervalx.mean(keepdims=True), extent.intervaly.mean())]
        if not holder:
            continue  # the title above the diagram
        box = holder[0]
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, (
            text.get_text()
        )
        inside += 1
    assert inside >= len(boxes) * 2, "every box holds at least a title and a line of text"
    shown = " ".join(text.get_text() for text in texts).replace("\n", " ")
    assert "label smoothing 0.1)" in shown and "wide" in shown, "the loss is shown whole, wrapped, not cut"


@pytest.mark.parametrize("font, size, family", [("dejavu", 8.5, "DejaVuSans"), ("arial", 10.0, "Helvetica")])
def test_pdf_fonts_and_sizes_read_back(tmp_path, font, size, family):
    from src.report.document import Typography

    doc = figure_blocks(tmp_path)
    doc.blocks.insert(0, type(doc.blocks[0])("h1", "Typography test"))
    doc.section("A section")
    doc.paragraph("Body text " * 60 + "with `code` and →.")
    doc.table([{"name": f"row {i}", "value": i / 3} for i in range(30)], "t")
    doc.table([{"run": "fold-0", **{f"a very wide column {i}": "some text" for i in range(14)}}], "wide")
    layout = write_pdf(doc.blocks, tmp_path, tmp_path / "out.pdf", max_pages=20, typography=Typography(font, size))
    sizes = pdf_font_sizes(tmp_path / "out.pdf")
    assert layout.pages >= 2 and sizes
    assert all(name.split("+")[-1].lstrip("/").startswith(family) for name, _ in sizes), sorted(sizes)
    assert min(point for _, point in sizes) >= 8.0, sorted(sizes)
    regular = {point: count for (name, point), count in sizes.items() if name.split("+")[-1].lstrip("/") == family}
    assert max(regular, key=regular.get) in (size, max(size - 1.0, 8.0)), (
        regular
    )  # the body (or tables a point under it)
    assert size in regular
    assert "Body text" in " ".join(page_texts(tmp_path / "out.pdf"))


def test_smallest_font_sees_legends_and_ticks_but_not_hidden_axes(tmp_path):
    from src.report.document import smallest_font

    def drawn(build) -> float:
        fig = Figure(figsize=(7, 3))
        build(fig.subplots())
        fig.savefig(tmp_path / "f.png")
        return smallest_font(fig)

    assert drawn(lambda ax: (ax.plot([1, 2], label="x"), ax.legend(fontsize=7))) == 7.0
    assert drawn(lambda ax: ax.set_xticks([0, 1], ["a", "b"], fontsize=6)) == 6.0
    assert drawn(lambda ax: (ax.set_axis_off(), ax.set_title("t", fontsize=9))) == 9.0


# --- filling the pages: no page but the last left more than a third empty ------------------------------------------


def test_empty_share_of_a_page_is_measured_from_the_pdf(tmp_path):
    """The measure sees a page that a figure too tall for what is left of it leaves half empty (so it can fail)."""
    from helpers import pdf_empty_shares

    doc = Document(tmp_path)
    doc.title("Gap test")
    doc.paragraph("Words to fill the top of the page. " * 120)
    fig = Figure(figsize=(7, 7.5))
    fig.subplots().plot(np.arange(10))
    doc.figure("tall.png", fig, "a figure taller than what is left of page 1")
    data, pages = render_pdf(doc.blocks, tmp_path, 1.0, [])
    (tmp_path / "gap.pdf").write_bytes(data)
    shares = pdf_empty_shares(tmp_path / "gap.pdf")
    assert pages == len(shares) == 2
    assert shares[0] > 0.4, shares  # the figure went to page 2, leaving the rest of page 1 empty
    assert shares[1] < 0.3, shares


def test_text_before_a_table_fills_the_page_and_left_out_detail_fills_the_last_page(tmp_path):
    """Paragraphs before a table that moves to the next page stay behind to fill the page (only its last paragraph and
    heading go with it); detail that does not fit in place but fits after the last section goes there, named."""
    from helpers import pdf_empty_shares

    doc = Document(tmp_path)
    doc.title("Fill test")
    doc.section("Text then a table")
    for index in range(6):
        doc.paragraph(f"Paragraph {index}. " + "Words that fill the page before the table. " * 30)
    doc.subsection("The table")
    doc.paragraph("The table below.")
    doc.table([{"row": f"row-{i:02d}", "value": i / 7} for i in range(40)], "long")
    layout = write_pdf(doc.blocks, tmp_path, tmp_path / "flow.pdf", max_pages=3)
    texts, shares = page_texts(tmp_path / "flow.pdf"), pdf_empty_shares(tmp_path / "flow.pdf")
    assert layout.pages == len(texts) == 2 and shares[0] < 1 / 3, shares
    assert "Paragraph 5" in texts[0], "the text before the table fills page 1"
    assert "The table below." in texts[1] and "row-00" in texts[1] and "row-39" in texts[1]

    doc = Document(tmp_path)
    doc.title("Appendix test")
    doc.section("Detail", priority=1)
    doc.paragraph("Detail text. " * 40)
    doc.table([{"k": f"d-{i}", "v": i} for i in range(6)], "detail")
    doc.section("A long table")
    doc.table([{"row": f"row-{i:02d}", "value": i / 7} for i in range(50)], "long")
    doc.section("Closing")
    doc.paragraph("The end. " * 350)
    layout = write_pdf(doc.blocks, tmp_path, tmp_path / "out.pdf", max_pages=2)
    texts = page_texts(tmp_path / "out.pdf")
    assert layout.pages == len(texts) == 2 and layout.left_out == []
    # In place, the detail would push the table to page 2 and the closing text onto a third page.
    assert "row-00" in texts[0] and "row-49" in texts[0] and "Detail text" not in texts[0]
    end = texts[-1]
    assert end.index("The end.") < end.index("More detail (placed here to fit the pages)") < end.index("d-5")


def test_over_budget_essentials_drop_figures_in_the_stated_order_and_only_too_long_notes_are_refused(tmp_path):
    """Past the detail, the expendable figures go in their order (examples first), each named in one logged line;
    the required table and the notes always stay; notes too long for the pages alone are refused in one line."""
    from src.errors import PipelineError

    def document(notes: int) -> Document:
        doc = Document(tmp_path)
        doc.title("Fallback test")
        doc.section("Required")
        doc.table([{"attribute": f"attr-{i}", "accuracy": i / 40} for i in range(20)], "required")
        for rank, name in ((2, "secondary"), (1, "examples")):
            fig = Figure(figsize=(7, 4))
            fig.subplots().plot(np.arange(10) * rank)
            doc.figure(f"{name}.png", fig, f"the {name} figure", fallback=rank, label=f"{name} figure")
        doc.section("Discussion")
        for index in range(notes):
            doc.paragraph(f"Note {index}. " + "What the numbers say, in the student's words. " * 12)
        return doc

    logged: list[str] = []
    layout = write_pdf(document(14).blocks, tmp_path, tmp_path / "out.pdf", max_pages=2, log=logged.append)
    text = " ".join(page_texts(tmp_path / "out.pdf"))
    assert layout.pages <= 2 and "attr-19" in text and "Note 13." in text
    assert layout.left_out == ["examples figure"] and "the secondary figure" in text
    assert logged == ["report.pdf: left out 'examples figure' to fit report.max_pages=2"]
    with pytest.raises(PipelineError) as error:
        write_pdf(document(60).blocks, tmp_path, tmp_path / "out.pdf", max_pages=2)
    assert str(error.value).startswith("config report.max_pages: the report's required content alone")
    assert "shorten report.notes or raise report.max_pages (now 2)" in str(error.value) and "\n" not in str(error.value)


def test_a_detail_subsection_trades_places_with_its_neighbour_when_that_fills_the_page(tmp_path):
    """A required table too tall for what is left of a page moves on; the detail subsection after it (a small table)
    is laid out before it instead, so the page is filled rather than left a third empty."""
    from helpers import pdf_empty_shares

    doc = Document(tmp_path)
    doc.title("Order test")
    doc.section("Model")
    fig = Figure(figsize=(7, 6.2))
    fig.subplots().plot(np.arange(10))
    doc.figure("diagram.png", fig, "the diagram")
    doc.subsection("Settings")
    doc.table([{"setting": f"setting-{i:02d}", "value": i} for i in range(24)], "settings")
    doc.subsection("Layers", priority=1)
    doc.table([{"layer": f"layer-{i}", "params": i * 100} for i in range(8)], "layers")
    doc.section("Closing")
    doc.paragraph("The end. " * 40)
    data, _ = render_pdf(visible_blocks(doc.blocks, 9), tmp_path, 1.0, [])
    (tmp_path / "as-written.pdf").write_bytes(data)
    assert pdf_empty_shares(tmp_path / "as-written.pdf")[0] > 1 / 3, "as written, the settings leave page 1 a gap"
    write_pdf(doc.blocks, tmp_path, tmp_path / "out.pdf", max_pages=3)
    texts, shares = page_texts(tmp_path / "out.pdf"), pdf_empty_shares(tmp_path / "out.pdf")
    assert "layer-7" in texts[0] and "setting-00" not in texts[0], "the layers fill page 1, the settings follow"
    assert "setting-00" in texts[1] and "setting-23" in texts[1]
    assert all(share < 1 / 3 for share in shares[:-1]), shares
