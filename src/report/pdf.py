"""The report as an A4 PDF within a page budget, from the same blocks as the HTML (reportlab platypus).

What fits is chosen, never shrunk: while the PDF runs over `max_pages`, the blocks of the highest PDF
priority are left out (the HTML keeps everything); then what was left out is put back, most needed
first, wherever it still fits the budget, so the last pages are not left half empty. No text is set
below MIN_FONT_PT (8 pt): figures are drawn at the size they are placed (their text sized for it), and a
table keeps to one page (KeepTogether; its font from a point under the body down to 8 pt, text columns
wrapped, and a wide table with few rows turned on its side). Text is real text: DejaVu Sans embedded
from matplotlib's copy, or the base-14 Helvetica (`arial`: viewers show Arial), so the PDF is searchable
and needs no system library.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
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
    Flowable,
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
from src.report.document import DEFAULT_TYPOGRAPHY, MIN_FONT_PT, PDF_NEVER, Block, Typography
from src.report.markup import numeric_columns

MARGIN = 1.4 * cm
FRAME_WIDTH = A4[0] - 2 * MARGIN
FRAME_HEIGHT = A4[1] - 2 * MARGIN - 12  # the frame's own padding
# Tries in order: the highest PDF priority kept; the first that fits the budget is filled up and written.
KEEP_LEVELS = (3, 2, 1, 0)
# Left-out groups tried back in after that (each try lays the PDF out again).
MAX_FILL_TRIES = 10
# A wide table with at most this many rows is shown transposed (its columns become rows).
TRANSPOSE_MIN_COLUMNS, TRANSPOSE_MAX_ROWS = 10, 12
CELL_PADDING = 2.5
# (regular, bold, italic, fixed-width) faces of each report.font.
FACES = {
    "dejavu": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono"),
    "arial": ("Helvetica", "Helvetica-Bold", "Helvetica-Oblique", "Helvetica"),  # a course asking for Arial: code too
}
# Characters the base-14 fonts (WinAnsi) lack, as the nearest ASCII.
_ASCII_FOR = str.maketrans({"→": "->", "←": "<-", "≥": ">=", "≤": "<=", "−": "-", "≈": "~", "✓": "v", "✗": "x"})


@dataclass
class PdfLayout:
    """What the written PDF holds: its page count, the figure scale and the headings left out."""

    pages: int
    figure_scale: float
    left_out: list[str]


def write_pdf(
    blocks: list[Block],
    out_dir: Path,
    path: Path,
    max_pages: int,
    typography: Typography = DEFAULT_TYPOGRAPHY,
    log: Callable[[str], None] | None = None,
) -> PdfLayout:
    """Lay the blocks out on at most `max_pages` A4 pages (see the module docstring) and write `path`; `log` gets one
    line per thing left out. Where a detail subsection may go before its previous sibling, both orders are laid out
    and the one showing the most, then leaving the least empty space on a page but the last, is kept."""
    if typography.font == "arial":
        blocks = [_winansi(block) for block in blocks]
    best = None
    for order in _orders(blocks):
        shown, layout = _layout(order, Path(out_dir), max_pages, typography)
        worst_gap = max(layout.gaps[:-1], default=0.0)
        if best is None or (-shown, round(worst_gap, 2)) < (-best[0], round(best[1], 2)):
            best = (shown, worst_gap, layout)
    chosen = best[2]
    data, pages, _ = _build(chosen.shown, Path(out_dir), chosen.left_out, typography)  # now with the images
    write_bytes(path, data)
    left_out = chosen.left_out
    for thing in left_out:
        (log or (lambda line: None))(f"report.pdf: left out {thing!r} to fit report.max_pages={max_pages}")
    return PdfLayout(pages, 1.0, left_out)


def _layout(blocks: list[Block], out_dir: Path, max_pages: int, typography: Typography) -> tuple[int, Rendered]:
    """(blocks shown, the layout) of the blocks in this order: fitted to the budget, then left-out detail put back
    where it belongs, else after the last section, most needed first, while the pages hold it."""
    chosen, rendered = _fit_budget(blocks, out_dir, max_pages, typography)
    appended: list[list[int]] = []
    for group in _left_out_groups(blocks, chosen)[:MAX_FILL_TRIES]:
        parent = _parent_index(blocks, group[0])
        if parent is not None and id(blocks[parent]) not in chosen:
            continue
        parent_at_end = any(parent in g for g in appended)
        tries = [] if parent_at_end else [appended]  # in place; a subsection of a moved section only after it
        if blocks[group[0]].kind in ("h2", "h3"):
            tries.append([*appended, group])
        more = chosen | {id(blocks[index]) for index in group}
        for tried_appended in tries:
            at_end = {id(blocks[i]) for g in tried_appended for i in g}
            tried = _render_chosen(blocks, more - at_end, out_dir, typography, tried_appended)
            if tried.pages <= max_pages:
                chosen, appended, rendered = more, tried_appended, tried
                break
    return len(chosen), rendered


def _orders(blocks: list[Block]) -> list[list[Block]]:
    """The blocks as given, and with each detail subsection (an h3 of a higher PDF priority than its section) moved
    before its previous sibling subsection: detail may trade places with its neighbour to fill a page."""
    heads = [i for i, block in enumerate(blocks) if block.kind in ("h1", "h2", "h3")]
    ends = {
        start: next((i for i in heads if i > start and int(blocks[i].kind[1]) <= 3), len(blocks)) for start in heads
    }
    orders = [blocks]
    for index, start in enumerate(heads):
        previous = heads[index - 1] if index else None
        if blocks[start].kind != "h3" or previous is None or blocks[previous].kind != "h3":
            continue
        section = next((blocks[i] for i in reversed(heads[:index]) if blocks[i].kind == "h2"), None)
        if section is None or blocks[start].priority <= section.priority or blocks[start].priority == PDF_NEVER:
            continue
        end = ends[start]
        orders.append(blocks[:previous] + blocks[start:end] + blocks[previous:start] + blocks[end:])
    return orders


def _fit_budget(
    blocks: list[Block], out_dir: Path, max_pages: int, typography: Typography
) -> tuple[set[int], Rendered]:
    """The blocks (by id) of the first layout within the budget, and that layout: detail left out by priority
    (highest first), then, when the essential content alone is too long, its expendable figures in their stated
    order (Block.fallback: 1 first); refused when what is left (the notes, the required tables) cannot fit."""
    for keep in KEEP_LEVELS:
        chosen = {id(block) for block in blocks if block.priority <= keep and block.priority != PDF_NEVER}
        rendered = _render_chosen(blocks, chosen, out_dir, typography)
        if rendered.pages <= max_pages:
            return chosen, rendered
    for rank in sorted({block.fallback for block in blocks if block.fallback}):
        chosen -= {id(block) for block in blocks if block.fallback == rank}
        rendered = _render_chosen(blocks, chosen, out_dir, typography)
        if rendered.pages <= max_pages:
            return chosen, rendered
    raise PipelineError(
        f"config report.max_pages: the report's required content alone (the summary, the required tables and "
        f"report.notes) needs {rendered.pages} A4 pages; shorten report.notes or raise report.max_pages (now {max_pages})"
    )


def _render_chosen(
    blocks: list[Block],
    chosen: set[int],
    out_dir: Path,
    typography: Typography,
    appended: list[list[int]] | None = None,
) -> Rendered:
    """The PDF of the `chosen` blocks (by id) in order, then the `appended` groups
    (indices) under a closing section, without headings left empty."""
    shown = _without_empty_headings([block for block in blocks if id(block) in chosen])
    if appended:
        shown += [Block("h2", APPENDIX_HEADING)] + [_moved(blocks, index) for group in appended for index in group]
    placed = {id(block) for block in shown} | {id(blocks[i]) for group in appended or [] for i in group}
    left_out = _left_out_names(blocks, placed)
    _, pages, gaps = _build(shown, out_dir, left_out, typography, draft=True)
    return Rendered(shown, pages, left_out, gaps)


class Rendered(NamedTuple):
    """A trial layout: the blocks it shows, its pages, what was left out, and each page's empty share of the frame's
    height."""

    shown: list[Block]
    pages: int
    left_out: list[str]
    gaps: list[float]


# Detail that did not fit where it belongs but fits after the last section goes under this heading.
APPENDIX_HEADING = "More detail (placed here to fit the pages)"


def _moved(blocks: list[Block], index: int) -> Block:
    """A block as shown under APPENDIX_HEADING: a heading one level down and naming the section it comes from."""
    from dataclasses import replace

    block = blocks[index]
    if block.kind not in ("h2", "h3"):
        return block
    parent = next((b.text for b in reversed(blocks[:index]) if b.kind == "h2"), "") if block.kind == "h3" else ""
    return replace(block, kind="h3", text=f"{block.text} ({parent})" if parent else block.text)


def _left_out_names(blocks: list[Block], placed: set[int]) -> list[str]:
    """The headings left out, and each labelled block (a figure the budget dropped) left out under a heading shown."""
    names, heading_shown = [], True
    for block in blocks:
        if block.priority == PDF_NEVER:
            continue
        if block.kind in ("h1", "h2", "h3"):
            heading_shown = id(block) in placed
            if not heading_shown and block.kind != "h1":
                names.append(block.text)
        elif block.label and heading_shown and id(block) not in placed:
            names.append(block.label)
    return names


def _left_out_groups(blocks: list[Block], chosen: set[int]) -> list[list[int]]:
    """Runs of left-out blocks (indices), each from a heading or a change of priority, most needed first."""
    groups: list[list[int]] = []
    for index, block in enumerate(blocks):
        if id(block) in chosen or block.priority == PDF_NEVER:
            continue
        previous = groups[-1][-1] if groups else None
        starts = previous != index - 1 or block.kind in ("h2", "h3") or blocks[previous].priority != block.priority
        if starts:
            groups.append([index])
        else:
            groups[-1].append(index)
    return sorted(groups, key=lambda group: (blocks[group[0]].priority, group[0]))


def _parent_index(blocks: list[Block], first: int) -> int | None:
    """Index of the heading a group at `first` sits under (None at the top), so a subsection never comes back alone."""
    level = int(blocks[first].kind[1]) if blocks[first].kind in ("h2", "h3") else 9
    return next(
        (
            i
            for i in range(first - 1, -1, -1)
            if blocks[i].kind in ("h1", "h2", "h3") and int(blocks[i].kind[1]) < level
        ),
        None,
    )


def _winansi(block: Block) -> Block:
    """The block with text the base-14 fonts can show (their WinAnsi encoding has no arrows or maths signs)."""
    from dataclasses import replace

    def plain(text: str) -> str:
        return text.translate(_ASCII_FOR).encode("cp1252", "replace").decode("cp1252")

    return replace(
        block,
        text=plain(block.text),
        pdf_text=None if block.pdf_text is None else plain(block.pdf_text),
        columns=[plain(c) for c in block.columns],
        rows=[[plain(v) for v in row] for row in block.rows],
    )


def visible_blocks(blocks: list[Block], keep: int) -> list[Block]:
    """The blocks of PDF priority <= `keep`, without headings left with nothing under them."""
    return _without_empty_headings(
        [block for block in blocks if block.priority <= keep and block.priority != PDF_NEVER]
    )


def _without_empty_headings(kept: list[Block]) -> list[Block]:
    """`kept` less the headings with nothing under them (the next block is another heading of the same or a
    higher level, or none)."""
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


def render_pdf(
    blocks: list[Block],
    out_dir: Path,
    figure_scale: float,
    left_out: list[str],
    typography: Typography = DEFAULT_TYPOGRAPHY,
) -> tuple[bytes, int]:
    """(PDF bytes, page count) of the blocks laid out with figures at `figure_scale` of their drawn size."""
    data, pages, _ = _build(blocks, out_dir, left_out, typography, figure_scale)
    return data, pages


def _build(
    blocks: list[Block],
    out_dir: Path,
    left_out: list[str],
    typography: Typography,
    figure_scale: float = 1.0,
    draft: bool = False,
) -> tuple[bytes, int, list[float]]:
    """(PDF bytes, page count, each page's share of the frame's height left empty at its foot); a `draft` holds each
    figure's place but not its pixels (the same pages, for a trial layout)."""
    styles, story, pending = _styles(typography), [], []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3", "p"):
            text = block.pdf_text if block.pdf_text is not None else block.text
            pending.append((block.kind, Paragraph(inline_markup(text, styles["mono"]), styles[block.kind])))
            continue
        story += _kept_with_text(pending, _flowables(block, out_dir, figure_scale, styles, draft))
        pending = []
    story += [flowable for _, flowable in pending]
    if left_out:
        note = "Left out of this PDF to fit the page budget: " + "; ".join(left_out) + "."
        story.append(Paragraph(escape(note), styles["note"]))
    title = next((block.text for block in blocks if block.kind == "h1"), "report")
    buffer = io.BytesIO()
    margins = {f"{side}Margin": MARGIN for side in ("left", "right", "top", "bottom")}
    doc = _GapsDocTemplate(buffer, pagesize=A4, title=title, author="src.stage report", **margins)

    def footer(canvas, document) -> None:
        canvas.setFont(styles["p"].fontName, MIN_FONT_PT)
        canvas.setFillColor(colors.grey)
        canvas.drawRightString(A4[0] - MARGIN, MARGIN / 2, f"{title} - page {document.page}")

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue(), doc.page, doc.gaps


