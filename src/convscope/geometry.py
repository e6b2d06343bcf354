"""The one geometry of sliding and adaptive windows, and the validation of sizes and arguments.

The counting rules use the integer statistics of ``Windows`` and ``AdaptiveWindows``: exact
integer closed forms (clamped floor sums, evaluated in O(log) steps by ``floor_sum``), never
loops over positions, windows or taps, so their cost does not grow with the sizes. The engine
and the pool analysis use the same windows as arrays (``tap_slices``, ``Windows.valid_range``,
``AdaptiveWindows.starts``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LayerConfigError, ShapeError

Shape = tuple[int, ...]
PadPairs = tuple[tuple[int, int], ...]

AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def axis_names(ndim: int) -> tuple[str, ...]:
    if ndim in AXIS_NAMES:  # (not .get: its default would be built on every call)
        return AXIS_NAMES[ndim]
    return tuple(f"S{i + 1}" for i in range(ndim))


def prod(values: Iterable[int]) -> int:
    return math.prod(values)


def is_int(value: object) -> bool:
    """An int, Python's or NumPy's (``np.int64`` as PyTorch takes it), that is not a bool:
    True is not a size (``np.bool_`` is no ``np.integer``, so it is refused too)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut short: a hostile value must not flood the terminal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def positive_int(value: Any, name: str) -> int:
    """``value`` as a count: an int >= 1 (a bool is not an int), returned as a Python int."""
    if not is_int(value) or value < 1:
        raise LayerConfigError(f"{name} must be an int >= 1, got {_shown(value)}")
    return int(value)


def set_counts(spec: object, *fields: str) -> None:
    """A frozen spec's count ``fields`` checked (``positive_int``) and stored as Python ints, so
    that a NumPy integer never reaches a count (its arithmetic wraps past 2^63)."""
    for name in fields:
        object.__setattr__(spec, name, positive_int(getattr(spec, name), name))


