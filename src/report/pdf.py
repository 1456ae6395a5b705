"""The report as an A4 PDF within a page budget, from the same blocks as the HTML (reportlab platypus).

What fits is chosen, never cut: the PDF is laid out with every block at full size first; while it runs
over `max_pages`, the figures shrink and the blocks of the highest PDF priority are left out (the
HTML keeps everything). A table always stays on one page (KeepTogether; its font shrinks to fit the
page's width and height, and a wide table with few rows is turned on its side). Text is real text in
embedded DejaVu fonts (matplotlib ships them), so the PDF is searchable and needs no system library.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    Preformatted,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from src.atomic import write_bytes
from src.errors import PipelineError
from src.report.document import PDF_NEVER, Block
from src.report.markup import numeric_columns

MARGIN = 1.4 * cm
FRAME_WIDTH = A4[0] - 2 * MARGIN
FRAME_HEIGHT = A4[1] - 2 * MARGIN - 12  # the frame's own padding
# Tries in order: (highest PDF priority kept, figure scale); the first that fits the budget is written.
ATTEMPTS = ((3, 1.0), (3, 0.85), (2, 0.85), (2, 0.7), (1, 0.7), (1, 0.6), (0, 0.6), (0, 0.5), (0, 0.42))
# A wide table with at most this many rows is shown transposed (its columns become rows).
TRANSPOSE_MIN_COLUMNS, TRANSPOSE_MAX_ROWS = 10, 12
FONT_SIZES = (7.5, 7.0, 6.5, 6.0, 5.5, 5.0, 4.5)
CELL_PADDING = 2.5


@dataclass
class PdfLayout:
    """What the written PDF holds: its page count, the figure scale and the headings left out."""

    pages: int
    figure_scale: float
    left_out: list[str]


def write_pdf(blocks: list[Block], out_dir: Path, path: Path, max_pages: int) -> PdfLayout:
    """Lay the blocks out on at most `max_pages` A4 pages (see the module docstring) and write `path`."""
    pages = 0
    for keep, scale in ATTEMPTS:
        shown = visible_blocks(blocks, keep)
        left_out = [
            block.text
            for block in blocks
            if block.kind in ("h2", "h3") and block.priority != PDF_NEVER and not any(b is block for b in shown)
        ]
        data, pages = render_pdf(shown, Path(out_dir), scale, left_out)
        if pages <= max_pages:
            write_bytes(path, data)
            return PdfLayout(pages, scale, left_out)
    raise PipelineError(
        f"config report.max_pages: the report's essential content needs {pages} A4 pages even with "
        f"figures at {ATTEMPTS[-1][1]:.0%} size; raise report.max_pages (now {max_pages})"
    )


def visible_blocks(blocks: list[Block], keep: int) -> list[Block]:
    """The blocks of PDF priority <= `keep`, without headings left with nothing under them."""
    kept = [block for block in blocks if block.priority <= keep and block.priority != PDF_NEVER]
    shown = []
    for index, block in enumerate(kept):
        if block.kind in ("h2", "h3"):
            level = int(block.kind[1])
            following = next(
                (b for b in kept[index + 1 :] if not (b.kind in ("h2", "h3") and int(b.kind[1]) > level)), None
            )
            if following is None or following.kind in ("h1", "h2", "h3"):
                continue
        shown.append(block)
    return shown


def render_pdf(blocks: list[Block], out_dir: Path, figure_scale: float, left_out: list[str]) -> tuple[bytes, int]:
    """(PDF bytes, page count) of the blocks laid out with figures at `figure_scale` of the frame's width."""
    styles, story, pending = _styles(), [], []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3", "p"):
            pending.append((block.kind, Paragraph(inline_markup(block.text), styles[block.kind])))
            continue
        story += _kept_with_text(pending, _flowables(block, out_dir, figure_scale, styles))
        pending = []
    story += [flowable for _, flowable in pending]
    if left_out:
        story.append(
            Paragraph(
                escape(
                    "Left out of this PDF to fit the page budget (all of it is in index.html): "
                    + "; ".join(left_out)
                    + "."
                ),
                styles["note"],
            )
        )
    title = next((block.text for block in blocks if block.kind == "h1"), "report")
    buffer = io.BytesIO()
    margins = {f"{side}Margin": MARGIN for side in ("left", "right", "top", "bottom")}
    doc = SimpleDocTemplate(buffer, pagesize=A4, title=title, author="src.stage report", **margins)

    def footer(canvas, document) -> None:
        canvas.setFont("DejaVuSans", 7)
        canvas.setFillColor(colors.grey)
        canvas.drawRightString(A4[0] - MARGIN, MARGIN / 2, f"{title} - page {document.page}")

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue(), doc.page


