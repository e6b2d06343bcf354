"""Worked explanations: each rule records its formula, the values substituted and the result."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_IDENT = re.compile(r"[A-Za-zτ][A-Za-z0-9τ]*(?:_[A-Za-z0-9]+)?")
_LATEX_WORDS = {"min": r"\min", "max": r"\max", "gcd": r"\gcd", "τ": r"\tau"}
_LATEX_CHARS = {
    "·": r" \cdot ",
    "×": r" \times ",
    "−": "-",
    "⌊": r"\left\lfloor ",
    "⌋": r"\right\rfloor ",
    "⌈": r"\left\lceil ",
    "⌉": r"\right\rceil ",
    "Σ": r"\sum ",
    "Π": r"\prod ",
    "≤": r" \le ",
    "≥": r" \ge ",
}


def _latex_symbol(name: str) -> str:
    if name in _LATEX_WORDS:
        return _LATEX_WORDS[name]
    base, _, sub = name.partition("_")
    base = _LATEX_WORDS.get(base, base if len(base) == 1 else rf"\mathrm{{{base}}}")
    if not sub:
        return base
    if len(sub) > 1:
        sub = r"\mathrm{" + sub + "}"
    return base + "_{" + sub + "}"


def to_latex(formula: str) -> str:
    """Converts a plain-text formula (Unicode operators, ``X_sub`` subscripts) to LaTeX."""
    out = _IDENT.sub(lambda m: _latex_symbol(m.group(0)), formula)
    for char, latex in _LATEX_CHARS.items():
        out = out.replace(char, latex)
    return out


def _group(value: int) -> str:
    return f"{value:,}"


@dataclass
class Step:
    """``symbol = formula = substituted = value``; ``formula`` may be empty for a plain value."""

    symbol: str
    formula: str
    substituted: str
    value: int
    unit: str = ""
    why: str = ""

    def lines(self) -> list[str]:
        parts = [p for p in (self.formula, self.substituted) if p]
        if parts and parts[-1] == str(self.value):
            parts.pop()
        if len(parts) == 2 and parts[0] == parts[1]:
            parts.pop()
        result = _group(self.value) + (f" {self.unit}" if self.unit else "")
        line = " = ".join([self.symbol, *parts, result])
        return [f"{line}   ({self.why})" if self.why else line]

    def latex(self) -> str:
        parts = [to_latex(p) for p in (self.formula, self.substituted) if p]
        if len(parts) == 2 and parts[0] == parts[1]:
            parts.pop()
        value = _group(self.value).replace(",", "{,}")
        unit = rf"\ \text{{{self.unit}}}" if self.unit else ""
        why = rf"\quad\text{{({self.why})}}" if self.why else ""
        return " = ".join([_latex_symbol(self.symbol), *parts, value]) + unit + why


@dataclass
class Section:
    title: str
    items: list[Step | str] = field(default_factory=list)


@dataclass
class Explanation:
    """A worked answer: titled sections of formula steps and short notes."""

    sections: list[Section] = field(default_factory=list)

    def text(self) -> str:
        out: list[str] = []
        for section in self.sections:
            out.append(section.title)
            for item in section.items:
                lines = item.lines() if isinstance(item, Step) else [item]
                out.extend("  " + line for line in lines)
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def markdown(self) -> str:
        out: list[str] = []
        for section in self.sections:
            out.append(f"### {section.title}\n")
            for item in section.items:
                out.append(f"$${item.latex()}$$\n" if isinstance(item, Step) else f"{item}\n")
        return "\n".join(out).rstrip() + "\n"

    def __str__(self) -> str:
        return self.text()


def substitute(formula: str, values: dict[str, int]) -> str:
    """Replaces each symbol of ``formula`` that ``values`` names by its value."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(0)
        if name not in values:
            return name
        value = values[name]
        return f"({value})" if isinstance(value, int) and value < 0 else str(value)

    return _IDENT.sub(value_of, formula)


class Working:
    """Collects the steps of a derivation. With ``record=False`` it only passes values through."""

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.explanation = Explanation()

    def section(self, title: str) -> None:
        if self.record:
            self.explanation.sections.append(Section(title))

    def let(
        self,
        symbol: str,
        formula: str,
        value: int,
        values: dict[str, int] | None = None,
        unit: str = "",
        why: str = "",
    ) -> int:
        """Records ``symbol = formula`` with ``values`` substituted, and returns ``value``."""
        if self.record:
            substituted = substitute(formula, values) if values else ""
            self._items().append(Step(symbol, formula, substituted, value, unit, why))
        return value

    def note(self, text: str) -> None:
        if self.record:
            self._items().append(text)

    def _items(self) -> list[Step | str]:
        if not self.explanation.sections:
            self.explanation.sections.append(Section("Working"))
        return self.explanation.sections[-1].items


NO_WORKING = Working(record=False)


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(v) for v in shape) + ")"


def axis_dict(
    names: Sequence[str], prefix: str, values: Sequence[int], suffix: str = ""
) -> dict[str, int]:
    if prefix and not prefix.endswith("_"):
        prefix += "_"
    return {f"{prefix}{ax}{suffix}": v for ax, v in zip(names, values)}


def product_symbols(
    w: Working,
    symbol: str,
    names: Sequence[str],
    values: Sequence[int],
    full: Sequence[int],
    suffix: str,
    why: str,
    prefix: str = "",
) -> str:
    """The product of per-axis counts, written with the full size's symbol where they agree,
    and a defining step for each axis where they do not."""
    parts = []
    for ax, value, whole in zip(names, values, full):
        if value == whole:
            parts.append(f"{prefix}{ax}{suffix}")
        else:
            w.let(f"{symbol}_{ax}", "", value, why=f"{why}, along {ax}")
            parts.append(f"{symbol}_{ax}")
    return " · ".join(parts)
