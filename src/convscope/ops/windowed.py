"""The rules that the windowed families share: channels and groups, the counting rule of
products over a convolution's windows (a convolution and, over its adjoint's windows, a
transposed convolution), the counting rule of reductions over a pool's windows (sliding and
adaptive), the checks of the arrays their passes take, and the modules that run those passes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, axis_dict, product_symbols, shape_text
from ..geometry import Shape, Windows, axis_names, check_input, int_tuple, positive_int, prod
from ..module import Module, WeightedModule
from .base import RANKS, Op, of_rank, weight_params

if TYPE_CHECKING:
    from ..grammar import Context

# -- convolutions --------------------------------------------------------------------------------


def check_channels(in_channels: int, out_channels: int, groups: int) -> tuple[int, int, int]:
    """Channels and groups as PyTorch requires them, as Python ints."""
    in_channels = positive_int(in_channels, "in_channels")
    out_channels = positive_int(out_channels, "out_channels")
    groups = positive_int(groups, "groups")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise LayerConfigError(
                f"groups must divide {name}: {value} is not divisible by groups={groups}"
            )
    return in_channels, out_channels, groups


def kernel_axes(
    ndim: int, kernel_size: int | Sequence[int], stride: Any, dilation: Any
) -> tuple[Shape, Shape, Shape]:
    """The kernel size, stride and dilation of a convolution, resolved per axis."""
    kernel = int_tuple(kernel_size, ndim, "kernel_size")
    return kernel, int_tuple(stride, ndim, "stride"), int_tuple(dilation, ndim, "dilation")


def sliding_windows(
    spec: Any, pads: Sequence[tuple[int, int]], input_shape: Shape, output_shape: Shape, dense: bool
) -> list[Windows]:
    """The windows of ``spec``'s sliding kernel (its kernel_size, stride and dilation) along
    each spatial axis: over the real input, or (``dense``) over the input padded by ``pads``."""
    axes = zip(
        input_shape[1:], pads, spec.kernel_size, spec.stride, spec.dilation, output_shape[1:]
    )
    return [
        Windows(size + before + after, 0, k, s, d, out)
        if dense
        else Windows(size, -before, k, s, d, out)
        for size, (before, after), k, s, d, out in axes
    ]


def window_pairs(
    w: Working,
    names: Sequence[str],
    axes: Sequence[Windows],
    kernel: Shape,
    count_of: str,
    why: str,
) -> list[int]:
    """T per axis: the (window, tap) pairs that land on values; ``count_of`` is the symbol of
    the windows' count along an axis (``H_out``, or ``H`` for the transposed convolution)."""
    pairs = []
    for ax, win, k in zip(names, axes, kernel):
        count = count_of.format(ax=ax)
        pairs.append(
            w.let(
                f"T_{ax}",
                f"{count} · k_{ax} − P_{ax}",
                win.pairs,
                {count: win.count, f"k_{ax}": k, f"P_{ax}": win.count * k - win.pairs},
                why=f"P_{ax}: {why}",
            )
        )
    return pairs


def summed_adds(
    w: Working,
    products: int,
    lead: tuple[str, int],
    base: dict[str, int],
    symbol: str,
    names: Sequence[str],
    counts: Sequence[int],
    full: Sequence[int],
    full_symbol: str,
    why_count: str,
    why: str = "",
) -> int:
    """``mults − lead · Π X``: an entry that sums n of the products costs n − 1 additions, so the
    additions are the products minus the entries that receive any: X of the ``full`` entries
    per axis (``full_symbol`` names them, as ``{ax}_out``). ``lead`` is the symbol and value of
    the factor over the other axes (``N · C_out``)."""
    prefix, suffix = full_symbol.split("{ax}")
    product = product_symbols(w, symbol, names, counts, full, suffix, why_count, prefix=prefix)
    values = {**base, "mults": products, **axis_dict(names, symbol, counts)}
    values.update({full_symbol.format(ax=ax): v for ax, v in zip(names, full)})
    return w.let(
        "adds", f"mults − {lead[0]} · {product}", products - lead[1] * prod(counts), values, why=why
    )


