"""The one layer grammar: how every command spells shapes, values and layers.

A value is an int, a per-axis comma list (``3,5``), for padding also per-side ``before:after``
pairs (``1:2,0:3``), ``same`` or ``valid``; negative numbers are read, and each layer's own rules
say whether it takes them. A layer is spelled either as text, ``conv k=3 s=2 p=1:2,0:1 c=8``
(``compose``, ``pool --next-conv``), or as command-line options, ``--kernel 3 --stride 2`` (the
calculators). Both are the ``Option``s of one ``LayerKind``, which each family declares beside
its rules; an option fills the constructor argument of PyTorch's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import LayerConfigError

if TYPE_CHECKING:
    from .module import Module

# ASCII digits only: ``\d`` would also match other scripts' digits and ``²``, which int() reads
# differently or not at all.
_INT = re.compile(r"-?[0-9]+")

MAX_DIGITS = 30
"""The most digits a number on the command line or in layer text may have. No layer has sizes
near 10**30, and the limit keeps every count far below Python's 4,300-digit limit on turning
ints into text (and sizes within what a float such as ``1/√fan_in`` can hold)."""


def shown(text: str, limit: int = 60) -> str:
    """``repr(text)`` for a message, cut short: a hostile value must not flood the terminal."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else f"{quoted[: limit - 1]}…"


def to_int(text: str, label: str) -> int:
    """One written int (``-3``, ``12``) of at most ``MAX_DIGITS`` digits, else a message naming
    ``label``."""
    text = text.strip()
    if not _INT.fullmatch(text):
        raise LayerConfigError(f"{label} must be an int, got {shown(text)}")
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise LayerConfigError(
            f"{label} has {len(text.lstrip('-'))} digits; at most {MAX_DIGITS} are taken"
        )
    return int(text)


def parse_shape(text: str, layout: str = "chw", label: str = "--input") -> tuple[int, ...]:
    """``10x64x64`` (C×H×W) or, with layout ``hwc``, ``64x64x10``."""
    parts = re.split(r"[x×,]", text.strip().lower())
    if not all(re.fullmatch(r"[0-9]+", p.strip()) for p in parts):
        raise LayerConfigError(
            f"{label} must be sizes joined by 'x', such as 10x64x64, got {shown(text)}"
        )
    shape = tuple(to_int(p, label) for p in parts)
    if layout == "hwc" and len(shape) > 1:
        shape = (shape[-1], *shape[:-1])
    return shape


def parse_ints(text: str, label: str) -> int | tuple[int, ...]:
    """``3`` or a per-axis list ``3,5``."""
    parts = text.split(",")
    if not all(_INT.fullmatch(p.strip()) for p in parts):
        raise LayerConfigError(f"{label} must be an int or a comma list of ints, got {shown(text)}")
    values = tuple(to_int(p, label) for p in parts)
    return values[0] if len(values) == 1 else values


def parse_int(text: str, label: str) -> int:
    """One int."""
    value = parse_ints(text, label)
    if not isinstance(value, int):
        raise LayerConfigError(f"{label} must be one int, got {shown(text)}")
    return value


def parse_padding(text: str, label: str = "--padding") -> Any:
    """``1``, ``1,2``, per-side ``1:2,0:3``, ``same`` or ``valid``."""
    if text in ("same", "valid"):
        return text
    items: list[Any] = []
    for part in text.split(","):
        sides = part.split(":")
        if len(sides) > 2 or not all(_INT.fullmatch(s.strip()) for s in sides):
            raise LayerConfigError(
                f"{label} must be an int, a comma list, before:after pairs, 'same' or 'valid', "
                f"got {shown(text)}"
            )
        ints = [to_int(side, label) for side in sides]
        items.append(ints[0] if len(ints) == 1 else (ints[0], ints[1]))
    if len(items) == 1 and isinstance(items[0], int):
        return items[0]
    return tuple(items)


def parse_switch(text: str, label: str) -> bool:
    """``1`` or ``0``."""
    if text not in ("0", "1"):
        raise LayerConfigError(f"{label} must be 0 or 1, got {shown(text)}")
    return text == "1"


def parse_word(*words: str) -> Callable[[str, str], str]:
    """One of ``words``."""

    def parse(text: str, label: str) -> str:
        if text not in words:
            raise LayerConfigError(f"{label} must be one of {', '.join(words)}, got {shown(text)}")
        return text

    return parse


