"""Pooling kernels: sliding windows as strided slices of the padded input (one per kernel
offset), and adaptive windows as padded gathers, both read from ``convscope.geometry``.

Sliding windows: the forward reduces each offset's slice into the output; the backward adds
each offset's share back into the same slices of a padded gradient. Adaptive windows: along an
axis of size L pooled to O, output i reads K = max length entries from its start (masked past
its end), and input l is read by the R windows that contain it (masked past the last), which
the backward gathers from, so neither direction needs a scatter with repeated indices.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import AdaptiveWindows, Shape, Windows, tap_slices


def pad_widths(spec: Any, shape: Shape, out: Shape) -> list[tuple[int, int]]:
    """Left padding p; right padding p, or more so that ceil-mode windows lie inside."""
    widths = [(0, 0), (0, 0)]
    for size, o, k, s, p, d in zip(
        shape[2:], out[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation
    ):
        need = (o - 1) * s + d * (k - 1) + 1
        widths.append((p, max(p, need - size - p)))
    return widths


def window_slices(spec: Any, out: Shape) -> list[tuple[Any, ...]]:
    """For each kernel offset (row-major), the slice of the padded input it reads."""
    taps = tap_slices(spec.kernel_size, spec.stride, spec.dilation, out[2:])
    return [(Ellipsis, *slices) for _, slices in taps]


def _crop(padded: np.ndarray, spec: Any, shape: Shape) -> np.ndarray:
    inner = (Ellipsis, *(slice(p, p + n) for p, n in zip(spec.padding, shape[2:])))
    return np.ascontiguousarray(padded[inner])


def _padded(x: np.ndarray, widths: list[tuple[int, int]], value: float) -> np.ndarray:
    """x padded by ``widths`` with ``value``: x itself when they are all zero (np.pad would
    still copy it)."""
    return np.pad(x, widths, constant_values=value) if any(b or a for b, a in widths) else x


def max_forward(spec: Any, x: np.ndarray, out: Shape) -> tuple[np.ndarray, np.ndarray]:
    """The maxima and, per output, the row-major index of the first maximal kernel offset."""
    xp = _padded(x, pad_widths(spec, x.shape, out), -np.inf)
    offsets = window_slices(spec, out)
    best = xp[offsets[0]].copy()
    index = np.min_scalar_type(len(offsets) - 1).type
    arg = np.zeros(out, dtype=index)
    take, step = np.empty(out, dtype=bool), np.empty(out, dtype=index)
    nan = bool(np.isnan(x).any())
    for j, window in enumerate(offsets[1:], start=1):
        v = xp[window]
        # strictly greater keeps the first maximum; as in PyTorch a NaN always wins
        np.greater(v, best, out=take)
        if nan:
            take |= np.isnan(v)
        # offsets only grow, so the latest taker is the largest: arg = max(arg, j·take)
        np.multiply(take.view(np.uint8), index(j), out=step)
        np.maximum(arg, step, out=arg)
        np.maximum(best, v, out=best)
    return best, arg


def max_backward(spec: Any, x: np.ndarray, arg: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Routes each output's gradient to its window's arg-max."""
    widths = pad_widths(spec, x.shape, g.shape)
    gp = np.zeros(tuple(n + a + b for n, (a, b) in zip(x.shape, widths)), dtype=x.dtype)
    hit, share = np.empty(g.shape, dtype=bool), np.empty(g.shape, dtype=x.dtype)
    finite = bool(np.isfinite(g).all())
    for j, window in enumerate(window_slices(spec, g.shape)):
        np.equal(arg, j, out=hit)
        if finite:  # a product with the mask is faster than a select, but spreads inf·0 = NaN
            np.multiply(g, hit, out=share)
        else:
            share = np.where(hit, g, 0)
        target = gp[window]
        np.add(target, share, out=target)
    return _crop(gp, spec, x.shape)


def avg_divisor(spec: Any, x: np.ndarray, out: Shape) -> np.ndarray | float:
    """PyTorch's divisor per output: the override, else window positions inside the padded
    input (count_include_pad) or real elements, as a product over axes."""
    if spec.divisor_override is not None:
        return float(spec.divisor_override)
    divisor = np.ones((1,) * x.ndim, dtype=x.dtype)
    for a, (size, o, k, s, p) in enumerate(
        zip(x.shape[2:], out[2:], spec.kernel_size, spec.stride, spec.padding)
    ):
        if spec.count_include_pad:  # positions inside the padded input
            count = Windows(size + 2 * p, 0, k, s, 1, o).valid_counts()
        else:  # real elements
            count = Windows(size, -p, k, s, 1, o).valid_counts()
        shape = [1] * x.ndim
        shape[a + 2] = o
        divisor = divisor * count.astype(x.dtype).reshape(shape)
    return divisor


def avg_forward(spec: Any, x: np.ndarray, out: Shape) -> np.ndarray:
    xp = _padded(x, pad_widths(spec, x.shape, out), 0)
    offsets = window_slices(spec, out)
    total = xp[offsets[0]].copy()
    for window in offsets[1:]:
        total += xp[window]
    return total / np.asarray(avg_divisor(spec, x, out), dtype=x.dtype)


