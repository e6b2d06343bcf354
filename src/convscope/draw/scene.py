"""One layer's picture as pure data: its grids, and the frames of one pass through it.

The scene knows nothing about pixels. ``layer_scene`` lays a convolution, a transposed
convolution or a pool out along each spatial axis (the cells of the grid its windows read, with
padding, cropping or a ``ceil_mode`` overhang on either side), then walks the pass one *unit* at
a time: an output position (forward), an entry of g_z (backward-input), a kernel tap
(backward-weight), or an input position scattering its kernel (a transposed convolution's
forward).

**How the counts split.** A unit stands for every channel and every image at that spatial
place: its products are ``N · (channel pairs) · Π_axis (taps that land on values)``, and an
entry that sums n products costs n − 1 additions, paid in the frame where the entry is first
reached (a bias makes it n). So the running counter of the last frame is the whole layer's
count; ``layer_scene`` raises when it differs from the cost rule's (``layer.cost``), which stays
the one source of the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from ..errors import ConvScopeError
from ..geometry import AdaptiveWindows, padded_source, prod
from ..ops.adaptive_pooling import AdaptivePoolSpec
from ..ops.conv import ConvSpec
from ..ops.conv_transpose import ConvTransposeSpec
from ..ops.pooling import PoolSpec

PASSES = ("forward", "backward-input", "backward-weight")
MAX_SIDE = 96  # cells along one axis of one grid
MAX_CELLS = 20_000  # cells of every grid drawn, channels included
MAX_CHANNELS = 8  # channels drawn per stack, fewer where the cells would exceed MAX_CELLS
MAX_FRAMES = 400  # frames unless --frames says otherwise
MAX_LINKS = 300_000  # (window, tap) pairs walked over all frames
COUNT_KEYS = ("mults", "adds", "compares", "divides")
SIDES = {1: (("left", "right"),), 2: (("top", "bottom"), ("left", "right"))}
SIDES[3] = (("front", "back"), *SIDES[2])


class CounterMismatch(AssertionError):
    """The frames' running total differs from the cost rule: a bug in the drawing, never input."""


@dataclass(frozen=True)
class Grid:
    """A stack of channel grids: ``kinds[axis][i]`` says what drawn cell i along that axis is
    ("value", or "pad", "crop", "overhang"), ``offsets[axis]`` where value 0 is drawn."""

    role: str  # "input", "weight" or "output"
    label: str
    channels: tuple[int, ...]  # the channels drawn
    hidden: int  # channels not drawn
    groups: tuple[int, ...]  # the group of each drawn channel
    kinds: tuple[tuple[str, ...], ...]
    offsets: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The drawn spatial shape."""
        return tuple(len(k) for k in self.kinds)

    def cell_kind(self, index: Sequence[int]) -> str:
        """ "value", or the first axis's band the drawn cell ``index`` lies in."""
        return next((k[i] for k, i in zip(self.kinds, index) if k[i] != "value"), "value")

    def sides(self, index: Sequence[int]) -> list[str]:
        """The padding sides (top, left, …) a drawn cell lies on."""
        out = []
        for axis, (kinds, i) in enumerate(zip(self.kinds, index)):
            if kinds[i] != "value":
                before = i < self.offsets[axis]
                out.append(SIDES[len(self.kinds)][axis][0 if before else 1])
        return out


@dataclass(frozen=True)
class Frame:
    """One step of the pass: the cells it touches per grid role (spatial masks, true for every
    drawn channel), the role it writes, its own counts and the running total."""

    index: int
    label: str
    cells: dict[str, np.ndarray]
    step: dict[str, int]
    total: dict[str, int]


@dataclass(frozen=True)
class Scene:
    """Everything a picture of one pass through one layer shows."""

    title: str
    layer: str
    pass_: str
    count: str
    batch: int
    grids: tuple[Grid, ...]
    frames: tuple[Frame, ...]
    target: str  # the role each frame writes
    final: dict[str, int]  # the cost rule's counts for the pass
    upper_bound: bool
    shapes: dict[str, list[int] | None]
    notes: tuple[str, ...]
    padding_counted: bool  # a tap on padding is a product (dense count, or padding_mode copies)
    units: int = 0  # positions walked, before frames group them
    frame_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def grid(self, role: str) -> Grid | None:
        return next((g for g in self.grids if g.role == role), None)


@dataclass
class _Axis:
    """One spatial axis: the big grid (the one the windows read) as kinds per drawn coordinate,
    the windows over it as (window, tap, big coordinate) links, which big cells hold products
    (``counted``) and into which g_z entry a product there adds (``route``)."""

    kinds: list[str]
    offset: int
    windows: int
    taps: int
    links: list[tuple[int, int, int]]
    counted: list[bool]
    route: list[int | None]


