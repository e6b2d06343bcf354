"""Pictures of layers and networks: ``convscope draw`` and the web calculator's diagrams.

``layer`` draws one layer's diagram and animation (SVG by hand, PNG and GIF with Pillow);
``network`` a network's receptive field, costs and memory per layer, and ``curves`` a run's
training curves (both with matplotlib). The format is the output file's extension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw_layer(layer: Any, shape: tuple[int, ...], out: Path, **options: Any) -> Path:
    """Draw one layer to ``out`` (SVG, PNG or GIF by its extension)."""
    from .layer import draw_layer as draw

    return draw(layer, shape, out, **options)


def draw_network(report: Any, out: Path) -> Path:
    """A network's receptive field, costs and memory per layer, to ``out`` (PNG or SVG)."""
    from .network import draw_network as draw

    return draw(report, out)


def draw_curves(metrics: Path, out: Path) -> Path:
    """Training curves from a run's metrics.json, to ``out`` (PNG or SVG)."""
    from .curves import draw_curves as draw

    return draw(metrics, out)