def _kept_with_text(text: list[tuple[str, object]], content: list) -> list:
    """A table or figure kept on one page with the headings and text before it (never a heading alone at a page's
    foot); when all of that is taller than a page, only the text from the last heading on stays with it."""
    flowables = [flowable for _, flowable in text]
    if _height([*flowables, *content]) <= FRAME_HEIGHT:
        return [KeepTogether([*flowables, *content])]
    last_heading = max((i for i, (kind, _) in enumerate(text) if kind != "p"), default=len(text))
    lead, tail = flowables[:last_heading], flowables[last_heading:]
    if _height([*tail, *content]) <= FRAME_HEIGHT:
        return [*lead, KeepTogether([*tail, *content])]
    return [*flowables, KeepTogether(content)]


def _height(flowables: list) -> float:
    """Height of the flowables laid out one after another in the frame's width (paragraph spacing included)."""
    total = 0.0
    for flowable in flowables:
        total += flowable.wrap(FRAME_WIDTH, FRAME_HEIGHT)[1] + flowable.getSpaceBefore() + flowable.getSpaceAfter()
    return total


def _flowables(block: Block, out_dir: Path, figure_scale: float, styles: dict) -> list:
    if block.kind == "pre":
        return [Preformatted(block.text, styles["pre"])]
    if block.kind == "table":
        return [table_flowable(block.columns, block.rows), Spacer(1, 5)]
    return _figure(out_dir / block.name, block.text, figure_scale, styles)


def _figure(path: Path, caption: str, scale: float, styles: dict) -> list:
    """The PNG at `scale` of the frame's width (never wider than it was drawn), then its caption."""
    with PILImage.open(path) as image:
        width_px, height_px = image.size
    width = min(FRAME_WIDTH, width_px * 0.72) * scale  # drawn at 100 dpi: 0.72 pt per pixel at full size
    height = width * height_px / width_px
    limit = FRAME_HEIGHT * 0.6 * scale
    if height > limit:  # a tall figure (a confusion matrix) is bounded by the page's height instead
        width, height = width * limit / height, limit
    return [Image(str(path), width=width, height=height), Paragraph(escape(caption), styles["caption"])]


