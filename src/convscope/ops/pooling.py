"""Pooling (max, average, adaptive; 1-D to 3-D): configuration, shape rule and exact costs.

A window's forward reduces its valid elements (comparisons for max, additions and a division
for average); the backward routes (max) or spreads (average) each output's gradient back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import ConvScopeError, LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import AdaptiveWindows, Shape, Windows, axis_names, check_input, int_tuple, prod
from ..module import Module
from .base import Op, describe_args


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    """PyTorch's rule: floor or ceil of the window count, and in ceil mode a last window that
    would start in the right padding is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _window_cost(
    w: Working,
    kind: str,
    names: Sequence[str],
    axes: Sequence[Windows | AdaptiveWindows],
    channels: int,
    batch: int,
    out_sizes: Sequence[int],
    in_sizes: Sequence[int],
    record_pairs: bool = True,
) -> Cost:
    """Counts shared by every pool: T (valid window-element pairs), Z (non-empty windows),
    U (input entries in some window) and, for max, τ (fewest entries hitting every window)."""
    nc = batch * channels
    base = {"N": batch, "C": channels}
    pairs = [a.pairs for a in axes]
    used = [a.windows_used for a in axes]
    for ax, t in zip(names, pairs if record_pairs else ()):
        w.let(f"T_{ax}", "", t, why=f"(window, element) pairs on input values along {ax}")
    t_product = " · ".join(f"T_{ax}" for ax in names)
    z_product = product_symbols(w, "Z", names, used, out_sizes, "_out", "non-empty windows")
    values = {**base, **axis_dict(names, "T", pairs), **axis_dict(names, "Z", used)}
    values.update(axis_dict(names, "", out_sizes, "_out"))
    pair_total, window_total = nc * prod(pairs), nc * prod(used)
    reached = [a.positions_used() for a in axes]
    if kind == "max":
        compares = w.let(
            "compares",
            f"N · C · ({t_product} − {z_product})",
            pair_total - window_total,
            values,
            why="n − 1 comparisons for a window of n elements",
        )
        w.section("Backward pass: the gradient w.r.t. the input")
        w.note(
            "Each window routes its gradient to its arg-max; an input entry that receives r "
            "gradients costs r − 1 additions. That depends on the data: the worst case is the "
            "non-empty windows minus τ, the fewest input entries that lie in every window."
        )
        taus = [a.min_hitting() for a in axes]
        for ax, tau in zip(names, taus):
            w.let(f"τ_{ax}", "", tau, why=f"fewest positions hitting every window along {ax}")
        tau_product = " · ".join(f"τ_{ax}" for ax in names)
        worst = window_total - nc * prod(taus)
        adds = w.let(
            "adds",
            f"N · C · ({z_product} − {tau_product})",
            worst,
            {**values, **axis_dict(names, "τ", taus)},
            why="worst case over inputs" if worst else "windows do not overlap",
        )
        return Cost(OpCount(compares=compares), OpCount(adds=adds, upper_bound=worst > 0))
    adds = w.let(
        "adds",
        f"N · C · ({t_product} − {z_product})",
        pair_total - window_total,
        values,
        why="n − 1 additions for a window of n elements",
    )
    divides = w.let("divides", f"N · C · {z_product}", window_total, values, why="one per window")
    w.section("Backward pass: the gradient w.r.t. the input")
    w.note("Each window's gradient is divided once, then added into every element of the window.")
    w.let("divides", f"N · C · {z_product}", window_total, values)
    u_product = product_symbols(w, "U", names, reached, in_sizes, "", "input entries in a window")
    u_values = {**values, **axis_dict(names, "U", reached), **axis_dict(names, "", in_sizes)}
    back_adds = w.let(
        "adds",
        f"N · C · ({t_product} − {u_product})",
        nc * (prod(pairs) - prod(reached)),
        u_values,
        why="r − 1 additions for an entry in r windows",
    )
    return Cost(OpCount(adds=adds, divides=divides), OpCount(adds=back_adds, divides=window_total))


