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
from ..arrays import expect_rank, float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, shape_text
from ..geometry import (
    PadPairs,
    Shape,
    Windows,
    axis_names,
    check_input,
    int_tuple,
    prod,
    transpose_out_size,
)
from ..grammar import Context, LayerKind, Option, parse_ints
from ..kernels.im2col import conv_core, pad, pad_backward
from ..module import Module, WeightedModule
from .base import RANKS, Op, not_linear, rank_class, rank_function
from .conv import CONV_OPTIONS
from .windowed import bias_gradient, check_arrays, check_channels, summed_adds, window_pairs

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class ConvTransposeSpec(Op):
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
        """Validates PyTorch-style arguments and resolves them to per-axis values."""
        check_channels(in_channels, out_channels, groups)
        if isinstance(padding, str):
            raise LayerConfigError(
                f"ConvTranspose{ndim}d takes an int or per-axis padding, not {padding!r}"
            )
        kernel = int_tuple(kernel_size, ndim, "kernel_size")
        strides = int_tuple(stride, ndim, "stride")
        dilations = int_tuple(dilation, ndim, "dilation")
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
    def name(self) -> str:
        return f"ConvTranspose{self.ndim}d"

    @property
    def weight_shape(self) -> Shape:
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_input(input_shape, self.ndim, self.name)
        if shape[0] != self.in_channels:
            raise ShapeError(
                f"{self.name} expects {self.in_channels} input channels, got an input of shape "
                f"{shape_text(shape)} with {shape[0]}"
            )
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

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        names = axis_names(self.ndim)
        values = {"C_out": self.out_channels, "C_in": self.in_channels, "g": self.groups}
        values.update(axis_dict(names, "k_", self.kernel_size))
        kernel = " · ".join(f"k_{ax}" for ax in names)
        weights = w.let(
            "weights", f"C_in · (C_out / g) · {kernel}", prod(self.weight_shape), values
        )
        biases = w.let("biases", "C_out", self.out_channels, values) if self.bias else 0
        w.let(
            "params", "weights + biases", weights + biases, {"weights": weights, "biases": biases}
        )
        return ParamCount(weights, biases)

    def _macs(self, input_shape: Shape, output_shape: Shape, batch: int, w: Working) -> int:
        w.section("MACs (every input entry times every tap, no bias)")
        names = axis_names(self.ndim)
        values = {
            "N": batch,
            "C_out": self.out_channels,
            "C_in": self.in_channels,
            "g": self.groups,
        }
        values.update(axis_dict(names, "", input_shape[1:]))
        values.update(axis_dict(names, "k_", self.kernel_size))
        factors = " · ".join(f"{ax} · k_{ax}" for ax in names)
        macs = batch * prod(input_shape) * prod(self.weight_shape[1:])
        return w.let("MACs", f"N · C_in · (C_out / g) · {factors}", macs, values)

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
        names = axis_names(self.ndim)
        axes = self.adjoint_axes(input_shape, output_shape, count == "dense")
        n, c_in, c_og = batch, self.in_channels, self.out_channels // self.groups
        base = {"N": n, "C_out": self.out_channels, "C_in": c_in, "g": self.groups}

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
        pairs = window_pairs(w, names, axes, self.kernel_size, "{ax}", "products cropped away")
        t_product = " · ".join(f"T_{ax}" for ax in names)
        products = w.let(
            "mults",
            f"N · C_in · (C_out / g) · {t_product}",
            n * c_in * c_og * prod(pairs),
            {**base, **axis_dict(names, "T", pairs)},
        )
        if self.bias:
            w.note("Each output entry adds its n products with n − 1 additions, + 1 for the bias.")
            fwd_adds = w.let("adds", "mults", products, {"mults": products})
        else:
            fwd_adds = summed_adds(
                w,
                products,
                ("N · C_out", n * self.out_channels),
                base,
                "R",
                names,
                [win.positions_used() for win in axes],
                [win.size for win in axes],
                "{ax}_out",
                "output entries that receive a product",
            )

        w.section("Backward pass: the gradient w.r.t. the input")
        w.note("A convolution of the output gradient: the same products, gathered per input entry.")
        w.let("mults", "", products, why="the forward pass's products")
        bi_adds = summed_adds(
            w,
            products,
            ("N · C_in", n * c_in),
            base,
            "Z",
            names,
            [win.windows_used for win in axes],
            input_shape[1:],
            "{ax}",
            "input entries that receive a product",
        )

        w.section("Backward pass: the gradient w.r.t. the weight")
        w.let("mults", "", products, why="the forward pass's products")
        bw_adds = summed_adds(
            w,
            products,
            ("C_in · (C_out / g)", c_in * c_og),
            base,
            "K",
            names,
            [win.taps_used for win in axes],
            self.kernel_size,
            "k_{ax}",
            "taps that ever land inside the output",
        )
        return Cost(
            forward=OpCount(mults=products, adds=fwd_adds),
            backward_input=OpCount(mults=products, adds=bi_adds),
            backward_weight=OpCount(mults=products, adds=bw_adds),
            backward_bias=bias_gradient(
                w, self.bias, self.out_channels, n, names, output_shape, base
            ),
        )

    # -- receptive field and composition ----------------------------------------------------
    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Output o reads the inputs (o + p − t·d)/s: the stride divides the field's step."""
        return field.transposed(self.kernel_size, self.stride, self.dilation, self.padding)

    linear_map = not_linear(
        "is not a convolution, an average pool or a BatchNorm: compose takes only those"
    )


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
    expect_rank(x, ndim + 2, "x", "N x C x " + " x ".join(axis_names(ndim)))
    expect_rank(
        weight,
        ndim + 2,
        "weight",
        "C_in x C_out/groups x " + " x ".join(f"k_{ax}" for ax in axis_names(ndim)),
    )
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise LayerConfigError(f"groups must be an int >= 1, got {groups!r}")
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


