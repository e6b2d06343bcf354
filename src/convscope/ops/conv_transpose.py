"""Transposed convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs,
working, receptive field, the forward and backward passes, the modules and the registration.

A transposed convolution is the adjoint of the convolution ``conv`` with the same kernel,
stride, padding and dilation whose input has this layer's output size: its forward is conv's
input gradient (then cropped), its input gradient is conv's forward, and its weight gradient is
conv's weight gradient with the roles of input and output swapped. Its counts are conv's, by the
same rule over the same windows, with the roles swapped; only the bias and the dense count's
uncropped output are its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import float_array, same_dtype
from ..counting import Cost
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import (
    PadPairs,
    Shape,
    Windows,
    axis_names,
    int_tuple,
    positive_int,
    transpose_out_size,
)
from ..grammar import LayerKind, Option, parse_ints
from ..kernels.im2col import conv_core
from .base import RANKS, not_a_convolution, rank_class, rank_function
from .conv import CONV_OPTIONS
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
    spec_constructor,
)

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class ConvTransposeSpec(KernelSpec):
    """A transposed convolution's configuration, resolved to per-axis tuples."""

    ndim: int
    in_channels: int
    out_channels: int
    kernel_size: Shape
    stride: Shape
    padding: Shape
    output_padding: Shape
    dilation: Shape
    groups: int = 1
    bias: bool = True

    _positional: ClassVar = ("in_channels", "out_channels")
    _hidden: ClassVar = ("ndim",)
    _defaults: ClassVar = {"padding": 0, "output_padding": 0, "dilation": 1}
    # what its working says (``KernelSpec``)
    _kind = "ConvTranspose"
    _pairs = "C_in · (C_out / g)"
    _window_per = "input"
    _macs_title = "MACs (every input entry times every tap, no bias)"
    _sums: ClassVar = {
        "output": ("R", "output entries that receive a product", ""),
        "input": ("Z", "input entries that receive a product", ""),
        "weight": ("K", "taps that ever land inside the output", ""),
    }

    @classmethod
    def create(
        cls,
        ndim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | Sequence[int] = 1,
    ) -> ConvTransposeSpec:
        """Validates PyTorch-style arguments and resolves them to per-axis values; after the
        rank, these are the arguments of the ``ConvTranspose*d`` modules."""
        in_channels, out_channels, groups = check_channels(in_channels, out_channels, groups)
        if isinstance(padding, str):
            raise LayerConfigError(
                f"ConvTranspose{ndim}d takes an int or per-axis padding, not {padding!r}"
            )
        kernel, strides, dilations = kernel_axes(ndim, kernel_size, stride, dilation)
        pads = int_tuple(padding, ndim, "padding", minimum=0)
        extra = int_tuple(output_padding, ndim, "output_padding", minimum=0)
        for op, s, d in zip(extra, strides, dilations):
            if op >= s and op >= d:
                raise LayerConfigError(
                    f"output_padding must be smaller than the stride or the dilation, got "
                    f"output_padding={extra}, stride={strides}, dilation={dilations}"
                )
        return cls(
            ndim,
            in_channels,
            out_channels,
            kernel,
            strides,
            pads,
            extra,
            dilations,
            groups,
            bool(bias),
        )

    @property
    def weight_shape(self) -> Shape:
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = self._check_channels(input_shape)
        for ax, size, out in zip(axis_names(self.ndim), shape[1:], self._sizes(shape)):
            if out < 1:
                raise ShapeError(
                    f"{self.name}: the output size along {ax} would be {out} for input size {size}:"
                    " (L − 1)·s − 2·p + d·(k − 1) + output_padding + 1 must be >= 1"
                )
        return shape

    def _sizes(self, shape: Shape) -> list[int]:
        return [
            transpose_out_size(size, k, s, p, d, op)
            for size, k, s, p, d, op in zip(
                shape[1:],
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                self.output_padding,
            )
        ]

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        for ax, size, s, p, d, k, op, out in zip(
            axis_names(self.ndim),
            input_shape[1:],
            self.stride,
            self.padding,
            self.dilation,
            self.kernel_size,
            self.output_padding,
            self._sizes(input_shape),
        ):
            w.let(
                f"{ax}_out",
                f"({ax} − 1)·s_{ax} − 2·p_{ax} + d_{ax}·(k_{ax} − 1) + op_{ax} + 1",
                out,
                {ax: size, f"s_{ax}": s, f"p_{ax}": p, f"d_{ax}": d, f"k_{ax}": k, f"op_{ax}": op},
            )
        shape = (self.out_channels, *self._sizes(input_shape))
        w.note(f"Output shape (C_out, {', '.join(axis_names(self.ndim))}) = {shape_text(shape)}")
        return shape

    def adjoint_axes(self, input_shape: Shape, output_shape: Shape, dense: bool) -> list[Windows]:
        """The windows of the convolution this layer transposes: over this layer's output (the
        convolution's input, cropped by the padding) one window per input entry. The dense count
        computes the uncropped output."""
        axes = []
        for size, out, k, s, p, d in zip(
            input_shape[1:],
            output_shape[1:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
        ):
            if dense:
                full = (size - 1) * s + d * (k - 1) + 1
                axes.append(Windows(max(full, p + out), 0, k, s, d, size))
            else:
                axes.append(Windows(out, -p, k, s, d, size))
        return axes

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        axes = self.adjoint_axes(input_shape, output_shape, count == "dense")
        w.section(f"Forward pass ({count} count)")
        w.note(
            "Each input entry times each tap is added into output entry i·s + t·d − p: the input "
            "gradient of the convolution this layer transposes, over the same windows. "
            + (
                "Dense count: the full output is computed, then the padding is cropped."
                if count == "dense"
                else "Exact count: products that would land in the cropped border are skipped."
            )
        )
        products = self._products(w, axes, batch, "products cropped away")
        if self.bias:
            w.note("Each output entry adds its n products with n − 1 additions, + 1 for the bias.")
            fwd_adds = w.let("adds", "mults", products, {"mults": products})
        else:
            fwd_adds = self._summed(w, products, batch, "output", axes)

        w.section("Backward pass: the gradient w.r.t. the input")
        w.note("A convolution of the output gradient: the same products, gathered per input entry.")
        bi_adds = self._summed(w, products, batch, "input", axes)

        w.section("Backward pass: the gradient w.r.t. the weight")
        bw_adds = self._summed(w, products, batch, "weight", axes)
        return self._product_cost(w, products, (fwd_adds, bi_adds, bw_adds), batch, output_shape)

    # -- receptive field and composition ----------------------------------------------------
    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Output o reads the inputs (o + p − t·d)/s: the stride divides the field's step."""
        return field.transposed(self.kernel_size, self.stride, self.dilation, self.padding)

    linear_map = not_a_convolution


# -- engine: functional forward and backward ----------------------------------------------------
#
# With ``conv`` the adjoint convolution (its input padded by ``padding`` zeros on each side, the
# same weight array read as conv's (C_out, C_in/g, *k) weight): the forward is conv's input
# gradient, then cropped; the input gradient is conv's forward of the padded output gradient;
# the weight gradient is conv's weight gradient with the roles of input and output swapped.


def _zero_pads(spec: ConvTransposeSpec) -> PadPairs:
    return tuple((p, p) for p in spec.padding)


def _transpose_spec(
    ndim: int,
    x: np.ndarray,
    weight: np.ndarray,
    stride: Any,
    padding: Any,
    output_padding: Any,
    groups: int,
    dilation: Any,
    has_bias: bool,
) -> ConvTransposeSpec:
    """The spec of the transposed convolution these arrays and arguments describe."""
    same_dtype(x=x, weight=weight)
    check_ranks(ndim, x, weight, "C_in x C_out/groups")
    positive_int(groups, "groups")
    return ConvTransposeSpec.create(
        ndim,
        x.shape[1],
        weight.shape[1] * groups,
        tuple(weight.shape[2:]),
        stride,
        padding,
        output_padding,
        groups,
        has_bias,
        dilation,
    )


def _adjoint(
    spec: ConvTransposeSpec, source: np.ndarray | None, x: np.ndarray, weight: np.ndarray, **want
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``conv_core`` on the adjoint convolution: the spec's geometry and zero padding, with
    ``x`` in the place of its output gradient."""
    return conv_core(
        source,
        weight,
        spec.stride,
        spec.dilation,
        x.shape[2:],
        spec.groups,
        dy=x,
        pads=_zero_pads(spec),
        **want,
    )


def transpose_forward(
    spec: ConvTransposeSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    """The forward pass of checked arrays: the adjoint convolution's input gradient."""
    out = spec.output_shape(x.shape[1:])[1:]
    *_, y = _adjoint(spec, None, x, weight, input_sizes=out)
    assert y is not None
    if bias is not None:
        y += bias.reshape(-1, *(1,) * spec.ndim)
    return y


def transpose_backward(
    spec: ConvTransposeSpec, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The gradients: the adjoint convolution's forward and weight gradient."""
    gx, gw, _ = _adjoint(spec, grad_out, x, weight, want_y=True, want_gw=True)
    assert gx is not None and gw is not None
    gb = grad_out.sum(axis=(0, *range(2, grad_out.ndim))) if bias else None
    return gx, gw, gb


Array = np.ndarray
Ints = int | Sequence[int]


def _functional(ndim: int) -> tuple[Any, Any]:
    def conv_transpose(
        x: Array,
        weight: Array,
        bias: Array | None = None,
        stride: Ints = 1,
        padding: Ints = 0,
        output_padding: Ints = 0,
        groups: int = 1,
        dilation: Ints = 1,
    ) -> Array:
        x, weight = float_array(x, "x"), float_array(weight, "weight")
        bias = None if bias is None else float_array(bias, "bias")
        spec = _transpose_spec(
            ndim, x, weight, stride, padding, output_padding, groups, dilation, bias is not None
        )
        return run_forward(transpose_forward, spec, x, weight, bias)

    def backward(
        grad_out: Array,
        x: Array,
        weight: Array,
        stride: Ints = 1,
        padding: Ints = 0,
        output_padding: Ints = 0,
        groups: int = 1,
        dilation: Ints = 1,
        bias: bool = True,
    ) -> Grads:
        x, weight = float_array(x, "x"), float_array(weight, "weight")
        grad_out = float_array(grad_out, "grad_out")
        spec = _transpose_spec(
            ndim, x, weight, stride, padding, output_padding, groups, dilation, bias
        )
        return run_backward(transpose_backward, spec, grad_out, x, weight, bias)

    name = f"conv_transpose{ndim}d"
    return (
        rank_function(
            conv_transpose, name, f"{ndim}-D transposed convolution, as torch.nn.functional.{name}."
        ),
        rank_function(
            backward,
            f"{name}_backward",
            f"(grad_input, grad_weight, grad_bias) of {name}; grad_bias None if not bias.",
        ),
    )


(
    (conv_transpose1d, conv_transpose1d_backward),
    (conv_transpose2d, conv_transpose2d_backward),
    (conv_transpose3d, conv_transpose3d_backward),
) = (_functional(d) for d in RANKS)


# -- modules ------------------------------------------------------------------------------------


class ConvTransposeNd(KernelModule):
    """A transposed convolution with PyTorch's arguments, attribute names and initialisation."""

    spec: ConvTransposeSpec
    passes = (transpose_forward, transpose_backward)

    __init__ = spec_constructor(ConvTransposeSpec.create)


ConvTranspose1d, ConvTranspose2d, ConvTranspose3d = (
    rank_class(
        ConvTransposeNd,
        d,
        f"ConvTranspose{d}d",
        f"{d}-D transposed convolution with PyTorch's arguments.",
    )
    for d in RANKS
)


# -- registration -------------------------------------------------------------------------------


def _conv_transpose_call(ndim: int) -> registry.CallRule:
    """F.conv_transpose{n}d(x, weight, bias, stride, padding, output_padding, groups,
    dilation), the weight a parameter: its spec read off the weight (C_in, C_out / g, k…)."""

    def rule(call: registry.TorchCall) -> ConvTransposeSpec:
        weight, bias, stride, padding, output_padding, groups, dilation = call.bind(
            ("weight", None),
            ("bias", None),
            ("stride", 1),
            ("padding", 0),
            ("output_padding", 0),
            ("groups", 1),
            ("dilation", 1),
        )
        weight = registry.constant(weight, "weight")
        registry.constant(bias, "bias", optional=True)
        return ConvTransposeSpec.create(
            ndim,
            call.operands[0][0],
            weight.shape[1] * groups,
            weight.shape[2:],
            stride,
            padding,
            output_padding,
            groups,
            bias is not None,
            dilation,
        )

    return rule


FAMILY = registry.register_twins(
    "conv_transpose",
    ConvTransposeSpec,
    (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d),
    (
        conv_transpose1d,
        conv_transpose1d_backward,
        conv_transpose2d,
        conv_transpose2d_backward,
        conv_transpose3d,
        conv_transpose3d_backward,
    ),
    "in_channels",
    functions={
        f"{root}.conv_transpose{d}d": _conv_transpose_call(d)
        for d in RANKS
        for root in ("torch", "torch.nn.functional")
    },
    kinds=(
        LayerKind(
            "conv-transpose",
            (
                *(o for o in CONV_OPTIONS if o.dest != "padding"),
                Option("padding", "p", "--padding", parse_ints, per_axis=True),
                Option("output_padding", "op", "--output-padding", parse_ints, per_axis=True),
            ),
            kernel_builder((ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)),
            help="a transposed convolution",
            text=False,
            calculator=True,
            required=("k",),
        ),
    ),
)
TWINS = FAMILY.modules
