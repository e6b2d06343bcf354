"""Plain-text layout shared by the terminal reports."""

from __future__ import annotations

from collections.abc import Sequence


def columns(rows: Sequence[Sequence[str]], left: int = 1, indent: int = 0) -> list[str]:
    """Rows as aligned columns: the first ``left`` flush left, the rest (numbers) flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        " " * indent
        + "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


def pairs(items: Sequence[tuple[str, str]], indent: int = 0) -> list[str]:
    """``key  value`` lines, the keys padded to one width."""
    width = max(len(key) for key, _ in items)
    return [f"{' ' * indent}{key.ljust(width)}  {value}" for key, value in items]