def transpose_forward(
    spec: ConvTransposeSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    """The forward pass of checked arrays: the adjoint convolution's input gradient, cropped."""
    out = spec.output_shape(x.shape[1:])[1:]
    padded = tuple(o + 2 * p for o, p in zip(out, spec.padding))
    *_, yp = conv_core(
        None, weight, spec.stride, spec.dilation, x.shape[2:], spec.groups, dy=x, padded=padded
    )
    assert yp is not None
    y = pad_backward(yp, out, _zero_pads(spec), "zeros")
    if bias is not None:
        y += bias.reshape(-1, *(1,) * spec.ndim)
    return y


def transpose_backward(
    spec: ConvTransposeSpec, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The gradients: the adjoint convolution's forward and weight gradient."""
    gp = pad(grad_out, _zero_pads(spec), "zeros")
    gx, gw, _ = conv_core(
        gp,
        weight,
        spec.stride,
        spec.dilation,
        x.shape[2:],
        spec.groups,
        dy=x,
        want_y=True,
        want_gw=True,
    )
    assert gx is not None and gw is not None
    gb = grad_out.sum(axis=(0, *range(2, grad_out.ndim))) if bias else None
    return gx, gw, gb


Array = np.ndarray
Ints = int | Sequence[int]
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


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
        check_arrays(spec, x, weight, bias, None)
        return transpose_forward(spec, x, weight, bias)

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
        check_arrays(spec, x, weight, None, grad_out)
        return transpose_backward(spec, grad_out, x, weight, bias)

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


class ConvTransposeNd(WeightedModule):
    """A transposed convolution with PyTorch's arguments, attribute names and initialisation."""

    ndim = 2
    spec: ConvTransposeSpec

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | Sequence[int] = 1,
    ) -> None:
        self.spec = ConvTransposeSpec.create(
            self.ndim,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            output_padding,
            groups,
            bias,
            dilation,
        )
        fan_in = self.spec.weight_shape[1] * prod(self.spec.kernel_size)
        self._register_weights(self.spec.weight_shape, fan_in, out_channels if bias else None)

    def _forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        x = float_array(x, "x")
        check_arrays(self.spec, x, weight, bias, None)
        return transpose_forward(self.spec, x, weight, bias)

    def _backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, has_bias: bool
    ) -> Grads:
        grad_out = float_array(grad_out, "grad_out")
        check_arrays(self.spec, x, weight, None, grad_out)
        return transpose_backward(self.spec, grad_out, x, weight, has_bias)


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


def _build(values: dict[str, Any], ctx: Context) -> Module:
    cls = (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)[ctx.ndim - 1]
    return cls(ctx.channels, values.pop("out_channels", ctx.channels), **values)


TWINS = {cls.__name__: cls for cls in (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)}

FAMILY = registry.register(
    registry.Family(
        name="conv_transpose",
        specs=(ConvTransposeSpec,),
        modules=TWINS,
        functional={
            f.__name__: f
            for f in (
                conv_transpose1d,
                conv_transpose1d_backward,
                conv_transpose2d,
                conv_transpose2d_backward,
                conv_transpose3d,
                conv_transpose3d_backward,
            )
        },
        spec_file={
            name.lower(): registry.SpecFileLayer(cls, "in_channels") for name, cls in TWINS.items()
        },
        torch=registry.TorchMapping(
            modules={name: registry.mirror(cls) for name, cls in TWINS.items()}
        ),
        kinds=(
            LayerKind(
                "conv-transpose",
                (
                    *(o for o in CONV_OPTIONS if o.dest != "padding"),
                    Option("padding", "p", "--padding", parse_ints, per_axis=True),
                    Option("output_padding", "op", "--output-padding", parse_ints, per_axis=True),
                ),
                _build,
                help="a transposed convolution",
                text=False,
                calculator=True,
                required=("k",),
            ),
        ),
    )
)