def avg_backward(spec: Any, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Spreads each output's gradient, divided by its divisor, over its window."""
    widths = pad_widths(spec, x.shape, g.shape)
    gp = np.zeros(tuple(n + a + b for n, (a, b) in zip(x.shape, widths)), dtype=x.dtype)
    share = g / np.asarray(avg_divisor(spec, x, g.shape), dtype=x.dtype)
    for window in window_slices(spec, g.shape):
        gp[window] += share
    return _crop(gp, spec, x.shape)


@dataclass(frozen=True)
class AdaptiveAxis:
    length: np.ndarray  # (O,) window lengths
    index: np.ndarray  # (O, K) input positions each window reads, clipped
    valid: np.ndarray  # (O, K) which of them lie in the window
    rindex: np.ndarray  # (L, R) windows that read each input position, clipped
    rvalid: np.ndarray  # (L, R) which of them do

    @classmethod
    def build(cls, size: int, count: int) -> AdaptiveAxis:
        windows = AdaptiveWindows(size, count)
        start, end = windows.starts(), windows.ends()
        length = end - start
        k = np.arange(length.max())
        positions = np.arange(size)
        first = np.searchsorted(end, positions, side="right")  # first window with end > l
        last = np.searchsorted(start, positions, side="right") - 1  # last with start <= l
        r = np.arange((last - first).max() + 1)
        return cls(
            length,
            np.minimum(start[:, None] + k, size - 1),
            k < length[:, None],
            np.minimum(first[:, None] + r, count - 1),
            first[:, None] + r <= last[:, None],
        )


def adaptive_axes(x: np.ndarray, out: Shape) -> list[AdaptiveAxis]:
    return [AdaptiveAxis.build(size, o) for size, o in zip(x.shape[2:], out[2:])]


def _gather_sum(a: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[.., i, ..] = Σ_k a[.., index[i, k], ..] · weight[i, k]`` along ``axis``."""
    moved = np.moveaxis(a, axis, -1)
    return np.moveaxis((moved[..., index] * weight).sum(axis=-1), -1, axis)


def adaptive_avg_forward(x: np.ndarray, axes: list[AdaptiveAxis]) -> np.ndarray:
    # averaging a box is averaging along each axis in turn
    y = x
    for a, ax in enumerate(axes):
        y = _gather_sum(y, a + 2, ax.index, (ax.valid / ax.length[:, None]).astype(x.dtype))
    return y


def adaptive_avg_backward(g: np.ndarray, axes: list[AdaptiveAxis]) -> np.ndarray:
    grad = g
    for a, ax in enumerate(axes):
        weight = ax.rvalid / ax.length[ax.rindex]
        grad = _gather_sum(grad, a + 2, ax.rindex, weight.astype(g.dtype))
    return grad


def _on_axis(values: np.ndarray, a: int, ndim: int, pair: bool) -> np.ndarray:
    """``values`` (one or two axes) shaped to broadcast at spatial axis ``a`` of ``ndim``,
    where paired layouts interleave (O_1, K_1, O_2, K_2, ...)."""
    width = 2 if pair else 1
    shape = [1] * (width * ndim)
    shape[width * a : width * a + values.ndim] = values.shape
    return values.reshape(shape)


def adaptive_max_forward(x: np.ndarray, axes: list[AdaptiveAxis]) -> tuple[np.ndarray, np.ndarray]:
    """The maxima and, per output, the flat spatial index of the first maximum (row-major)."""
    n = len(axes)
    index = tuple(_on_axis(ax.index, a, n, True) for a, ax in enumerate(axes))
    valid = functools.reduce(
        np.logical_and, [_on_axis(ax.valid, a, n, True) for a, ax in enumerate(axes)]
    )
    windows = np.where(valid, x[(Ellipsis, *index)], -np.inf)  # (N, C, O_1, K_1, ...)
    order = [0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2)]
    windows = windows.transpose(order)
    out_shape, ks = windows.shape[: 2 + n], windows.shape[2 + n :]
    windows = windows.reshape(*out_shape, math.prod(ks))
    k = windows.argmax(axis=-1)  # the first maximum in row-major window order
    if np.isnan(x).any():  # PyTorch routes to a window's last NaN
        nan = np.isnan(windows)
        last = nan.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1)
        k = np.where(nan.any(axis=-1), last, k)
    y = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    flat = np.zeros(out_shape, dtype=np.int64)
    for a, (ax, ka, size) in enumerate(zip(axes, np.unravel_index(k, ks), x.shape[2:])):
        start = _on_axis(ax.index[:, 0], a, n, False)
        flat = flat * size + start + ka
    return y, flat


def adaptive_max_backward(
    x: np.ndarray, flat: np.ndarray, g: np.ndarray, axes: list[AdaptiveAxis]
) -> np.ndarray:
    """Each input entry gathers the gradients of the windows that read it and chose it."""
    n = len(axes)
    own = np.arange(math.prod(x.shape[2:])).reshape(x.shape[2:])
    grad = np.zeros(x.shape, dtype=x.dtype)
    for rs in np.ndindex(*(ax.rindex.shape[1] for ax in axes)):
        picks = list(enumerate(zip(axes, rs)))
        select = tuple(_on_axis(ax.rindex[:, r], a, n, False) for a, (ax, r) in picks)
        valid = functools.reduce(
            np.logical_and, [_on_axis(ax.rvalid[:, r], a, n, False) for a, (ax, r) in picks]
        )
        chose = valid & (flat[(Ellipsis, *select)] == own)
        grad += np.where(chose, g[(Ellipsis, *select)], 0)
    return grad
