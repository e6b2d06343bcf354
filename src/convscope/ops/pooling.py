"""Max and average pooling (1-D to 3-D): configuration, shape rule, exact costs, working,
receptive field, the forward and backward passes, the modules and the registration.

A window's forward reduces its valid elements (comparisons for max, additions and a division
for average); the backward routes (max) or spreads (average) each output's gradient back. The
windows are ``convscope.geometry``'s; the array kernels are in ``convscope.kernels.pool``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..counting import Cost
from ..errors import LayerConfigError, NotComposableError, ShapeError
from ..explain import Working, shape_text
from ..geometry import (
    Shape,
    axis_names,
    check_input,
    int_tuple,
    pool_out_size,
    prod,
)
from ..grammar import Context, LayerKind, Option
from ..kernels import pool as kernels
from ..module import Module
from .base import RANKS, LinearMap, Op, no_macs, no_params, of_rank, rank_class, rank_function
from .conv import ConvSpec
from .windowed import (
    PoolingModule,
    PoolPasses,
    check_grad,
    pool_calls,
    sliding_windows,
    window_cost,
)

if TYPE_CHECKING:
    from ..receptive import Field


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

    _hidden: ClassVar = ("ndim", "mode")
    _defaults: ClassVar = {"padding": 0, "dilation": 1}

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
        pads = [(p, p) for p in self.padding]
        axes = sliding_windows(self, pads, input_shape, output_shape, dense)
        w.section(f"Forward pass ({count} count)")
        w.note(
            "Dense count: padding positions are real elements of every window."
            if dense
            else "Exact count: padding positions are not elements of a window."
        )
        return window_cost(
            w,
            self.mode,
            axis_names(self.ndim),
            axes,
            input_shape[0],
            batch,
            output_shape[1:],
            [a.size for a in axes],
        )

    _params = no_params
    _macs = no_macs

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """A sliding window, as a convolution's."""
        return field.window(self.kernel_size, self.stride, self.dilation, self.padding)

    def linear_map(self, channels: int | None, module: Module | None = None) -> LinearMap:
        """An average pool is a depthwise convolution with every weight 1/divisor, where every
        window divides by the same number; max is not linear."""
        if self.mode == "max":
            raise NotComposableError(
                "is a max pool, and max is not linear: max(a, b) + max(c, d) ≠ "
                "max(a + c, b + d), so no convolution equals it"
            )
        if self.ceil_mode:
            raise NotComposableError(
                "has ceil_mode=True: its last window may hang off the padded input and divide "
                "by fewer elements, so its weights are not the same everywhere"
            )
        if not self.count_include_pad and self.divisor_override is None and any(self.padding):
            raise NotComposableError(
                f"has count_include_pad=False with padding {self.padding}: border windows "
                "divide by fewer elements, so its weights are not the same everywhere"
            )
        if channels is None:
            raise NotComposableError(
                "is first and has no channel count: give the input shape (input_shape=(C, ...)) "
                "or put a convolution first"
            )
        conv = ConvSpec.create(
            self.ndim,
            channels,
            channels,
            self.kernel_size,
            self.stride,
            self.padding,
            1,
            channels,
            False,
        )
        divisor = self.divisor_override or prod(self.kernel_size)

        def arrays() -> tuple[np.ndarray, None]:
            eye = np.eye(channels).reshape(channels, channels, *(1,) * self.ndim)
            shape = (channels, channels, *self.kernel_size)
            return np.broadcast_to(eye / divisor, shape).copy(), None

        form = f"{conv.name}({conv.describe()})"
        return LinearMap(conv, f"is the depthwise {form} with every weight 1/{divisor}", arrays)


# -- functional forward and backward --------------------------------------------------------


def pool_forward(spec: PoolSpec, x: np.ndarray, out: Shape) -> tuple[np.ndarray, Any]:
    """The pooled ``x`` (checked, of output shape ``out``) and what the backward needs (a max
    pool's arg-max)."""
    if spec.mode == "max":
        return kernels.max_forward(spec, x, out)
    return kernels.avg_forward(spec, x, out), None


def pool_backward(
    spec: PoolSpec, grad_out: Any, x: np.ndarray, out: Shape, saved: Any
) -> np.ndarray:
    """The gradient w.r.t. ``x``, given what ``pool_forward`` kept."""
    g = check_grad(grad_out, x, out, spec)
    if spec.mode == "max":
        return kernels.max_backward(spec, x, saved, g)
    return kernels.avg_backward(spec, x, g)


def _avg(ndim: int, kernel_size: Any, stride: Any, padding: Any, *rest: Any) -> PoolSpec:
    """The spec of average pooling from PyTorch's arguments, which have no dilation; ``rest`` are
    ceil_mode, count_include_pad and divisor_override, as far as given."""
    return PoolSpec.create(ndim, "avg", kernel_size, stride, padding, 1, *rest)


PASSES = PoolPasses(pool_forward, pool_backward)
IntOrTuple = int | Sequence[int]
Array = np.ndarray


