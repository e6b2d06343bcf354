"""A scene as PNG (the first frame) or GIF (every frame), drawn with Pillow's ImageDraw on a
palette image, so a GIF frame needs no colour quantising."""

from __future__ import annotations

import io
import json
from functools import cache

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .layout import COLOURS, GROUP_COLOURS, Layout, Text
from .scene import Scene
from .svg import describe

NAMES = list(COLOURS)
PALETTE = [*COLOURS.values(), *GROUP_COLOURS]
#: Pillow's default font has no glyph for these.
ASCII = str.maketrans(
    {
        "×": "x",
        "−": "-",
        "ε": "eps",
        "→": "->",
        "⌊": "floor(",
        "⌋": ")",
        "⌈": "ceil(",
        "⌉": ")",
        "÷": "/",
        "τ": "tau",
    }
)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _index(colour: str | tuple[int, int, int]) -> int:
    return PALETTE.index(colour) if isinstance(colour, tuple) else NAMES.index(colour)


def _write(draw: ImageDraw.ImageDraw, t: Text) -> None:
    font = _font(t.size)
    draw.text((t.x, t.y), t.text.translate(ASCII), fill=_index(t.colour), font=font, anchor="ls")


def _base(lay: Layout) -> Image.Image:
    image = Image.new("P", (lay.width, lay.height), _index("background"))
    image.putpalette([v for colour in PALETTE for v in colour])
    draw = ImageDraw.Draw(image)
    for cell in lay.cells():
        x0, y0, x1, y1 = cell.box
        draw.rectangle((x0, y0, x1, y1), fill=_index(cell.kind), outline=_index("line"))
    for box, colour in lay.bars:
        draw.rectangle(box, fill=_index(colour))
    for t in lay.texts:
        _write(draw, t)
    for box, colour, words in lay.legend():
        draw.rectangle(box, fill=_index(colour), outline=_index("line"))
        _write(draw, words)
    return image


def _frames(scene: Scene, limit: int | None = None) -> list[Image.Image]:
    lay = Layout(scene)
    base = _base(lay)
    images = []
    for frame in scene.frames[:limit]:
        image = base.copy()
        draw = ImageDraw.Draw(image)
        for (x0, y0, x1, y1), colour in lay.marks(frame):
            draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=_index(colour))
        for t in lay.frame_texts(frame):
            _write(draw, t)
        images.append(image)
    return images


def scene_png(scene: Scene) -> bytes:
    """The first frame with the final counts, as PNG; the counts also as JSON in the text
    chunk ``convscope``."""
    info = PngInfo()
    info.add_text("convscope", json.dumps(describe(scene)))
    buffer = io.BytesIO()
    _frames(scene, 1)[0].save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def scene_gif(scene: Scene) -> bytes:
    """Every frame, looping, as GIF; the final counts as JSON in the GIF's comment."""
    images = _frames(scene)
    duration = max(80, min(700, 12_000 // len(images)))
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        "GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        comment=json.dumps(describe(scene)).encode(),
    )
    return buffer.getvalue()
