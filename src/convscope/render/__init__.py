"""The one renderer: every command's answer is a ``Document`` (sections of blocks, the JSON
object, and the worked explanation), printed in the format the output switch picks: a plain
table (``text``), ``markdown``, ``json`` or ``csv``. ``documents`` builds the document of each
kind of result."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..explain import Explanation
from ..text import columns, pairs

FORMATS = ("text", "markdown", "json", "csv")


@dataclass
class Pairs:
    """``key  value`` lines; in Markdown a two-column table under ``header``."""

    items: Sequence[tuple[str, str]]
    indent: int = 0
    header: tuple[str, str] = ("", "")


@dataclass
class Table:
    """Rows under a header row; the first ``left`` columns flush left, the rest (numbers) flush
    right; ``rule`` draws a line under the header in text."""

    rows: Sequence[Sequence[str]]
    left: int = 1
    indent: int = 0
    rule: bool = False


@dataclass
class Lines:
    """Plain lines."""

    lines: Sequence[str]


Block = Pairs | Table | Lines


@dataclass
class Document:
    """A command's answer in every format.

    ``sections`` are separated by a blank line, their blocks follow each other. ``title`` opens
    the text and is the Markdown heading. ``fence`` shows the text form in Markdown as a code
    block of that language ("" for none) instead of Markdown tables. ``csv`` is the table the
    CSV format prints (default: the first). ``data`` is the JSON object.
    """

    sections: list[list[Block]]
    data: dict[str, Any]
    explanation: Explanation | None = None
    title: str | None = None
    fence: str | None = None
    csv: Table | None = None
    extra: list[tuple[str, Explanation]] = field(default_factory=list)


def render(document: Document, fmt: str = "text") -> str:
    """The document in ``fmt``: text, markdown, json or csv."""
    if fmt == "json":
        return _json(document)
    if fmt == "csv":
        return _csv(document)
    if fmt == "markdown":
        return _markdown(document)
    return _text(document)


def _block_text(block: Block) -> list[str]:
    if isinstance(block, Pairs):
        return pairs(block.items, indent=block.indent)
    if isinstance(block, Table):
        lines = columns(block.rows, left=block.left, indent=block.indent)
        if block.rule:
            lines.insert(1, "-" * len(lines[0]))
        return lines
    return list(block.lines)


def _body_text(document: Document) -> str:
    sections = [
        "\n".join(line for block in s for line in _block_text(block)) for s in document.sections
    ]
    return "\n\n".join(sections) + "\n"


def _explanations(document: Document, as_markdown: bool) -> str:
    out = ""
    if document.explanation is not None:
        ex = document.explanation
        out += "\n" + (ex.markdown() if as_markdown else ex.text())
    for title, ex in document.extra:
        out += f"\n## {title}\n\n" + ex.markdown() if as_markdown else f"\n{title}\n" + ex.text()
    return out


def _text(document: Document) -> str:
    head = f"{document.title}\n" if document.title else ""
    return head + _body_text(document) + _explanations(document, False)


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Pairs):
        rows = ["|" + "|".join(f" {c} " if c else " " for c in block.header) + "|", "|---|---|"]
        return rows + [f"| {k} | {v} |" for k, v in block.items]
    if isinstance(block, Table):
        head, *body = block.rows
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        return lines + ["| " + " | ".join(c.strip() for c in row) + " |" for row in body]
    return list(block.lines)


def _markdown(document: Document) -> str:
    head = f"## {document.title}\n\n" if document.title else ""
    if document.fence is not None:
        body = f"```{document.fence}\n{_body_text(document)}```\n"
    else:
        sections = [
            "\n".join(line for block in s for line in _markdown_block(block))
            for s in document.sections
        ]
        body = "\n\n".join(sections) + "\n"
    return head + body + _explanations(document, True)


def _json(document: Document) -> str:
    data = dict(document.data)
    if document.explanation is not None:
        data["explanation"] = document.explanation.text()
    for title, ex in document.extra:
        data.setdefault("explanations", {})[title] = ex.text()
    return json.dumps(data) + "\n"


def _csv(document: Document) -> str:
    table = document.csv
    if table is None:
        table = next(b for s in document.sections for b in s if isinstance(b, Table))
    out = io.StringIO()
    writer = csv.writer(out)
    for i, row in enumerate(table.rows):
        writer.writerow([c.strip().replace(",", "") if i else c for c in row])
    return out.getvalue()