def _max_functional(ndim: int) -> tuple[Any, Any]:
    def max_pool(
        x: Array,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        ceil_mode: bool = False,
    ) -> Array:
        spec = PoolSpec.create(ndim, "max", kernel_size, stride, padding, dilation, ceil_mode)
        return PASSES.pooled(spec, x)

    def backward(
        grad_out: Array,
        x: Array,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        ceil_mode: bool = False,
    ) -> Array:
        spec = PoolSpec.create(ndim, "max", kernel_size, stride, padding, dilation, ceil_mode)
        return PASSES.gradient(spec, grad_out, x)

    name, axes = f"max_pool{ndim}d", ", ".join(axis_names(ndim))
    return (
        rank_function(
            max_pool, name, f"{ndim}-D max pooling of an (N, C, {axes}) array, as F.{name}."
        ),
        rank_function(
            backward,
            f"{name}_backward",
            f"The gradient of {name} w.r.t. x; ties go to the first maximum.",
        ),
    )


def _avg_functional(ndim: int) -> tuple[Any, Any]:
    # AvgPool1d takes no divisor_override, as PyTorch's
    def avg_pool(
        x: Array,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> Array:
        spec = _avg(
            ndim, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )
        return PASSES.pooled(spec, x)

    def backward(
        grad_out: Array,
        x: Array,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> Array:
        spec = _avg(
            ndim, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )
        return PASSES.gradient(spec, grad_out, x)

    name, axes = f"avg_pool{ndim}d", ", ".join(axis_names(ndim))
    return (
        rank_function(
            avg_pool, name, f"{ndim}-D average pooling of an (N, C, {axes}) array, as F.{name}."
        ),
        rank_function(backward, f"{name}_backward", f"The gradient of {name} w.r.t. x."),
    )


(
    (max_pool1d, max_pool1d_backward),
    (max_pool2d, max_pool2d_backward),
    (max_pool3d, max_pool3d_backward),
) = (_max_functional(d) for d in RANKS)
(
    (avg_pool1d, avg_pool1d_backward),
    (avg_pool2d, avg_pool2d_backward),
    (avg_pool3d, avg_pool3d_backward),
) = (_avg_functional(d) for d in RANKS)
# -- modules ----------------------------------------------------------------------------------


class PoolModule(PoolingModule):
    """A sliding pool: forward keeps the input (and the arg-max for max pools) for backward."""

    spec: PoolSpec
    passes = PASSES


class MaxPoolNd(PoolModule):
    """Max pooling with PyTorch's arguments."""

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


class AvgPool1d(PoolModule):
    """1-D average pooling with PyTorch's arguments (no divisor_override, as PyTorch's)."""

    ndim = 1

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        self.spec = _avg(1, kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPoolNd(PoolModule):
    """2-D or 3-D average pooling with PyTorch's arguments."""

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
        self.spec = _avg(
            self.ndim, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )


MaxPool1d, MaxPool2d, MaxPool3d = (
    rank_class(MaxPoolNd, d, f"MaxPool{d}d", f"{d}-D max pooling with PyTorch's arguments.")
    for d in RANKS
)
AvgPool2d, AvgPool3d = (
    rank_class(AvgPoolNd, d, f"AvgPool{d}d", f"{d}-D average pooling with PyTorch's arguments.")
    for d in RANKS[1:]
)


# -- registration -----------------------------------------------------------------------------

#: The options pools are spelled with, in layer text and on the command line.
POOL_OPTIONS = (
    Option("kernel_size", "k", "--kernel", help="window size: 2 or per axis 2,3", per_axis=True),
    Option("stride", "s", "--stride", help="defaults to the kernel size", per_axis=True),
    Option("padding", "p", "--padding", per_axis=True),
    Option("dilation", "d", "--dilation", help="max pooling only", per_axis=True),
)


def build_max(values: dict[str, Any], ctx: Context) -> Module:
    return of_rank((MaxPool1d, MaxPool2d, MaxPool3d), ctx.ndim)(**values)


def build_avg(values: dict[str, Any], ctx: Context) -> Module:
    return of_rank((AvgPool1d, AvgPool2d, AvgPool3d), ctx.ndim)(**values)


def _pool_call(ndim: int, mode: str) -> registry.CallRule:
    """F.max_pool*d and F.avg_pool*d, bound as PyTorch binds them."""

    def rule(call: registry.TorchCall) -> Op:
        if mode == "max":
            k, s, p, d, ceil, indices = call.bind(
                ("kernel_size", None),
                ("stride", None),
                ("padding", 0),
                ("dilation", 1),
                ("ceil_mode", False),
                ("return_indices", False),
            )
            if indices:
                raise registry.Unsupported("return_indices=True")
            return PoolSpec.create(ndim, "max", k, s or None, p, d, ceil)
        k, s, p, ceil, include, divisor = call.bind(
            ("kernel_size", None),
            ("stride", None),
            ("padding", 0),
            ("ceil_mode", False),
            ("count_include_pad", True),
            ("divisor_override", None),
        )
        return _avg(ndim, k, s or None, p, ceil, include, divisor)

    return rule


POOL = registry.register_twins(
    "pool",
    PoolSpec,
    (MaxPool1d, MaxPool2d, MaxPool3d, AvgPool1d, AvgPool2d, AvgPool3d),
    (
        max_pool1d,
        max_pool1d_backward,
        max_pool2d,
        max_pool2d_backward,
        max_pool3d,
        max_pool3d_backward,
        avg_pool1d,
        avg_pool1d_backward,
        avg_pool2d,
        avg_pool2d_backward,
        avg_pool3d,
        avg_pool3d_backward,
    ),
    functions=pool_calls("", _pool_call),
    kinds=(
        LayerKind("maxpool", POOL_OPTIONS, build_max, required=("k",)),
        LayerKind("avgpool", POOL_OPTIONS[:3], build_avg, required=("k",)),
    ),
)
