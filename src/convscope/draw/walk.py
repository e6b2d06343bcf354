"""The pass, walked one unit at a time: the grids of the scene, each frame's cells and counts,
and the notes that say what the picture shows (see ``scene`` for how the counts split)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry import axis_names, prod
from ..ops.conv import ConvSpec
from ..ops.conv_transpose import ConvTransposeSpec
from ..ops.pooling import PoolSpec
from .scene import (
    SIDES,
    WORDS,
    Frame,
    Scene,
    _Axis,
    _grid,
    _hitting,
    _shape,
    check_final,
)

#: The role each pass writes into.
TARGET = {"forward": "output", "backward-input": "input", "backward-weight": "weight"}


def _units(axes: list[_Axis], key: str) -> tuple[list[list[int]], list[dict[int, list]]]:
    """Per axis, the units a frame can stand for, and the links of each unit: grouped by
    ``key``, the window (0), the tap (1) or the g_z entry a product adds into (route)."""
    units, by_unit = [], []
    for axis in axes:
        groups: dict[int, list] = {}
        for link in axis.links:
            unit = axis.route[link[2]] if key == "route" else link[0 if key == "window" else 1]
            if unit is not None:
                groups.setdefault(unit, []).append(link)
        if key == "window":
            units.append(list(range(axis.windows)))
        elif key == "tap":
            units.append(list(range(axis.taps)))
        else:
            units.append(sorted({r for r in axis.route if r is not None}))
        by_unit.append(groups)
    return units, by_unit


def _grouping(units: list[list[int]], cap: int, word: str) -> tuple[int, str | None]:
    """How many consecutive units (row-major) each frame shows, and the sentence saying so."""
    total, row = prod(len(u) for u in units), len(units[-1])
    if total <= cap:
        return 1, None
    if len(units) > 1 and total // row <= cap:
        frames = total // row
        return row, f"{total} {word}s shown as {frames} frames, one per row of {row}"
    run = math.ceil(total / cap)
    frames = math.ceil(total / run)
    return run, f"{total} {word}s shown as {frames} frames, each a run of up to {run}"


def _notes(spec: Any, pass_: str, count: str, batch: int, cost: Any) -> list[str]:
    """What the picture cannot show with cells: padding per side, groups, the bias, divisors."""
    names, notes = axis_names(spec.ndim), []
    sides = SIDES[spec.ndim]
    if isinstance(spec, ConvSpec):
        for ax, (b, a), (s0, s1) in zip(names, spec.padding, sides):
            if b or a:
                notes.append(f"padding {ax}: {b} {s0}, {a} {s1}")
        if spec.padding_mode != "zeros":
            notes.append(f"padding_mode={spec.padding_mode}: pads copy input values (products)")
    if isinstance(spec, ConvTransposeSpec):
        for ax, p, op in zip(names, spec.padding, spec.output_padding):
            if p:
                notes.append(f"padding {p} on {ax}: crops {p} cells (red) off each end of {ax}")
            if op:
                notes.append(f"output_padding {op} on {ax}: {op} more cell(s) at the end of {ax}")
    if isinstance(spec, PoolSpec):
        for ax, p, (s0, s1) in zip(names, spec.padding, sides):
            if p:
                notes.append(f"padding {ax}: {p} {s0}, {p} {s1}")
        if spec.ceil_mode:
            notes.append("ceil_mode: the last window may hang over the edge (overhang: no element)")
        if spec.mode == "avg":
            if spec.divisor_override:
                notes.append(f"each window divides by divisor_override={spec.divisor_override}")
            elif spec.count_include_pad:
                notes.append("count_include_pad: the divisor counts padding cells in the window")
            else:
                notes.append("count_include_pad=False: the divisor counts input cells only")
    if not isinstance(spec, (ConvSpec, ConvTransposeSpec, PoolSpec)):
        notes.append("adaptive windows: window i spans ⌊i·L/O⌋ … ⌈(i + 1)·L/O⌉ − 1")
    if isinstance(spec, (ConvSpec, ConvTransposeSpec)) and spec.groups > 1:
        ci, co = spec.in_channels // spec.groups, spec.out_channels // spec.groups
        kind = "depthwise, " if spec.groups == spec.in_channels else ""
        notes.append(
            f"groups={spec.groups} ({kind}colours): each output channel reads the {ci} input "
            f"channel(s) of its group; each group has {co} output channel(s)"
        )
    if count == "exact":
        notes.append("exact count: a tap on padding or cropped cells (orange) is not a product")
    else:
        notes.append("dense count: taps on padding are products, as on the zero-padded input")
    if getattr(spec, "bias", False) and pass_ == "forward":
        notes.append("bias: + 1 addition per output entry")
    if pass_ == "backward-weight" and cost.backward_bias is not None:
        notes.append(f"g_b (bias gradient, not drawn): {cost.backward_bias.adds:,} additions")
    if pass_ == "backward-input" and getattr(spec, "mode", None) == "max":
        notes.append("worst case over inputs: each window's gradient goes to one of the fewest")
        notes.append("entries that hit every window (τ); the count is an upper bound")
    notes.append(f"every frame counts all channels and the batch N={batch}")
    return notes


def _divisor(spec: Any, per_axis: list[list[tuple[int, int, int]]], axes: list[_Axis]) -> int:
    """An average window's divisor, as PyTorch divides."""
    if isinstance(spec, PoolSpec):
        if spec.divisor_override:
            return spec.divisor_override
        if spec.count_include_pad:
            return prod(
                sum(a.kinds[q] != "overhang" for *_, q in ls) for a, ls in zip(axes, per_axis)
            )
        return prod(sum(a.kinds[q] == "value" for *_, q in ls) for a, ls in zip(axes, per_axis))
    return prod(len(ls) for ls in per_axis)


