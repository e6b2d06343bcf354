"""One layer's diagram or animation: ``convscope draw conv|conv-transpose|pool`` and the web
calculator's pictures. ``layer_scene`` says what to draw (pure data); ``layer_svg``,
``layer_png`` and ``layer_gif`` draw it; ``draw_layer`` writes the format ``out`` names."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConvScopeError
from .scene import Scene, layer_scene

__all__ = ["Scene", "draw_layer", "layer_gif", "layer_png", "layer_scene", "layer_svg"]
SUFFIXES = (".svg", ".png", ".gif")


def layer_svg(layer: Any, shape: Sequence[int], **options: Any) -> str:
    """The layer's SVG: every frame a ``<g class="frame">``, the first shown (``svg``'s
    contract). ``options``: batch, count, pass_, frames, as ``layer_scene``."""
    from .svg import scene_svg

    return scene_svg(layer_scene(layer, shape, **options))


def layer_png(layer: Any, shape: Sequence[int], **options: Any) -> bytes:
    """The layer's first frame and final counts, as PNG (options as ``layer_scene``)."""
    from .raster import scene_png

    return scene_png(layer_scene(layer, shape, **options))


def layer_gif(layer: Any, shape: Sequence[int], **options: Any) -> bytes:
    """The layer's animation, one GIF frame per scene frame (options as ``layer_scene``)."""
    from .raster import scene_gif

    return scene_gif(layer_scene(layer, shape, **options))


def _checked_target(out: Path) -> Path:
    """``out``, when its suffix names a format and its folder can take it."""
    if out.is_dir():
        raise ConvScopeError(f"--out {out} is a folder; name a file such as {out / 'layer.svg'}")
    if out.suffix.lower() not in SUFFIXES:
        raise ConvScopeError(
            f"--out {out}: the picture's format comes from its extension: "
            f"{', '.join(SUFFIXES)}, got {out.suffix or 'none'}"
        )
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise ConvScopeError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConvScopeError(f"--out {out}: the folder {folder} is not writable")
    return out


def draw_layer(
    layer: Any,
    shape: Sequence[int],
    out: Path,
    *,
    batch: int = 1,
    count: str = "exact",
    pass_: str = "forward",
    frames: int | None = None,
) -> Path:
    """Draws one pass through ``layer`` for an input of ``shape`` (channel-first, no batch) to
    ``out``: SVG, PNG or GIF by its suffix, written atomically (a temporary file, then
    ``os.replace``). Returns ``out``; a bad suffix or folder, or a layer too large to draw, is a
    one-line ``ConvScopeError``."""
    out = _checked_target(Path(out))
    options = {"batch": batch, "count": count, "pass_": pass_, "frames": frames}
    suffix = out.suffix.lower()
    if suffix == ".svg":
        data = layer_svg(layer, shape, **options).encode()
    elif suffix == ".png":
        data = layer_png(layer, shape, **options)
    else:
        data = layer_gif(layer, shape, **options)
    folder = out.parent if str(out.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        umask = os.umask(0)  # mkstemp makes the file private; give it the usual mode
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, out)
    except OSError as error:
        if "temporary" in locals() and os.path.exists(temporary):
            os.unlink(temporary)
        raise ConvScopeError(f"--out {out}: cannot write ({error.strerror or error})") from None
    return out
