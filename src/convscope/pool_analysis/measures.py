"""What a pooling layer keeps and loses, and why it is still used, measured.

Information: how many inputs feed each output; for average pooling the exact rank of the
linear map (its null space is what is lost); for max pooling the share of inputs that get no
gradient; and a pair of different inputs with identical outputs, checked with the engine.
Why it is still used: activation memory, the cost of a following convolution (from its own
counting rules) and how much the output moves when the input shifts. The results are the
typed records of ``results``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from .. import functional, registry
from ..errors import ConvScopeError, LayerConfigError
from ..explain import Working, shape_text
from ..geometry import Shape, axis_names, check_batch, check_input, positive_int, prod
from ..module import Module
from ..ops.adaptive_pooling import AdaptivePoolSpec
from ..ops.conv import ConvSpec
from ..ops.pooling import PoolSpec
from .results import (
    AvgZeroGradient,
    ConvSide,
    FollowingConv,
    IdenticalPair,
    InputsPerOutput,
    MaxZeroGradient,
    Memory,
    PoolAnalysis,
    Rank,
    ShiftRow,
    Translation,
)
from .windows import AxisWindows, axis_windows, distinct_winners, hitting_set, interval_rank

BYTES_PER_VALUE = 4  # activations counted as float32
PAIR_VALUES = 10  # the identical-output pair uses small integers, so sums are exact


# -- running the layers ------------------------------------------------------------------------


def pool_spec(layer_or_spec: Any) -> PoolSpec | AdaptivePoolSpec:
    """The pooling configuration of a spec or an ``nn`` pooling module."""
    spec = layer_or_spec.spec if isinstance(layer_or_spec, Module) else layer_or_spec
    if not isinstance(spec, PoolSpec | AdaptivePoolSpec):
        raise LayerConfigError(
            f"pool analysis needs a pooling layer (MaxPool, AvgPool or an adaptive pool), got "
            f"{type(layer_or_spec).__name__}"
        )
    return spec


def _forward(spec: PoolSpec | AdaptivePoolSpec, x: np.ndarray) -> np.ndarray:
    return registry.module_for(spec).forward(x)


def _backward(spec: PoolSpec | AdaptivePoolSpec, g: np.ndarray, x: np.ndarray) -> np.ndarray:
    layer = registry.module_for(spec)
    layer.forward(x)
    return layer.backward(g)


def _strided_conv(spec: PoolSpec | AdaptivePoolSpec, shape: Shape) -> ConvSpec:
    """A depthwise conv with the pool's kernel, stride, padding and dilation; for an adaptive
    pool kernel = stride = ⌊L / O⌋ per axis."""
    channels, ndim = shape[0], spec.ndim
    if isinstance(spec, AdaptivePoolSpec):
        out = spec.output_shape(shape)[1:]
        step = tuple(max(1, size // o) for size, o in zip(shape[1:], out))
        return ConvSpec.create(ndim, channels, channels, step, step, groups=channels, bias=False)
    return ConvSpec.create(
        ndim,
        channels,
        channels,
        spec.kernel_size,
        spec.stride,
        spec.padding,
        spec.dilation,
        groups=channels,
        bias=False,
    )


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """White noise low-passed by a circular Gaussian of ``sigma`` pixels on every spatial axis
    (axes 2 …), scaled to unit standard deviation."""
    x = rng.standard_normal(tuple(shape))
    axes = tuple(range(2, len(shape)))
    spectrum = np.fft.rfftn(x, axes=axes)
    for a in axes:
        f = np.fft.rfftfreq(shape[a]) if a == axes[-1] else np.fft.fftfreq(shape[a])
        view = [1] * len(shape)
        view[a] = f.size
        spectrum *= np.exp(-2 * (np.pi * sigma * f) ** 2).reshape(view)
    x = np.fft.irfftn(spectrum, s=[shape[a] for a in axes], axes=axes)
    return x / (x.std() or 1.0)


def _relative_change(fa: np.ndarray, fb: np.ndarray, ref: np.ndarray) -> float:
    """‖fa − fb‖ / ‖ref‖ over the entries finite in all three (a max-pool window wholly in
    the padding outputs −inf whatever the input)."""
    finite = np.isfinite(fa) & np.isfinite(fb) & np.isfinite(ref)
    scale = np.linalg.norm(ref[finite])
    return float(np.linalg.norm((fa - fb)[finite]) / scale) if scale else 0.0


# -- the following convolution -----------------------------------------------------------------


def parse_conv(text: str) -> dict[str, Any]:
    """``"c=64 k=3 s=1 p=1 d=1 g=1 bias=0"`` in the layer grammar (c and k required; k, s, p, d
    also per axis as ``3,5``; p also per side and ``same`` or ``valid``) as ConvSpec keyword
    arguments."""
    text = text.replace(";", " ")
    values = registry.layer_kinds()["conv"].parse_text(text.split(), text)
    if "out_channels" not in values:
        raise LayerConfigError(f"the following conv needs c (its out channels), got {text!r}")
    return values


def following_conv_spec(conv_like: Any, channels: int, ndim: int) -> ConvSpec:
    """A ConvSpec from a ConvSpec, an ``nn`` Conv, keyword arguments or ``parse_conv`` text."""
    if isinstance(conv_like, Module):
        conv_like = conv_like.spec
    if isinstance(conv_like, ConvSpec):
        return conv_like
    if isinstance(conv_like, str):
        conv_like = parse_conv(conv_like)
    if not isinstance(conv_like, Mapping):
        raise LayerConfigError(
            f"following_conv must be a Conv layer, a ConvSpec, keyword arguments or text such as "
            f"'c=64 k=3 p=1', got {type(conv_like).__name__}"
        )
    try:
        return ConvSpec.create(ndim, channels, **conv_like)
    except TypeError as error:
        raise LayerConfigError(f"following conv: {error}") from None


def _conv_side(spec: ConvSpec, shape: Shape, batch: int, count: str, where: str) -> ConvSide:
    try:
        cost = spec.cost(shape, batch, count)
        out = spec.output_shape(shape)
    except ConvScopeError as error:
        raise type(error)(
            f"following conv on the {where} input {shape_text(shape)}: {error}"
        ) from None
    backward = cost.backward
    return ConvSide(
        list(shape),
        list(out),
        spec.macs(shape, batch),
        cost.forward.to_dict(),
        {"mults": backward.mults, "adds": backward.adds},
        cost.forward.total + backward.total,
    )


# -- the analysis --------------------------------------------------------------------------------


#: The measurements run the engine on float64 arrays of ``trials`` inputs; about six such
#: arrays are alive at once (measured with tracemalloc), eight are budgeted.
MEMORY_BUDGET = 256 * 2**20
ARRAYS_ALIVE = 8
#: Input entries × trials × (shifts + 2) passes: a few seconds of engine work on two cores.
WORK_BUDGET = 64_000_000


def _check_budget(shape: Sequence[int], trials: int, shifts: int) -> None:
    """Refuses, before allocating, an analysis over the memory or work budget, naming what to
    lower."""
    entries = prod(shape)
    need = 8 * ARRAYS_ALIVE * entries * trials
    if need > MEMORY_BUDGET:
        most = MEMORY_BUDGET // (8 * ARRAYS_ALIVE * entries)
        lower = f"--trials (at most {most} here)" if most >= 1 else "the input size"
        raise LayerConfigError(
            f"pool --analyze needs about {need / 2**20:,.0f} MiB for {trials} trials of "
            f"{entries:,} input entries, over its {MEMORY_BUDGET // 2**20} MiB budget: lower "
            f"{lower}"
        )
    work = entries * trials * (shifts + 2)
    if work > WORK_BUDGET:
        raise LayerConfigError(
            f"pool --analyze would run {work:,} entry-passes (input entries × trials × "
            f"(shifts + 2)), over its budget of {WORK_BUDGET:,}: lower --shifts, --trials or "
            "the input size"
        )


def analyze_pool(
    layer_or_spec: Any,
    input_shape: Sequence[int],
    following_conv: Any = None,
    seed: int = 0,
    trials: int = 8,
    shifts: int = 4,
    sigma: float = 2.0,
    batch: int = 1,
    count: str = "exact",
    explain: bool = False,
) -> PoolAnalysis:
    """What the pooling layer keeps and loses on ``input_shape`` (C, *spatial), and why it is
    still used; every random measurement is seeded by ``seed``.

    Zero-gradient share (max pools): the share of input entries whose gradient is 0 when the
    engine's backward routes ones from every output, on ``trials`` standard-normal inputs (the
    first draw of ``np.random.default_rng(seed)``, shape (trials, C, *spatial)).
    Translation robustness: on ``trials`` smooth inputs (``smooth_noise`` with ``sigma``), for
    shifts δ = 1 … ``shifts`` of the input along the last spatial axis (circular, ``np.roll``):
    change = ‖f(roll(x, δ)) − f(x)‖ / ‖f(x)‖ (norms over all trials), and aligned = the least
    ‖f(roll(x, δ)) − roll(f(x), j)‖ / ‖f(x)‖ over the output shifts j = ⌊δ/s⌋, ⌈δ/s⌉ (s the
    stride, L/O for an adaptive pool; j = δ for no pooling). f is the pool, a depthwise conv
    with the pool's kernel, stride, padding and dilation and seeded standard-normal weights
    (averaging weights would be the average pool itself), and the identity.
    """
    spec = pool_spec(layer_or_spec)
    shape = check_input(input_shape, spec.ndim, spec.name)
    spec.output_shape(shape)
    batch = check_batch(batch)
    trials, shifts = positive_int(trials, "trials"), positive_int(shifts, "shifts")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LayerConfigError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(sigma, int | float) or not sigma > 0:
        raise LayerConfigError(f"sigma must be a number > 0, got {sigma!r}")
    _check_budget(shape, trials, shifts)
    out = spec.output_shape(shape)
    names = axis_names(spec.ndim)
    channels, sizes, out_sizes = shape[0], shape[1:], out[1:]
    w = Working(record=explain)
    axes = axis_windows(spec, shape)
    rng = np.random.default_rng(seed)
    layer = f"{spec.name}({spec.describe()})"

    # -- inputs per output
    w.section("What each output reads")
    w.note(
        "A window's inputs are its positions inside the real input (padding is not input); "
        "along each axis window o holds n_o of them, and an output reads the product over axes."
    )
    counts = [a.counts for a in axes]
    for ax, c in zip(names, counts):
        w.let(f"nmin_{ax}", "", int(c.min()), why=f"fewest inputs of a window along {ax}")
        w.let(f"nmax_{ax}", "", int(c.max()), why=f"most inputs of a window along {ax}")
    lo_n, hi_n = prod(int(c.min()) for c in counts), prod(int(c.max()) for c in counts)
    mean = Fraction(prod(int(c.sum()) for c in counts), prod(out_sizes))
    w.let("min", " · ".join(f"nmin_{ax}" for ax in names), lo_n, why="inputs of an output")
    w.let("max", " · ".join(f"nmax_{ax}" for ax in names), hi_n, why="inputs of an output")
    w.note(f"mean = Π_axes (Σ n_o / O) = {mean} ≈ {float(mean):.3f} inputs per output")
    window = prod(spec.kernel_size) if isinstance(spec, PoolSpec) else None
    reached = [a.reached() for a in axes]
    used = [int(r.sum()) for r in reached]
    unread = channels * (prod(sizes) - prod(used))
    for ax, u, size in zip(names, used, sizes):
        w.let(f"U_{ax}", "", u, why=f"positions in some window, of {size} along {ax}")
    w.let(
        "unread",
        f"C · ({' · '.join(names)} − {' · '.join(f'U_{ax}' for ax in names)})",
        unread,
        {"C": channels, **dict(zip(names, sizes)), **{f"U_{ax}": u for ax, u in zip(names, used)}},
        why="inputs no output depends on",
    )
    inputs_per_output = InputsPerOutput(lo_n, hi_n, float(mean), str(mean), window)

    # -- rank (average) or zero-gradient share (max)
    n_in = prod(shape)
    rank_info = None
    null: list[np.ndarray | None] = []
    if spec.mode == "avg":
        w.section("Average pooling as a linear map: its rank")
        w.note(
            "The map is C copies of the Kronecker product of per-axis O × L matrices (window "
            "indicators; the divisors only scale rows), so rank = C · Π rank_axis. Along an axis a "
            "window [a, b] is P_(b+1) − P_a, P_j the indicator of positions < j: an edge between "
            "boundaries a and b + 1 of 0 … L, so rank_axis = L + 1 − (connected groups)."
        )
        ranks = []
        for ax, a, size in zip(names, axes, sizes):
            r, v = interval_rank(a.lo, a.hi, size)
            values = {ax: size, f"groups_{ax}": size + 1 - r}
            ranks.append(w.let(f"rank_{ax}", f"{ax} + 1 − groups_{ax}", r, values))
            null.append(v)
        total = w.let(
            "rank",
            "C · " + " · ".join(f"rank_{ax}" for ax in names),
            channels * prod(ranks),
            {"C": channels, **{f"rank_{ax}": r for ax, r in zip(names, ranks)}},
        )
        lost = w.let(
            "lost",
            f"C · {' · '.join(names)} − rank",
            n_in - total,
            {"C": channels, **dict(zip(names, sizes)), "rank": total},
            why="the dimension of the null space: inputs the output cannot tell apart",
        )
        rank_info = Rank(total, ranks, n_in, lost)
        zero_grad: AvgZeroGradient | MaxZeroGradient = AvgZeroGradient(unread / n_in)
        w.note(f"Zero-gradient share = unread / inputs = {unread}/{n_in} = {unread / n_in:.4f}")
    else:
        zero_grad, hits = _max_zero_grad(spec, shape, axes, names, trials, rng, seed, w)

    # -- the identical-output pair
    w.section("Two different inputs, one output")
    x = rng.integers(0, PAIR_VALUES, size=(1, *shape)).astype(np.float64)
    x2 = x.copy()
    position = None
    if spec.mode == "avg":
        axis = next((i for i, v in enumerate(null) if v is not None), None)
        if axis is not None:
            v = np.zeros(sizes, dtype=np.int64)
            index = [0] * spec.ndim
            index[axis] = slice(None)
            v[tuple(index)] = null[axis]
            background = "x random integers 0 … 9"
            if isinstance(spec, AdaptivePoolSpec):
                # the engine multiplies by 1/length, so only a zero background stays exact
                x[:] = 0
                background = "x = 0"
            x2 = x.copy()
            x2[0, 0] += v
            support = np.flatnonzero(null[axis])
            position = f"{names[axis]} = {', '.join(map(str, support.tolist()))}"
            how = (
                f"{background}, x' = x + v with v = ±1 at channel 0, {position} (other axes "
                "at 0): each window sums v to 0, so v is in the null space"
            )
    else:
        box = np.ix_(*hits)
        if prod(len(h) for h in hits) < prod(sizes):
            for c in range(channels):
                x[0, c][box] = 100 + np.arange(prod(len(h) for h in hits)).reshape(
                    x[0, c][box].shape
                )
            x2 = x.copy()
            axis = next(i for i, h in enumerate(hits) if len(h) < sizes[i])
            index = [0] * spec.ndim
            index[axis] = next(p for p in range(sizes[axis]) if p not in set(hits[axis]))
            x2[(0, 0, *index)] -= 1
            position = ", ".join(f"{ax} = {i}" for ax, i in zip(names, index))
            how = (
                "x holds 100 + k on a smallest set of positions that meets every window and "
                f"integers 0 … {PAIR_VALUES - 1} elsewhere; x' lowers x at channel 0, "
                f"{position} by 1, which no window picks"
            )
    if position is None:
        pair = IdenticalPair(False, "none: the map is one-to-one on this shape (nothing is lost)")
        w.note(pair.description)
        pair_arrays = None
    else:
        same = bool(np.array_equal(_forward(spec, x), _forward(spec, x2)))
        differ = int(np.count_nonzero(x != x2))
        description = f"{how}; input values changed: {differ}; outputs " + (
            "identical (checked with the engine)" if same else "DIFFER (engine check failed)"
        )
        pair = IdenticalPair(True, description, how, differ, float(np.abs(x - x2).max()), same)
        w.note(pair.description)
        pair_arrays = (x[0], x2[0])

    # -- memory
    w.section("Activation memory (float32)")
    values = {"N": batch, "C": channels, **dict(zip(names, sizes))}
    values.update({f"{ax}_out": o for ax, o in zip(names, out_sizes)})
    v_in = w.let("values_in", "N · C · " + " · ".join(names), batch * n_in, values)
    v_out = w.let(
        "values_out",
        "N · C · " + " · ".join(f"{ax}_out" for ax in names),
        batch * prod(out),
        values,
    )
    memory = Memory(v_in, v_out, BYTES_PER_VALUE * v_in, BYTES_PER_VALUE * v_out, v_in / v_out)
    w.note(f"{v_in:,} / {v_out:,} = {v_in / v_out:.3f}× fewer values (4 bytes each)")
    cost = spec.cost(shape, batch, count).forward
    pool_cost = {k: getattr(cost, k) for k in ("compares", "adds", "divides")}

    # -- the following conv
    following = None
    if following_conv is not None:
        conv_spec = following_conv_spec(following_conv, channels, spec.ndim)
        w.section("The following convolution, with and without the pool")
        pooled = _conv_side(conv_spec, out, batch, count, "pooled")
        unpooled = _conv_side(conv_spec, shape, batch, count, "unpooled")
        following = FollowingConv(
            f"{conv_spec.name}({conv_spec.describe()})",
            count,
            unpooled,
            pooled,
            unpooled.macs / pooled.macs if pooled.macs else None,
            unpooled.total_ops / pooled.total_ops if pooled.total_ops else None,
        )
        for label, side in (("unpooled", unpooled), ("pooled", pooled)):
            w.let(f"MACs_{label}", "", side.macs, why=f"on {shape_text(side.input_shape)}")
            w.let(f"ops_{label}", "", side.total_ops, why="forward + backward, every output")
        w.note(
            "Counts from the conv's own rules (ConvSpec.cost and .macs); for a stride-1 conv "
            "they scale with the spatial size of its input."
        )

    translation = _translation(spec, shape, trials, shifts, sigma, rng, seed, w)
    return PoolAnalysis(
        layer,
        spec.mode,
        shape,
        out,
        batch,
        inputs_per_output,
        unread,
        rank_info,
        zero_grad,
        pair,
        memory,
        pool_cost,
        following,
        translation,
        pair_arrays,
        w.explanation if explain else None,
    )


def _max_zero_grad(
    spec: PoolSpec | AdaptivePoolSpec,
    shape: Shape,
    axes: list[AxisWindows],
    names: Sequence[str],
    trials: int,
    rng: np.random.Generator,
    seed: int,
    w: Working,
) -> tuple[MaxZeroGradient, list[list[int]]]:
    """The measured and the extreme shares of inputs that get no gradient from a max pool."""
    w.section("Max pooling: inputs that get no gradient")
    w.note(
        "Each window passes its gradient to one input, its arg-max; every other input of the "
        "window gets none from it. An input gets a gradient iff some window picks it."
    )
    sizes = shape[1:]
    hits = [hitting_set(a) for a in axes]
    tau = [
        w.let(f"τ_{ax}", "", len(h), why=f"fewest positions meeting every window along {ax}")
        for ax, h in zip(names, hits)
    ]
    best = [
        w.let(f"m_{ax}", "", distinct_winners(a), why=f"most distinct arg-maxes along {ax}")
        for ax, a in zip(names, axes)
    ]
    spatial = prod(sizes)
    worst_share = 1 - prod(tau) / spatial
    best_share = 1 - prod(best) / spatial
    windows = prod(int((a.counts > 0).sum()) for a in axes)
    bound = min(windows, prod(int(a.reached().sum()) for a in axes))
    w.note(
        f"Most zero-gradient inputs: 1 − Π τ / Π L = 1 − {prod(tau)}/{spatial} = "
        f"{worst_share:.4f} (large values on a smallest set meeting every window; no fewer "
        "inputs can be picked, since the picked ones meet every window)."
    )
    w.note(
        f"Fewest: 1 − Π m / Π L = 1 − {prod(best)}/{spatial} = {best_share:.4f} (per-axis "
        "distinct picks combine); "
        + (
            "exact, as no more than min(windows, reached inputs) can be picked."
            if prod(best) == bound
            else f"at most this; at least 1 − {bound}/{spatial}."
        )
    )
    x = rng.standard_normal((trials, *shape))
    grad = _backward(spec, np.ones((trials, *spec.output_shape(shape))), x)
    shares = (grad == 0).reshape(trials, -1).mean(axis=1)
    w.note(
        f"Measured with the engine's backward on {trials} standard-normal inputs (seed {seed}): "
        f"mean {shares.mean():.4f}, min {shares.min():.4f}, max {shares.max():.4f}."
    )
    info = MaxZeroGradient(
        float(shares.mean()),
        float(shares.min()),
        float(shares.max()),
        trials,
        seed,
        worst_share,
        best_share,
        1 - bound / spatial,
        prod(best) == bound,
    )
    return info, hits


def _translation(
    spec: PoolSpec | AdaptivePoolSpec,
    shape: Shape,
    trials: int,
    shifts: int,
    sigma: float,
    rng: np.random.Generator,
    seed: int,
    w: Working,
) -> Translation:
    """Relative output change under circular shifts, for the pool, a strided conv and none."""
    ndim, axis = spec.ndim, -1
    names = axis_names(ndim)
    conv_spec = _strided_conv(spec, shape)
    weight = rng.standard_normal(conv_spec.weight_shape)
    run_conv = getattr(functional, f"conv{ndim}d")

    def strided(x: np.ndarray) -> np.ndarray:
        return run_conv(
            x,
            weight,
            None,
            conv_spec.stride,
            conv_spec.padding,
            conv_spec.dilation,
            conv_spec.groups,
        )

    x = smooth_noise(rng, (trials, *shape), sigma)
    pool_steps = shape[-1] / spec.output_shape(shape)[-1]
    if isinstance(spec, PoolSpec):
        pool_steps = spec.stride[-1]
    layers = {
        "pool": (lambda v: _forward(spec, v), pool_steps),
        "conv": (strided, conv_spec.stride[-1]),
        "identity": (lambda v: v, 1),
    }
    conv_text = f"{conv_spec.name}({conv_spec.describe()}), standard-normal weights"
    try:
        conv_spec.output_shape(shape)
    except ConvScopeError as error:  # a ceil-mode pool may fit where the conv does not
        del layers["conv"]
        conv_text = f"none: {error}"
    base = {name: f(x) for name, (f, _) in layers.items()}
    rows = []
    for delta in range(1, shifts + 1):
        moved = np.roll(x, delta, axis=axis)
        change: dict[str, Any] = {"conv": None, "conv_aligned": None}
        for name, (f, step) in layers.items():
            y, y0 = f(moved), base[name]
            change[name] = _relative_change(y, y0, y0)
            options = {int(np.floor(delta / step)), int(np.ceil(delta / step))}
            change[f"{name}_aligned"] = min(
                _relative_change(y, np.roll(y0, j, axis=axis), y0) for j in sorted(options)
            )
        rows.append(ShiftRow(delta, **change))
    w.section("Translation robustness")
    w.note(
        f"Inputs: {trials} white-noise images low-passed by a Gaussian of σ = {sigma} px (seed "
        f"{seed}). x is shifted circularly (np.roll) by δ along {names[-1]}. change = "
        "‖f(roll(x, δ)) − f(x)‖ / ‖f(x)‖; aligned = the least ‖f(roll(x, δ)) − roll(f(x), j)‖ / "
        "‖f(x)‖ over j = ⌊δ/s⌋, ⌈δ/s⌉, which is 0 for an exactly shift-equivariant f."
    )
    w.note(
        f"strided conv = {conv_text} (seeded): the same stride without the pooling's fixed "
        "averaging or max; averaging weights would be the average pool itself."
    )
    for row in rows:
        conv_cell = "-" if row.conv is None else f"{row.conv:.4f} ({row.conv_aligned:.4f})"
        w.note(
            f"δ = {row.shift}: pool {row.pool:.4f} (aligned {row.pool_aligned:.4f}), "
            f"strided conv {conv_cell}, "
            f"no pooling {row.identity:.4f} ({row.identity_aligned:.4f})"
        )
    return Translation(names[-1], "circular", sigma, trials, seed, conv_text, rows)
