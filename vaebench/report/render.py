"""One report, two renderings: report.md (images linked beside it) and a self-contained report.html.

The report is built once as a list of blocks (headings, text, tables, images, collapsible details)
and rendered twice, so the Markdown and the HTML can never say different things. The HTML embeds
every image as a base64 data URI and carries its own CSS: it can be mailed or attached on its own.
Inline formatting is limited to `code` spans, which both renderings understand.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vaebench.report.tables import MISSING, is_numeric_text, markdown_table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str  # one paragraph; `code` spans allowed


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame  # strings
    caption: str = ""


@dataclass
class Image:
    path: Path  # the PNG on disk
    link: str  # its path relative to the report, for the Markdown
    caption: str = ""
    pixelated: bool = False  # image grids: keep pixels crisp when the browser scales them


@dataclass
class Row:
    """Images side by side in the HTML (wrapping when narrow); one after the other in the Markdown."""

    images: list[Image]


@dataclass
class Details:
    summary: str
    blocks: list[Block] = field(default_factory=list)


Block = Heading | Text | Bullets | Table | Image | Row | Details


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ----------------------------------------------------------------------------- Markdown


def to_markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {title}", ""]
    for block in blocks:
        out += _md(block)
    return "\n".join(out).rstrip() + "\n"


def _md(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return [f"{'#' * block.level} {block.text}", ""]
    if isinstance(block, Text):
        return [block.text, ""]
    if isinstance(block, Bullets):
        return [*(f"- {item}" for item in block.items), ""]
    if isinstance(block, Table):
        caption = [f"*{block.caption}*", ""] if block.caption else []
        return [*caption, markdown_table(block.frame)]
    if isinstance(block, Image):
        caption = [f"*{block.caption}*", ""] if block.caption else []
        return [f"![{block.caption or block.link}]({block.link})", "", *caption]
    if isinstance(block, Row):
        return [line for image in block.images for line in _md(image)]
    if isinstance(block, Details):
        lines = [f"**{block.summary}**", ""]
        for inner in block.blocks:
            lines += _md(inner)
        return lines
    raise TypeError(f"unknown block {type(block).__name__}")


# ----------------------------------------------------------------------------- HTML

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1f2328; max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 28px; border-bottom: 2px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 22px; margin-top: 40px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 17px; margin-top: 28px; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; background: #f3f4f6; padding: 1px 4px;
       border-radius: 4px; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 18px; }
nav ul { margin: 4px 0; padding-left: 18px; columns: 2; }
.table-wrap { overflow-x: auto; margin: 8px 0 18px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; white-space: nowrap; }
th { background: #f3f4f6; text-align: left; white-space: normal; vertical-align: bottom; min-width: 3em; }
td.num { text-align: right; }
tr:nth-child(even) td { background: #fafbfc; }
td.status-unfinished, td.status-evaluating { color: #9a6700; font-weight: 600; }
td.status-diverged, td.status-broken { color: #cf222e; font-weight: 600; }
td.reason { white-space: normal; min-width: 420px; }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure img.pixelated { image-rendering: pixelated; }
figcaption { color: #57606a; font-size: 13.5px; margin-top: 4px; }
.row { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.row figure { margin: 6px 0 12px; flex: 1 1 420px; max-width: calc(50% - 12px); min-width: 320px; }
.row figure img { width: 100%; image-rendering: auto; }
.interval { display: block; color: #57606a; font-size: 12px; }
.interval.wrap { white-space: normal; }
.caption { color: #57606a; font-size: 13.5px; margin-bottom: 2px; }
details { margin: 8px 0 16px; }
summary { cursor: pointer; font-weight: 600; }
"""


def _inline(text: str) -> str:
    """Escape HTML, then turn `code` spans into <code> elements."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(frame: pd.DataFrame) -> str:
    numeric = {
        c: all(is_numeric_text(str(v)) for v in frame[c] if str(v) != MISSING) and len(frame) > 0
        for c in frame.columns
    }
    # a header may break after a dot: "model.decoder.logvar_min" would otherwise set a column's width
    head = "".join(f"<th>{_inline(str(c)).replace('.', '.<wbr>')}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            classes = ["num"] if numeric[column] else []
            if column == "status":
                classes.append(f"status-{value}")
            if column == "reason":
                classes.append("reason")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            text = _inline(str(value))
            # an effect's interval or "(1 seed, no interval)" (which may wrap), a mean's "± sd", on a line
            # of their own keep 16 columns in a page: only the estimate itself never breaks
            qualifier = re.search(r" [\[(]", text) if numeric[column] else None
            if qualifier:
                estimate, rest = text[: qualifier.start()], text[qualifier.start() + 1 :]
                text = f'{estimate}<span class="interval wrap">{rest}</span>'
            elif numeric[column] and " ± " in text:
                mean, sd = text.split(" ± ", 1)
                text = f'{mean}<span class="interval">± {sd}</span>'
            cells.append(f"<td{attr}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


def _html(block: Block) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{slug(block.text)}">{_inline(block.text)}</h{block.level}>'
    if isinstance(block, Text):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        caption = f'<div class="caption">{_inline(block.caption)}</div>' if block.caption else ""
        return caption + _html_table(block.frame)
    if isinstance(block, Image):
        cls = ' class="pixelated"' if block.pixelated else ""
        caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
        alt = html.escape(block.caption or block.link)
        return f'<figure><img{cls} src="{_data_uri(block.path)}" alt="{alt}">{caption}</figure>'
    if isinstance(block, Row):
        return '<div class="row">' + "".join(_html(image) for image in block.images) + "</div>"
    if isinstance(block, Details):
        inner = "\n".join(_html(b) for b in block.blocks)
        return f"<details><summary>{_inline(block.summary)}</summary>\n{inner}\n</details>"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(title: str, blocks: list[Block]) -> str:
    """A single HTML file: inline CSS, a table of contents of the level-2 headings, images embedded."""
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    nav = "".join(f'<li><a href="#{slug(h.text)}">{_inline(h.text)}</a></li>' for h in sections)
    body = "\n".join(_html(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>{CSS}</style></head>\n<body>\n<h1>{_inline(title)}</h1>\n"
        f"<nav><strong>Contents</strong><ul>{nav}</ul></nav>\n{body}\n</body></html>\n"
    )
