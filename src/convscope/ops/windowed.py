"""The rules that the windowed families share: channels and groups, the counting rule of
products over a convolution's windows (a convolution and, over its adjoint's windows, a
transposed convolution), the counting rule of reductions over a pool's windows (sliding and
adaptive), and the checks of the arrays their passes take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError
from ..explain import Working, axis_dict, product_symbols
from ..geometry import Shape, Windows, axis_names, prod

# -- convolutions --------------------------------------------------------------------------------


def check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    """Channels and groups as PyTorch requires them."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LayerConfigError(f"{name} must be an int >= 1, got {value!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise LayerConfigError(f"groups must be an int >= 1, got {groups!r}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise LayerConfigError(
                f"groups must divide {name}: {value} is not divisible by groups={groups}"
            )


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
