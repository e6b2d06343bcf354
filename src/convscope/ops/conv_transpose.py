"""Transposed convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs.

Its forward is the input gradient of the convolution with the same kernel, stride, padding and
dilation whose input has this layer's output size; its input gradient is that convolution's
forward. The costs below are the convolution's with the roles swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..arrays import expect_rank, float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import PadPairs, Shape, Windows, axis_names, check_input, int_tuple, prod
from ..module import WeightedModule
from .base import Op, describe_args
from .conv import _conv_core, _pad, _pad_backward, check_arrays, check_channels


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

    def describe(self) -> str:
        return describe_args(
            self.in_channels,
            self.out_channels,
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, None),
            padding=(self.padding, 0),
            output_padding=(self.output_padding, 0),
            groups=(self.groups, 1),
            bias=(self.bias, True),
            dilation=(self.dilation, 1),
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
            (size - 1) * s - 2 * p + d * (k - 1) + op + 1
            for size, s, p, d, k, op in zip(
                shape[1:],
                self.stride,
                self.padding,
                self.dilation,
                self.kernel_size,
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

    def axes(self, input_shape: Shape, output_shape: Shape, dense: bool) -> list[Windows]:
        """The windows of the convolution this layer transposes, one per spatial axis."""
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
        axes = self.axes(input_shape, output_shape, count == "dense")
        n, c_in, c_og = batch, self.in_channels, self.out_channels // self.groups
        base = {"N": n, "C_out": self.out_channels, "C_in": c_in, "g": self.groups}

        w.section(f"Forward pass ({count} count)")
        w.note(
            "Each input entry times each tap is added into output entry i·s + t·d − p. "
            + (
                "Dense count: the full output is computed, then the padding is cropped."
                if count == "dense"
                else "Exact count: products that would land in the cropped border are skipped."
            )
        )
        pairs = []
        for ax, win, k, size in zip(names, axes, self.kernel_size, input_shape[1:]):
            pairs.append(
                w.let(
                    f"T_{ax}",
                    f"{ax} · k_{ax} − P_{ax}",
                    win.pairs,
                    {ax: size, f"k_{ax}": k, f"P_{ax}": size * k - win.pairs},
                    why=f"P_{ax}: products cropped away",
                )
            )
        t_product = " · ".join(f"T_{ax}" for ax in names)
        products = w.let(
            "mults",
            f"N · C_in · (C_out / g) · {t_product}",
            n * c_in * c_og * prod(pairs),
            {**base, **axis_dict(names, "T", pairs)},
        )
        reached = [win.positions_used() for win in axes]
        sizes = [win.size for win in axes]
        r_values = {**base, "mults": products, **axis_dict(names, "R", reached)}
        r_values.update(axis_dict(names, "", sizes, "_out"))
        if self.bias:
            w.note("Each output entry adds its n products with n − 1 additions, + 1 for the bias.")
            fwd_adds = w.let("adds", "mults", products, {"mults": products})
        else:
            r_product = product_symbols(
                w, "R", names, reached, sizes, "_out", "output entries that receive a product"
            )
            fwd_adds = w.let(
                "adds",
                f"mults − N · C_out · {r_product}",
                products - n * self.out_channels * prod(reached),
                r_values,
            )

        w.section("Backward pass: the gradient w.r.t. the input")
        w.note("A convolution of the output gradient: the same products, gathered per input entry.")
        used = [win.windows_used for win in axes]
        w.let("mults", "", products, why="the forward pass's products")
        z_product = product_symbols(
            w, "Z", names, used, input_shape[1:], "", "input entries that receive a product"
        )
        z_values = {**base, "mults": products, **axis_dict(names, "Z", used)}
        z_values.update(axis_dict(names, "", input_shape[1:]))
        bi_adds = w.let(
            "adds", f"mults − N · C_in · {z_product}", products - n * c_in * prod(used), z_values
        )

        w.section("Backward pass: the gradient w.r.t. the weight")
        taps = [win.taps_used for win in axes]
        w.let("mults", "", products, why="the forward pass's products")
        k_product = product_symbols(
            w,
            "K",
            names,
            taps,
            self.kernel_size,
            "",
            "taps that ever land inside the output",
            prefix="k_",
        )
        k_values = {**base, "mults": products, **axis_dict(names, "K", taps)}
        k_values.update(axis_dict(names, "k_", self.kernel_size))
        bw_adds = w.let(
            "adds",
            f"mults − C_in · (C_out / g) · {k_product}",
            products - c_in * c_og * prod(taps),
            k_values,
        )
        bias_grad = None
        if self.bias:
            w.section("Backward pass: the gradient w.r.t. the bias")
            out_product = " · ".join(f"{ax}_out" for ax in names)
            bias_grad = OpCount(
                adds=w.let(
                    "adds",
                    f"C_out · (N · {out_product} − 1)",
                    self.out_channels * (n * prod(output_shape[1:]) - 1),
                    {**base, **axis_dict(names, "", output_shape[1:], "_out")},
                )
            )
        return Cost(
            forward=OpCount(mults=products, adds=fwd_adds),
            backward_input=OpCount(mults=products, adds=bi_adds),
            backward_weight=OpCount(mults=products, adds=bw_adds),
            backward_bias=bias_grad,
        )


# -- engine: functional forward and backward ----------------------------------------------------
#
# The transposed convolution is the adjoint of the convolution ``conv`` whose input has this
# layer's output size, padded by ``padding`` zeros on each side, with the same weight array read
# as conv's (C_out, C_in/g, *k) weight: the forward is conv's input gradient (then the padding
# is cropped), the input gradient is conv's forward of the padded output gradient, and the
# weight gradient is conv's weight gradient with the roles of input and output swapped.


def _zero_pads(spec: ConvTransposeSpec) -> PadPairs:
    return tuple((p, p) for p in spec.padding)


def _check_transpose(
    ndim: int,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    grad_out: np.ndarray | None,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    output_padding: int | Sequence[int],
    groups: int,
    dilation: int | Sequence[int],
    has_bias: bool,
) -> ConvTransposeSpec:
    """The spec for these arrays, validated; shape errors name both shapes."""
    same_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    expect_rank(x, ndim + 2, "x", "N x C x " + " x ".join(axis_names(ndim)))
    expect_rank(
        weight,
        ndim + 2,
        "weight",
        "C_in x C_out/groups x " + " x ".join(f"k_{ax}" for ax in axis_names(ndim)),
    )
    if not isinstance(groups, int) or groups < 1:
        raise LayerConfigError(f"groups must be an int >= 1, got {groups!r}")
    spec = ConvTransposeSpec.create(
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
    check_arrays(spec, x, weight, bias, grad_out)
    return spec


def _transpose_forward(
    spec: ConvTransposeSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    out = spec.output_shape(x.shape[1:])[1:]
    pads = _zero_pads(spec)
    padded = tuple(o + 2 * p for o, p in zip(out, spec.padding))
    *_, yp = _conv_core(
        None, weight, spec.stride, spec.dilation, x.shape[2:], spec.groups, dy=x, padded=padded
    )
    assert yp is not None
    y = _pad_backward(yp, out, pads, "zeros")
    if bias is not None:
        y += bias.reshape(-1, *(1,) * spec.ndim)
    return y


def _transpose_backward(
    spec: ConvTransposeSpec, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    gp = _pad(grad_out, _zero_pads(spec), "zeros")
    gx, gw, _ = _conv_core(
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


def _transpose(ndim, x, weight, bias, stride, padding, output_padding, groups, dilation):
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    bias = None if bias is None else float_array(bias, "bias")
    spec = _check_transpose(
        ndim,
        x,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
        bias is not None,
    )
    return _transpose_forward(spec, x, weight, bias)


def _transpose_bwd(
    ndim, grad_out, x, weight, stride, padding, output_padding, groups, dilation, bias
):
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    grad_out = float_array(grad_out, "grad_out")
    spec = _check_transpose(
        ndim, x, weight, None, grad_out, stride, padding, output_padding, groups, dilation, bias
    )
    return _transpose_backward(spec, grad_out, x, weight, bias)


Array = np.ndarray
Ints = int | Sequence[int]
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def conv_transpose1d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Ints = 0,
    output_padding: Ints = 0,
    groups: int = 1,
    dilation: Ints = 1,
) -> Array:
    """1-D transposed convolution, as torch.nn.functional.conv_transpose1d."""
    return _transpose(1, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Ints = 0,
    output_padding: Ints = 0,
    groups: int = 1,
    dilation: Ints = 1,
) -> Array:
    """2-D transposed convolution, as torch.nn.functional.conv_transpose2d."""
    return _transpose(2, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Ints = 0,
    output_padding: Ints = 0,
    groups: int = 1,
    dilation: Ints = 1,
) -> Array:
    """3-D transposed convolution, as torch.nn.functional.conv_transpose3d."""
    return _transpose(3, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose1d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv_transpose1d; grad_bias None if not bias."""
    return _transpose_bwd(
        1, grad_out, x, weight, stride, padding, output_padding, groups, dilation, bias
    )


def conv_transpose2d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv_transpose2d; grad_bias None if not bias."""
    return _transpose_bwd(
        2, grad_out, x, weight, stride, padding, output_padding, groups, dilation, bias
    )


def conv_transpose3d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv_transpose3d; grad_bias None if not bias."""
    return _transpose_bwd(
        3, grad_out, x, weight, stride, padding, output_padding, groups, dilation, bias
    )


class _ConvTransposeNd(WeightedModule):
    ndim = 2

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
        return _transpose_forward(self.spec, x, weight, bias)

    def _backward(self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
                  has_bias: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
        grad_out = float_array(grad_out, "grad_out")
        check_arrays(self.spec, x, weight, None, grad_out)
        return _transpose_backward(self.spec, grad_out, x, weight, has_bias)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution with PyTorch's arguments."""

    ndim = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution with PyTorch's arguments."""

    ndim = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution with PyTorch's arguments."""

    ndim = 3
