"""The one geometry of sliding and adaptive windows, and the validation of sizes and arguments.

The counting rules use the integer statistics of ``Windows`` and ``AdaptiveWindows``: closed
forms or loops over kernel taps or padding positions, never over the output positions of the
whole tensor, so their cost does not grow with the input. The engine and the pool analysis use
the same windows as arrays (``tap_slices``, ``Windows.valid_range``, ``AdaptiveWindows.starts``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LayerConfigError, ShapeError

Shape = tuple[int, ...]
PadPairs = tuple[tuple[int, int], ...]

AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def axis_names(ndim: int) -> tuple[str, ...]:
    return AXIS_NAMES.get(ndim, tuple(f"S{i + 1}" for i in range(ndim)))


def prod(values: Iterable[int]) -> int:
    return math.prod(values)


def is_int(value: object) -> bool:
    """An int that is not a bool (True is not a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, name: str) -> int:
    """``value`` as a count: an int >= 1 (a bool is not an int)."""
    if not is_int(value) or value < 1:
        raise LayerConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_sizes(shape: object, layer: str, what: str = "an input shape") -> Shape:
    """The one rule for shapes: a non-empty sequence of ints >= 1 (a bool is not an int)."""
    sizes = tuple(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else None
    if not sizes or not all(is_int(v) and v >= 1 for v in sizes):
        raise ShapeError(f"{layer} takes {what} of sizes >= 1 without the batch, got {shape!r}")
    return sizes


def int_tuple(value: int | Sequence[int], ndim: int, name: str, minimum: int = 1) -> Shape:
    """``value`` repeated over ``ndim`` axes, or checked as a per-axis tuple."""
    values = (value,) * ndim if is_int(value) else tuple(value)  # type: ignore[arg-type]
    if len(values) != ndim or not all(is_int(v) for v in values):
        raise LayerConfigError(
            f"{name} must be an int or {ndim} ints (one per spatial axis), got {value!r}"
        )
    if any(v < minimum for v in values):
        raise LayerConfigError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return values


def pad_pairs(
    padding: int | str | Sequence[int] | Sequence[Sequence[int]],
    ndim: int,
    kernel: Shape,
    dilation: Shape,
    stride: Shape,
    allow_crop: bool = False,
) -> PadPairs:
    """Per-axis (before, after) padding from an int, per-axis ints, pairs, 'same' or 'valid'.

    'same' follows PyTorch: the total pad ``d·(k − 1)`` is split with the extra one at the end.
    With ``allow_crop`` a negative int (not a pair) crops, as F.pad does for PyTorch's
    non-zeros padding modes.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding != "same":
            raise LayerConfigError(
                f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}"
            )
        if any(s != 1 for s in stride):
            raise LayerConfigError(
                f"padding='same' needs stride 1 on every axis (the output would not keep the "
                f"input size), got stride={stride}"
            )
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    if is_int(padding):
        pairs = ((padding, padding),) * ndim
    else:
        items = tuple(padding)  # type: ignore[arg-type]
        if len(items) != ndim:
            raise LayerConfigError(
                f"padding needs one entry per spatial axis ({ndim}), got {padding!r}"
            )
        pairs = tuple(
            (item, item) if is_int(item) else tuple(item)  # type: ignore[misc]
            for item in items
        )
        if not all(len(p) == 2 and all(is_int(v) for v in p) for p in pairs):
            raise LayerConfigError(
                f"padding entries must be ints or (before, after) pairs, got {padding!r}"
            )
    negative = any(v < 0 for pair in pairs for v in pair)
    per_side = not is_int(padding) and not all(is_int(item) for item in padding)  # type: ignore[union-attr]
    if negative and (per_side or not allow_crop):
        raise LayerConfigError(
            f"padding must be >= 0, got {padding!r}"
            + ("" if per_side else " (a negative padding crops only with a non-zeros padding_mode)")
        )
    return pairs  # type: ignore[return-value]


def check_input(input_shape: Sequence[int], ndim: int, layer: str) -> Shape:
    """A channel-first shape (C, *spatial) with ``ndim`` spatial axes (``check_sizes``)."""
    form = f"a (C, {', '.join(axis_names(ndim))}) input"
    shape = check_sizes(input_shape, layer, form)
    if len(shape) != ndim + 1:
        raise ShapeError(f"{layer} takes {form} without the batch dimension, got {shape}")
    return shape


def check_input_rank(input_shape: Sequence[int], ranks: Sequence[int], layer: str) -> Shape:
    """Sizes (``check_sizes``) with one of the given numbers of axes."""
    form = f"an input of {' or '.join(map(str, ranks))} axes"
    shape = check_sizes(input_shape, layer, form)
    if len(shape) not in ranks:
        raise ShapeError(f"{layer} takes {form} without the batch, got {shape}")
    return shape


def check_batch(batch: int) -> int:
    if not is_int(batch) or batch < 1:
        raise ShapeError(f"batch must be an int >= 1, got {batch!r}")
    return batch


def conv_out_size(
    size: int, before: int, after: int, kernel: int, stride: int, dilation: int
) -> int:
    """``⌊(size + before + after − dilation·(kernel − 1) − 1) / stride⌋ + 1``."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    """PyTorch's rule: floor or ceil of the window count, and in ceil mode a last window that
    would start in the right padding is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def transpose_out_size(
    size: int, kernel: int, stride: int, pad: int, dilation: int, output_padding: int
) -> int:
    """``(size − 1)·stride − 2·pad + dilation·(kernel − 1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tap_slices(
    kernel: Shape, stride: Shape, dilation: Shape, out: Shape
) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """For each kernel offset (row-major), the strided slices of the padded input it reads
    across all windows: what the engine gathers (im2col) or reduces (pooling) per tap."""
    return [
        (
            t,
            tuple(
                slice(ti * d, ti * d + s * (o - 1) + 1, s)
                for ti, s, d, o in zip(t, stride, dilation, out)
            ),
        )
        for t in itertools.product(*(range(k) for k in kernel))
    ]


def _union_length(intervals: Iterable[tuple[int, int]]) -> int:
    """Number of integers covered by the closed intervals."""
    total, end = 0, None
    for lo, hi in sorted(intervals):
        if end is None or lo > end:
            total += hi - lo + 1
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


def _min_hitting(intervals: Iterable[tuple[int, int]]) -> int:
    """Fewest points that lie in every closed interval (greedy by right end, optimal)."""
    count, last = 0, None
    for lo, hi in sorted(intervals, key=lambda iv: iv[1]):
        if last is None or lo > last:
            count += 1
            last = hi
    return count


def _regular_min_hitting(start: int, step: int, length: int, count: int, last: int) -> int:
    """τ for windows ``[start + j·step, start + j·step + length − 1] ∩ [0, last]``, j < count.

    Greedy by right end is optimal. From an unclipped window j it next picks window j + J,
    ``J = ⌊(length − 1)/step⌋ + 1``, the first that starts past the pick; it stops at the first
    window clipped at ``last``, whose right end hits every later window.
    """
    if last < 0:
        return 0
    j_lo = max(0, _ceil_div(-(start + length - 1), step))  # first window reaching 0
    j_hi = min(count - 1, (last - start) // step)  # last window starting before ``last``
    if j_lo > j_hi:
        return 0
    jump = (length - 1) // step + 1
    picks = _ceil_div(j_hi - j_lo + 1, jump)
    clip = last - (start + j_lo * step + length - 1)  # the pick's right end must reach ``last``
    first_clipped = max(0, _ceil_div(clip, jump * step))
    return min(picks, first_clipped + 1)


@dataclass(frozen=True)
class Windows:
    """``count`` windows along one axis: tap t of window o is at ``o·stride + t·dilation + start``.

    Values live at positions ``0 .. size − 1``; a tap elsewhere (padding, or beyond) is not valid.
    """

    size: int
    start: int
    kernel: int
    stride: int
    dilation: int
    count: int

    def _tap_ranges(self) -> list[tuple[int, int, int]]:
        """(t, first window, last window) for each tap that is valid in at least one window."""
        ranges = []
        for t in range(self.kernel):
            offset = t * self.dilation + self.start
            first = _ceil_div(-offset, self.stride) if offset < 0 else 0
            last = min(self.count - 1, (self.size - 1 - offset) // self.stride)
            if first <= last:
                ranges.append((t, first, last))
        return ranges

    @property
    def pairs(self) -> int:
        """Valid (window, tap) pairs: the products one channel pair contributes."""
        return sum(last - first + 1 for _, first, last in self._tap_ranges())

    @property
    def taps_used(self) -> int:
        """Taps that are valid in at least one window."""
        return len(self._tap_ranges())

    @property
    def windows_used(self) -> int:
        """Windows holding at least one valid tap."""
        return _union_length((first, last) for _, first, last in self._tap_ranges())

    def _lattice_intervals(self) -> list[tuple[int, int, int]]:
        """The positions the valid taps reach, as (residue, first index, last index) on the
        lattice ``residue + stride·index``."""
        out = []
        for t, first, last in self._tap_ranges():
            offset = t * self.dilation + self.start
            residue = offset % self.stride
            base = (offset - residue) // self.stride
            out.append((residue, base + first, base + last))
        return out

    def positions_used(self, lo: int | None = None, hi: int | None = None) -> int:
        """Positions in ``[lo, hi)`` (default: all values) reached by at least one valid tap."""
        lo = 0 if lo is None else lo
        hi = self.size if hi is None else hi
        by_residue: dict[int, list[tuple[int, int]]] = {}
        for residue, first, last in self._lattice_intervals():
            first = max(first, _ceil_div(lo - residue, self.stride))
            last = min(last, (hi - 1 - residue) // self.stride)
            if first <= last:
                by_residue.setdefault(residue, []).append((first, last))
        return sum(_union_length(ivs) for ivs in by_residue.values())

    def valid_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per window, the positions of its first and last valid taps (last < first when the
        window holds none): the engine's and the pool analysis's view of the same windows."""
        start = np.arange(self.count) * self.stride + self.start
        first_tap = np.where(start < 0, -(start // self.dilation), 0)  # ⌈−start / d⌉
        last_tap = np.minimum(self.kernel - 1, (self.size - 1 - start) // self.dilation)
        return start + first_tap * self.dilation, start + last_tap * self.dilation

    def valid_counts(self) -> np.ndarray:
        """Valid taps per window (an average pool's divisor)."""
        first, last = self.valid_range()
        return np.maximum(0, (last - first) // self.dilation + 1)

    def reaches(self, position: int) -> bool:
        for residue, first, last in self._lattice_intervals():
            step, rest = divmod(position - residue, self.stride)
            if rest == 0 and first <= step <= last:
                return True
        return False

    def min_hitting(self) -> int:
        """Fewest positions that lie in every non-empty window (τ).

        A window lies on one lattice ``residue + dilation·j``. Windows o ≡ o0 (mod dilation / g),
        g = gcd(stride, dilation), share a lattice and form a regular family there, with stride
        ``stride / g`` in lattice units; τ adds up over the at most ``dilation / g`` families.
        """
        d, s = self.dilation, self.stride
        period = d // math.gcd(s, d)
        total = 0
        for o0 in range(min(period, self.count)):
            first = o0 * s + self.start
            residue = first % d
            total += _regular_min_hitting(
                start=(first - residue) // d,
                step=s * period // d,
                length=self.kernel,
                count=_ceil_div(self.count - o0, period),
                last=(self.size - 1 - residue) // d,
            )
        return total


@dataclass(frozen=True)
class AdaptiveWindows:
    """PyTorch's adaptive windows: window i spans ``⌊i·L/O⌋ .. ⌈(i + 1)·L/O⌉ − 1``."""

    size: int
    count: int

    def bounds(self, i: int) -> tuple[int, int]:
        """Window i's first position and one past its last."""
        return (i * self.size) // self.count, _ceil_div((i + 1) * self.size, self.count)

    def starts(self) -> np.ndarray:
        """Every window's first position, as an array."""
        return (np.arange(self.count) * self.size) // self.count

    def ends(self) -> np.ndarray:
        """One past every window's last position, as an array."""
        return -((-(np.arange(self.count) + 1) * self.size) // self.count)

    @property
    def pairs(self) -> int:
        """Total window length, ``L + O − gcd(L, O)``."""
        return self.size + self.count - math.gcd(self.size, self.count)

    @property
    def windows_used(self) -> int:
        return self.count

    def positions_used(self) -> int:
        return self.size

    def min_hitting(self) -> int:
        return _min_hitting((lo, hi - 1) for lo, hi in (self.bounds(i) for i in range(self.count)))


def padded_source(position: int, before: int, size: int, mode: str) -> int:
    """The real input position whose value a padded position holds (PyTorch's F.pad modes)."""
    i = position - before
    if 0 <= i < size:
        return i
    if mode == "reflect":
        return -i if i < 0 else 2 * (size - 1) - i
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    raise ValueError(f"no source position for padding mode {mode!r}")


def reached_sources(padded: Windows, before: int, size: int, mode: str) -> int:
    """Real positions that receive a gradient through any reached position of the padded axis."""
    interior = padded.positions_used(before, before + size)
    extra = set()
    for q in (*range(before), *range(before + size, padded.size)):
        if padded.reaches(q):
            j = padded_source(q, before, size, mode)
            if not padded.reaches(j + before):
                extra.add(j)
    return interior + len(extra)
