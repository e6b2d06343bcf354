"""The per-axis geometry of interpolation (``ops/interpolate.py``): PyTorch's output size, its
source-index rules, the counts of one axis in closed form, and its receptive field.

Along one axis of input size L and output size O:

* nearest: output d copies input ``min(⌊d·s⌋, L − 1)`` (PyTorch's legacy rule); nearest-exact
  reads ``min(⌊(d + ½)·s⌋, L − 1)``. ``s`` is 1/scale_factor when the factor is given (and not
  recomputed), else L/O. PyTorch's CPU forward computes s in the dtype's precision and rounds
  the product to float32 (floorf); its backward uses float32 with shortcuts for O = L and
  O = 2L, so with a factor such that O = L (L = 2, scale_factor 1.15) torch's gradient is not
  the adjoint of its forward. The engine follows the forward, and its backward is the adjoint.
* linear: output d reads i0 = min(⌊src⌋, L − 1) and i1 = min(i0 + 1, L − 1) with weights
  1 − λ and λ, λ = src − i0; src = d·(L − 1)/(O − 1) with align_corners, else
  max(0, (d + ½)·s − ½). O = L reads input d alone (PyTorch's shortcut).

The engine uses PyTorch's float arithmetic (the index decides the values). The counts use the
source coordinates in exact rational arithmetic, so they do not depend on the dtype: a float
coordinate within rounding of an integer can land one below it (for linear modes only a zero
weight moves; for nearest the copied entry does, with the same counts unless the first or last
output's source moves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import ShapeError

LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}
NEAREST_MODES = ("nearest", "nearest-exact")


@dataclass(frozen=True)
class Axis:
    """One spatial axis: input size L, output size O, the scale factor PyTorch's kernel is given
    (None: it uses L/O), the mode and align_corners."""

    size: int
    out: int
    factor: float | None
    mode: str
    align_corners: bool


def out_size(size: int, factor: float) -> int:
    """PyTorch's output size for a scale factor: ⌊L·scale_factor⌋ in double precision."""
    try:
        product = float(size) * float(factor)
    except OverflowError:
        product = math.inf
    if not math.isfinite(product):
        raise ShapeError(
            f"Upsample: the output size {size}·{factor} is beyond a double (PyTorch computes it "
            f"in double precision); lower scale_factor or give size"
        )
    return math.floor(product)


# -- PyTorch's index rules (the engine) -------------------------------------------------------


def _scale(axis: Axis, double: bool) -> float:
    """compute_scales_value: 1/scale_factor, or L/O, in double or in float32."""
    if axis.factor is not None and axis.factor > 0:
        value = 1.0 / axis.factor
        return value if double else float(np.float32(value))
    if double:
        return axis.size / axis.out
    return float(np.float32(axis.size) / np.float32(axis.out))


def nearest_index(axis: Axis, d: int, double: bool = True) -> int:
    """The input index output ``d`` copies in PyTorch's CPU forward (HelperInterpNearest: the
    scale in the dtype's precision, the product rounded to float32 by floorf, no shortcuts)."""
    scale = _scale(axis, double)
    offset = 0.0 if axis.mode == "nearest" else 0.5
    if double or axis.mode == "nearest-exact":  # (d + 0.5) is a double
        product = np.float32((d + offset) * scale)
    else:
        product = np.float32(d) * np.float32(scale)
    return min(int(math.floor(product)), axis.size - 1)


def exact_nearest_index(axis: Axis, d: int) -> int:
    """The counts' rule: ⌊d·s⌋ or ⌊(d + ½)·s⌋ with s = 1/scale_factor or L/O exactly."""
    s = 1 / Fraction(axis.factor) if axis.factor is not None else Fraction(axis.size, axis.out)
    offset = Fraction(0) if axis.mode == "nearest" else Fraction(1, 2)
    return min(math.floor((d + offset) * s), axis.size - 1)


def linear_taps(axis: Axis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, λ) per output, as PyTorch's double-precision kernel computes them."""
    size, out = axis.size, axis.out
    d = np.arange(out, dtype=np.float64)
    if out == size:
        index = np.arange(out)
        return index, index, np.zeros(out)
    if axis.align_corners:
        ratio = (size - 1) / (out - 1) if out > 1 else 0.0
        src = ratio * d
    else:
        ratio = 1.0 / axis.factor if axis.factor else size / out
        src = np.maximum(ratio * (d + 0.5) - 0.5, 0.0)
    # floorf: the double is rounded to float32 before the floor
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), size - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    return i0, np.minimum(i0 + 1, size - 1), lam


def axis_matrix(axis: Axis, dtype: np.dtype) -> np.ndarray:
    """The (O, L) matrix of the axis's interpolation: y = A·x along the axis."""
    matrix = np.zeros((axis.out, axis.size), dtype=np.float64)
    rows = np.arange(axis.out)
    if axis.mode in NEAREST_MODES:
        double = np.dtype(dtype) == np.float64
        matrix[rows, [nearest_index(axis, d, double) for d in range(axis.out)]] = 1.0
    else:
        i0, i1, lam = linear_taps(axis)
        np.add.at(matrix, (rows, i0), 1.0 - lam)
        np.add.at(matrix, (rows, i1), lam)
    return matrix.astype(dtype, copy=False)


# -- exact counts of one axis -------------------------------------------------------------------


@dataclass(frozen=True)
class AxisCount:
    """What the closed forms of one axis give: ``taps`` Σ over outputs of the distinct inputs
    each reads, ``single`` the outputs that read one input, ``reached`` the inputs read at all."""

    taps: int
    single: int
    reached: int