def bias_gradient(
    w: Working,
    bias: bool,
    c_out: int,
    n: int,
    names: Sequence[str],
    output_shape: Shape,
    base: dict[str, int],
) -> OpCount | None:
    """g_b[c] sums ε over the batch and every output: C_out · (N · Π out − 1) additions."""
    if not bias:
        return None
    w.section("Backward pass: g_b, the gradient w.r.t. the bias")
    out_product = " · ".join(f"{ax}_out" for ax in names)
    values = {**base, **axis_dict(names, "", output_shape[1:], "_out")}
    return OpCount(
        adds=w.let(
            "adds",
            f"C_out · (N · {out_product} − 1)",
            c_out * (n * prod(output_shape[1:]) - 1),
            values,
            why="g_b[c] sums ε over the batch and every output",
        )
    )


#: The symbol of the entries along an axis that a pass sums the products into, by role.
ENTRIES = {"output": "{ax}_out", "input": "{ax}", "weight": "k_{ax}"}


class KernelSpec(Op):
    """What a convolution and a transposed convolution share: channels paired in ``groups`` by a
    weight of ``weight_shape``, an optional bias per output channel, and one counting rule of
    products over windows. A convolution has a window per output entry, the transposed
    convolution (its adjoint) one per input entry (``_window_per``): the same rule, with the
    roles of the input and the output swapped.

    Subclasses are frozen dataclasses with the fields below, and give the words of their working:
    ``_pairs``, the weight's channel pairs as a formula, and ``_sums``, for each pass that sums
    the products (into the ``output``, the ``input`` or the ``weight``), the symbol of its
    entries, what they are and why (see ``_summed``).
    """

    ndim: int
    in_channels: int
    out_channels: int
    kernel_size: Shape
    groups: int
    bias: bool

    _kind: ClassVar[str]  # the stem of the name: Conv, ConvTranspose
    _pairs: ClassVar[str]
    _window_per: ClassVar[str]  # "output" or "input"
    _macs_title: ClassVar[str]
    _no_bias: ClassVar[str] = ""  # a note for a layer without a bias
    _sums: ClassVar[dict[str, tuple[str, str, str]]]

    @property
    def name(self) -> str:
        return f"{self._kind}{self.ndim}d"

    @property
    def weight_shape(self) -> Shape:
        raise NotImplementedError

    def _check_channels(self, input_shape: Sequence[int]) -> Shape:
        """The input shape, of this layer's rank and with its input channels."""
        shape = check_input(input_shape, self.ndim, self.name)
        if shape[0] != self.in_channels:
            raise ShapeError(
                f"{self.name} expects {self.in_channels} input channels, got an input of shape "
                f"{shape_text(shape)} with {shape[0]}"
            )
        return shape

    def _channels(self, batch: int | None = None) -> dict[str, int]:
        """The channel symbols' values, after the batch's when given."""
        channels = {"C_out": self.out_channels, "C_in": self.in_channels, "g": self.groups}
        return channels if batch is None else {"N": batch, **channels}

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        names = axis_names(self.ndim)
        kernel = " · ".join(f"k_{ax}" for ax in names)
        values = {**self._channels(), **axis_dict(names, "k_", self.kernel_size)}
        weights = (f"{self._pairs} · {kernel}", prod(self.weight_shape))
        biases = ("C_out", self.out_channels) if self.bias else None
        return weight_params(w, values, weights, biases, self._no_bias)

    def _macs(self, input_shape: Shape, output_shape: Shape, batch: int, w: Working) -> int:
        w.section(self._macs_title)
        names = axis_names(self.ndim)
        if self._window_per == "output":
            sizes, suffix = output_shape[1:], "_out"
        else:
            sizes, suffix = input_shape[1:], ""
        values = self._channels(batch)
        values.update(axis_dict(names, "", sizes, suffix))
        values.update(axis_dict(names, "k_", self.kernel_size))
        factors = " · ".join(f"{ax}{suffix} · k_{ax}" for ax in names)
        macs = batch * self.weight_shape[0] * prod(sizes) * prod(self.weight_shape[1:])
        return w.let("MACs", f"N · {self._pairs} · {factors}", macs, values)

    # -- the counting rule, for the subclasses' ``_cost`` ---------------------------------------
    def _products(self, w: Working, axes: Sequence[Windows], batch: int, why: str) -> int:
        """The products: per axis the (window, tap) pairs on values (``why``: the others),
        for every channel pair of the weight and every image."""
        names = axis_names(self.ndim)
        pairs = window_pairs(w, names, axes, self.kernel_size, ENTRIES[self._window_per], why)
        t_product = " · ".join(f"T_{ax}" for ax in names)
        return w.let(
            "mults",
            f"N · {self._pairs} · {t_product}",
            batch * prod(self.weight_shape[:2]) * prod(pairs),
            {**self._channels(batch), **axis_dict(names, "T", pairs)},
        )

    def _summed(
        self,
        w: Working,
        products: int,
        batch: int,
        role: str,
        axes: Sequence[Windows],
        reached: Sequence[int] | None = None,
    ) -> int:
        """The additions of a pass that sums the products into the ``role``'s entries: the
        forward pass into the output, the backward passes (which gather the same products) into
        the input and the weight. An entry that sums n products costs n − 1, so the additions
        are the products minus the entries that receive any. Along an axis those are the windows
        used, the positions they reach (``reached``, where the padding copies values) or the
        taps used."""
        if role != "output":
            w.let("mults", "", products, why="the forward pass's products")
        names = axis_names(self.ndim)
        symbol, why_count, why = self._sums[role]
        lead = {
            "output": ("N · C_out", batch * self.out_channels),
            "input": ("N · C_in", batch * self.in_channels),
            "weight": (self._pairs, prod(self.weight_shape[:2])),
        }[role]
        if role == "weight":
            counts, full = [a.taps_used for a in axes], list(self.kernel_size)
        elif role == self._window_per:
            counts, full = [a.windows_used for a in axes], [a.count for a in axes]
        else:
            counts = list(reached or [a.positions_used() for a in axes])
            full = [a.size for a in axes]
        base, entries = self._channels(batch), ENTRIES[role]
        return summed_adds(
            w, products, lead, base, symbol, names, counts, full, entries, why_count, why
        )

    def _product_cost(
        self, w: Working, products: int, adds: Sequence[int], batch: int, output_shape: Shape
    ) -> Cost:
        """The passes' counts over the same products (forward, input and weight gradients, with
        ``adds`` additions each) and, with a bias, the bias gradient's."""
        forward, backward_input, backward_weight = (OpCount(mults=products, adds=a) for a in adds)
        names, base = axis_names(self.ndim), self._channels(batch)
        bias = bias_gradient(w, self.bias, self.out_channels, batch, names, output_shape, base)
        return Cost(forward, backward_input, backward_weight, bias)


