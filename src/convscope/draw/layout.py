"""Where everything of a scene goes, in pixels: shared by the SVG and the Pillow renderers, so
the two pictures are the same picture.

Stacks left to right (input, weight, output), each a column of channel grids; a 1-D grid is a
strip, a 3-D grid its depth slices side by side. A header names the layer and the pass; a
footer holds the frame's label and running counter, the cost rule's final counts and the notes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .scene import Frame, Grid, Scene

COLOURS = {
    "background": (255, 255, 255),
    "text": (32, 32, 32),
    "muted": (110, 110, 110),
    "line": (150, 150, 150),
    "value": (250, 250, 250),
    "pad": (214, 214, 214),
    "crop": (242, 196, 196),
    "overhang": (251, 227, 184),
    "read": (91, 155, 213),
    "weight": (160, 112, 192),
    "write": (73, 176, 96),
    "padtap": (240, 160, 48),
}
GROUP_COLOURS = [
    (230, 85, 70),
    (60, 140, 220),
    (90, 170, 80),
    (200, 150, 40),
    (150, 90, 190),
    (40, 170, 170),
    (220, 110, 170),
    (120, 120, 120),
]
LEGEND = (
    ("read", "read"),
    ("weight", "weight used"),
    ("write", "written"),
    ("padtap", "tap on padding/crop"),
    ("pad", "padding"),
    ("crop", "cropped"),
    ("overhang", "overhang"),
)
MARGIN, GAP, LABEL, LINE = 16, 40, 26, 17
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Text:
    x: int
    y: int
    text: str
    size: int
    cls: str = "label"
    colour: str = "text"


@dataclass(frozen=True)
class Cell:
    """One drawn cell: its grid, channel, drawn spatial index, kind and box."""

    grid: Grid
    channel: int
    index: tuple[int, ...]
    kind: str
    box: Box


def _cols_rows(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[1], shape[0]
    return shape[0] * (shape[2] + 1) - 1, shape[1]


def _cell_xy(shape: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return index[0], 0
    if len(shape) == 2:
        return index[1], index[0]
    return index[0] * (shape[2] + 1) + index[2], index[1]


def counts_text(counts: dict[str, int]) -> str:
    return " · ".join(f"{k} {v:,}" for k, v in counts.items())


class Layout:
    """The pixel positions of a scene's grids, cells and texts."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        cols = max(_cols_rows(g.shape)[0] for g in scene.grids)
        rows = max(_cols_rows(g.shape)[1] * len(g.channels) for g in scene.grids)
        self.cell = max(5, min(26, 460 // cols, 520 // rows))
        self.origins: dict[str, list[tuple[int, int]]] = {}
        x, top, bottom = MARGIN, 64 + LABEL, 0
        self.texts: list[Text] = [
            Text(MARGIN, 22, scene.title, 15, "title"),
            Text(MARGIN, 42, self._subtitle(), 12, "subtitle", "muted"),
        ]
        self.bars: list[tuple[Box, tuple[int, int, int]]] = []
        for grid in scene.grids:
            c, r = _cols_rows(grid.shape)
            width, height = 22 + c * self.cell, r * self.cell
            self.texts.append(Text(x, top - 10, grid.label, 12, f"grid-label {grid.role}"))
            y, slots = top, []
            for channel, group in zip(grid.channels, grid.groups):
                slots.append((x + 22, y))
                self.texts.append(
                    Text(x, y + min(height, 14) - 2, f"c{channel}", 10, "channel", "muted")
                )
                bar = (x + 16, y, x + 20, y + height)
                self.bars.append((bar, GROUP_COLOURS[group % len(GROUP_COLOURS)]))
                y += height + 8
            if grid.hidden:
                self.texts.append(Text(x, y + 10, f"+{grid.hidden} more", 11, "more", "muted"))
                y += 16
            self.origins[grid.role] = slots
            bottom = max(bottom, y)
            x += max(width, 7 * len(grid.label)) + GAP
        lines = self._footer_lines()
        self.footer = bottom + 14
        for i, (text, cls) in enumerate(lines):
            self.texts.append(Text(MARGIN, self.footer + (i + 2) * LINE + 4, text, 12, cls))
        self.legend_y = self.footer + (len(lines) + 2) * LINE + 10
        longest = max(len(t.text) * 0.6 * t.size for t in self.texts)
        legend = self.legend()
        legend_end = legend[-1][2].x + 7 * len(legend[-1][2].text) if legend else 0
        self.width = int(max(x - GAP + MARGIN, longest + 2 * MARGIN, legend_end + MARGIN, 560))
        self.height = self.legend_y + 22

    def _subtitle(self) -> str:
        s = self.scene
        shown = f"{len(s.frames)} frames"
        return f"{s.pass_} pass · {s.count} count · batch N={s.batch} · {shown}"

    def _footer_lines(self) -> list[tuple[str, str]]:
        s = self.scene
        bound = " (worst case)" if s.upper_bound else ""
        lines = [(f"final (cost rule): {counts_text(s.final)}{bound}", "final")]
        if s.frame_note:
            lines.append((s.frame_note, "note"))
        lines += [(note, "note") for note in s.notes]
        return lines

    def frame_texts(self, frame: Frame) -> list[Text]:
        """The frame's own label and its running counter (``cls`` "counter")."""
        n = len(self.scene.frames)
        step = ", ".join(f"+{v:,} {k}" for k, v in frame.step.items())
        label = f"frame {frame.index + 1}/{n}: {frame.label}"
        counter = f"running: {counts_text(frame.total)}  ({step})"
        return [
            Text(MARGIN, self.footer, label, 12, "frame-label"),
            Text(MARGIN, self.footer + LINE, counter, 12, "counter"),
        ]

    def box(self, grid: Grid, slot: int, index: tuple[int, ...]) -> Box:
        gx, gy = self.origins[grid.role][slot]
        cx, cy = _cell_xy(grid.shape, index)
        x, y = gx + cx * self.cell, gy + cy * self.cell
        return x, y, x + self.cell, y + self.cell

    def cells(self) -> Iterator[Cell]:
        for grid in self.scene.grids:
            for slot, channel in enumerate(grid.channels):
                for index in itertools.product(*(range(n) for n in grid.shape)):
                    yield Cell(
                        grid, channel, index, grid.cell_kind(index), self.box(grid, slot, index)
                    )

    def marks(self, frame: Frame) -> list[tuple[Box, str]]:
        """The highlighted cells of a frame, with their colour names."""
        out = []
        for grid in self.scene.grids:
            mask = frame.cells.get(grid.role)
            if mask is None:
                continue
            written = grid.role == self.scene.target
            colour = "write" if written else "weight" if grid.role == "weight" else "read"
            for index in map(tuple, np.argwhere(mask)):
                tone = colour if grid.cell_kind(index) == "value" else "padtap"
                for slot in range(len(grid.channels)):
                    out.append((self.box(grid, slot, index), tone))
        return out

    def legend(self) -> list[tuple[Box, str, Text]]:
        """The colour swatches of what this picture shows."""
        kinds = {k for g in self.scene.grids for axis in g.kinds for k in axis}
        shown = {"read", "write", *kinds} | ({"weight"} if self.scene.grid("weight") else set())
        if kinds - {"value"}:
            shown.add("padtap")
        x, out = MARGIN, []
        for colour, words in (item for item in LEGEND if item[0] in shown):
            out.append(
                (
                    (x, self.legend_y - 10, x + 12, self.legend_y + 2),
                    colour,
                    Text(x + 16, self.legend_y, words, 11, "legend"),
                )
            )
            x += 24 + int(6.5 * len(words))
        return out
