"""Convolution (1-D, 2-D, 3-D): configuration, shape rule, parameters, exact costs, working.

``y[n, co, o] = Σ_{ci in co's group} Σ_t x[n, ci, o·s + t·d − p_before] · w[co, ci, t] + b[co]``
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..arrays import expect_rank, expect_shape, float_array, same_dtype
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
from ..module import WeightedModule
from .base import Op, describe_args

if TYPE_CHECKING:
    from .conv_transpose import ConvTransposeSpec as ConvTransposeLike

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
        return describe_args(
            self.in_channels,
            self.out_channels,
            kernel_size=(self.kernel_size, None),
            stride=(self.stride, None),
            padding=(pads, 0),
            dilation=(self.dilation, 1),
            groups=(self.groups, 1),
            bias=(self.bias, True),
            padding_mode=(self.padding_mode, "zeros"),
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


# -- engine: functional forward and backward ----------------------------------------------------
#
# One N-D core serves every convolution and transposed convolution. The input is padded first
# (zeros, or F.pad's reflect/replicate/circular), then for each kernel offset t the strided slice
# of the padded input that tap t sees is copied into a column buffer of layout
# (groups, C_in/g · K, N · P) (K taps, P output positions), so that the forward, the weight
# gradient and the column gradient are each one (batched over groups) BLAS matmul. The input
# gradient adds the column gradient back, one strided slice per kernel offset.

#: Most bytes one column buffer may take; the batch is processed in chunks to stay under it.
CONV_MEMORY_BUDGET = 256 * 2**20
#: Preferred column-buffer size: chunks that stay near cache size gather and multiply faster
#: than one huge buffer (measured in benchmarks/conv2d_vs_torch.py). At least one image.
CONV_CHUNK_BYTES = 6 * 2**20


def _tap_slices(
    kernel: Shape, stride: Shape, dilation: Shape, out: Shape
) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """For each kernel offset, the strided slices of the padded input that it reads."""
    return [
        (
            t,
            tuple(
                slice(ti * d, ti * d + s * (o - 1) + 1, s)
                for ti, s, d, o in zip(t, stride, dilation, out)
            ),
        )
        for t in itertools.product(*(range(k) for k in kernel))
    ]


def _chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """Batch ranges whose column buffers each fit CONV_MEMORY_BUDGET and CONV_CHUNK_BYTES
    (at least one image)."""
    limit = min(CONV_MEMORY_BUDGET, CONV_CHUNK_BYTES)
    step = max(1, min(n, limit // max(1, bytes_per_image)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


_THREADS = max(1, min(4, os.cpu_count() or 1))
_POOL = ThreadPoolExecutor(_THREADS) if _THREADS > 1 else None
_PARALLEL_BYTES = 1 << 20  # below this a copy is not worth a thread hand-off


def _split_channels(work: Callable[[slice], None], channels: int, nbytes: int) -> None:
    """Runs ``work`` on disjoint channel ranges in parallel: NumPy releases the GIL while it
    copies, and the ranges write disjoint memory, so the gathers and the strided
    accumulations use every core instead of one."""
    parts = min(_THREADS, channels) if _POOL is not None and nbytes >= _PARALLEL_BYTES else 1
    if parts == 1:
        work(slice(None))
        return
    bounds = [channels * i // parts for i in range(parts + 1)]
    futures = [_POOL.submit(work, slice(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]
    for future in futures:
        future.result()


def _grouped_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` over a leading group axis (a plain 2-D GEMM for one group)."""
    if a.shape[0] == 1:
        return np.matmul(a[0], b[0], out=None if out is None else out[0])[None]
    return np.matmul(a, b, out=out)


