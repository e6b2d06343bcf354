"""Convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs, working,
receptive field, the forward and backward passes, the ``nn`` modules and the registration.

``y[n, co, o] = Σ_{ci in co's group} Σ_t x[n, ci, o·s + t·d − p_before] · w[co, ci, t] + b[co]``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import float_array
from ..counting import Cost
from ..errors import LayerConfigError, NotComposableError, ShapeError
from ..explain import Working, axis_dict, shape_text
from ..geometry import (
    PadPairs,
    Shape,
    Windows,
    axis_names,
    conv_out_size,
    pad_pairs,
    prod,
    reached_sources,
)
from ..grammar import LayerKind, Option, parse_int, parse_padding, parse_word
from ..kernels.depthwise import depthwise_core
from ..kernels.im2col import conv_core, dense_weight, pad, pad_backward
from ..module import Module
from .base import RANKS, LinearMap, rank_class, rank_function
from .windowed import (
    Grads,
    KernelModule,
    KernelSpec,
    check_channels,
    check_ranks,
    kernel_axes,
    kernel_builder,
    run_backward,
    run_forward,
    sliding_windows,
    spec_constructor,
)

if TYPE_CHECKING:
    from ..receptive import Field

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def window_formula(ax: str, pads: tuple[int, int], dilation: int) -> str:
    """The output-size formula along one axis, written for the given padding and dilation."""
    pad = f"2·p_{ax}" if pads[0] == pads[1] else f"pb_{ax} + pa_{ax}"
    span = f"d_{ax}·(k_{ax} − 1)" if dilation != 1 else f"(k_{ax} − 1)"
    return f"⌊({ax} + {pad} − {span} − 1) / s_{ax}⌋ + 1"


def axis_values(
    ax: str, size: int, pads: tuple[int, int], kernel: int, stride: int, dilation: int
) -> dict[str, int]:
    return {
        ax: size,
        f"p_{ax}": pads[0],
        f"pb_{ax}": pads[0],
        f"pa_{ax}": pads[1],
        f"k_{ax}": kernel,
        f"s_{ax}": stride,
        f"d_{ax}": dilation,
    }


@dataclass(frozen=True)
class ConvSpec(KernelSpec):
    """A convolution's configuration, resolved: per-axis tuples and per-side padding."""

    ndim: int
    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    padding: PadPairs
    dilation: Shape
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    _positional: ClassVar = ("in_channels", "out_channels")
    _hidden: ClassVar = ("ndim",)
    _defaults: ClassVar = {"padding": 0, "dilation": 1}
    # what its working says (``KernelSpec``)
    _kind = "Conv"
    _pairs = "C_out · (C_in / g)"
    _window_per = "output"
    _macs_title = "MACs (torchvision convention: dense, no bias)"
    _no_bias = "No bias."
    _sums: ClassVar = {
        "output": (
            "Z",
            "outputs that receive at least one product",
            "n − 1 additions for an output's n products",
        ),
        "input": (
            "U",
            "input entries that receive at least one product",
            "n − 1 additions for an entry's n products",
        ),
        "weight": (
            "K",
            "taps that ever land on input",
            "n − 1 additions for a weight entry's n products",
        ),
    }

    @classmethod
    def create(
        cls,
        ndim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | str | Sequence[int] | Sequence[Sequence[int]] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> ConvSpec:
        """Validates PyTorch-style arguments and resolves them to per-axis values; after the
        rank, these are the arguments of the ``Conv*d`` modules."""
        in_channels, out_channels, groups = check_channels(in_channels, out_channels, groups)
        kernel, strides, dilations = kernel_axes(ndim, kernel_size, stride, dilation)
        if padding_mode not in PADDING_MODES:
            raise LayerConfigError(
                f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}"
            )
        pads = pad_pairs(
            padding, ndim, kernel, dilations, strides, allow_crop=padding_mode != "zeros"
        )
        return cls(
            ndim,
            in_channels,
            out_channels,
            kernel,
            strides,
            pads,
            dilations,
            groups,
            bool(bias),
            padding_mode,
        )

    def _display(self, field: str) -> Any:
        if field == "padding":  # (p, p) as p, as PyTorch's per-axis padding
            return tuple(p[0] if p[0] == p[1] else p for p in self.padding)
        return getattr(self, field)

    @property
    def weight_shape(self) -> Shape:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def padded(self) -> bool:
        """Whether any side of any axis is padded."""
        return any(p for pair in self.padding for p in pair)

    # -- shape ------------------------------------------------------------------------------
    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = self._check_channels(input_shape)
        for ax, size, (before, after), k, d in zip(
            axis_names(self.ndim), shape[1:], self.padding, self.kernel_size, self.dilation
        ):
            span = d * (k - 1) + 1
            if size + before + after < span:
                raise ShapeError(
                    f"{self.name}: the effective kernel d·(k − 1) + 1 = {span} is larger than "
                    f"the padded input along {ax}: {size} + {before} + {after} = "
                    f"{size + before + after}"
                )
            if self.padding_mode == "reflect" and max(before, after) >= size:
                raise ShapeError(
                    f"{self.name}: reflect padding must be smaller than the input along {ax}, "
                    f"got padding ({before}, {after}) for size {size}"
                )
            if self.padding_mode == "circular" and max(before, after) > size:
                raise ShapeError(
                    f"{self.name}: circular padding can be at most the input size along {ax}, "
                    f"got padding ({before}, {after}) for size {size}"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        sizes = []
        for ax, size, pads, k, s, d in zip(
            axis_names(self.ndim),
            input_shape[1:],
            self.padding,
            self.kernel_size,
            self.stride,
            self.dilation,
        ):
            out = conv_out_size(size, *pads, k, s, d)
            sizes.append(
                w.let(
                    f"{ax}_out",
                    window_formula(ax, pads, d),
                    out,
                    axis_values(ax, size, pads, k, s, d),
                )
            )
        shape = (self.out_channels, *sizes)
        w.note(f"Output shape (C_out, {', '.join(axis_names(self.ndim))}) = {shape_text(shape)}")
        return shape

    # -- cost -------------------------------------------------------------------------------
    def axes(self, input_shape: Shape, output_shape: Shape, dense: bool) -> list[Windows]:
        """The sliding windows of each spatial axis, on the real or the padded input."""
        return sliding_windows(self, self.padding, input_shape, output_shape, dense)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        names = axis_names(self.ndim)
        padded_values = self.padding_mode != "zeros" and self.padded
        axes = self.axes(input_shape, output_shape, count == "dense" or padded_values)

        w.section(f"Forward pass x = F(z, w) ({count} count)")
        w.note("F computes the layer's output x from its input z and weights w (and bias b).")
        if count == "dense":
            w.note(
                "Dense count: the padding is real input, every tap of every window is a product."
            )
        elif padded_values:
            w.note(
                f"padding_mode={self.padding_mode!r} pads with input values: "
                "every tap is a product."
            )
        else:
            w.note("Exact count: a tap that lands on a padding zero is not a product.")
        kernel = " · ".join(f"k_{ax}" for ax in names)
        w.let(
            "n",
            f"(C_in / g) · {kernel}",
            self.in_channels // self.groups * prod(self.kernel_size),
            {**self._channels(batch), **axis_dict(names, "k_", self.kernel_size)},
            why="products per output when no tap lands on padding",
        )
        w.note("Along each axis, T counts the (output, tap) pairs that land on input values.")
        products = self._products(w, axes, batch, "taps that land on padding")
        if self.bias:
            why = "n − 1 additions for n products, + 1 for the bias"
            fwd_adds = w.let("adds", "mults", products, {"mults": products}, why=why)
        else:
            fwd_adds = self._summed(w, products, batch, "output", axes)

        w.section("Backward pass: g_z, the gradient w.r.t. the input")
        w.note(
            "(g_z, g_w) = G(ε) turns the upstream gradient ε = ∂L/∂x into g_z = ∂L/∂z, which "
            "backpropagation passes to the layer below, and g_w = ∂L/∂w, which updates the weights."
        )
        w.note(
            f"ε = ∂L/∂x has the output's shape {shape_text(output_shape)}; g_z has the input's "
            f"shape {shape_text(input_shape)}"
            + (" (the padded input's, in a dense count)" if count == "dense" else "")
            + ". Every product of the forward pass appears once, as g_z[i] += ε[o] · w[t]."
        )
        reach = None
        if padded_values and count == "exact":
            reach = [
                reached_sources(win, before, size, self.padding_mode)
                for win, size, (before, _) in zip(axes, input_shape[1:], self.padding)
            ]
            w.note("A product that lands on padding is added into the input entry the pad copies.")
        bi_adds = self._summed(w, products, batch, "input", axes, reach)

        w.section("Backward pass: g_w, the gradient w.r.t. the weight")
        w.note(
            f"g_w has the weight's shape {shape_text(self.weight_shape)}: g_w[t] sums "
            "ε[o] · z[o·s + t·d] over the batch and the outputs. Its additions are "
            "N · (products per image) minus the weight entries reached: not proportional to N."
        )
        bw_adds = self._summed(w, products, batch, "weight", axes)
        return self._product_cost(w, products, (fwd_adds, bi_adds, bw_adds), batch, output_shape)

    # -- receptive field and composition ----------------------------------------------------
    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """A sliding window: the field grows by d·(k − 1) input steps of the current stride."""
        before = tuple(p[0] for p in self.padding)
        return field.window(self.kernel_size, self.stride, self.dilation, before)

    def linear_map(self, channels: int | None, module: Module | None = None) -> LinearMap:
        """Itself, with the module's weights."""

        def arrays() -> tuple[np.ndarray, np.ndarray | None]:
            if module is None or module.weight is None:
                raise NotComposableError(f"{self.name}: its weights come from a module")
            bias = None if module.bias is None else module.bias.data.astype(np.float64)
            return dense_weight(module.weight.data.astype(np.float64), self.groups), bias

        return LinearMap(self, f"is {self.name}({self.describe()})", arrays)


# -- engine: functional forward and backward, on the im2col core --------------------------------


def _conv_spec(
    ndim: int,
    x: np.ndarray,
    weight: np.ndarray,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    padding_mode: str,
    has_bias: bool,
) -> ConvSpec:
    """The spec of the convolution these arrays and arguments describe."""
    check_ranks(ndim, x, weight, "C_out x C_in/groups")
    return ConvSpec.create(
        ndim,
        x.shape[1],
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride,
        padding,
        dilation,
        groups,
        has_bias,
        padding_mode,
    )


def is_depthwise(spec: ConvSpec) -> bool:
    """Whether the direct depthwise path runs ``spec``: one group per input channel (any
    channel multiplier, any padding mode). Its taps are k strided multiply-adds instead of C_in
    GEMMs with K = k; ``tests/test_engine_fast_paths.py`` checks it against im2col."""
    return spec.groups > 1 and spec.groups == spec.in_channels


def _zero_padded(spec: ConvSpec) -> bool:
    """Whether the convolution reads its zero padding in place, without a padded copy: always
    for im2col; for the depthwise path only with a stride, where the output is smaller than
    the input (stride 1 measured slower in place: its taps then write rows one shorter than
    the output's, instead of whole contiguous blocks)."""
    if spec.padding_mode != "zeros" or any(b < 0 or a < 0 for b, a in spec.padding):
        return False
    return not is_depthwise(spec) or any(s > 1 for s in spec.stride)


def _source(spec: ConvSpec, x: np.ndarray) -> tuple[np.ndarray, PadPairs | None]:
    """What the cores convolve: x with the zero pads they read in place, or a padded copy."""
    if _zero_padded(spec):
        return x, spec.padding
    return pad(x, spec.padding, spec.padding_mode), None


def conv_forward(
    spec: ConvSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    """F: the convolution of checked arrays."""
    out = spec.output_shape(x.shape[1:])[1:]
    source, pads = _source(spec, x)
    if is_depthwise(spec):
        y, _, _ = depthwise_core(
            source, weight, spec.stride, spec.dilation, out, want_y=True, pads=pads
        )
    else:
        y, _, _ = conv_core(
            source, weight, spec.stride, spec.dilation, out, spec.groups, want_y=True, pads=pads
        )
    assert y is not None
    if bias is not None:
        y += bias.reshape(-1, *(1,) * spec.ndim)
    return y


def conv_backward(
    spec: ConvSpec, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """G: the gradients w.r.t. the input, the weight and (with ``bias``) the bias."""
    out = grad_out.shape[2:]
    source, pads = _source(spec, x)
    if is_depthwise(spec):
        _, gw, g_source = depthwise_core(
            source, weight, spec.stride, spec.dilation, out, dy=grad_out, want_grads=True, pads=pads
        )
    else:
        _, gw, g_source = conv_core(
            source,
            weight,
            spec.stride,
            spec.dilation,
            out,
            spec.groups,
            dy=grad_out,
            want_gw=True,
            input_sizes=source.shape[2:],
            pads=pads,
        )
    assert gw is not None and g_source is not None
    gb = grad_out.sum(axis=(0, *range(2, grad_out.ndim))) if bias else None
    if pads is not None:
        return g_source, gw, gb
    del source  # the padded copy is freed before the fold allocates gx: they never coexist
    return pad_backward(g_source, x.shape[2:], spec.padding, spec.padding_mode), gw, gb


Array = np.ndarray
Padding = int | str | Sequence[int] | Sequence[Sequence[int]]
Ints = int | Sequence[int]


def _functional(ndim: int) -> tuple[Any, Any]:
    axes = ", ".join(axis_names(ndim))

    def conv(
        x: Array,
        weight: Array,
        bias: Array | None = None,
        stride: Ints = 1,
        padding: Padding = 0,
        dilation: Ints = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
    ) -> Array:
        x, weight = float_array(x, "x"), float_array(weight, "weight")
        bias = None if bias is None else float_array(bias, "bias")
        spec = _conv_spec(
            ndim, x, weight, stride, padding, dilation, groups, padding_mode, bias is not None
        )
        return run_forward(conv_forward, spec, x, weight, bias)

    def backward(
        grad_out: Array,
        x: Array,
        weight: Array,
        stride: Ints = 1,
        padding: Padding = 0,
        dilation: Ints = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        bias: bool = True,
    ) -> Grads:
        x, weight = float_array(x, "x"), float_array(weight, "weight")
        grad_out = float_array(grad_out, "grad_out")
        spec = _conv_spec(ndim, x, weight, stride, padding, dilation, groups, padding_mode, bias)
        return run_backward(conv_backward, spec, grad_out, x, weight, bias)

    name = f"conv{ndim}d"
    return (
        rank_function(
            conv,
            name,
            f"{ndim}-D convolution of an (N, C_in, {axes}) input, as torch.nn.functional.{name}.",
        ),
        rank_function(
            backward,
            f"{name}_backward",
            f"(grad_input, grad_weight, grad_bias) of {name}; grad_bias is None when bias=False.",
        ),
    )


(conv1d, conv1d_backward), (conv2d, conv2d_backward), (conv3d, conv3d_backward) = (
    _functional(d) for d in RANKS
)


# -- modules ------------------------------------------------------------------------------------


class ConvNd(KernelModule):
    """A convolution with PyTorch's arguments, attribute names and initialisation."""

    spec: ConvSpec
    passes = (conv_forward, conv_backward)

    __init__ = spec_constructor(ConvSpec.create)


Conv1d, Conv2d, Conv3d = (
    rank_class(
        ConvNd,
        d,
        f"Conv{d}d",
        f"{d}-D convolution over (C, {', '.join(axis_names(d))}) inputs, with PyTorch's arguments.",
    )
    for d in RANKS
)


# -- registration -------------------------------------------------------------------------------


#: The options a convolution is spelled with; the transposed convolution reuses them.
CONV_OPTIONS = (
    Option("kernel_size", "k", "--kernel", help="kernel size: 3 or per axis 3,5", per_axis=True),
    Option("stride", "s", "--stride", per_axis=True),
    Option("dilation", "d", "--dilation", per_axis=True),
    Option(
        "padding",
        "p",
        "--padding",
        parse_padding,
        per_axis=True,
        help="1, 1,2, per side 1:2,0:3, same or valid",
    ),
    Option("groups", "g", "--groups", parse_int),
    Option(
        "out_channels",
        "c",
        "--out-channels",
        parse_int,
        required=True,
        help="output channels (in layer text, default: the input's)",
    ),
    Option("bias", "bias", "--no-bias", switch=False, help="no bias"),
)


def _conv_call(ndim: int) -> registry.CallRule:
    """F.conv{n}d(x, weight, bias, stride, padding, dilation, groups), the weight a parameter
    or built from parameters (a weight-standardised conv): its spec read off the weight."""

    def rule(call: registry.TorchCall) -> ConvSpec:
        weight, bias, stride, padding, dilation, groups = call.bind(
            ("weight", None),
            ("bias", None),
            ("stride", 1),
            ("padding", 0),
            ("dilation", 1),
            ("groups", 1),
        )
        weight = registry.constant(weight, "weight")
        registry.constant(bias, "bias", optional=True)
        kernel = weight.shape[2:]
        in_channels = call.operands[0][0]
        return ConvSpec.create(
            ndim,
            in_channels,
            weight.shape[0],
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias is not None,
        )

    return rule


FAMILY = registry.register_twins(
    "conv",
    ConvSpec,
    (Conv1d, Conv2d, Conv3d),
    (conv1d, conv1d_backward, conv2d, conv2d_backward, conv3d, conv3d_backward),
    "in_channels",
    functions={
        f"{root}.conv{d}d": _conv_call(d)
        for d in RANKS
        for root in ("torch", "torch.nn.functional")
    },
    kinds=(
        LayerKind(
            "conv",
            (
                *CONV_OPTIONS,
                Option(
                    "padding_mode",
                    "mode",
                    "--padding-mode",
                    parse_word(*PADDING_MODES),
                    choices=PADDING_MODES,
                ),
            ),
            kernel_builder((Conv1d, Conv2d, Conv3d)),
            help="a convolution (1-D to 3-D from the input's rank)",
            calculator=True,
            required=("k",),
        ),
    ),
)
#: The conv family's torch twins: torch.nn's class name → ours.
TWINS = FAMILY.modules
