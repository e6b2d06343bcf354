"""A scene as SVG, written by hand: each frame a ``<g class="frame">`` (only the first shown),
each cell a ``<rect class="cell">`` that says in which frames it takes part.

The web calculator relies on this contract: the root's ``data-frames``; ``g.frame`` with
``data-frame``; a ``text.counter`` in each frame; ``rect.cell`` with ``data-grid`` (input,
weight, output, or padding), ``data-index`` ("c,y,x", value coordinates: padding is negative
before the input) and ``data-frames``; a ``<title>`` and a JSON ``<desc>``.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

import numpy as np

from .layout import COLOURS, Layout, Text
from .scene import Scene


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _text(t: Text) -> str:
    fill = _hex(COLOURS[t.colour])
    return (
        f'<text class="{t.cls}" x="{t.x}" y="{t.y}" font-size="{t.size}" fill="{fill}">'
        f"{escape(t.text)}</text>"
    )


def _frames_of(scene: Scene) -> dict[str, np.ndarray]:
    """Per grid role, the frames × cells masks, to list each cell's frames."""
    out = {}
    for grid in scene.grids:
        empty = np.zeros(grid.shape, dtype=bool)
        out[grid.role] = np.stack([f.cells.get(grid.role, empty) for f in scene.frames])
    return out


def describe(scene: Scene) -> dict:
    """What ``<desc>``, the PNG text chunk and the GIF comment hold."""
    return {
        "layer": scene.title,
        "pass": scene.pass_,
        "count": scene.count,
        "batch": scene.batch,
        "frames": len(scene.frames),
        "input": scene.shapes["input"],
        "weight": scene.shapes["weight"],
        "output": scene.shapes["output"],
        "final": scene.final,
        "upper_bound": scene.upper_bound,
    }


def scene_svg(scene: Scene) -> str:
    """The SVG document of a scene (see the module's docstring for its contract)."""
    lay = Layout(scene)
    n = len(scene.frames)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" data-frames="{n}" '
        f'data-layer="{scene.layer}" data-pass="{scene.pass_}" font-family="sans-serif">'
    )
    parts = [
        head,
        f"<title>{escape(f'{scene.title}: {scene.pass_} pass, {scene.count} count')}</title>",
        f"<desc>{escape(json.dumps(describe(scene)))}</desc>",
        "<style>.mark{pointer-events:none}.cell{stroke:#969696;stroke-width:1}</style>",
        f'<rect width="{lay.width}" height="{lay.height}" fill="#ffffff"/>',
    ]
    frames_of = _frames_of(scene)
    for cell in lay.cells():
        grid = cell.grid
        value = [str(i - o) for i, o in zip(cell.index, grid.offsets)]
        taking = " ".join(
            map(str, np.flatnonzero(frames_of[grid.role][(slice(None), *cell.index)]))
        )
        x0, y0, x1, y1 = cell.box
        extra = ""
        if cell.kind != "value":
            sides = " ".join(grid.sides(cell.index))
            extra = f' data-kind="{cell.kind}" data-side="{sides}" data-of="{grid.role}"'
        role = grid.role if cell.kind == "value" else "padding"
        parts.append(
            f'<rect class="cell" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
            f'fill="{_hex(COLOURS[cell.kind])}" data-grid="{role}" '
            f'data-index="{cell.channel},{",".join(value)}" data-frames="{taking}"{extra}/>'
        )
    for (x0, y0, x1, y1), colour in lay.bars:
        parts.append(
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="{_hex(colour)}"/>'
        )
    parts += [_text(t) for t in lay.texts]
    for (x0, y0, *_), colour, words in lay.legend():
        parts.append(
            f'<rect x="{x0}" y="{y0}" width="12" height="12" '
            f'fill="{_hex(COLOURS[colour])}" stroke="#969696"/>'
        )
        parts.append(_text(words))
    for frame in scene.frames:
        hidden = "" if frame.index == 0 else ' style="display:none"'
        parts.append(f'<g class="frame" data-frame="{frame.index}"{hidden}>')
        # one path per colour: a frame can mark thousands of cells, and a rect each would
        # make the page's SVG megabytes long
        outlines: dict[str, list[str]] = {}
        for (x0, y0, x1, y1), colour in lay.marks(frame):
            outlines.setdefault(colour, []).append(
                f"M{x0 + 1} {y0 + 1}h{x1 - x0 - 2}v{y1 - y0 - 2}h{x0 - x1 + 2}z"
            )
        for colour, squares in outlines.items():
            parts.append(
                f'<path class="mark" d="{"".join(squares)}" fill="{_hex(COLOURS[colour])}" '
                'fill-opacity="0.85"/>'
            )
        parts += [_text(t) for t in lay.frame_texts(frame)]
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