def _conv_core(
    xp: np.ndarray | None,
    weight: np.ndarray,
    stride: Shape,
    dilation: Shape,
    out: Shape,
    groups: int,
    dy: np.ndarray | None = None,
    want_y: bool = False,
    want_gw: bool = False,
    padded: Shape | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """An unpadded convolution of ``xp`` with output sizes ``out``: its forward ``y`` (if
    ``want_y``), the weight gradient for the output gradient ``dy`` (if ``want_gw``) and the
    gradient w.r.t. ``xp`` of spatial sizes ``padded`` (if ``padded`` is given).

    Per batch chunk one gather feeds the forward and weight-gradient matmuls; the same column
    buffer then takes the column gradient, which is added back per kernel offset.
    """
    ref = xp if xp is not None else dy
    assert ref is not None
    n, dtype = ref.shape[0], ref.dtype
    c_out, c_g = weight.shape[:2]
    kernel = weight.shape[2:]
    k, p = prod(kernel), prod(out)
    co_g, c = c_out // groups, c_g * groups
    w = weight.reshape(groups, co_g, c_g * k)
    taps = _tap_slices(kernel, stride, dilation, out)
    y = np.empty((n, c_out, *out), dtype=dtype) if want_y else None
    gw = np.zeros((groups, co_g, c_g * k), dtype=dtype) if want_gw else None
    gxp = np.zeros((n, c, *padded), dtype=dtype) if padded is not None else None
    chunks = _chunks(n, c * k * p * dtype.itemsize)
    buffer = np.empty(c * k * p * (chunks[0][1] - chunks[0][0]), dtype=dtype)
    for n0, n1 in chunks:
        nb = n1 - n0
        cols2 = buffer[: c * k * nb * p].reshape(groups, c_g * k, nb * p)
        cols = cols2.reshape(groups, c_g, *kernel, nb, *out)
        dy_t = None
        if dy is not None:
            dy_t = np.ascontiguousarray(dy[n0:n1].swapaxes(0, 1)).reshape(groups, co_g, nb * p)
        if want_y or want_gw:
            assert xp is not None
            # Channel-first view of the chunk, split into groups: (G, C/g, nb, *spatial).
            src = xp[n0:n1].swapaxes(0, 1).reshape(groups, c_g, nb, *xp.shape[2:])

            def gather(ch: slice, src: np.ndarray = src, cols: np.ndarray = cols) -> None:
                for t, sl in taps:
                    cols[(slice(None), ch, *t)] = src[(slice(None), ch, slice(None), *sl)]

            _split_channels(gather, c_g, cols.nbytes)
            if y is not None:
                y_t = _grouped_matmul(w, cols2).reshape(c_out, nb, *out)
                y.swapaxes(0, 1)[:, n0:n1] = y_t
            if gw is not None:
                # cols @ dy_tᵀ (then transposed) is the faster GEMM orientation for OpenBLAS.
                gw += _grouped_matmul(cols2, dy_t.transpose(0, 2, 1)).transpose(0, 2, 1)
        if gxp is not None:
            _grouped_matmul(w.transpose(0, 2, 1), dy_t, out=cols2)
            dst = gxp[n0:n1].swapaxes(0, 1).reshape(groups, c_g, nb, *padded)

            def scatter(ch: slice, dst: np.ndarray = dst, cols: np.ndarray = cols) -> None:
                for t, sl in taps:
                    dst[(slice(None), ch, slice(None), *sl)] += cols[(slice(None), ch, *t)]

            _split_channels(scatter, c_g, cols.nbytes)
    return y, None if gw is None else gw.reshape(weight.shape), gxp


_NUMPY_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad(x: np.ndarray, pads: PadPairs, mode: str) -> np.ndarray:
    """``x`` padded (or, for negative pads, cropped) on its spatial axes as F.pad does."""
    if all(b == 0 and a == 0 for b, a in pads):
        return x
    if mode == "zeros":
        out = np.zeros(
            (*x.shape[:2], *(s + b + a for s, (b, a) in zip(x.shape[2:], pads))), x.dtype
        )
        out[(..., *(slice(b, b + s) for s, (b, _) in zip(x.shape[2:], pads)))] = x
        return out
    crop = tuple(slice(max(0, -b), s - max(0, -a)) for s, (b, a) in zip(x.shape[2:], pads))
    widths = [(0, 0), (0, 0), *((max(0, b), max(0, a)) for b, a in pads)]
    return np.pad(x[(..., *crop)], widths, mode=_NUMPY_PAD_MODES[mode])


def _pad_backward(g: np.ndarray, sizes: Shape, pads: PadPairs, mode: str) -> np.ndarray:
    """The adjoint of ``_pad``: folds the padded gradient back onto the input's positions."""
    if all(b == 0 and a == 0 for b, a in pads):
        return g
    if mode == "zeros":
        return np.ascontiguousarray(g[(..., *(slice(b, b + s) for s, (b, _) in zip(sizes, pads)))])
    for axis, (size, (b, a)) in enumerate(zip(sizes, pads), start=2):
        cb, ca = max(0, -b), max(0, -a)
        b, a = max(0, b), max(0, a)
        m = size - cb - ca

        def part(lo: int, hi: int, axis: int = axis) -> tuple[slice, ...]:
            return (slice(None),) * axis + (slice(lo, hi),)

        gi = g[part(b, b + m)].copy()
        if b:
            head = g[part(0, b)]
            if mode == "reflect":
                gi[part(1, b + 1)] += np.flip(head, axis)
            elif mode == "replicate":
                gi[part(0, 1)] += head.sum(axis, keepdims=True)
            else:
                gi[part(m - b, m)] += head
        if a:
            tail = g[part(b + m, b + m + a)]
            if mode == "reflect":
                gi[part(m - 1 - a, m - 1)] += np.flip(tail, axis)
            elif mode == "replicate":
                gi[part(m - 1, m)] += tail.sum(axis, keepdims=True)
            else:
                gi[part(0, a)] += tail
        if cb or ca:
            full = np.zeros((*gi.shape[:axis], size, *gi.shape[axis + 1 :]), gi.dtype)
            full[part(cb, cb + m)] = gi
            gi = full
        g = gi
    return g


def _check_conv(
    ndim: int,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    grad_out: np.ndarray | None,
    stride: int | Sequence[int],
    padding: int | str | Sequence[int] | Sequence[Sequence[int]],
    dilation: int | Sequence[int],
    groups: int,
    padding_mode: str,
    has_bias: bool,
) -> tuple[ConvSpec, Shape]:
    """The spec and output shape (with the batch) for these arrays; errors name the shapes."""
    same_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    layout = "N x C x " + " x ".join(axis_names(ndim))
    expect_rank(x, ndim + 2, "x", layout)
    expect_rank(
        weight,
        ndim + 2,
        "weight",
        "C_out x C_in/groups x " + " x ".join(f"k_{ax}" for ax in axis_names(ndim)),
    )
    spec = ConvSpec.create(
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
    return spec, check_arrays(spec, x, weight, bias, grad_out)


def check_arrays(
    spec: ConvSpec | ConvTransposeLike,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    grad_out: np.ndarray | None,
) -> Shape:
    """The output shape (with the batch) of ``spec`` for these arrays; errors name the shapes."""
    same_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    layout = "N x C x " + " x ".join(axis_names(spec.ndim))
    expect_rank(x, spec.ndim + 2, "x", layout)
    expect_shape(
        weight,
        spec.weight_shape,
        "weight",
        f"for an input of shape {x.shape}, groups={spec.groups}",
    )
    out = (x.shape[0], *spec.output_shape(x.shape[1:]))
    if bias is not None:
        expect_shape(bias, (spec.out_channels,), "bias", f"for a weight of shape {weight.shape}")
    if grad_out is not None:
        expect_shape(grad_out, out, "grad_out", f"(the output shape for an input {x.shape})")
    return out


def _conv_forward(
    spec: ConvSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    out = spec.output_shape(x.shape[1:])[1:]
    xp = _pad(x, spec.padding, spec.padding_mode)
    y, _, _ = _conv_core(xp, weight, spec.stride, spec.dilation, out, spec.groups, want_y=True)
    assert y is not None
    if bias is not None:
        y += bias.reshape(-1, *(1,) * spec.ndim)
    return y


def _conv_backward(
    spec: ConvSpec, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    xp = _pad(x, spec.padding, spec.padding_mode)
    out = grad_out.shape[2:]
    _, gw, gxp = _conv_core(
        xp,
        weight,
        spec.stride,
        spec.dilation,
        out,
        spec.groups,
        dy=grad_out,
        want_gw=True,
        padded=xp.shape[2:],
    )
    assert gw is not None and gxp is not None
    gx = _pad_backward(gxp, x.shape[2:], spec.padding, spec.padding_mode)
    gb = grad_out.sum(axis=(0, *range(2, grad_out.ndim))) if bias else None
    return gx, gw, gb


def _conv(ndim: int, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    bias = None if bias is None else float_array(bias, "bias")
    spec, _ = _check_conv(
        ndim,
        x,
        weight,
        bias,
        None,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        bias is not None,
    )
    return _conv_forward(spec, x, weight, bias)


def _conv_bwd(
    ndim: int, grad_out, x, weight, stride, padding, dilation, groups, padding_mode, bias
):
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    grad_out = float_array(grad_out, "grad_out")
    spec, _ = _check_conv(
        ndim, x, weight, None, grad_out, stride, padding, dilation, groups, padding_mode, bias
    )
    return _conv_backward(spec, grad_out, x, weight, bias)


Array = np.ndarray
Padding = int | str | Sequence[int] | Sequence[Sequence[int]]
Ints = int | Sequence[int]
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def conv1d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Padding = 0,
    dilation: Ints = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Array:
    """1-D convolution of an (N, C_in, L) input, as torch.nn.functional.conv1d."""
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Padding = 0,
    dilation: Ints = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Array:
    """2-D convolution of an (N, C_in, H, W) input, as torch.nn.functional.conv2d."""
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: Ints = 1,
    padding: Padding = 0,
    dilation: Ints = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Array:
    """3-D convolution of an (N, C_in, D, H, W) input, as torch.nn.functional.conv3d."""
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv1d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv1d; grad_bias is None when bias=False."""
    return _conv_bwd(1, grad_out, x, weight, stride, padding, dilation, groups, padding_mode, bias)


def conv2d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv2d; grad_bias is None when bias=False."""
    return _conv_bwd(2, grad_out, x, weight, stride, padding, dilation, groups, padding_mode, bias)


def conv3d_backward(
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
    """(grad_input, grad_weight, grad_bias) of conv3d; grad_bias is None when bias=False."""
    return _conv_bwd(3, grad_out, x, weight, stride, padding, dilation, groups, padding_mode, bias)


class _ConvNd(WeightedModule):
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
        fan_in = self.spec.weight_shape[1] * prod(self.spec.kernel_size)
        self._register_weights(self.spec.weight_shape, fan_in, out_channels if bias else None)

    def _forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        x = float_array(x, "x")
        check_arrays(self.spec, x, weight, bias, None)
        return _conv_forward(self.spec, x, weight, bias)

    def _backward(self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
                  has_bias: bool) -> Grads:  # fmt: skip
        grad_out = float_array(grad_out, "grad_out")
        check_arrays(self.spec, x, weight, None, grad_out)
        return _conv_backward(self.spec, grad_out, x, weight, has_bias)


class Conv1d(_ConvNd):
    """1-D convolution over (C, L) inputs, with PyTorch's arguments."""

    ndim = 1


class Conv2d(_ConvNd):
    """2-D convolution over (C, H, W) inputs, with PyTorch's arguments."""

    ndim = 2


class Conv3d(_ConvNd):
    """3-D convolution over (C, D, H, W) inputs, with PyTorch's arguments."""

    ndim = 3