class _GapsDocTemplate(SimpleDocTemplate):
    """SimpleDocTemplate that notes, as each page ends, the share of its frame's height left empty at the foot."""

    def afterPage(self) -> None:
        frame = self.frame
        self.__dict__.setdefault("gaps", []).append(max(0.0, (frame._y - frame._y1p) / frame._aH))


def _kept_with_text(text: list[tuple[str, object]], content: list) -> list:
    """A table or figure kept on one page with the text just before it: the headings right before it, or its last
    paragraph and the headings right before that (so no heading is left alone at a page's foot); earlier text is free
    to fill the page before it (headings keep with what follows them)."""
    flowables = [flowable for _, flowable in text]
    start = len(text)
    while start and text[start - 1][0] != "p":
        start -= 1
    if start == len(text) and start:  # the text ends in a paragraph: it goes with the content, with its headings
        start -= 1
        while start and text[start - 1][0] != "p":
            start -= 1
    if _height([*flowables[start:], *content]) <= FRAME_HEIGHT:
        return [*flowables[:start], KeepTogether([*flowables[start:], *content])]
    return [*flowables, KeepTogether(content)]


def _height(flowables: list) -> float:
    """Height of the flowables laid out one after another in the frame's width (paragraph spacing included)."""
    total = 0.0
    for flowable in flowables:
        total += flowable.wrap(FRAME_WIDTH, FRAME_HEIGHT)[1] + flowable.getSpaceBefore() + flowable.getSpaceAfter()
    return total