def walk(
    spec: Any,
    shape: Sequence[int],
    out: Sequence[int],
    batch: int,
    count: str,
    pass_: str,
    cap: int,
    axes: list[_Axis],
    cost: Any,
    channels: int,
) -> Scene:
    """The scene: grids (at most ``channels`` drawn per stack), frames with running counts
    (checked against ``cost``), notes."""
    kernel = isinstance(spec, (ConvSpec, ConvTransposeSpec))
    transposed = isinstance(spec, ConvTransposeSpec)
    big, small = ("output", "input") if transposed else ("input", "output")
    in_word, w_word, out_word = WORDS[pass_]
    groups = spec.groups if kernel else shape[0]  # a pool keeps each channel to itself
    big_shape, small_shape = (out, shape) if transposed else (shape, out)
    words = {"input": in_word, "output": out_word}
    grids = [
        _grid(
            big,
            f"{words[big]} {_shape(big_shape)}",
            big_shape[0],
            groups,
            [a.kinds for a in axes],
            [a.offset for a in axes],
            channels,
        ),
        _grid(
            small,
            f"{words[small]} {_shape(small_shape)}",
            small_shape[0],
            groups,
            [["value"] * a.windows for a in axes],
            [0] * len(axes),
            channels,
        ),
    ]
    if kernel:
        ws = spec.weight_shape
        grids.append(
            _grid(
                "weight",
                f"{w_word} {_shape(ws)}",
                ws[0],
                spec.groups,
                [["value"] * a.taps for a in axes],
                [0] * len(axes),
                channels,
            )
        )
    grids.sort(key=lambda g: ("input", "weight", "output").index(g.role))

    key = {"forward": "window", "backward-weight": "tap"}.get(
        pass_, "window" if transposed else "route"
    )
    units, by_unit = _units(axes, key)
    word = {"window": f"{small} position", "tap": "kernel tap", "route": "g_z entry"}[key]
    if key == "window" and pass_ == "backward-input":
        word = "g_z entry"
    run, frame_note = _grouping(units, cap, word)

    n = batch
    if kernel:
        f_mult = n * spec.weight_shape[0] * spec.weight_shape[1]
        f_target = {"forward": n * spec.out_channels, "backward-input": n * spec.in_channels}.get(
            pass_, spec.weight_shape[0] * spec.weight_shape[1]
        )
    else:
        f_mult = f_target = n * shape[0]
    mode = getattr(spec, "mode", None)
    hits = [_hitting(a) for a in axes] if mode == "max" and pass_ == "backward-input" else []
    masks = {g.role: np.zeros(g.shape, dtype=bool) for g in grids}
    offsets = {big: [a.offset for a in axes], small: [0] * len(axes), "weight": [0] * len(axes)}
    unit_role = {"window": small, "tap": "weight", "route": big}[key]
    reached = {role: np.zeros(m.shape, dtype=bool) for role, m in masks.items()}
    frames: list[Frame] = []
    total: dict[str, int] = {}
    pending: list[tuple[tuple[int, ...], dict[str, int], dict[str, np.ndarray]]] = []
    all_units = list(itertools.product(*units))
    for number, unit in enumerate(all_units):
        per_axis = [by_unit[a].get(u, []) for a, u in enumerate(unit)]
        live = [[ln for ln in ls if axes[a].counted[ln[2]]] for a, ls in enumerate(per_axis)]
        c = prod(len(ls) for ls in live)
        cells = {}
        for role, part in ((big, 2), (small, 0), ("weight", 1)):
            if role in masks:
                mask = np.zeros(masks[role].shape, dtype=bool)
                sets = [sorted({ln[part] for ln in ls}) for ls in per_axis]
                if all(sets):
                    mask[np.ix_(*sets)] = True
                cells[role] = mask
        step: dict[str, int] = {}
        if kernel:
            step["mults"] = f_mult * c
            if pass_ == "forward" and spec.bias:
                step["adds"] = step["mults"]
            elif pass_ == "forward" and transposed:  # a scatter: an entry is new once
                sets = [sorted({ln[2] for ln in ls}) for ls in live]
                new = 0
                if all(sets):
                    seen = reached[big][np.ix_(*sets)]
                    new = int((~seen).sum())
                    reached[big][np.ix_(*sets)] = True
                step["adds"] = step["mults"] - f_target * new
            else:
                step["adds"] = step["mults"] - f_target * (c > 0)
        elif pass_ == "forward":
            step["compares" if mode == "max" else "adds"] = f_mult * c - f_target * (c > 0)
            if mode != "max":
                step["divides"] = f_target * (c > 0)
        elif mode == "max":
            routed = prod(
                sum(hits[a].get(ln[0]) == u for ln in ls)
                for a, (u, ls) in enumerate(zip(unit, live))
            )
            step["adds"] = f_target * max(routed - 1, 0)
        else:
            sets = [sorted({ln[0] for ln in ls}) for ls in live]
            new = 0
            if all(sets):
                new = int((~reached[small][np.ix_(*sets)]).sum())
                reached[small][np.ix_(*sets)] = True
            step["adds"] = f_mult * c - f_target * (c > 0)
            step["divides"] = f_target * new
        pending.append((unit, step, cells))
        if len(pending) == run or number == len(all_units) - 1:
            frames.append(
                _frame(len(frames), pending, total, unit_role, word, offsets, spec, axes, by_unit)
            )
            pending = []
    rule = {"forward": cost.forward, "backward-input": cost.backward_input}.get(
        pass_, cost.backward_weight
    )
    final = check_final(spec.name, pass_, total, rule)
    ws = list(spec.weight_shape) if kernel else None
    return Scene(
        title=f"{spec.name}({spec.describe()})",
        layer=spec.name,
        pass_=pass_,
        count=count,
        batch=batch,
        grids=tuple(grids),
        frames=tuple(frames),
        target=TARGET[pass_],
        final=final,
        upper_bound=bool(rule.upper_bound),
        shapes={"input": list(shape), "weight": ws, "output": list(out)},
        notes=tuple(_notes(spec, pass_, count, batch, cost)),
        padding_counted=count == "dense"
        or (isinstance(spec, ConvSpec) and spec.padding_mode != "zeros"),
        units=len(all_units),
        frame_note=frame_note,
    )