def _shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def _refuse(what: str, sides: Sequence[int], lower: str) -> NoReturn:
    raise ConvScopeError(
        f"{what} is too large to draw: {_shape(sides)} cells (at most {MAX_SIDE} a side and "
        f"{MAX_CELLS:,} in all); lower {lower}"
    )


def _spec(layer: Any) -> Any:
    spec = getattr(layer, "spec", layer)
    if not isinstance(spec, (ConvSpec, ConvTransposeSpec, PoolSpec, AdaptivePoolSpec)):
        raise ConvScopeError(
            f"cannot draw {type(layer).__name__}: only convolutions, transposed convolutions "
            "and pools are drawn"
        )
    return spec


def _sides(spec: Any, shape: Sequence[int], out: Sequence[int]) -> tuple[list[int], ...]:
    """The drawn length of each axis of the big, small and weight grids, in closed form (no
    loop over positions: a huge layer is refused before anything is built)."""
    ins, outs = shape[1:], out[1:]
    if isinstance(spec, AdaptivePoolSpec):
        return list(ins), list(outs), []
    k, s, d = spec.kernel_size, spec.stride, spec.dilation
    if isinstance(spec, ConvTransposeSpec):
        full = [(n - 1) * st + dd * (kk - 1) + 1 for n, st, dd, kk in zip(ins, s, d, k)]
        big = [max(f, p + o) for f, p, o in zip(full, spec.padding, outs)]
        return big, list(ins), list(k)
    if isinstance(spec, ConvSpec):
        return [n + b + a for n, (b, a) in zip(ins, spec.padding)], list(outs), list(k)
    padded = [n + 2 * p for n, p in zip(ins, spec.padding)]
    reach = [(o - 1) * st + dd * (kk - 1) + 1 for o, st, dd, kk in zip(outs, s, d, k)]
    return [max(a, b) for a, b in zip(padded, reach)], list(outs), []


def _axes(spec: Any, shape: Sequence[int], out: Sequence[int], dense: bool) -> list[_Axis]:
    """The per-axis layout of ``spec`` (sizes already within the caps)."""
    axes = []
    big_sides, _, _ = _sides(spec, shape, out)
    for a, (n, o, side) in enumerate(zip(shape[1:], out[1:], big_sides)):
        if isinstance(spec, AdaptivePoolSpec):
            win = AdaptiveWindows(n, o)
            links = [(w, q - win.bounds(w)[0], q) for w in range(o) for q in range(*win.bounds(w))]
            taps = max(t for _, t, _ in links) + 1
            axes.append(_Axis(["value"] * n, 0, o, taps, links, [True] * n, list(range(n))))
            continue
        k, s, d = spec.kernel_size[a], spec.stride[a], spec.dilation[a]
        if isinstance(spec, ConvTransposeSpec):
            before, windows, value_end = spec.padding[a], n, spec.padding[a] + o
            kinds = ["crop" if q < before or q >= value_end else "value" for q in range(side)]
        else:
            before, after = (
                spec.padding[a] if isinstance(spec, ConvSpec) else (spec.padding[a],) * 2
            )
            windows, value_end = o, before + n
            kinds = [
                "pad" if q < before or value_end <= q < value_end + after else "value"
                for q in range(side)
            ]
            kinds = [kd if q < value_end + after else "overhang" for q, kd in enumerate(kinds)]
        links = [(w, t, w * s + t * d) for w in range(windows) for t in range(k)]
        copies = isinstance(spec, ConvSpec) and spec.padding_mode != "zeros"
        counted = [kd == "value" or (kd != "overhang" and (dense or copies)) for kd in kinds]
        route: list[int | None] = [q if c else None for q, c in zip(range(side), counted)]
        if copies and not dense:  # a product on a copied pad adds into the entry it copies
            route = [
                q if kd == "value" else before + padded_source(q, before, n, spec.padding_mode)
                for q, kd in enumerate(kinds)
            ]
        axes.append(_Axis(kinds, before, windows, k, links, counted, route))
    return axes


def _hitting(axis: _Axis) -> dict[int, int]:
    """Per window along one axis, the position a worst-case max routes its gradient to: the
    greedy hitting set (by right end), which has the fewest positions (τ)."""
    cells: dict[int, list[int]] = {}
    for w, _, q in axis.links:
        if axis.counted[q]:
            cells.setdefault(w, []).append(q)
    picked: set[int] = set()
    routed = {}
    for w in sorted(cells, key=lambda w: max(cells[w])):
        hit = next((q for q in cells[w] if q in picked), None)
        if hit is None:
            hit = max(cells[w])
            picked.add(hit)
        routed[w] = hit
    return routed