def check_ranks(ndim: int, x: np.ndarray, weight: np.ndarray, rows: str) -> None:
    """``x`` of layout (N, C, *spatial) and ``weight`` of layout (``rows``, *kernel)."""
    names = axis_names(ndim)
    expect_rank(x, ndim + 2, "x", "N x C x " + " x ".join(names))
    expect_rank(weight, ndim + 2, "weight", f"{rows} x " + " x ".join(f"k_{ax}" for ax in names))


def check_arrays(
    spec: Any,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    grad_out: np.ndarray | None,
) -> Shape:
    """The output shape (with the batch) of a convolution or transposed convolution ``spec`` for
    these arrays; errors name the shapes."""
    same_dtype(x=x, weight=weight, bias=bias, grad_out=grad_out)
    expect_rank(x, spec.ndim + 2, "x", "N x C x " + " x ".join(axis_names(spec.ndim)))
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


#: A pass of a convolution family on checked arrays: (spec, x, weight, bias) for the forward,
#: (spec, grad_out, x, weight, bias) for the backward.
KernelPass = Callable[..., Any]
Grads = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def run_forward(
    forward: KernelPass, spec: Any, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    """``forward`` of ``spec`` on float arrays, after checking them against it."""
    check_arrays(spec, x, weight, bias, None)
    return forward(spec, x, weight, bias)


def run_backward(
    backward: KernelPass, spec: Any, grad_out: Any, x: np.ndarray, weight: np.ndarray, bias: bool
) -> Grads:
    """``backward`` of ``spec``: the gradients w.r.t. the input, the weight and (with ``bias``)
    the bias, after checking the arrays against it."""
    grad_out = float_array(grad_out, "grad_out")
    check_arrays(spec, x, weight, None, grad_out)
    return backward(spec, grad_out, x, weight, bias)


class KernelModule(WeightedModule):
    """A convolution or transposed convolution module: its spec's weight and bias, initialised
    as PyTorch does (fan-in: the weight's entries per row), run by its family's ``passes``."""

    ndim = 2
    spec: Any
    passes: ClassVar[tuple[KernelPass, KernelPass]]

    def _setup(self, spec: Any) -> None:
        self.spec = spec
        fan_in = spec.weight_shape[1] * prod(spec.kernel_size)
        self._register_weights(spec.weight_shape, fan_in, spec.out_channels if spec.bias else None)

    def _forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        return run_forward(self.passes[0], self.spec, float_array(x, "x"), weight, bias)

    def _backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, has_bias: bool
    ) -> Grads:
        return run_backward(self.passes[1], self.spec, grad_out, x, weight, has_bias)


