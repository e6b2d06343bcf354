"""Transposed convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs.

Its forward is the input gradient of the convolution with the same kernel, stride, padding and
dilation whose input has this layer's output size; its input gradient is that convolution's
forward. The costs below are the convolution's with the roles swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import Shape, Windows, axis_names, check_input, int_tuple, prod
from ..module import Module
from .base import Op
from .conv import check_channels


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
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, output_padding={self.output_padding}, "
            f"groups={self.groups}, bias={self.bias}, dilation={self.dilation}"
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


class _ConvTransposeNd(Module):
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


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution with PyTorch's arguments."""

    ndim = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution with PyTorch's arguments."""

    ndim = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution with PyTorch's arguments."""

    ndim = 3