def _frame(
    index: int,
    pending: list[tuple[tuple[int, ...], dict[str, int], dict[str, np.ndarray]]],
    total: dict[str, int],
    unit_role: str,
    word: str,
    offsets: dict[str, list[int]],
    spec: Any,
    axes: list[_Axis],
    by_unit: list[dict[int, list]],
) -> Frame:
    """One frame from the units it shows; ``total`` (the running counts) is updated."""
    step: dict[str, int] = {}
    cells: dict[str, np.ndarray] = {}
    for _, unit_step, unit_cells in pending:
        for k, v in unit_step.items():
            step[k] = step.get(k, 0) + v
        for role, mask in unit_cells.items():
            cells[role] = cells[role] | mask if role in cells else mask
    for k, v in step.items():
        total[k] = total.get(k, 0) + v

    def coords(unit: tuple[int, ...]) -> str:
        return ", ".join(str(u - o) for u, o in zip(unit, offsets[unit_role]))

    first, last = pending[0][0], pending[-1][0]
    label = f"{word} ({coords(first)})"
    if len(pending) > 1:
        label = f"{word}s ({coords(first)}) … ({coords(last)})"
    elif getattr(spec, "mode", None) == "avg" and step.get("divides") and unit_role == "output":
        per_axis = [by_unit[a].get(u, []) for a, u in enumerate(first)]  # one window, divided once
        label += f", ÷ {_divisor(spec, per_axis, axes)}"
    return Frame(index, label, cells, step, dict(total))