def table_flowable(columns: list[str], rows: list[list[str]]) -> Table:
    """A table that fits the frame: transposed when wide with few rows, the largest font that fits, text wrapped."""
    if len(columns) >= TRANSPOSE_MIN_COLUMNS and len(rows) <= TRANSPOSE_MAX_ROWS:
        columns, rows = (
            [columns[0], *(row[0] for row in rows)],
            [[name, *(row[i] for row in rows)] for i, name in enumerate(columns) if i],
        )
    numeric = numeric_columns(rows, len(columns))
    size, widths = _fit_font(columns, rows, numeric)
    cell = ParagraphStyle("cell", fontName="DejaVuSans", fontSize=size, leading=size * 1.18)
    header = ParagraphStyle("header", parent=cell, fontName="DejaVuSans-Bold")
    data = [[Paragraph(escape(name), header) for name in columns]]
    data += [[value if numeric[i] else Paragraph(escape(value), cell) for i, value in enumerate(row)] for row in rows]
    table = Table(data, colWidths=widths, repeatRows=1)
    style = [
        ("FONT", (0, 0), (-1, -1), "DejaVuSans", size),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#b0b7c0")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f4")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        *(("ALIGN", (i, 1), (i, -1), "RIGHT") for i, right in enumerate(numeric) if right),
        *(("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)),
        *(("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING), ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING)),
        *(("BACKGROUND", (0, r), (-1, r), colors.HexColor("#f8f9fa")) for r in range(2, len(data), 2)),
    ]
    table.setStyle(TableStyle(style))
    return table


def _fit_font(columns: list[str], rows: list[list[str]], numeric: list[bool]) -> tuple[float, list[float]]:
    """The largest font at which the table fits the page's height and width, and its column widths; when none
    fits the width, the largest that fits the height, numbers at their width and text columns wrapped."""
    tall_enough = [size for size in FONT_SIZES if (len(rows) + 1) * (size * 1.18 + 2.5) <= FRAME_HEIGHT * 0.9]
    for size in tall_enough:
        natural = _natural_widths(columns, rows, size)
        if sum(natural) <= FRAME_WIDTH:
            return size, natural
    size = (tall_enough or FONT_SIZES[-1:])[0]
    natural = _natural_widths(columns, rows, size)
    fixed = sum(width for width, right in zip(natural, numeric) if right)
    text_total = sum(width for width, right in zip(natural, numeric) if not right) or 1.0
    room = max(FRAME_WIDTH - fixed, FRAME_WIDTH * 0.25)
    widths = [width if right else width * room / text_total for width, right in zip(natural, numeric)]
    scale = min(1.0, FRAME_WIDTH / sum(widths))
    return size, [width * scale for width in widths]


def _natural_widths(columns: list[str], rows: list[list[str]], size: float) -> list[float]:
    """Each column's width on one line: its widest cell, the header in bold, plus the padding."""
    return [
        max(stringWidth(name, "DejaVuSans-Bold", size), *(stringWidth(row[i], "DejaVuSans", size) for row in rows))
        + 2 * CELL_PADDING
        + 1
        for i, name in enumerate(columns)
    ]


def inline_markup(text: str) -> str:
    """Markdown-ish `code` and **bold** as reportlab paragraph markup (the text itself escaped)."""
    parts = escape(text).split("`")
    text = "".join(f"<font face='DejaVuSansMono'>{p}</font>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


@lru_cache(maxsize=1)
def _styles() -> dict[str, ParagraphStyle]:
    _register_fonts()
    body = ParagraphStyle("p", fontName="DejaVuSans", fontSize=8.5, leading=11, spaceAfter=4)
    return {
        "h1": ParagraphStyle("h1", parent=body, fontName="DejaVuSans-Bold", fontSize=15, leading=19, spaceAfter=6),
        "h2": ParagraphStyle(
            "h2", parent=body, fontName="DejaVuSans-Bold", fontSize=12, leading=15, spaceBefore=8, spaceAfter=4
        ),
        "h3": ParagraphStyle(
            "h3", parent=body, fontName="DejaVuSans-Bold", fontSize=9.5, leading=12, spaceBefore=5, spaceAfter=3
        ),
        "p": body,
        "caption": ParagraphStyle("caption", parent=body, fontSize=7, leading=9, textColor=colors.HexColor("#59636e")),
        "note": ParagraphStyle("note", parent=body, fontSize=7.5, textColor=colors.HexColor("#59636e"), spaceBefore=6),
        "pre": ParagraphStyle("pre", parent=body, fontName="DejaVuSansMono", fontSize=5.5, leading=6.5),
    }


def _register_fonts() -> None:
    import matplotlib
    from reportlab.pdfbase.pdfmetrics import registerFontFamily

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = {
        "DejaVuSans": "DejaVuSans.ttf",
        "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique": "DejaVuSans-Oblique.ttf",
        "DejaVuSansMono": "DejaVuSansMono.ttf",
    }
    for name, file in names.items():
        pdfmetrics.registerFont(TTFont(name, os.fspath(folder / file)))
    registerFontFamily(
        "DejaVuSans",
        normal="DejaVuSans",
        bold="DejaVuSans-Bold",
        italic="DejaVuSans-Oblique",
        boldItalic="DejaVuSans-Bold",
    )


def page_count(path: Path) -> int | None:
    """Pages of a written PDF (None when it is not one); for status lines and checks."""
    try:
        from pypdf import PdfReader

        return len(PdfReader(str(path)).pages)
    except Exception:  # pypdf raises many kinds on a damaged file; None says "not a readable PDF"
        return None
