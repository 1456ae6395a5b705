"""The report's one content model: headings, paragraphs, tables, figures and fixed-width text, in order.

`build.py` fills a `Document`; `markup.py` renders it to Markdown and self-contained HTML, `pdf.py` to
an A4 PDF within a page budget. Every block has a PDF priority: 0 is always in the PDF, higher numbers
are left out first when the pages would run over; PDF_NEVER blocks are in the HTML and Markdown only.
A block's priority is never below its section's, so dropping a section drops what is under it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from src.artifacts import REPORT_HTML, REPORT_MD, REPORT_PDF, REPORT_TABLES
from src.atomic import atomic_path, write_text
from src.report.text import NA, cell_text, jsonable

PDF_NEVER = 9


@dataclass(frozen=True)
class Typography:
    """The PDF's typeface ('dejavu': DejaVu Sans, embedded; 'arial': base-14 Helvetica, shown as Arial) and body
    size in pt; headings are larger, and nothing (tables, captions, the footer) is set below MIN_FONT_PT."""

    font: str = "dejavu"
    size: float = 8.5


DEFAULT_TYPOGRAPHY = Typography()
# No text in the PDF is smaller than this, figures' text as placed on the page included.
MIN_FONT_PT = 8.0


@dataclass
class Block:
    """One piece of the report. `kind`: h1, h2, h3, p, table, figure or pre."""

    kind: str
    text: str = ""  # heading, paragraph, fixed-width text, or a figure's caption
    name: str = ""  # a figure's PNG file name, a table's name in tables.json
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    priority: int = 0
    pdf_text: str | None = None  # the PDF's wording where it differs (no pointer to a file the PDF travels without)
    size_in: tuple[float, float] = (0.0, 0.0)  # a figure's drawn width and height in inches
    min_font: float = 0.0  # a figure's smallest text in pt at its drawn size
    # Essential content the PDF may still drop when it alone is over the page budget: 0 never, else in this order
    # (1 first; see build.py); `label` names it in the line that says it was left out.
    fallback: int = 0
    label: str = ""


class Document:
    """Blocks in reading order, the tables behind them (unrounded, for tables.json) and the figures written."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.blocks: list[Block] = []
        self.figures: list[Path] = []
        self.tables: dict[str, list[dict]] = {}
        self._section_priority = 0
        self._subsection_priority = 0

    def _add(self, block: Block, priority: int | None) -> None:
        block.priority = max(self._subsection_priority, priority or 0)
        self.blocks.append(block)

    def title(self, text: str) -> None:
        self.blocks.append(Block("h1", text))

    def section(self, text: str, priority: int = 0) -> None:
        self._section_priority = self._subsection_priority = priority
        self.blocks.append(Block("h2", text, priority=priority))

    def subsection(self, text: str, priority: int = 0) -> None:
        self._subsection_priority = max(self._section_priority, priority)
        self.blocks.append(Block("h3", text, priority=self._subsection_priority))

    def paragraph(self, text: str, priority: int | None = None, pdf_text: str | None = None, fallback: int = 0) -> None:
        """A paragraph; `pdf_text` is the PDF's wording where it must differ (e.g. without a pointer to a CSV)."""
        self._add(Block("p", text, pdf_text=pdf_text, fallback=fallback), priority)

    def preformatted(self, text: str, priority: int | None = PDF_NEVER) -> None:
        """Fixed-width text (e.g. the layer-by-layer model summary); by default not in the PDF."""
        self._add(Block("pre", text), priority)

    def table(
        self, rows: list[dict], name: str, full_rows: list[dict] | None = None, priority: int | None = None
    ) -> None:
        """Show `rows`; `tables.json` keeps `full_rows` (default `rows`) under `name` with unrounded numbers."""
        self.tables[name] = full_rows if full_rows is not None else rows
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            self._add(
                Block(
                    "table",
                    name=name,
                    columns=columns,
                    rows=[[cell_text(row.get(c, NA)) for c in columns] for row in rows],
                ),
                priority,
            )

    def figure(
        self,
        name: str,
        fig: Figure | None,
        caption: str,
        priority: int | None = None,
        fallback: int = 0,
        label: str = "",
    ) -> None:
        """A drawn figure saved as `name`; `fallback` and `label`: see Block."""
        if fig is None:
            self.paragraph(f"({caption} Nothing to draw.)", priority)
            return
        path = self.out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=FIGURE_DPI, facecolor="white")
        self.figures.append(path)
        width, height = (float(v) for v in fig.get_size_inches())
        block = Block("figure", caption, name=name, size_in=(width, height), min_font=smallest_font(fig))
        block.fallback, block.label = fallback, label
        self._add(block, priority)

    def write(self, max_pages: int, typography: Typography = DEFAULT_TYPOGRAPHY, log=None) -> Path:
        """tables.json, report.md, index.html and report.pdf (at most `max_pages` A4 pages; `log` gets a line per
        thing the PDF leaves out); return the HTML's path."""
        from src.report.markup import to_html, to_markdown
        from src.report.pdf import write_pdf

        write_text(self.out_dir / REPORT_TABLES, json.dumps(jsonable(self.tables), indent=1))
        write_text(self.out_dir / REPORT_MD, to_markdown(self.blocks))
        html_path = self.out_dir / REPORT_HTML
        write_text(html_path, to_html(self.blocks, self.out_dir))
        write_pdf(self.blocks, self.out_dir, self.out_dir / REPORT_PDF, max_pages, typography, log)
        return html_path


# PNG resolution: the PDF places figures at their drawn size in inches, so this only sets their sharpness.
FIGURE_DPI = 150


def smallest_font(fig: Figure) -> float:
    """The smallest font size (pt, at the figure's drawn size) of the visible, non-empty text in a drawn `fig`."""
    from matplotlib.text import Text

    sizes = [
        float(text.get_fontsize())
        for text in fig.findobj(Text)
        if text.get_visible() and text.get_text().strip() and _on_canvas(text)
    ]
    return min(sizes, default=0.0)


def _on_canvas(text) -> bool:
    """Whether a text is drawn: an axes' hidden ticks' labels and texts of an axes switched off are not."""
    axes = text.axes
    return axes is None or axes.axison or text in axes.texts or text is axes.title or text in axes.get_children()
