"""The report's blocks as Markdown (figures linked beside it) and as one self-contained HTML file (figures embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from src.report.document import Block
from src.report.text import NA, is_number


def to_markdown(blocks: list[Block]) -> str:
    """report.md: headings, paragraphs, pipe tables (numbers right-aligned), figures as links to the PNGs."""
    parts = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            parts.append("#" * int(block.kind[1]) + " " + block.text)
        elif block.kind == "p":
            parts.append(block.text)
        elif block.kind == "pre":
            parts.append(f"```\n{block.text}\n```")
        elif block.kind == "table":
            numeric = numeric_columns(block.rows, len(block.columns))
            lines = [
                "| " + " | ".join(_md_escape(c) for c in block.columns) + " |",
                "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
            ]
            lines += ["| " + " | ".join(_md_escape(value) for value in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif block.kind == "figure":
            alt = block.text.replace("[", "(").replace("]", ")")  # brackets would end the alt text
            parts.append(f"![{alt}]({block.name})\n\n*{block.text}*")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block], out_dir: Path) -> str:
    """index.html: one file that stands alone (figures as data URIs, styles inline, nothing fetched)."""
    body = [_html_block(block, Path(out_dir)) for block in blocks]
    title = html.escape(next((block.text for block in blocks if block.kind == "h1"), "report"))
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_block(block: Block, out_dir: Path) -> str:
    if block.kind in ("h1", "h2", "h3"):
        return f"<{block.kind}>{inline_html(block.text)}</{block.kind}>"
    if block.kind == "p":
        return f"<p>{inline_html(block.text)}</p>"
    if block.kind == "pre":
        return f"<pre>{html.escape(block.text)}</pre>"
    if block.kind == "table":
        numeric = numeric_columns(block.rows, len(block.columns))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
        lines = [
            "<tr>"
            + "".join(f"<td class='{'num' if numeric[i] else 'txt'}'>{html.escape(v)}</td>" for i, v in enumerate(row))
            + "</tr>"
            for row in block.rows
        ]
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    data = base64.b64encode((out_dir / block.name).read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(block.text)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(block.text)} ({html.escape(block.name)})</figcaption></figure>"
    )


def numeric_columns(rows: list[list[str]], n_columns: int) -> list[bool]:
    """Whether each column holds only numbers (and n/a): those are right-aligned."""
    flags = []
    for index in range(n_columns):
        values = [row[index] for row in rows if row[index] != NA]
        flags.append(bool(values) and all(is_number(value) for value in values))
    return flags


def inline_html(text: str) -> str:
    """Markdown-ish `code` and **bold** for the HTML rendering."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d0d7de;padding:3px 8px}th{background:#f6f8fa;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafbfc}
figure{margin:1em 0}img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#59636e;font-size:13px}
code{background:#f6f8fa;padding:0 .3em;border-radius:4px}pre{background:#f6f8fa;padding:.6em;font-size:12px;overflow-x:auto}
"""
