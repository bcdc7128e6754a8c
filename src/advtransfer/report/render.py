"""A report as a list of blocks (:class:`_Block`: headings, paragraphs, Markdown from the
recipe, lists, tables, figures), rendered to Markdown (:func:`_render_md`, tables by
:func:`md_table`) and to one standalone HTML page (:func:`_render_html`, Markdown through
markdown-it-py, imported on first use)."""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt


@dataclass(frozen=True)
class _Block:
    kind: str  # "h1", "h2", "p", "md", "ul", "table", "img"
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    right: tuple[bool, ...] = ()


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]],
             right: Sequence[bool] | None = None) -> str:
    """A Markdown table, the one builder of every table in reports and run descriptions:
    ``right[i]`` right-aligns column ``i`` (default: every column but the first); cells are
    escaped (``|`` and newlines)."""
    right = [i > 0 for i in range(len(header))] if right is None else list(right)
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _render_md(blocks: list[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind in ("p", "md"):
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            out.append(md_table(b.header, b.rows, b.right))
        elif b.kind == "img":
            alt = b.text.replace("[", "(").replace("]", ")")
            out.append(f"![{alt}]({b.items[0]})\n\n*{b.text}*")
    return "\n\n".join(out) + "\n"


@functools.cache
def _markdown() -> MarkdownIt:
    """The one Markdown parser of report pages: CommonMark plus GFM pipe tables and
    strikethrough (markdown-it-py), with raw HTML off (``<`` and ``&`` in the text are escaped,
    never passed through) and HTML5 void tags (``<img>``, not ``<img />``). Built on first use:
    importing this module does not import markdown-it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "xhtmlOut": False}).enable(
        ["table", "strikethrough"])


def _md_to_html(text: str) -> str:
    """Markdown written by a recipe (a report's description: paragraphs, ``code``, **bold**,
    links, images, pipe tables whose cells may hold ``\\|``) as HTML. Links with an unsafe
    scheme (``javascript:``, ...) stay text (markdown-it's ``validateLink``)."""
    return _markdown().render(text).strip()


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .3em .6em; white-space: nowrap; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; }
""".strip()


def _render_html(blocks: list[_Block], title: str) -> str:
    """The blocks as one standalone HTML page (inline CSS, relative image paths).

    Headings, paragraphs, lists, tables and figure captions hold text from the results (model
    names, labels, notes): they are escaped as plain text, so ``<``, ``&`` and ``*`` show as
    written, and numeric columns get ``class="num"``. Only ``md`` blocks, the Markdown a
    recipe wrote (its description), go through :func:`_md_to_html`."""
    esc = html.escape
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "md":
            body.append(_md_to_html(b.text))
        elif b.kind == "ul":
            items = "".join(f"<li>{esc(item)}</li>" for item in b.items)
            body.append(f"<ul>{items}</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = []
            for row in b.rows:
                cells = "".join(
                    f'<td class="num">{esc(c)}</td>' if r else f"<td>{esc(c)}</td>"
                    for c, r in zip(row, b.right, strict=True))
                rows.append(f"<tr>{cells}</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                        "</tbody></table>")
        elif b.kind == "img":
            src = esc(b.items[0], quote=True)
            body.append(f'<figure><img src="{src}" alt="{esc(b.text, quote=True)}">'
                        f"<figcaption>{esc(b.text)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