def spec_constructor(create: Callable[..., Any]) -> Callable[..., None]:
    """The ``__init__`` of a convolution module, which takes its spec's ``create`` arguments
    after the rank: PyTorch's constructor arguments, declared once (with their defaults and
    types) for the spec and the module. The signature is the module's to ``inspect``, which
    reads the attribute names, the PyTorch adapter's mapping and spec files from it."""

    def __init__(self: KernelModule, *args: Any, **kwargs: Any) -> None:
        try:
            spec = create(self.ndim, *args, **kwargs)
        except TypeError:
            try:  # a wrong call names the module, as a written-out constructor would
                signature.bind(self, *args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{type(self).__name__}(): {error}") from None
            raise
        self._setup(spec)

    _, *arguments = inspect.signature(create).parameters.values()
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    signature = inspect.Signature([this, *arguments], return_annotation="None")
    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__


def kernel_builder(classes: Sequence[type[Module]]) -> Callable[[dict[str, Any], Context], Module]:
    """The layer-kind builder of a convolution family: the class of the input's rank, from the
    input's channels to ``out_channels`` (default: as many)."""

    def build(values: dict[str, Any], ctx: Context) -> Module:
        cls = of_rank(classes, ctx.ndim)
        return cls(ctx.channels, values.pop("out_channels", ctx.channels), **values)

    return build


# -- pools ---------------------------------------------------------------------------------------


def window_cost(
    w: Working,
    kind: str,
    names: Sequence[str],
    axes: Sequence[Any],
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


def check_x(x: Any, spec: Any) -> tuple[np.ndarray, Shape]:
    """``x`` as a float array of rank N, C, *spatial, and the output shape with the batch."""
    x = float_array(x, "x")
    expect_rank(x, spec.ndim + 2, "x", f"(N, C, {', '.join(axis_names(spec.ndim))})")
    return x, (x.shape[0], *spec.output_shape(x.shape[1:]))


def check_grad(grad_out: Any, x: np.ndarray, out_shape: Shape, spec: Any) -> np.ndarray:
    g = float_array(grad_out, "grad_out")
    expect_shape(g, out_shape, "grad_out", f"(the {spec.name} output for x {tuple(x.shape)})")
    same_dtype(x=x, grad_out=g)
    return g


@dataclass(frozen=True)
class PoolPasses:
    """A pool family's passes on an input that ``check_x`` checked once, with its output shape
    ``out``: ``forward`` (spec, x, out) → (the output, what the backward needs) and ``backward``
    (spec, grad_out, x, out, what the forward kept) → the gradient w.r.t. x."""

    forward: Callable[[Any, np.ndarray, Shape], tuple[np.ndarray, Any]]
    backward: Callable[[Any, Any, np.ndarray, Shape, Any], np.ndarray]

    def pooled(self, spec: Any, x: Any) -> np.ndarray:
        """``x`` pooled by ``spec``."""
        return self.forward(spec, *check_x(x, spec))[0]

    def gradient(self, spec: Any, grad_out: Any, x: Any) -> np.ndarray:
        """The gradient w.r.t. ``x`` of pooling it by ``spec``, from the forward pass run again."""
        x, out = check_x(x, spec)
        return self.backward(spec, grad_out, x, out, self.forward(spec, x, out)[1])


class PoolingModule(Module):
    """A pool that runs its spec by its family's ``passes``: forward keeps the input, and what
    the backward needs (a max pool's arg-max), for backward."""

    spec: Any
    passes: ClassVar[PoolPasses]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Pools ``x`` (N, C, *spatial) and keeps what backward needs."""
        x, out = check_x(x, self.spec)
        y, saved = self.passes.forward(self.spec, x, out)
        self.save_for_backward(x, out, saved)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input (a pool has no parameters)."""
        x, out, saved = self.saved()
        return self.passes.backward(self.spec, grad_out, x, out, saved)


def pool_calls(prefix: str, rule: Callable[[int, str], Any]) -> dict[str, Any]:
    """The traced calls F.{prefix}max_pool1d … F.{prefix}avg_pool3d, each with the ``rule`` of
    its rank and mode."""
    modes = ("max", "avg")
    return {f"torch.nn.functional.{prefix}{m}_pool{d}d": rule(d, m) for d in RANKS for m in modes}