@dataclass(frozen=True)
class Option:
    """One argument of a layer kind, in both spellings.

    ``dest`` is the constructor argument it fills (PyTorch's name), ``key`` its key in layer text
    (``k``; None: options only), ``flag`` its command-line option (``--kernel``; None: text
    only). A ``switch`` option is a command-line switch that sets ``dest`` to ``switch``'s value
    (``--no-bias`` sets bias False), and in text reads 0 or 1. ``required`` options must be
    given on the command line.
    """

    dest: str
    key: str | None
    flag: str | None
    parse: Callable[[str, str], Any] = parse_ints
    help: str = ""
    required: bool = False
    per_axis: bool = False
    switch: bool | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """What a layer kind builds from besides its options: the channels and spatial rank of its
    input, and the whole input shape when one is known."""

    channels: int
    ndim: int
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class LayerKind:
    """A layer the grammar spells: its options, and how its module is built from them.

    ``text`` kinds are spelled in layer text; ``calculator`` kinds are CLI subcommands.
    ``required`` names the text keys that must be given; ``ranks`` the spatial ranks it takes
    (empty: any input).
    """

    name: str
    options: tuple[Option, ...]
    build: Callable[[dict[str, Any], Context], Module]
    help: str = ""
    text: bool = True
    calculator: bool = False
    required: tuple[str, ...] = ()
    ranks: tuple[int, ...] = (1, 2, 3)

    def option(self, dest: str) -> Option:
        return next(o for o in self.options if o.dest == dest)

    def keys(self) -> list[str]:
        return [o.key for o in self.options if o.key is not None]

    def parse_text(self, words: Sequence[str], text: str) -> dict[str, Any]:
        """``key=value`` words as constructor arguments; ``text`` is the whole layer, for the
        messages."""
        by_key = {o.key: o for o in self.options if o.key is not None}
        values: dict[str, Any] = {}
        given: set[str] = set()
        for word in words:
            key, eq, value = word.partition("=")
            if not eq or key not in by_key or not value:
                takes = f"takes {', '.join(by_key)}" if by_key else "takes no keys"
                raise LayerConfigError(
                    f"{self.name} {takes} (as key=value), got {shown(word)} in {shown(text)}"
                )
            if key in given:
                raise LayerConfigError(f"{key} is given twice in {shown(text)}")
            given.add(key)
            option = by_key[key]
            parse = parse_switch if option.switch is not None else option.parse
            try:
                values[option.dest] = parse(value, key)
            except LayerConfigError as error:
                raise LayerConfigError(f"{error} in {shown(text)}") from None
        missing = [k for k in self.required if k not in given]
        if missing:
            dest = by_key[missing[0]].dest
            raise LayerConfigError(
                f"{self.name} needs {missing[0]}= ({dest.replace('_', ' ')}), e.g. "
                f"'{self.name} {missing[0]}=3'; got {shown(text)}"
            )
        return values

    def parse_flags(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Command-line values (strings, or switch values; None when not given) as constructor
        arguments."""
        values = {}
        for option in self.options:
            value = given.get(option.dest)
            if option.flag is None or value is None:
                continue
            if isinstance(value, str) and option.switch is None and not option.choices:
                value = option.parse(value, option.flag)
            values[option.dest] = value
        return values


def parse_layer(text: str, kinds: Mapping[str, LayerKind]) -> tuple[LayerKind, dict[str, Any]]:
    """A layer spelled as text, ``kind key=value ...``, among the text kinds of ``kinds``."""
    words = text.split()
    if not words:
        raise LayerConfigError("an empty layer: give a kind such as 'conv k=3'")
    textual = {name: kind for name, kind in kinds.items() if kind.text}
    kind = textual.get(words[0].lower())
    if kind is None:
        raise LayerConfigError(
            f"unknown layer kind {shown(words[0])} in {shown(text)}; known: {', '.join(textual)}"
        )
    return kind, kind.parse_text(words[1:], text)


def per_axis_rank(kind: LayerKind, values: Mapping[str, Any]) -> int | None:
    """The spatial rank that the longest per-axis list among ``values`` implies (None: none)."""
    lengths = [
        len(values[o.dest])
        for o in kind.options
        if o.per_axis and isinstance(values.get(o.dest), tuple)
    ]
    return max(lengths, default=None)