def _sequence(value: object) -> tuple[Any, ...] | None:
    """A list, tuple, other sequence or 1-D NumPy array as a tuple; anything else (a string, a
    number, None) is None, for the caller's message."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return tuple(value.tolist())
    return None


def check_sizes(shape: object, layer: str, what: str = "an input shape") -> Shape:
    """The one rule for shapes: a non-empty sequence of ints >= 1 (a bool is not an int; a
    NumPy int is one), returned as Python ints so that counts never wrap around at 2**63."""
    sizes = _sequence(shape)
    if not sizes or not all(is_int(v) and v >= 1 for v in sizes):
        raise ShapeError(
            f"{layer} takes {what} of sizes >= 1 without the batch, got {_shown(shape)}"
        )
    return tuple(int(v) for v in sizes)


def int_tuple(value: int | Sequence[int], ndim: int, name: str, minimum: int = 1) -> Shape:
    """``value`` repeated over ``ndim`` axes, or checked as a per-axis tuple (Python ints)."""
    values = (value,) * ndim if is_int(value) else _sequence(value)
    if values is None or len(values) != ndim or not all(is_int(v) for v in values):
        raise LayerConfigError(
            f"{name} must be an int or {ndim} ints (one per spatial axis), got {_shown(value)}"
        )
    if any(v < minimum for v in values):
        raise LayerConfigError(f"{name} must be >= {minimum} on every axis, got {_shown(value)}")
    return tuple(int(v) for v in values)


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
        items = _sequence(padding)
        if items is None or len(items) != ndim:
            raise LayerConfigError(
                f"padding needs one entry per spatial axis ({ndim}), got {_shown(padding)}"
            )
        pairs = tuple((item, item) if is_int(item) else _sequence(item) or () for item in items)
        if not all(len(p) == 2 and all(is_int(v) for v in p) for p in pairs):
            raise LayerConfigError(
                f"padding entries must be ints or (before, after) pairs, got {_shown(padding)}"
            )
    negative = any(v < 0 for pair in pairs for v in pair)
    per_side = not is_int(padding) and not all(is_int(v) for v in _sequence(padding) or ())
    if negative and (per_side or not allow_crop):
        raise LayerConfigError(
            f"padding must be >= 0, got {_shown(padding)}"
            + ("" if per_side else " (a negative padding crops only with a non-zeros padding_mode)")
        )
    return tuple((int(a), int(b)) for a, b in pairs)  # Python ints: counts never wrap


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
    """The batch size N: an int >= 1 (a NumPy int too), returned as a Python int."""
    if not is_int(batch) or batch < 1:
        raise ShapeError(f"batch must be an int >= 1, got {_shown(batch)}")
    return int(batch)


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


def floor_sum(n: int, m: int, a: int, b: int) -> int:
    """``Σ_{i=0}^{n−1} ⌊(a·i + b)/m⌋`` for n >= 0, m >= 1 and any ints a, b, in O(log) steps
    (the Euclid-like reduction of the AtCoder Library's floor_sum)."""
    if n <= 0:
        return 0
    total = 0
    q, a = divmod(a, m)  # a, b into [0, m): ⌊(a·i + b)/m⌋ = q·i + ⌊(r·i + b)/m⌋
    total += q * (n * (n - 1) // 2)
    q, b = divmod(b, m)
    total += q * n
    while True:
        if a >= m:
            total += (n * (n - 1) // 2) * (a // m)
            a %= m
        if b >= m:
            total += n * (b // m)
            b %= m
        y_max = a * n + b
        if y_max < m:
            return total
        n, b = divmod(y_max, m)
        m, a = a, m


def _clamped_sum(n: int, top: int, step: int, div: int, cap: int) -> int:
    """``Σ_{i=0}^{n−1} clamp(⌊(top − i·step)/div⌋ + 1, 0, cap)``: for each i, how many
    j in ``0 .. cap − 1`` have ``j·div <= top − i·step`` (step, div >= 1), in closed form.

    The terms fall with i: the first ones are ``cap``, the last ones 0, and the ones between
    a floor sum."""
    if n <= 0 or cap <= 0:
        return 0
    full = min(max((top - (cap - 1) * div) // step + 1, 0), n)  # terms equal to cap
    some = min(max(top // step + 1, 0), n)  # terms >= 1
    middle = some - full
    return full * cap + floor_sum(middle, div, -step, top - full * step) + middle


def _sumset_count(count: int, s: int, kernel: int, d: int, lo: int, hi: int) -> int:
    """How many integers in ``[lo, hi]`` are ``o·s + t·d`` for some ``o < count``, ``t < kernel``
    (the positions a window family reaches, relative to its first tap), in closed form.

    With g = gcd(s, d), s' = s/g, d' = d/g: when ``d' > count`` or ``s' > kernel`` every
    (o, t) gives its own position, so this counts pairs. Otherwise the taps ``t ≡ u (mod s')``
    (u < s') reach the single progression ``u·d' + s'·j``, ``0 <= j <= (M_u − 1)·d' + count − 1``,
    with ``M_u = ⌈(kernel − u)/s'⌉`` taking two values: two clamped floor sums each."""
    g = math.gcd(s, d)
    lo, hi = _ceil_div(lo, g), hi // g  # only multiples of g are reached
    if lo > hi:
        return 0
    s, d = s // g, d // g

    def upto(top: int) -> int:  # reached integers <= top
        if d > count or s > kernel:
            return _clamped_sum(kernel, top, d, s, count)
        whole, extra = divmod(kernel, s)  # u < extra: M_u = whole + 1; else M_u = whole
        longer = _clamped_sum(extra, top, d, s, whole * d + count)
        shorter = _clamped_sum(s - extra, top - extra * d, d, s, (whole - 1) * d + count)
        return longer + shorter

    return upto(hi) - upto(lo - 1)


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

    @property
    def pairs(self) -> int:
        """Valid (window, tap) pairs: the products one channel pair contributes.

        Tap t is valid in the windows o with ``0 <= o·s + t·d + start <= size − 1``: the o with
        ``o·s <= size − 1 − start − t·d`` less those with ``o·s <= −start − t·d − 1``, two
        clamped floor sums over the taps."""
        top = self.size - 1 - self.start
        below = -self.start - 1
        return _clamped_sum(self.kernel, top, self.dilation, self.stride, self.count) - (
            _clamped_sum(self.kernel, below, self.dilation, self.stride, self.count)
        )

    @property
    def taps_used(self) -> int:
        """Taps that are valid in at least one window.

        A tap's positions step by the stride: with ``stride >= size`` at most one lands on the
        values, so the taps used are the pairs; otherwise a tap is used exactly when its span
        ``[t·d + start, t·d + start + (count − 1)·s]`` meets ``[0, size − 1]``."""
        if self.stride >= self.size:
            return self.pairs
        last_start = self.start + (self.count - 1) * self.stride
        lo = max(0, _ceil_div(-last_start, self.dilation))
        hi = min(self.kernel - 1, (self.size - 1 - self.start) // self.dilation)
        return max(0, hi - lo + 1)

    @property
    def windows_used(self) -> int:
        """Windows holding at least one valid tap (as ``taps_used``, with the roles of the
        stride and the dilation swapped)."""
        if self.dilation >= self.size:
            return self.pairs
        span = (self.kernel - 1) * self.dilation
        lo = max(0, _ceil_div(-(self.start + span), self.stride))
        hi = min(self.count - 1, (self.size - 1 - self.start) // self.stride)
        return max(0, hi - lo + 1)

    def positions_used(self, lo: int | None = None, hi: int | None = None) -> int:
        """Positions in ``[lo, hi)`` (default: all values) reached by at least one valid tap."""
        lo = 0 if lo is None else max(lo, 0)
        hi = self.size if hi is None else min(hi, self.size)
        if lo >= hi:
            return 0
        return _sumset_count(
            self.count,
            self.stride,
            self.kernel,
            self.dilation,
            lo - self.start,
            hi - 1 - self.start,
        )

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
        """Whether a valid tap lands on ``position``."""
        return self.positions_used(position, position + 1) > 0

    def min_hitting(self) -> int:
        """Fewest positions that lie in every non-empty window (τ), in closed form.

        A window lies on one lattice ``residue + dilation·j``. Windows o ≡ o0 (mod d / g),
        g = gcd(stride, dilation), share a lattice and form a regular family there, with stride
        ``s' = stride / g`` in lattice units; τ adds up over the families. Windows that do not
        overlap on their lattice (``kernel <= s'``) need one position each, and with
        ``dilation >= size`` every window holds at most one value.

        Otherwise, once the windows wholly before position 0 are dropped, the greedy by right
        end picks the right ends of a family's windows 0, J, 2J, … with
        ``J = ⌊(kernel − 1)/s'⌋ + 1`` (a window clipped at the end is the family's last pick),
        so a family of N non-empty windows needs ⌈N/J⌉. N is the family's window count, or
        the windows starting by the last value, ``⌊X/lcm(s, d)⌋ + 1`` with X the room after
        the family's first tap: summed over o0 as a constant part and a floor sum.
        """
        d, s, size, k = self.dilation, self.stride, self.size, self.kernel
        g = math.gcd(s, d)
        period, step = d // g, s // g
        if k <= step:
            return self.windows_used
        if d >= size:
            return self.positions_used()
        empty = max(0, _ceil_div(-(self.start + (k - 1) * d), s))  # windows wholly before 0
        start, count = self.start + empty * s, self.count - empty
        if count <= 0:
            return 0
        jump, spacing = (k - 1) // step + 1, d * step  # spacing: lcm(s, d), a family's stride
        room = size - 1 - start  # X(o0) = room − o0·s, the positions after family o0's first tap
        whole, extra = divmod(count, period)  # o0 < extra: whole + 1 windows, else whole
        total = 0
        for lo, hi, windows in ((0, extra, whole + 1), (extra, min(period, count), whole)):
            if lo >= hi or windows <= 0:
                continue
            # families with all their windows: X >= (windows − 1)·spacing
            full = min(max((room - (windows - 1) * spacing) // s + 1, lo), hi)
            total += (full - lo) * _ceil_div(windows, jump)
            # then families cut at the last value (X >= 0): ⌈N/J⌉ = ⌊X/(J·spacing)⌋ + 1
            some = min(max(room // s + 1, full), hi)
            total += floor_sum(some - full, jump * spacing, -s, room - full * s + jump * spacing)
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
        """Fewest positions that lie in every window (τ), in closed form.

        With L >= O a window meets only its neighbours, and windows i, i + 1 share a position
        unless (i + 1)·L/O is an integer: the windows fall into gcd(L, O) chains of O / gcd
        windows, each needing ⌈chain / 2⌉ positions. With O >= 2L every position is a window
        of its own: τ = L.

        Between, the windows repeat in g = gcd(L, O) blocks that share no position. In a block
        (L, O coprime, m = O − L) each window is one position or two, and every boundary
        between neighbouring positions lies inside exactly one two-position window. The m + 1
        one-position windows sit at ``p_0 = 0``, ``p_j = ⌊j·L/m⌋`` (0 < j < m) and
        ``p_m = L − 1``; they must be picked, and a run of r positions between two of them
        needs ⌊r/2⌋ more. The gaps ``p_j − p_{j−1}`` for 0 < j < m take the two values
        q = ⌊L/m⌋ and q + 1, and how many take each follows from their sum.
        """
        size, count = self.size, self.count
        g = math.gcd(size, count)
        if size >= count:
            return g * _ceil_div(count // g, 2)
        if count >= 2 * size:
            return size
        size, count = size // g, count // g
        m = count - size
        q = size // m
        inner = (m - 1) * size // m  # p_{m−1}, the sum of the inner gaps
        longer = inner - (m - 1) * q  # inner gaps of q + 1
        shorter = (m - 1) - longer
        last_gap = size - 1 - inner
        runs = shorter * ((q - 1) // 2) + longer * (q // 2) + (last_gap - 1) // 2
        return g * (m + 1 + runs)


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


def _source_intervals(lo: int, hi: int, size: int, mode: str) -> list[tuple[int, int]]:
    """The real positions that the padded positions ``lo .. hi`` (relative to the first real
    one) copy, as closed intervals; reflection and wrapping fold at most once (pads < size)."""
    parts = [(max(lo, 0), min(hi, size - 1))]
    if mode == "replicate":
        parts += [(0, 0)] if lo < 0 else []
        parts += [(size - 1, size - 1)] if hi > size - 1 else []
    elif mode == "reflect":
        parts += [(-min(hi, -1), -lo)] if lo < 0 else []
        parts += [(2 * (size - 1) - hi, 2 * (size - 1) - max(lo, size))] if hi >= size else []
    elif mode == "circular":
        parts += [(max(lo, -size) + size, min(hi, -1) + size)] if lo < 0 else []
        parts += [(max(lo, size) - size, min(hi, 2 * size - 1) - size)] if hi >= size else []
    else:
        raise ValueError(f"no source position for padding mode {mode!r}")
    return [(a, b) for a, b in parts if a <= b]


def reached_sources(padded: Windows, before: int, size: int, mode: str) -> int:
    """Real positions that receive a gradient through any reached position of the padded axis.

    Replication copies only the two end values into the padding, so those two decide. When
    the windows reach every padded position from 0 to the last tap (no gaps), the sources are
    the few intervals ``_source_intervals`` folds that range onto. Otherwise reflection and
    wrapping (pads smaller than the axis) are checked per padding position."""
    interior = padded.positions_used(before, before + size)
    pad_before, pad_after = max(before, 0), max(padded.size - before - size, 0)
    if mode == "replicate":
        ends = set()
        if padded.positions_used(0, pad_before) and not padded.reaches(before):
            ends.add(0)
        if padded.positions_used(before + size, padded.size) and not padded.reaches(
            before + size - 1
        ):
            ends.add(size - 1)
        return interior + len(ends)
    if padded.start == 0:
        last = min(
            padded.size - 1,
            (padded.count - 1) * padded.stride + (padded.kernel - 1) * padded.dilation,
        )
        if padded.positions_used(0, last + 1) == last + 1:  # every position 0 .. last
            return _union_length(_source_intervals(-before, last - before, size, mode))
    if padded.kernel <= pad_before + pad_after:  # the cheaper of the two exact ways
        return interior + _copied_sources(padded, before, size, mode)
    extra = set()  # gaps: bounded by the pads, which reflection and wrapping keep below size
    for q in (*range(pad_before), *range(before + size, before + size + pad_after)):
        if padded.reaches(q):
            j = padded_source(q, before, size, mode)
            if not padded.reaches(j + before):
                extra.add(j)
    return interior + len(extra)


def _tap_progressions(
    w: Windows, lo: int, hi: int, offset: int, sign: int
) -> Iterator[tuple[int, int, int]]:
    """The positions ``offset + sign·p`` of the taps at padded positions ``lo ≤ p < hi``, one
    arithmetic progression of step ``stride`` per tap, each as (residue, first, last index):
    the values ``residue + index·stride``."""
    s = w.stride
    for t in range(w.kernel):  # one progression per tap: loops over taps, never positions
        base = w.start + t * w.dilation
        first = max(0, -((base - lo) // s))  # ⌈(lo − base) / s⌉
        last = min(w.count - 1, (hi - 1 - base) // s)
        if first > last:
            continue
        low = offset + sign * (base + (first if sign > 0 else last) * s)
        residue, index = low % s, low // s
        yield residue, index, index + last - first


def _copied_sources(w: Windows, before: int, size: int, mode: str) -> int:
    """Real positions that a reached padding position copies (reflect or circular) and that no
    reached real position already covers: per residue of the stride, intervals of indices."""
    after_start = before + size
    if mode == "reflect":
        maps = [(0, before, before, -1), (after_start, w.size, 2 * (size - 1) + before, -1)]
    else:  # circular
        maps = [(0, before, size - before, 1), (after_start, w.size, -before - size, 1)]
    copied: dict[int, list[tuple[int, int]]] = {}
    for lo, hi, offset, sign in maps:
        for residue, a, b in _tap_progressions(w, max(lo, 0), hi, offset, sign):
            copied.setdefault(residue, []).append((a, b))
    read: dict[int, list[tuple[int, int]]] = {}
    for residue, a, b in _tap_progressions(w, before, after_start, -before, 1):
        read.setdefault(residue, []).append((a, b))
    return sum(
        _interval_difference(spans, read.get(residue, [])) for residue, spans in copied.items()
    )


def _interval_difference(spans: list[tuple[int, int]], minus: list[tuple[int, int]]) -> int:
    """Integers in the union of the closed intervals ``spans`` and in none of ``minus``."""
    keep, drop = _merged(spans), _merged(minus)
    shared, j = 0, 0
    for a, b in keep:  # both lists sorted and disjoint: one pass over each
        while j < len(drop) and drop[j][1] < a:
            j += 1
        k = j
        while k < len(drop) and drop[k][0] <= b:
            shared += min(b, drop[k][1]) - max(a, drop[k][0]) + 1
            k += 1
    return sum(b - a + 1 for a, b in keep) - shared


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Closed intervals merged where they touch or overlap, in order."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