def _flowables(block: Block, out_dir: Path, figure_scale: float, styles: dict, draft: bool = False) -> list:
    if block.kind == "pre":
        return [Preformatted(block.text, styles["pre"])]
    if block.kind == "table":
        return [table_flowable(block.columns, block.rows, styles["table_sizes"], styles["faces"]), Spacer(1, 5)]
    width, height = figure_placement(block, out_dir)
    size = {"width": width * figure_scale, "height": height * figure_scale}
    image = _FigurePlace(**size) if draft else Image(str(out_dir / block.name), **size)
    return [image, Paragraph(escape(block.text), styles["caption"])]


class _FigurePlace(Flowable):
    """A figure's place on the page without its pixels. Trial layouts only count pages; encoding every PNG into each
    of them took most of the report stage's time (about 40 trials for a course report, 17 s of it ASCII85)."""

    def __init__(self, width: float, height: float):
        super().__init__()
        self.width, self.height = width, height

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        pass


def figure_placement(block: Block, out_dir: Path) -> tuple[float, float]:
    """A figure's width and height on the page in pt: its drawn size (figures are drawn for the page, so their text
    keeps its size), scaled down only where it is wider than the frame or taller than most of a page."""
    width_in, height_in = block.size_in
    if not width_in:  # a PNG the document did not draw: its pixels at 100 dpi
        with PILImage.open(out_dir / block.name) as image:
            width_in, height_in = image.size[0] / 100, image.size[1] / 100
    width, height = width_in * 72, height_in * 72
    scale = min(1.0, FRAME_WIDTH / width, FRAME_HEIGHT * 0.85 / height)
    return width * scale, height * scale


