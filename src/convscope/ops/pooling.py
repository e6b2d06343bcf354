"""Pooling (max, average, adaptive; 1-D to 3-D): configuration, shape rule and exact costs.

A window's forward reduces its valid elements (comparisons for max, additions and a division
for average); the backward routes (max) or spreads (average) each output's gradient back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import AdaptiveWindows, Shape, Windows, axis_names, check_input, int_tuple, prod
from ..module import Module
from .base import Op


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
        text = (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )
        if self.mode == "max":
            return text + f", dilation={self.dilation}"
        return (
            f"{text}, count_include_pad={self.count_include_pad}, "
            f"divisor_override={self.divisor_override}"
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


class _MaxPoolNd(Module):
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


class AvgPool1d(Module):
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


class _AvgPoolNd(Module):
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


class _AdaptiveNd(Module):
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