def _channel_groups(channels: int, groups: int, drawn: int) -> tuple[int, ...]:
    per = channels // groups
    return tuple(c // per for c in range(drawn))


def _grid(
    role: str,
    label: str,
    channels: int,
    groups: int,
    kinds: list[list[str]],
    offsets: list[int],
    limit: int = MAX_CHANNELS,
) -> Grid:
    drawn = min(channels, limit)
    return Grid(
        role,
        label,
        tuple(range(drawn)),
        channels - drawn,
        _channel_groups(channels, groups, drawn),
        tuple(tuple(k) for k in kinds),
        tuple(offsets),
    )


WORDS = {
    "forward": ("input", "weight", "output"),
    "backward-input": ("input gradient g_z", "weight", "output gradient ε"),
    "backward-weight": ("input z", "weight gradient g_w", "output gradient ε"),
}


def _check_caps(spec: Any, shape: Sequence[int], out: Sequence[int]) -> int:
    """Refuses a layer too large to draw; returns how many channels a stack shows (at most
    MAX_CHANNELS, fewer where they would exceed MAX_CELLS)."""
    big, small, kernel = _sides(spec, shape, out)
    transposed = isinstance(spec, ConvTransposeSpec)
    named = [("the output" if transposed else "the input (with its padding)", big, "--input")]
    named.append(("the input" if transposed else "the output", small, "--input or raise --stride"))
    named.append(("the kernel", kernel, "--kernel"))
    for what, sides, lower in named:
        if any(side > MAX_SIDE for side in sides):
            _refuse(what, sides, lower)
    for limit in range(MAX_CHANNELS, 0, -1):
        stacks = [min(shape[0], limit) * prod(big), min(out[0], limit) * prod(small)]
        if kernel:
            stacks.append(min(spec.weight_shape[0], limit) * prod(kernel))
        if sum(stacks) <= MAX_CELLS:
            return limit
    _refuse("the picture", [sum(stacks)], "--input")


def layer_scene(
    layer: Any,
    shape: Sequence[int],
    *,
    batch: int = 1,
    count: str = "exact",
    pass_: str = "forward",
    frames: int | None = None,
) -> Scene:
    """The scene of one pass (``forward``, ``backward-input`` or ``backward-weight``) through
    ``layer`` (a convolution, transposed convolution or pool module, or its spec) for an input
    of ``shape`` (channel-first, no batch). ``frames`` caps the frames (default 400): units
    are then grouped by row, or in runs, and the scene says so. Raises ``ConvScopeError`` for
    a layer too large to draw, and ``CounterMismatch`` if the frames do not add up to the cost
    rule's count."""
    spec = _spec(layer)
    if pass_ not in PASSES:
        raise ConvScopeError(f"pass must be one of {', '.join(PASSES)}, got {pass_!r}")
    pool = isinstance(spec, (PoolSpec, AdaptivePoolSpec))
    if pool and pass_ == "backward-weight":
        raise ConvScopeError(
            f"{spec.name} has no weight, so there is no backward-weight pass to draw "
            "(a pool's gradient is g_z only)"
        )
    if frames is not None and (not isinstance(frames, int) or frames < 1):
        raise ConvScopeError(f"frames must be an int >= 1, got {frames!r}")
    out = spec.output_shape(shape)  # validates the input shape
    shape = tuple(int(v) for v in shape)
    channels = _check_caps(spec, shape, out)
    cost = spec.cost(shape, batch, count)
    dense = count == "dense"
    axes = _axes(spec, shape, out, dense)
    if prod(len(a.links) for a in axes) > MAX_LINKS:
        raise ConvScopeError(
            f"{spec.name} is too large to draw: {prod(len(a.links) for a in axes):,} "
            f"(window, tap) pairs to walk (at most {MAX_LINKS:,}); lower the input or the kernel"
        )
    from .walk import walk  # the pass, unit by unit

    return walk(spec, shape, out, batch, count, pass_, frames or MAX_FRAMES, axes, cost, channels)


def check_final(name: str, pass_: str, total: dict[str, int], rule: Any) -> dict[str, int]:
    """The cost rule's counts for the pass; raises ``CounterMismatch`` where the frames'
    running total differs."""
    final = {k: getattr(rule, k) for k in COUNT_KEYS if getattr(rule, k) or k in total}
    got = {k: total.get(k, 0) for k in final}
    if got != final:
        raise CounterMismatch(f"{name} {pass_}: the frames add up to {got}, the cost rule {final}")
    return final