def table_flowable(
    columns: list[str],
    rows: list[list[str]],
    sizes: tuple[float, ...] = (8.0,),
    faces: tuple[str, ...] = FACES["dejavu"],
) -> Table:
    """A table that fits the frame: transposed when wide with few rows, the largest of `sizes` that fits, text
    wrapped; set in `faces` (regular, bold, italic, fixed-width)."""
    if len(columns) >= TRANSPOSE_MIN_COLUMNS and len(rows) <= TRANSPOSE_MAX_ROWS:
        columns, rows = (
            [columns[0], *(row[0] for row in rows)],
            [[name, *(row[i] for row in rows)] for i, name in enumerate(columns) if i],
        )
    numeric = numeric_columns(rows, len(columns))
    size, widths = _fit_font(columns, rows, numeric, sizes, faces)
    cell = ParagraphStyle("cell", fontName=faces[0], fontSize=size, leading=size * 1.18)
    header = ParagraphStyle("header", parent=cell, fontName=faces[1])
    data = [[Paragraph(escape(name), header) for name in columns]]
    data += [[value if numeric[i] else Paragraph(escape(value), cell) for i, value in enumerate(row)] for row in rows]
    table = Table(data, colWidths=widths, repeatRows=1)
    style = [
        ("FONT", (0, 0), (-1, -1), faces[0], size),
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


def _fit_font(
    columns: list[str], rows: list[list[str]], numeric: list[bool], sizes: tuple[float, ...], faces: tuple[str, ...]
) -> tuple[float, list[float]]:
    """The largest of `sizes` at which the table fits the page's height and width, and its column widths; when
    none fits the width, the largest that fits the height (else the smallest), numbers at their width and text
    columns wrapped."""
    tall_enough = [size for size in sizes if (len(rows) + 1) * (size * 1.18 + 2.5) <= FRAME_HEIGHT * 0.9]
    for size in tall_enough:
        natural = _natural_widths(columns, rows, size, faces)
        if sum(natural) <= FRAME_WIDTH:
            return size, natural
    size = (tall_enough or sizes[-1:])[0]
    natural = _natural_widths(columns, rows, size, faces)
    fixed = sum(width for width, right in zip(natural, numeric) if right)
    text_total = sum(width for width, right in zip(natural, numeric) if not right) or 1.0
    room = max(FRAME_WIDTH - fixed, FRAME_WIDTH * 0.25)
    widths = [width if right else width * room / text_total for width, right in zip(natural, numeric)]
    scale = min(1.0, FRAME_WIDTH / sum(widths))
    return size, [width * scale for width in widths]


def _natural_widths(columns: list[str], rows: list[list[str]], size: float, faces: tuple[str, ...]) -> list[float]:
    """Each column's width on one line: its widest cell, the header in bold, plus the padding."""
    _register_fonts()
    return [
        max(stringWidth(name, faces[1], size), *(stringWidth(row[i], faces[0], size) for row in rows))
        + 2 * CELL_PADDING
        + 1
        for i, name in enumerate(columns)
    ]


def inline_markup(text: str, mono: str = "DejaVuSansMono") -> str:
    """Markdown-ish `code` and **bold** as reportlab paragraph markup (the text itself escaped), code in `mono`."""
    parts = escape(text).split("`")
    text = "".join(f"<font face='{mono}'>{p}</font>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


@lru_cache(maxsize=4)
def _styles(typography: Typography = DEFAULT_TYPOGRAPHY) -> dict:
    """Paragraph styles for `typography` (body at its size; headings larger; captions and notes a point under the
    body, never below MIN_FONT_PT), the table font sizes to try and the faces."""
    _register_fonts()
    faces = FACES[typography.font]
    size = max(float(typography.size), MIN_FONT_PT)
    small = max(size - 1.0, MIN_FONT_PT)
    body = ParagraphStyle("p", fontName=faces[0], fontSize=size, leading=size * 1.3, spaceAfter=4)
    heading = {"parent": body, "fontName": faces[1], "keepWithNext": 1}  # never alone at a page's foot
    return {
        "h1": ParagraphStyle("h1", **heading, fontSize=size + 6.5, leading=(size + 6.5) * 1.25, spaceAfter=6),
        "h2": ParagraphStyle(
            "h2", **heading, fontSize=size + 3.5, leading=(size + 3.5) * 1.25, spaceBefore=8, spaceAfter=4
        ),
        "h3": ParagraphStyle(
            "h3", **heading, fontSize=size + 1, leading=(size + 1) * 1.25, spaceBefore=5, spaceAfter=3
        ),
        "p": body,
        "caption": ParagraphStyle(
            "caption", parent=body, fontSize=small, leading=small * 1.25, textColor=colors.HexColor("#59636e")
        ),
        "note": ParagraphStyle(
            "note", parent=body, fontSize=small, textColor=colors.HexColor("#59636e"), spaceBefore=6
        ),
        "pre": ParagraphStyle("pre", parent=body, fontName=faces[3], fontSize=MIN_FONT_PT, leading=MIN_FONT_PT * 1.2),
        "mono": faces[3],
        "faces": faces,
        # Tables: from a point under the body down to the floor, in half points.
        "table_sizes": tuple(small - 0.5 * step for step in range(int((small - MIN_FONT_PT) * 2) + 1)),
    }


@lru_cache(maxsize=1)
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


def author_of(path: Path) -> str | None:
    """The author line ("Author: X") on a written report's first page; None without one or when unreadable."""
    import re

    try:
        from pypdf import PdfReader

        text = PdfReader(str(path)).pages[0].extract_text() or ""
    except Exception:  # as page_count: a damaged or missing file has no author line to read
        return None
    found = re.search(r"Author: ([^\n]+)", text)
    return found.group(1).strip() if found else None