@dataclass(frozen=True)
class PoolSpec(Op):
    """Max or average pooling with sliding windows, resolved to per-axis tuples."""

    ndim: int
    mode: str  # "max" or "avg"
    kernel_size: Shape
    stride: Shape
    padding: Shape
    dilation: Shape
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    @classmethod
    def create(
        cls,
        ndim: int,
        mode: str,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> PoolSpec:
        """Validates PyTorch-style arguments; the stride defaults to the kernel size."""
        kernel = int_tuple(kernel_size, ndim, "kernel_size")
        strides = kernel if stride is None else int_tuple(stride, ndim, "stride")
        pads = int_tuple(padding, ndim, "padding", minimum=0)
        dilations = int_tuple(dilation, ndim, "dilation")
        for p, k in zip(pads, kernel):
            if p > k // 2:
                raise LayerConfigError(
                    f"pool padding must be at most half the kernel size, got padding={pads} for "
                    f"kernel_size={kernel} (limit {tuple(k // 2 for k in kernel)})"
                )
        if divisor_override is not None and (
            not isinstance(divisor_override, int) or divisor_override == 0
        ):
            raise LayerConfigError(
                f"divisor_override must be a non-zero int, got {divisor_override!r}"
            )
        return cls(
            ndim,
            mode,
            kernel,
            strides,
            pads,
            dilations,
            bool(ceil_mode),
            bool(count_include_pad),
            divisor_override,
        )

    @property
    def name(self) -> str:
        return f"{'Max' if self.mode == 'max' else 'Avg'}Pool{self.ndim}d"

    def describe(self) -> str:
        common = {
            "kernel_size": (self.kernel_size, None),
            "stride": (self.stride, None),
            "padding": (self.padding, 0),
        }
        if self.mode == "max":
            return describe_args(
                **common, dilation=(self.dilation, 1), ceil_mode=(self.ceil_mode, False)
            )
        return describe_args(
            **common,
            ceil_mode=(self.ceil_mode, False),
            count_include_pad=(self.count_include_pad, True),
            divisor_override=(self.divisor_override, None),
        )

    def _sizes(self, shape: Shape) -> list[int]:
        return [
            pool_out_size(size, k, s, p, d, self.ceil_mode)
            for size, k, s, p, d in zip(
                shape[1:], self.kernel_size, self.stride, self.padding, self.dilation
            )
        ]

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_input(input_shape, self.ndim, self.name)
        if (
            self.mode == "avg"
            and self.ndim == 3
            and any(size < k for size, k in zip(shape[1:], self.kernel_size))
        ):
            raise ShapeError(
                f"AvgPool3d needs the unpadded input to be at least the kernel on every axis "
                f"(PyTorch's rule for 3-D), got input {shape_text(shape[1:])} for kernel_size="
                f"{self.kernel_size}"
            )
        for ax, size, out, p, k, d in zip(
            axis_names(self.ndim),
            shape[1:],
            self._sizes(shape),
            self.padding,
            self.kernel_size,
            self.dilation,
        ):
            if out < 1:
                raise ShapeError(
                    f"{self.name}: the output size along {ax} would be {out}: the window "
                    f"d·(k − 1) + 1 = {d * (k - 1) + 1} does not fit the padded input "
                    f"{size} + 2·{p} = {size + 2 * p}"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        rounding = ("⌈", "⌉") if self.ceil_mode else ("⌊", "⌋")
        for ax, size, k, s, p, d, out in zip(
            axis_names(self.ndim),
            input_shape[1:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self._sizes(input_shape),
        ):
            span = f"d_{ax}·(k_{ax} − 1)" if d != 1 else f"(k_{ax} − 1)"
            formula = f"{rounding[0]}({ax} + 2·p_{ax} − {span} − 1) / s_{ax}{rounding[1]} + 1"
            values = {ax: size, f"k_{ax}": k, f"s_{ax}": s, f"p_{ax}": p, f"d_{ax}": d}
            first = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if self.ceil_mode else 0)) // s + 1
            w.let(f"{ax}_out", formula, first, values)
            if first != out:
                w.let(
                    f"{ax}_out",
                    f"{ax}_out − 1",
                    out,
                    {f"{ax}_out": first},
                    why="the last window would start in the right padding, so it is dropped",
                )
        shape = (input_shape[0], *self._sizes(input_shape))
        w.note(f"Output shape (C, {', '.join(axis_names(self.ndim))}) = {shape_text(shape)}")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        dense = count == "dense"
        axes = [
            Windows(size + 2 * p, 0, k, s, d, out) if dense else Windows(size, -p, k, s, d, out)
            for size, p, k, s, d, out in zip(
                input_shape[1:],
                self.padding,
                self.kernel_size,
                self.stride,
                self.dilation,
                output_shape[1:],
            )
        ]
        w.section(f"Forward pass ({count} count)")
        w.note(
            "Dense count: padding positions are real elements of every window."
            if dense
            else "Exact count: padding positions are not elements of a window."
        )
        return _window_cost(
            w,
            self.mode,
            axis_names(self.ndim),
            axes,
            input_shape[0],
            batch,
            output_shape[1:],
            [a.size for a in axes],
        )


@dataclass(frozen=True)
class AdaptivePoolSpec(Op):
    """Adaptive max or average pooling to a fixed output size (None keeps an axis's size)."""

    ndim: int
    mode: str
    output_size: tuple[int | None, ...]

    @classmethod
    def create(
        cls, ndim: int, mode: str, output_size: int | None | Sequence[int | None]
    ) -> AdaptivePoolSpec:
        sizes = (output_size,) * ndim if isinstance(output_size, int) else output_size
        valid = isinstance(sizes, tuple | list) and len(sizes) == ndim
        if not valid or not all(
            (s is None and ndim > 1) or (isinstance(s, int) and s >= 1) for s in sizes
        ):
            keep = ", None keeps an axis's size in a tuple" if ndim > 1 else ""
            raise LayerConfigError(
                f"output_size must be an int >= 1 or {ndim} of them{keep}; got {output_size!r}"
            )
        sizes = tuple(sizes)
        return cls(ndim, mode, sizes)

    @property
    def name(self) -> str:
        return f"Adaptive{'Max' if self.mode == 'max' else 'Avg'}Pool{self.ndim}d"

    def describe(self) -> str:
        return f"output_size={self.output_size}"

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        return check_input(input_shape, self.ndim, self.name)

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        shape = (
            input_shape[0],
            *(s if s is not None else size for s, size in zip(self.output_size, input_shape[1:])),
        )
        w.section("Output shape")
        w.note(
            f"Output shape (C, {', '.join(axis_names(self.ndim))}) = {shape_text(shape)}; window i "
            "spans ⌊i·L/O⌋ … ⌈(i + 1)·L/O⌉ − 1 along an axis of input size L and output size O."
        )
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        names = axis_names(self.ndim)
        axes = [AdaptiveWindows(size, out) for size, out in zip(input_shape[1:], output_shape[1:])]
        w.section(f"Forward pass ({count} count; adaptive windows have no padding)")
        for ax, size, out in zip(names, input_shape[1:], output_shape[1:]):
            w.let(
                f"T_{ax}",
                f"{ax} + {ax}_out − gcd({ax}, {ax}_out)",
                size + out - math.gcd(size, out),
                {ax: size, f"{ax}_out": out},
                why=f"total window length along {ax}",
            )
        return _window_cost(
            w,
            self.mode,
            names,
            axes,
            input_shape[0],
            batch,
            output_shape[1:],
            input_shape[1:],
            record_pairs=False,
        )


# -- engine: sliding windows ----------------------------------------------------------------
# Windows are read as strided slices of the padded input, one slice per kernel offset; the
# backward adds each offset's share into the same slices of a padded gradient.


def _check_x(x: Any, spec: PoolSpec | AdaptivePoolSpec) -> tuple[np.ndarray, Shape]:
    """``x`` as a float array of rank N, C, *spatial, and the output shape with the batch."""
    x = float_array(x, "x")
    expect_rank(x, spec.ndim + 2, "x", f"(N, C, {', '.join(axis_names(spec.ndim))})")
    return x, (x.shape[0], *spec.output_shape(x.shape[1:]))


def _check_grad(
    grad_out: Any, x: np.ndarray, out_shape: Shape, spec: PoolSpec | AdaptivePoolSpec
) -> np.ndarray:
    g = float_array(grad_out, "grad_out")
    expect_shape(g, out_shape, "grad_out", f"(the {spec.name} output for x {tuple(x.shape)})")
    same_dtype(x=x, grad_out=g)
    return g


def _pad_widths(spec: PoolSpec, shape: Shape, out: Shape) -> list[tuple[int, int]]:
    """Left padding p; right padding p, or more so that ceil-mode windows lie inside."""
    widths = [(0, 0), (0, 0)]
    for size, o, k, s, p, d in zip(
        shape[2:], out[2:], spec.kernel_size, spec.stride, spec.padding, spec.dilation
    ):
        need = (o - 1) * s + d * (k - 1) + 1
        widths.append((p, max(p, need - size - p)))
    return widths


def _offsets(spec: PoolSpec, out: Shape) -> list[tuple[slice, ...]]:
    """For each kernel offset (row-major), the slice of the padded input it reads."""
    per_axis = [
        [slice(j * d, j * d + (o - 1) * s + 1, s) for j in range(k)]
        for o, k, s, d in zip(out[2:], spec.kernel_size, spec.stride, spec.dilation)
    ]
    return [
        (Ellipsis, *(per_axis[a][j] for a, j in enumerate(offset)))
        for offset in np.ndindex(*spec.kernel_size)
    ]


def _crop(padded: np.ndarray, spec: PoolSpec, shape: Shape) -> np.ndarray:
    inner = (Ellipsis, *(slice(p, p + n) for p, n in zip(spec.padding, shape[2:])))
    return np.ascontiguousarray(padded[inner])


def _max_forward(spec: PoolSpec, x: np.ndarray, out: Shape) -> tuple[np.ndarray, np.ndarray]:
    """The maxima and, per output, the row-major index of the first maximal kernel offset."""
    xp = np.pad(x, _pad_widths(spec, x.shape, out), constant_values=-np.inf)
    offsets = _offsets(spec, out)
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


def _max_backward(spec: PoolSpec, x: np.ndarray, arg: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Routes each output's gradient to its window's arg-max."""
    widths = _pad_widths(spec, x.shape, g.shape)
    gp = np.zeros(tuple(n + a + b for n, (a, b) in zip(x.shape, widths)), dtype=x.dtype)
    hit, share = np.empty(g.shape, dtype=bool), np.empty(g.shape, dtype=x.dtype)
    finite = bool(np.isfinite(g).all())
    for j, window in enumerate(_offsets(spec, g.shape)):
        np.equal(arg, j, out=hit)
        if finite:  # a product with the mask is faster than a select, but spreads inf·0 = NaN
            np.multiply(g, hit, out=share)
        else:
            share = np.where(hit, g, 0)
        target = gp[window]
        np.add(target, share, out=target)
    return _crop(gp, spec, x.shape)


def _avg_divisor(spec: PoolSpec, x: np.ndarray, out: Shape) -> np.ndarray | float:
    """PyTorch's divisor per output: the override, else window positions inside the padded
    input (count_include_pad) or real elements, as a product over axes."""
    if spec.divisor_override is not None:
        return float(spec.divisor_override)
    divisor = np.ones((1,) * x.ndim, dtype=x.dtype)
    for a, (size, o, k, s, p) in enumerate(
        zip(x.shape[2:], out[2:], spec.kernel_size, spec.stride, spec.padding)
    ):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if spec.count_include_pad:
            count = end - start
        else:
            count = np.minimum(end, size) - np.maximum(start, 0)
        shape = [1] * x.ndim
        shape[a + 2] = o
        divisor = divisor * count.astype(x.dtype).reshape(shape)
    return divisor


def _avg_forward(spec: PoolSpec, x: np.ndarray, out: Shape) -> np.ndarray:
    xp = np.pad(x, _pad_widths(spec, x.shape, out))
    offsets = _offsets(spec, out)
    total = xp[offsets[0]].copy()
    for window in offsets[1:]:
        total += xp[window]
    return total / np.asarray(_avg_divisor(spec, x, out), dtype=x.dtype)


def _avg_backward(spec: PoolSpec, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Spreads each output's gradient, divided by its divisor, over its window."""
    widths = _pad_widths(spec, x.shape, g.shape)
    gp = np.zeros(tuple(n + a + b for n, (a, b) in zip(x.shape, widths)), dtype=x.dtype)
    share = g / np.asarray(_avg_divisor(spec, x, g.shape), dtype=x.dtype)
    for window in _offsets(spec, g.shape):
        gp[window] += share
    return _crop(gp, spec, x.shape)


def _pool(spec: PoolSpec, x: Any) -> np.ndarray:
    x, out = _check_x(x, spec)
    return _max_forward(spec, x, out)[0] if spec.mode == "max" else _avg_forward(spec, x, out)


def _pool_backward(spec: PoolSpec, grad_out: Any, x: Any) -> np.ndarray:
    x, out = _check_x(x, spec)
    g = _check_grad(grad_out, x, out, spec)
    if spec.mode == "max":
        return _max_backward(spec, x, _max_forward(spec, x, out)[1], g)
    return _avg_backward(spec, x, g)


# -- engine: adaptive windows ---------------------------------------------------------------
# Along an axis of size L pooled to O, window i spans start_i .. end_i − 1. Both directions are
# padded gathers: output i reads K = max length entries from start_i (masked past end_i), and
# input l is read by the R windows ilo_l .. ihi_l (masked past ihi_l), which the backward
# gathers from, so neither direction needs a scatter with repeated indices.


@dataclass(frozen=True)
class _AdaptiveAxis:
    length: np.ndarray  # (O,) window lengths
    index: np.ndarray  # (O, K) input positions each window reads, clipped
    valid: np.ndarray  # (O, K) which of them lie in the window
    rindex: np.ndarray  # (L, R) windows that read each input position, clipped
    rvalid: np.ndarray  # (L, R) which of them do

    @classmethod
    def build(cls, size: int, count: int) -> _AdaptiveAxis:
        i = np.arange(count)
        start = (i * size) // count
        end = -((-(i + 1) * size) // count)
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


def _adaptive_axes(x: np.ndarray, out: Shape) -> list[_AdaptiveAxis]:
    return [_AdaptiveAxis.build(size, o) for size, o in zip(x.shape[2:], out[2:])]


def _gather_sum(a: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[.., i, ..] = Σ_k a[.., index[i, k], ..] · weight[i, k]`` along ``axis``."""
    moved = np.moveaxis(a, axis, -1)
    return np.moveaxis((moved[..., index] * weight).sum(axis=-1), -1, axis)


def _adaptive_avg_forward(x: np.ndarray, axes: list[_AdaptiveAxis]) -> np.ndarray:
    # averaging a box is averaging along each axis in turn
    y = x
    for a, ax in enumerate(axes):
        y = _gather_sum(y, a + 2, ax.index, (ax.valid / ax.length[:, None]).astype(x.dtype))
    return y


def _adaptive_avg_backward(g: np.ndarray, axes: list[_AdaptiveAxis]) -> np.ndarray:
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


def _adaptive_max_forward(
    x: np.ndarray, axes: list[_AdaptiveAxis]
) -> tuple[np.ndarray, np.ndarray]:
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


def _adaptive_max_backward(
    x: np.ndarray, flat: np.ndarray, g: np.ndarray, axes: list[_AdaptiveAxis]
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


def _adaptive(spec: AdaptivePoolSpec, x: Any) -> np.ndarray:
    x, out = _check_x(x, spec)
    axes = _adaptive_axes(x, out)
    if spec.mode == "max":
        return _adaptive_max_forward(x, axes)[0]
    return _adaptive_avg_forward(x, axes)


def _adaptive_backward(spec: AdaptivePoolSpec, grad_out: Any, x: Any) -> np.ndarray:
    x, out = _check_x(x, spec)
    g = _check_grad(grad_out, x, out, spec)
    axes = _adaptive_axes(x, out)
    if spec.mode == "max":
        return _adaptive_max_backward(x, _adaptive_max_forward(x, axes)[1], g, axes)
    return _adaptive_avg_backward(g, axes)


# -- functional forward and backward --------------------------------------------------------

IntOrTuple = int | Sequence[int]
OutputSize = int | None | Sequence[int | None]


def max_pool1d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """1-D max pooling of an (N, C, L) array, as F.max_pool1d."""
    spec = PoolSpec.create(1, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool(spec, x)


def max_pool1d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """The gradient of max_pool1d w.r.t. x; ties go to the first maximum."""
    spec = PoolSpec.create(1, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_backward(spec, grad_out, x)


def max_pool2d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """2-D max pooling of an (N, C, H, W) array, as F.max_pool2d."""
    spec = PoolSpec.create(2, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool(spec, x)


def max_pool2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """The gradient of max_pool2d w.r.t. x; ties go to the first maximum."""
    spec = PoolSpec.create(2, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_backward(spec, grad_out, x)


def max_pool3d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """3-D max pooling of an (N, C, D, H, W) array, as F.max_pool3d."""
    spec = PoolSpec.create(3, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool(spec, x)


def max_pool3d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """The gradient of max_pool3d w.r.t. x; ties go to the first maximum."""
    spec = PoolSpec.create(3, "max", kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_backward(spec, grad_out, x)


def avg_pool1d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """1-D average pooling of an (N, C, L) array, as F.avg_pool1d."""
    spec = PoolSpec.create(1, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return _pool(spec, x)


def avg_pool1d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """The gradient of avg_pool1d w.r.t. x."""
    spec = PoolSpec.create(1, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
    return _pool_backward(spec, grad_out, x)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """2-D average pooling of an (N, C, H, W) array, as F.avg_pool2d."""
    spec = PoolSpec.create(
        2, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    return _pool(spec, x)


def avg_pool2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """The gradient of avg_pool2d w.r.t. x."""
    spec = PoolSpec.create(
        2, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    return _pool_backward(spec, grad_out, x)


def avg_pool3d(
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """3-D average pooling of an (N, C, D, H, W) array, as F.avg_pool3d."""
    spec = PoolSpec.create(
        3, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    return _pool(spec, x)


def avg_pool3d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """The gradient of avg_pool3d w.r.t. x."""
    spec = PoolSpec.create(
        3, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    return _pool_backward(spec, grad_out, x)


def adaptive_avg_pool1d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """1-D adaptive average pooling of an (N, C, L) array, as F.adaptive_avg_pool1d."""
    return _adaptive(AdaptivePoolSpec.create(1, "avg", output_size), x)


def adaptive_avg_pool1d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_avg_pool1d w.r.t. x."""
    return _adaptive_backward(AdaptivePoolSpec.create(1, "avg", output_size), grad_out, x)


def adaptive_avg_pool2d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """2-D adaptive average pooling of an (N, C, H, W) array, as F.adaptive_avg_pool2d."""
    return _adaptive(AdaptivePoolSpec.create(2, "avg", output_size), x)


def adaptive_avg_pool2d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_avg_pool2d w.r.t. x."""
    return _adaptive_backward(AdaptivePoolSpec.create(2, "avg", output_size), grad_out, x)


def adaptive_avg_pool3d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """3-D adaptive average pooling of an (N, C, D, H, W) array, as F.adaptive_avg_pool3d."""
    return _adaptive(AdaptivePoolSpec.create(3, "avg", output_size), x)


def adaptive_avg_pool3d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_avg_pool3d w.r.t. x."""
    return _adaptive_backward(AdaptivePoolSpec.create(3, "avg", output_size), grad_out, x)


def adaptive_max_pool1d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """1-D adaptive max pooling of an (N, C, L) array, as F.adaptive_max_pool1d."""
    return _adaptive(AdaptivePoolSpec.create(1, "max", output_size), x)


def adaptive_max_pool1d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_max_pool1d w.r.t. x; ties go to the first maximum."""
    return _adaptive_backward(AdaptivePoolSpec.create(1, "max", output_size), grad_out, x)


def adaptive_max_pool2d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """2-D adaptive max pooling of an (N, C, H, W) array, as F.adaptive_max_pool2d."""
    return _adaptive(AdaptivePoolSpec.create(2, "max", output_size), x)


def adaptive_max_pool2d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_max_pool2d w.r.t. x; ties go to the first maximum."""
    return _adaptive_backward(AdaptivePoolSpec.create(2, "max", output_size), grad_out, x)


def adaptive_max_pool3d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """3-D adaptive max pooling of an (N, C, D, H, W) array, as F.adaptive_max_pool3d."""
    return _adaptive(AdaptivePoolSpec.create(3, "max", output_size), x)


def adaptive_max_pool3d_backward(
    grad_out: np.ndarray, x: np.ndarray, output_size: OutputSize
) -> np.ndarray:
    """The gradient of adaptive_max_pool3d w.r.t. x; ties go to the first maximum."""
    return _adaptive_backward(AdaptivePoolSpec.create(3, "max", output_size), grad_out, x)


# -- modules ----------------------------------------------------------------------------------


class _PoolModule(Module):
    """Runs its spec: forward keeps the input (and the arg-max for max pools) for backward."""

    spec: PoolSpec | AdaptivePoolSpec
    _x: np.ndarray | None = None
    _saved: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Pools ``x`` (N, C, *spatial) and keeps what backward needs."""
        spec = self.spec
        x, out = _check_x(x, spec)
        if isinstance(spec, AdaptivePoolSpec):
            axes = _adaptive_axes(x, out)
            if spec.mode == "max":
                y, flat = _adaptive_max_forward(x, axes)
                self._saved = (axes, flat)
            else:
                y, self._saved = _adaptive_avg_forward(x, axes), (axes, None)
        elif spec.mode == "max":
            y, self._saved = _max_forward(spec, x, out)
        else:
            y, self._saved = _avg_forward(spec, x, out), None
        self._x = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input (a pool has no parameters)."""
        if self._x is None:
            raise ConvScopeError(f"{type(self).__name__}.backward needs a forward first")
        spec, x = self.spec, self._x
        g = _check_grad(grad_out, x, (x.shape[0], *spec.output_shape(x.shape[1:])), spec)
        if isinstance(spec, AdaptivePoolSpec):
            axes, flat = self._saved
            if spec.mode == "max":
                return _adaptive_max_backward(x, flat, g, axes)
            return _adaptive_avg_backward(g, axes)
        if spec.mode == "max":
            return _max_backward(spec, x, self._saved, g)
        return _avg_backward(spec, x, g)


class _MaxPoolNd(_PoolModule):
    ndim = 2

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        self.spec = PoolSpec.create(
            self.ndim, "max", kernel_size, stride, padding, dilation, ceil_mode
        )


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling with PyTorch's arguments."""

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling with PyTorch's arguments."""

    ndim = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling with PyTorch's arguments."""

    ndim = 3


class AvgPool1d(_PoolModule):
    """1-D average pooling with PyTorch's arguments."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        self.spec = PoolSpec.create(
            1, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad
        )


class _AvgPoolNd(_PoolModule):
    ndim = 2

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        self.spec = PoolSpec.create(
            self.ndim,
            "avg",
            kernel_size,
            stride,
            padding,
            1,
            ceil_mode,
            count_include_pad,
            divisor_override,
        )


class AvgPool2d(_AvgPoolNd):
    """2-D average pooling with PyTorch's arguments."""

    ndim = 2


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling with PyTorch's arguments."""

    ndim = 3


class _AdaptiveNd(_PoolModule):
    ndim = 2
    mode = "avg"

    def __init__(self, output_size: int | None | Sequence[int | None]) -> None:
        self.spec = AdaptivePoolSpec.create(self.ndim, self.mode, output_size)


class AdaptiveAvgPool1d(_AdaptiveNd):
    """1-D adaptive average pooling."""

    ndim, mode = 1, "avg"


class AdaptiveAvgPool2d(_AdaptiveNd):
    """2-D adaptive average pooling."""

    ndim, mode = 2, "avg"


class AdaptiveAvgPool3d(_AdaptiveNd):
    """3-D adaptive average pooling."""

    ndim, mode = 3, "avg"


class AdaptiveMaxPool1d(_AdaptiveNd):
    """1-D adaptive max pooling."""

    ndim, mode = 1, "max"


class AdaptiveMaxPool2d(_AdaptiveNd):
    """2-D adaptive max pooling."""

    ndim, mode = 2, "max"


class AdaptiveMaxPool3d(_AdaptiveNd):
    """3-D adaptive max pooling."""

    ndim, mode = 3, "max"
