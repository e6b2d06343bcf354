"""Convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs, working.

``y[n, co, o] = Σ_{ci in co's group} Σ_t x[n, ci, o·s + t·d − p_before] · w[co, ci, t] + b[co]``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import (
    PadPairs,
    Shape,
    Windows,
    axis_names,
    check_input,
    conv_out_size,
    int_tuple,
    pad_pairs,
    prod,
    reached_sources,
)
from ..module import Module
from .base import Op

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    """Channels and groups as PyTorch requires them."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or value < 1:
            raise LayerConfigError(f"{name} must be an int >= 1, got {value!r}")
    if not isinstance(groups, int) or groups < 1:
        raise LayerConfigError(f"groups must be an int >= 1, got {groups!r}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise LayerConfigError(
                f"groups must divide {name}: {value} is not divisible by groups={groups}"
            )


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
class ConvSpec(Op):
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
        """Validates PyTorch-style arguments and resolves them to per-axis values."""
        check_channels(in_channels, out_channels, groups)
        kernel = int_tuple(kernel_size, ndim, "kernel_size")
        strides = int_tuple(stride, ndim, "stride")
        dilations = int_tuple(dilation, ndim, "dilation")
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

    def describe(self) -> str:
        pads = tuple(p[0] if p[0] == p[1] else p for p in self.padding)
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={pads}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias}, padding_mode={self.padding_mode!r}"
        )

    @property
    def name(self) -> str:
        return f"Conv{self.ndim}d"

    @property
    def weight_shape(self) -> Shape:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    # -- shape ------------------------------------------------------------------------------
    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_input(input_shape, self.ndim, self.name)
        if shape[0] != self.in_channels:
            raise ShapeError(
                f"{self.name} expects {self.in_channels} input channels, got an input of shape "
                f"{shape_text(shape)} with {shape[0]}"
            )
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

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        names = axis_names(self.ndim)
        kernel = " · ".join(f"k_{ax}" for ax in names)
        values = {"C_out": self.out_channels, "C_in": self.in_channels, "g": self.groups}
        values.update({f"k_{ax}": k for ax, k in zip(names, self.kernel_size)})
        weights = w.let(
            "weights", f"C_out · (C_in / g) · {kernel}", prod(self.weight_shape), values
        )
        biases = (
            w.let("biases", "C_out", self.out_channels if self.bias else 0, values)
            if self.bias
            else 0
        )
        if not self.bias:
            w.note("No bias.")
        w.let(
            "params", "weights + biases", weights + biases, {"weights": weights, "biases": biases}
        )
        return ParamCount(weights, biases)

    def _macs(self, input_shape: Shape, output_shape: Shape, batch: int, w: Working) -> int:
        w.section("MACs (torchvision convention: dense, no bias)")
        names = axis_names(self.ndim)
        values = {
            "N": batch,
            "C_out": self.out_channels,
            "C_in": self.in_channels,
            "g": self.groups,
        }
        values.update({f"{ax}_out": o for ax, o in zip(names, output_shape[1:])})
        values.update({f"k_{ax}": k for ax, k in zip(names, self.kernel_size)})
        factors = " · ".join(f"{ax}_out · k_{ax}" for ax in names)
        macs = batch * prod(output_shape) * prod(self.weight_shape[1:])
        return w.let("MACs", f"N · C_out · (C_in / g) · {factors}", macs, values)

    # -- cost -------------------------------------------------------------------------------
    def axes(self, input_shape: Shape, output_shape: Shape, dense: bool) -> list[Windows]:
        """The sliding windows of each spatial axis, on the real or the padded input."""
        return [
            Windows(size + before + after, 0, k, s, d, out)
            if dense
            else Windows(size, -before, k, s, d, out)
            for size, (before, after), k, s, d, out in zip(
                input_shape[1:],
                self.padding,
                self.kernel_size,
                self.stride,
                self.dilation,
                output_shape[1:],
            )
        ]

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        names = axis_names(self.ndim)
        padded_values = self.padding_mode != "zeros" and any(
            p for pair in self.padding for p in pair
        )
        dense = count == "dense" or padded_values
        axes = self.axes(input_shape, output_shape, dense)
        n, c_out, c_g = batch, self.out_channels, self.in_channels // self.groups
        base = {"N": n, "C_out": c_out, "C_in": self.in_channels, "g": self.groups}

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
            c_g * prod(self.kernel_size),
            {**base, **axis_dict(names, "k_", self.kernel_size)},
            why="products per output when no tap lands on padding",
        )
        w.note("Along each axis, T counts the (output, tap) pairs that land on input values.")
        pairs, used = [], []
        for ax, win, k, out in zip(names, axes, self.kernel_size, output_shape[1:]):
            skipped = out * k - win.pairs
            pairs.append(
                w.let(
                    f"T_{ax}",
                    f"{ax}_out · k_{ax} − P_{ax}",
                    win.pairs,
                    {f"{ax}_out": out, f"k_{ax}": k, f"P_{ax}": skipped},
                    why=f"P_{ax}: taps that land on padding",
                )
            )
            used.append(win.windows_used)
        t_product = " · ".join(f"T_{ax}" for ax in names)
        values = {**base, **{f"T_{ax}": t for ax, t in zip(names, pairs)}}
        products = w.let(
            "mults", f"N · C_out · (C_in / g) · {t_product}", n * c_out * c_g * prod(pairs), values
        )
        if self.bias:
            fwd_adds = w.let(
                "adds",
                "mults",
                products,
                {"mults": products},
                why="n − 1 additions for n products, + 1 for the bias",
            )
        else:
            z_product = product_symbols(
                w,
                "Z",
                names,
                used,
                output_shape[1:],
                "_out",
                "outputs that receive at least one product",
            )
            z_values = {**base, "mults": products, **axis_dict(names, "Z", used)}
            z_values.update(axis_dict(names, "", output_shape[1:], "_out"))
            fwd_adds = w.let(
                "adds",
                f"mults − N · C_out · {z_product}",
                products - n * c_out * prod(used),
                z_values,
                why="n − 1 additions for an output's n products",
            )

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
        if padded_values and count == "exact":
            reach = [
                reached_sources(win, before, size, self.padding_mode)
                for win, size, (before, _) in zip(axes, input_shape[1:], self.padding)
            ]
            w.note("A product that lands on padding is added into the input entry the pad copies.")
        else:
            reach = [win.positions_used() for win in axes]
        w.let("mults", "", products, why="the forward pass's products")
        sizes = [win.size for win in axes]
        u_product = product_symbols(
            w, "U", names, reach, sizes, "", "input entries that receive at least one product"
        )
        u_values = {**base, "mults": products, **axis_dict(names, "U", reach)}
        u_values.update(axis_dict(names, "", sizes))
        bi_adds = w.let(
            "adds",
            f"mults − N · C_in · {u_product}",
            products - n * self.in_channels * prod(reach),
            u_values,
            why="n − 1 additions for an entry's n products",
        )

        w.section("Backward pass: g_w, the gradient w.r.t. the weight")
        w.note(
            f"g_w has the weight's shape {shape_text(self.weight_shape)}: g_w[t] sums "
            "ε[o] · z[o·s + t·d] over the batch and the outputs. Its additions are "
            "N · (products per image) minus the weight entries reached: not proportional to N."
        )
        taps = [win.taps_used for win in axes]
        w.let("mults", "", products, why="the forward pass's products")
        k_product = product_symbols(
            w, "K", names, taps, self.kernel_size, "", "taps that ever land on input", prefix="k_"
        )
        k_values = {**base, "mults": products, **axis_dict(names, "K", taps)}
        k_values.update(axis_dict(names, "k_", self.kernel_size))
        bw_adds = w.let(
            "adds",
            f"mults − C_out · (C_in / g) · {k_product}",
            products - c_out * c_g * prod(taps),
            k_values,
            why="n − 1 additions for a weight entry's n products",
        )
        bias_grad = None
        if self.bias:
            w.section("Backward pass: g_b, the gradient w.r.t. the bias")
            out_product = " · ".join(f"{ax}_out" for ax in names)
            b_values = {**base, **axis_dict(names, "", output_shape[1:], "_out")}
            bias_grad = OpCount(
                adds=w.let(
                    "adds",
                    f"C_out · (N · {out_product} − 1)",
                    c_out * (n * prod(output_shape[1:]) - 1),
                    b_values,
                    why="g_b[c] sums ε over the batch and every output",
                )
            )
        return Cost(
            forward=OpCount(mults=products, adds=fwd_adds),
            backward_input=OpCount(mults=products, adds=bi_adds),
            backward_weight=OpCount(mults=products, adds=bw_adds),
            backward_bias=bias_grad,
        )


class _ConvNd(Module):
    ndim = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | str | Sequence[int] | Sequence[Sequence[int]] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        self.spec = ConvSpec.create(
            self.ndim,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )


class Conv1d(_ConvNd):
    """1-D convolution over (C, L) inputs, with PyTorch's arguments."""

    ndim = 1


class Conv2d(_ConvNd):
    """2-D convolution over (C, H, W) inputs, with PyTorch's arguments."""

    ndim = 2


class Conv3d(_ConvNd):
    """3-D convolution over (C, D, H, W) inputs, with PyTorch's arguments."""

    ndim = 3
