"""Adaptive max and average pooling (1-D to 3-D) to a fixed output size: configuration, shape
rule, exact costs, working, receptive field, the forward and backward passes, the modules and
the registration. The counting rule is the pools' own (``windowed.window_cost``) over PyTorch's
adaptive windows: window i spans ⌊i·L/O⌋ … ⌈(i + 1)·L/O⌉ − 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..counting import Cost
from ..errors import LayerConfigError
from ..explain import Working, shape_text
from ..geometry import AdaptiveWindows, Shape, axis_names, check_input
from ..grammar import Context, LayerKind, Option, parse_int, parse_shape, parse_word
from ..kernels import pool as kernels
from ..module import Module
from .base import RANKS, Op, no_macs, no_params, not_a_convolution, rank_class, rank_function
from .pooling import POOL_OPTIONS, build_avg, build_max
from .windowed import PoolingModule, PoolPasses, check_grad, pool_calls, window_cost

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class AdaptivePoolSpec(Op):
    """Adaptive max or average pooling to a fixed output size (None keeps an axis's size)."""

    ndim: int
    mode: str
    output_size: tuple[int | None, ...]

    _hidden: ClassVar = ("ndim", "mode")

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
        return window_cost(
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

    _params = no_params
    _macs = no_macs

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """To one entry: the whole input. Equal windows (O divides L): a sliding window of
        L / O. Otherwise the windows' sizes and steps vary."""
        sizes, outs = input_shape[1:], output_shape[1:]
        if all(o == 1 for o in outs):
            return field.as_global()
        if all(s % o == 0 for s, o in zip(sizes, outs)):
            k = tuple(s // o for s, o in zip(sizes, outs))
            return field.window(k, k, (1,) * len(k), (0,) * len(k))
        return field.as_varying()

    linear_map = not_a_convolution


# -- functional forward and backward --------------------------------------------------------


def adaptive_forward(spec: AdaptivePoolSpec, x: np.ndarray, out: Shape) -> tuple[np.ndarray, Any]:
    """The pooled ``x`` (checked, of output shape ``out``) and what the backward needs (the
    windows, and the arg-max for max)."""
    axes = kernels.adaptive_axes(x, out)
    if spec.mode == "max":
        y, flat = kernels.adaptive_max_forward(x, axes)
        return y, (axes, flat)
    return kernels.adaptive_avg_forward(x, axes), (axes, None)


def adaptive_backward(
    spec: AdaptivePoolSpec, grad_out: Any, x: np.ndarray, out: Shape, saved: Any
) -> np.ndarray:
    """The gradient w.r.t. ``x``, given what ``adaptive_forward`` kept."""
    g = check_grad(grad_out, x, out, spec)
    axes, flat = saved
    if spec.mode == "max":
        return kernels.adaptive_max_backward(x, flat, g, axes)
    return kernels.adaptive_avg_backward(g, axes)


PASSES = PoolPasses(adaptive_forward, adaptive_backward)
OutputSize = int | None | Sequence[int | None]
Array = np.ndarray


def _adaptive_functional(ndim: int, mode: str) -> tuple[Any, Any]:
    def adaptive(x: Array, output_size: OutputSize) -> Array:
        return PASSES.pooled(AdaptivePoolSpec.create(ndim, mode, output_size), x)

    def backward(grad_out: Array, x: Array, output_size: OutputSize) -> Array:
        spec = AdaptivePoolSpec.create(ndim, mode, output_size)
        return PASSES.gradient(spec, grad_out, x)

    name, axes = f"adaptive_{mode}_pool{ndim}d", ", ".join(axis_names(ndim))
    kind = "max" if mode == "max" else "average"
    ties = "; ties go to the first maximum" if mode == "max" else ""
    return (
        rank_function(
            adaptive,
            name,
            f"{ndim}-D adaptive {kind} pooling of an (N, C, {axes}) array, as F.{name}.",
        ),
        rank_function(backward, f"{name}_backward", f"The gradient of {name} w.r.t. x{ties}."),
    )


(
    (adaptive_avg_pool1d, adaptive_avg_pool1d_backward),
    (adaptive_avg_pool2d, adaptive_avg_pool2d_backward),
    (adaptive_avg_pool3d, adaptive_avg_pool3d_backward),
) = (_adaptive_functional(d, "avg") for d in RANKS)
(
    (adaptive_max_pool1d, adaptive_max_pool1d_backward),
    (adaptive_max_pool2d, adaptive_max_pool2d_backward),
    (adaptive_max_pool3d, adaptive_max_pool3d_backward),
) = (_adaptive_functional(d, "max") for d in RANKS)


# -- modules ----------------------------------------------------------------------------------


class AdaptivePoolNd(PoolingModule):
    """Adaptive pooling to a fixed output size, with PyTorch's arguments."""

    ndim, mode = 2, "avg"
    spec: AdaptivePoolSpec
    passes = PASSES

    def __init__(self, output_size: int | None | Sequence[int | None]) -> None:
        self.spec = AdaptivePoolSpec.create(self.ndim, self.mode, output_size)


def _adaptive_class(ndim: int, mode: str) -> type[AdaptivePoolNd]:
    kind = "Max" if mode == "max" else "Avg"
    cls = rank_class(
        AdaptivePoolNd,
        ndim,
        f"Adaptive{kind}Pool{ndim}d",
        f"{ndim}-D adaptive {'max' if mode == 'max' else 'average'} pooling.",
    )
    cls.mode = mode
    return cls


AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d = (_adaptive_class(d, "avg") for d in RANKS)
AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d = (_adaptive_class(d, "max") for d in RANKS)


# -- registration -----------------------------------------------------------------------------

_ADAPTIVE = registry.by_name(
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)


#: The options of the ``pool`` calculator beyond the sliding pools' own.
_CLI_ONLY = (
    Option(
        "kind",
        None,
        "--kind",
        parse_word("max", "avg", "adaptive-max", "adaptive-avg"),
        choices=("max", "avg", "adaptive-max", "adaptive-avg"),
    ),
    Option("ceil_mode", None, "--ceil-mode", switch=True),
    Option(
        "count_include_pad",
        None,
        "--no-count-include-pad",
        switch=False,
        help="average pooling only",
    ),
    Option("divisor_override", None, "--divisor-override", parse_int),
    Option(
        "output_size",
        None,
        "--output-size",
        lambda text, label: _output_size(text, label),
        help="adaptive pools: e.g. 1x1, or one size for every axis",
    ),
)


def _output_size(text: str, label: str) -> int | tuple[int, ...]:
    """``7`` (every axis) or ``7x5`` (per axis), as PyTorch's output_size."""
    sizes = parse_shape(text, label=label)
    return sizes[0] if len(sizes) == 1 else sizes


def _build_pool(values: dict[str, Any], ctx: Context) -> Module:
    """The ``pool`` calculator: ``--kind`` picks max, average or an adaptive pool."""
    kind = values.pop("kind", "max")
    if kind.startswith("adaptive"):
        if "output_size" not in values:
            raise LayerConfigError(f"--kind {kind} needs --output-size, such as 1x1")
        cls = _ADAPTIVE[f"Adaptive{'Max' if kind == 'adaptive-max' else 'Avg'}Pool{ctx.ndim}d"]
        return cls(values["output_size"])
    values.pop("output_size", None)
    if "kernel_size" not in values:
        raise LayerConfigError(f"--kind {kind} needs --kernel")
    if kind == "max":
        for avg_only in ("count_include_pad", "divisor_override"):
            values.pop(avg_only, None)
        return build_max(values, ctx)
    if values.pop("dilation", 1) != 1:
        raise LayerConfigError("average pooling has no dilation (PyTorch's AvgPool takes none)")
    if "divisor_override" in values and ctx.ndim == 1:
        raise LayerConfigError(
            "--divisor-override applies to 2-D and 3-D average pooling only "
            "(PyTorch's AvgPool1d and MaxPool take none)"
        )
    return build_avg(values, ctx)


def _adaptive_call(ndim: int, mode: str) -> registry.CallRule:
    def rule(call: registry.TorchCall) -> Op:
        size, indices = call.bind(("output_size", None), ("return_indices", False))
        if mode == "max" and indices:
            raise registry.Unsupported("return_indices=True")
        return AdaptivePoolSpec.create(ndim, mode, size)

    return rule


ADAPTIVE_POOL = registry.register_twins(
    "adaptive_pool",
    AdaptivePoolSpec,
    tuple(_ADAPTIVE.values()),
    (
        adaptive_avg_pool1d,
        adaptive_avg_pool1d_backward,
        adaptive_avg_pool2d,
        adaptive_avg_pool2d_backward,
        adaptive_avg_pool3d,
        adaptive_avg_pool3d_backward,
        adaptive_max_pool1d,
        adaptive_max_pool1d_backward,
        adaptive_max_pool2d,
        adaptive_max_pool2d_backward,
        adaptive_max_pool3d,
        adaptive_max_pool3d_backward,
    ),
    functions=pool_calls("adaptive_", _adaptive_call),
    kinds=(
        LayerKind(
            "pool",
            (*POOL_OPTIONS, *_CLI_ONLY),
            _build_pool,
            text=False,
            calculator=True,
            help="max, average or adaptive pooling",
        ),
    ),
)