def exact_scale(axis: Axis) -> Fraction:
    """The linear modes' scale in exact arithmetic (the counts' rule)."""
    size, out = axis.size, axis.out
    if axis.align_corners:
        return Fraction(size - 1, out - 1) if out > 1 else Fraction(0)
    if axis.factor is not None:
        return 1 / Fraction(axis.factor)
    return Fraction(size, out)


def exact_source(axis: Axis, s: Fraction, d: int) -> Fraction:
    """src of output ``d`` in exact arithmetic (clamped at 0 without align_corners)."""
    if axis.align_corners:
        return s * d
    return max(Fraction(0), (d + Fraction(1, 2)) * s - Fraction(1, 2))


def linear_count(axis: Axis) -> AxisCount:
    """Closed forms of a linear axis. i0 is non-decreasing with steps ⌊s⌋ or ⌊s⌋ + 1, so the
    set S of i0 values has min(O, span + 1) members in 1 + gaps runs (gaps: steps of 2 or more,
    clamp(span − (O − 1), 0, O − 1)); its inputs and their upper neighbours number
    |S| + runs, less one when the last run ends at L − 1. The single-tap outputs are those
    with src ≥ L − 1 (i1 clamps onto i0)."""
    size, out = axis.size, axis.out
    if out == size:
        return AxisCount(out, out, size)
    s = exact_scale(axis)
    first_top = _first_at_top(axis, s)
    single = max(0, out - first_top)
    low = min(math.floor(exact_source(axis, s, 0)), size - 1)
    high = min(math.floor(exact_source(axis, s, out - 1)), size - 1)
    span = high - low
    members = min(out, span + 1)
    gaps = min(max(span - (out - 1), 0), out - 1)
    reached = members + 1 + gaps - (1 if high == size - 1 else 0)
    return AxisCount(2 * out - single, single, reached)


def _first_at_top(axis: Axis, s: Fraction) -> int:
    """The first output whose src reaches L − 1 (from there on i0 = i1 = L − 1)."""
    size = axis.size
    if size == 1:
        return 0
    if s == 0:
        return axis.out
    if axis.align_corners:
        return math.ceil((size - 1) / s)
    return max(0, math.ceil((size - Fraction(1, 2)) / s - Fraction(1, 2)))


def nearest_count(axis: Axis) -> AxisCount:
    """Closed form of a nearest axis: each output reads one input. Upsampling (O ≥ L) steps by
    0 or 1, so the inputs read are idx(0) … idx(O − 1); downsampling steps by at least 1, so
    every output reads its own input."""
    size, out = axis.size, axis.out
    if out >= size:
        reached = exact_nearest_index(axis, out - 1) - exact_nearest_index(axis, 0) + 1
    else:
        reached = out
    return AxisCount(out, out, reached)


def axis_count(axis: Axis, dense: bool) -> AxisCount:
    """The axis's counts; ``dense`` runs every linear output's two taps (PyTorch's stencil)."""
    if axis.mode in NEAREST_MODES:
        return nearest_count(axis)
    count = linear_count(axis)
    return AxisCount(2 * axis.out, 0, count.reached) if dense else count


# -- receptive field ----------------------------------------------------------------------------

#: A window (size r, stride j, padding p) along one axis, or None where it varies.
Window = tuple[Fraction, Fraction, Fraction] | None
_LARGEST = 1 << 20  # beyond this the float32 index rules drift from exact integer steps


def axis_window(axis: Axis) -> Window:
    """The inputs output d reads along the axis, as o·j − p … o·j − p + r − 1, where every
    output reads such a window (with clamped borders); None where sizes or steps vary."""
    size, out = axis.size, axis.out
    one, zero = Fraction(1), Fraction(0)
    if out == size:
        return one, one, zero
    if size == 1:  # every output reads the one input
        return one, zero, zero
    if max(size, out) > _LARGEST:
        return None
    if axis.mode in NEAREST_MODES:
        return _nearest_window(axis)
    s = exact_scale(axis)
    if axis.align_corners:
        # src = d·s: one input each where s is an integer; else d = 0 reads one, others two
        return (one, s, zero) if out == 1 or s.denominator == 1 else None
    if s.denominator == 1:  # downsampling by k: src = d·k + (k − 1)/2
        return (Fraction(1 + (s.numerator + 1) % 2), s, -(s - 1) / 2)
    if s.numerator == 1 and s.denominator % 2 == 0:  # upsampling by an even k: never integral
        return Fraction(2), s, (1 - s) / 2
    return None  # odd k: some outputs read one input, some two; fractional: steps vary


def _nearest_window(axis: Axis) -> Window:
    one, zero = Fraction(1), Fraction(0)
    size, out = axis.size, axis.out
    scales = [Fraction(_scale(axis, double)) for double in (True, False)]
    if all(s.denominator == 1 for s in scales):  # downsampling by k: d·k (+ ⌊k/2⌋ if exact)
        shift = 0 if axis.mode == "nearest" else scales[0].numerator // 2
        return one, scales[0], Fraction(-shift)
    k = out // size
    if out != k * size:
        return None
    # upsampling by k: ⌊d/k⌋ while the float scales stay within a fraction of a step of 1/k
    # (legacy nearest also needs them not below 1/k: ⌊m·k·s⌋ must not fall to m − 1)
    low = -Fraction(1, 2) if axis.mode == "nearest-exact" else Fraction(0)
    drifts = [out * (s - Fraction(1, k)) * k for s in scales]
    return (one, Fraction(1, k), zero) if all(low <= d < Fraction(1, 2) for d in drifts) else None
