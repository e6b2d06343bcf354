"""Instrumented reference for the operation counts of docs/counting.md.

Every layer is computed here by literal Python loops over every batch element, every
output position and every kernel tap, on :class:`Counted` scalars.  Each multiplication,
addition (a subtraction is an addition), comparison, division and special function
(exp, erf, sqrt, tanh) that is actually performed increments the active
:class:`OpCounter`.  No count is ever computed from a formula: the numbers reported are
only the tallies of the operations performed while computing the real values.

Conventions shared by every function:

* shapes are channel-first and without the batch dimension; ``batch`` is N;
* sums are accumulated "first term as is, each further term is one addition", so a sum of
  n terms costs n - 1 additions and an entry that receives no term costs nothing and is 0
  (or, for a biased convolution output, a copy of the bias);
* negation is a sign flip and is free; selecting one of two already computed values is free;
* random data is drawn in float64 from ``numpy.random.default_rng(seed)``; the order of the
  draws is documented per function, and every input and result is returned under
  ``"values"`` (with the batch dimension) so that it can be checked against PyTorch.

This module must stay independent of ``src/convscope``: it is what the closed forms are
tested against.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np

COUNT_KEYS = ("mults", "adds", "compares", "divides", "specials")

__all__ = [
    "COUNT_KEYS",
    "Counted",
    "OpCounter",
    "activation_counts",
    "adaptive_max_worst_backward_adds",
    "adaptive_pool_counts",
    "add_counts",
    "attention_counts",
    "avg_pool_counts",
    "batchnorm_counts",
    "contraction_counts",
    "conv_counts",
    "conv_transpose_counts",
    "counting",
    "dropout_counts",
    "interpolate_counts",
    "linear_counts",
    "max_pool_counts",
    "max_pool_worst_backward_adds",
    "mean_counts",
    "moved_counts",
    "mul_counts",
    "normalization_counts",
    "padding_counts",
    "softmax_counts",
]


# ---------------------------------------------------------------------------------------
# Instrumented scalars
# ---------------------------------------------------------------------------------------


class OpCounter:
    """Tally of the operations performed while it is the active counter."""

    __slots__ = COUNT_KEYS

    def __init__(self) -> None:
        self.mults = 0
        self.adds = 0
        self.compares = 0
        self.divides = 0
        self.specials = 0

    def as_dict(self, keys=COUNT_KEYS) -> dict:
        return {k: int(getattr(self, k)) for k in keys}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"OpCounter({self.as_dict()})"


# Operations performed outside any ``counting()`` block land here and are never reported.
_SINK = OpCounter()
_active = _SINK


@contextlib.contextmanager
def counting():
    """Make a fresh :class:`OpCounter` the active one for the duration of the block."""
    global _active
    previous = _active
    counter = OpCounter()
    _active = counter
    try:
        yield counter
    finally:
        _active = previous


def _v(x):
    return x.v if type(x) is Counted else x


class Counted:
    """A float whose arithmetic is counted in the active :class:`OpCounter`.

    Any arithmetic operation with a ``Counted`` operand counts once, whatever the other
    operand is (a constant such as ``m`` in ``m * g`` or ``1.0`` in ``1.0 - y`` counts
    the same as a data value).  Negation is free (a sign flip).
    """

    __slots__ = ("v",)

    def __init__(self, v) -> None:
        self.v = float(v)

    # additions / subtractions
    def __add__(self, o):
        _active.adds += 1
        return Counted(self.v + _v(o))

    def __radd__(self, o):
        _active.adds += 1
        return Counted(_v(o) + self.v)

    def __sub__(self, o):
        _active.adds += 1
        return Counted(self.v - _v(o))

    def __rsub__(self, o):
        _active.adds += 1
        return Counted(_v(o) - self.v)

    # multiplications
    def __mul__(self, o):
        _active.mults += 1
        return Counted(self.v * _v(o))

    def __rmul__(self, o):
        _active.mults += 1
        return Counted(_v(o) * self.v)

    # divisions
    def __truediv__(self, o):
        _active.divides += 1
        return Counted(self.v / _v(o))

    def __rtruediv__(self, o):
        _active.divides += 1
        return Counted(_v(o) / self.v)

    # comparisons (return plain booleans)
    def __gt__(self, o):
        _active.compares += 1
        return self.v > _v(o)

    def __lt__(self, o):
        _active.compares += 1
        return self.v < _v(o)

    def __ge__(self, o):
        _active.compares += 1
        return self.v >= _v(o)

    def __le__(self, o):
        _active.compares += 1
        return self.v <= _v(o)

    def __neg__(self):
        return Counted(-self.v)

    def __float__(self) -> float:
        return self.v

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Counted({self.v!r})"


def c_exp(x) -> Counted:
    _active.specials += 1
    try:
        return Counted(math.exp(_v(x)))
    except OverflowError:
        return Counted(math.inf)


def c_erf(x) -> Counted:
    _active.specials += 1
    return Counted(math.erf(_v(x)))


def c_sqrt(x) -> Counted:
    _active.specials += 1
    return Counted(math.sqrt(_v(x)))


def c_tanh(x) -> Counted:
    _active.specials += 1
    return Counted(math.tanh(_v(x)))


def _acc(arr, idx, term) -> None:
    """Accumulate ``term`` into ``arr[idx]``: the first term is stored as is."""
    cur = arr[idx]
    arr[idx] = term if cur is None else cur + term


def _csum(terms):
    """Sum an iterable of terms: first as is, each further one addition; None if empty."""
    total = None
    for term in terms:
        total = term if total is None else total + term
    return total


def _wrap(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        out[idx] = Counted(a[idx])
    return out


def _empty(shape) -> np.ndarray:
    return np.empty(tuple(shape), dtype=object)  # filled with None


def _to_float(arr: np.ndarray) -> np.ndarray:
    out = np.zeros(arr.shape, dtype=np.float64)
    for idx in np.ndindex(*arr.shape):
        e = arr[idx]
        if e is not None:
            out[idx] = e.v
    return out


# ---------------------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------------------


def _tup(value, nd: int, name: str) -> tuple:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    t = tuple(int(v) for v in value)
    if len(t) != nd:
        raise ValueError(f"{name} must have {nd} entries, got {value!r}")
    return t


def _pairs(value, nd: int) -> tuple:
    if isinstance(value, (int, np.integer)):
        return ((int(value), int(value)),) * nd
    value = tuple(value)
    if len(value) != nd:
        raise ValueError(f"padding must have {nd} (before, after) pairs, got {value!r}")
    out = []
    for p in value:
        if isinstance(p, (int, np.integer)):
            out.append((int(p), int(p)))
        else:
            before, after = p
            out.append((int(before), int(after)))
    for before, after in out:
        if before < 0 or after < 0:
            raise ValueError("negative padding is not supported")
    return tuple(out)


def _check_mode(mode: str) -> None:
    if mode not in ("exact", "dense"):
        raise ValueError(f"mode must be 'exact' or 'dense', got {mode!r}")


def _split_shape(input_shape):
    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 2:
        raise ValueError("input_shape must be (C, *spatial)")
    return shape[0], shape[1:]


def _pad_map(length: int, before: int, after: int, padding_mode: str) -> list:
    """For each padded position q in [0, length + before + after): the real index whose
    value it holds, or None for a zero (zeros mode).  torch.nn.functional.pad semantics."""
    m = []
    for q in range(length + before + after):
        i = q - before
        if 0 <= i < length:
            m.append(i)
        elif padding_mode == "zeros":
            m.append(None)
        elif padding_mode == "reflect":
            r = -i if i < 0 else 2 * (length - 1) - i
            if not 0 <= r < length:
                raise ValueError("reflect padding must be smaller than the input size")
            m.append(r)
        elif padding_mode == "replicate":
            m.append(min(max(i, 0), length - 1))
        elif padding_mode == "circular":
            m.append(i % length)
        else:
            raise ValueError(f"unknown padding_mode {padding_mode!r}")
    return m


def _pool_out_size(length, k, s, p, d, ceil_mode) -> int:
    """PyTorch's pooling_output_shape."""
    num = length + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= length + p:
        out -= 1
    if out < 1:
        raise ValueError("pooling output size would be < 1")
    return out


def _channel_loop(batch, channels):
    return itertools.product(range(batch), range(channels))


# ---------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------


def conv_counts(
    input_shape,
    out_channels,
    kernel,
    stride,
    padding,
    dilation,
    groups,
    bias,
    padding_mode,
    batch,
    mode,
    seed=0,
):
    """Instrumented N-D convolution (forward and every backward output).

    ``padding`` is a per-axis tuple of (before, after) pairs (an int per axis or a single
    int is taken as symmetric).  Random draws, in order: x (N, C_in, *L), w (C_out,
    C_in/groups, *k), b (C_out,) when ``bias``, gy (N, C_out, *out).

    * exact + zeros: taps landing in the padding are skipped; gx is the real input's.
    * exact + reflect/replicate/circular: every tap is performed on the padded values; each
      product's input gradient is accumulated straight into the real entry the padded
      position maps onto.
    * dense: the explicitly padded input (zeros or the mode's values) is built and the
      convolution runs on it with zero padding; gx is the padded input's (no fold).
    """
    _check_mode(mode)
    c_in, spatial = _split_shape(input_shape)
    nd = len(spatial)
    kernel = _tup(kernel, nd, "kernel")
    stride = _tup(stride, nd, "stride")
    dilation = _tup(dilation, nd, "dilation")
    padding = _pairs(padding, nd)
    if c_in % groups or out_channels % groups:
        raise ValueError("channels must be divisible by groups")
    if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    cig, cog = c_in // groups, out_channels // groups

    padded = tuple(L + pb + pa for L, (pb, pa) in zip(spatial, padding))
    out = tuple(
        (P - d * (k - 1) - 1) // s + 1 for P, k, s, d in zip(padded, kernel, stride, dilation)
    )
    if any(o < 1 for o in out):
        raise ValueError("convolution output size would be < 1")

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in) + spatial)
    w = rng.standard_normal((out_channels, cig) + kernel)
    b = rng.standard_normal(out_channels) if bias else None
    gy = rng.standard_normal((batch, out_channels) + out)

    maps = [_pad_map(L, pb, pa, padding_mode) for L, (pb, pa) in zip(spatial, padding)]
    X = _wrap(x)
    W = _wrap(w)
    B = _wrap(b) if bias else None
    GY = _wrap(gy)

    if mode == "dense":
        # Build the explicitly padded input: copies of real values, or zeros.
        S = _empty((batch, c_in) + padded)
        for idx in np.ndindex(*S.shape):
            src = tuple(maps[a][idx[2 + a]] for a in range(nd))
            S[idx] = Counted(0.0) if None in src else X[idx[:2] + src]
        src_maps = [list(range(P)) for P in padded]
    else:
        S = X
        src_maps = maps

    # For each output position, the taps that are performed and where they read.
    taps = list(itertools.product(*(range(k) for k in kernel)))
    plan = []
    for o in np.ndindex(*out):
        lst = []
        for t in taps:
            src = []
            for a in range(nd):
                j = src_maps[a][o[a] * stride[a] + t[a] * dilation[a]]
                if j is None:
                    break
                src.append(j)
            else:
                lst.append((t, tuple(src)))
        plan.append((o, lst))

    # forward
    Y = _empty((batch, out_channels) + out)
    with counting() as c_fwd:
        for n, co in _channel_loop(batch, out_channels):
            g = co // cog
            for o, lst in plan:
                acc = None
                for cil in range(cig):
                    ci = g * cig + cil
                    for t, src in lst:
                        prod = S[(n, ci) + src] * W[(co, cil) + t]
                        acc = prod if acc is None else acc + prod
                if bias:
                    acc = B[co] if acc is None else acc + B[co]
                Y[(n, co) + o] = acc

    # backward input (gradient of S: the real input, or the padded one in dense mode)
    GS = _empty(S.shape)
    with counting() as c_bin:
        for n, co in _channel_loop(batch, out_channels):
            g = co // cog
            for o, lst in plan:
                gyv = GY[(n, co) + o]
                for cil in range(cig):
                    ci = g * cig + cil
                    for t, src in lst:
                        _acc(GS, (n, ci) + src, gyv * W[(co, cil) + t])

    # backward weight
    GW = _empty(W.shape)
    with counting() as c_bw:
        for n, co in _channel_loop(batch, out_channels):
            g = co // cog
            for o, lst in plan:
                gyv = GY[(n, co) + o]
                for cil in range(cig):
                    ci = g * cig + cil
                    for t, src in lst:
                        _acc(GW, (co, cil) + t, gyv * S[(n, ci) + src])

    # backward bias: over every output, with or without products
    GB = None
    c_bb = None
    if bias:
        GB = _empty((out_channels,))
        with counting() as c_bb:
            for co in range(out_channels):
                for n in range(batch):
                    for o in np.ndindex(*out):
                        _acc(GB, co, GY[(n, co) + o])

    values = {
        "x": x,
        "w": w,
        "b": b,
        "gy": gy,
        "y": _to_float(Y),
        "gx": _to_float(GS),
        "gw": _to_float(GW),
        "gb": _to_float(GB) if bias else None,
    }
    if mode == "dense":
        values["x_padded"] = _to_float(S)
    return {
        "output_shape": (out_channels,) + out,
        "forward": c_fwd.as_dict(("mults", "adds")),
        "backward_input": c_bin.as_dict(("mults", "adds")),
        "backward_weight": c_bw.as_dict(("mults", "adds")),
        "backward_bias": c_bb.as_dict(("adds",)) if bias else None,
        "values": values,
    }


# ---------------------------------------------------------------------------------------
# Transposed convolution
# ---------------------------------------------------------------------------------------


def conv_transpose_counts(
    input_shape,
    out_channels,
    kernel,
    stride,
    padding,
    output_padding,
    dilation,
    groups,
    bias,
    batch,
    mode,
    seed=0,
):
    """Instrumented N-D transposed convolution (PyTorch semantics, symmetric padding).

    Forward scatter: input position i and tap t write to the uncropped position
    q = i*s + t*d, i.e. the output position j = q - p.  Exact: the product is performed
    only if 0 <= j < out.  Dense: every product is performed into the full buffer of
    ``(L-1)*s + d*(k-1) + 1 + max(0, output_padding - p)`` entries per axis, the bias is
    added to every buffer entry that received a product, and the buffer is then cropped
    (output j = buffer j + p).  Backward input / weight gather over the same products
    (dense: over the zero-padded gy buffer).  Backward bias sums gy over every output.
    Random draws, in order: x (N, C_in, *L), w (C_in, C_out/groups, *k), b, gy.
    """
    _check_mode(mode)
    c_in, spatial = _split_shape(input_shape)
    nd = len(spatial)
    kernel = _tup(kernel, nd, "kernel")
    stride = _tup(stride, nd, "stride")
    dilation = _tup(dilation, nd, "dilation")
    padding = _tup(padding, nd, "padding")
    output_padding = _tup(output_padding, nd, "output_padding")
    if c_in % groups or out_channels % groups:
        raise ValueError("channels must be divisible by groups")
    cig, cog = c_in // groups, out_channels // groups

    out = tuple(
        (L - 1) * s - 2 * p + d * (k - 1) + op + 1
        for L, k, s, p, op, d in zip(spatial, kernel, stride, padding, output_padding, dilation)
    )
    if any(o < 1 for o in out):
        raise ValueError("transposed convolution output size would be < 1")
    if mode == "dense":
        target = tuple(
            (L - 1) * s + d * (k - 1) + 1 + max(0, op - p)
            for L, k, s, p, op, d in zip(spatial, kernel, stride, padding, output_padding, dilation)
        )
        offset = padding  # buffer index of output j is j + p
    else:
        target = out
        offset = (0,) * nd

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in) + spatial)
    w = rng.standard_normal((c_in, cog) + kernel)
    b = rng.standard_normal(out_channels) if bias else None
    gy = rng.standard_normal((batch, out_channels) + out)
    X = _wrap(x)
    W = _wrap(w)
    B = _wrap(b) if bias else None
    GY = _wrap(gy)

    # For each input position, the taps performed and the target entry they reach.
    taps = list(itertools.product(*(range(k) for k in kernel)))
    plan = []
    for i in np.ndindex(*spatial):
        lst = []
        for t in taps:
            tg = []
            for a in range(nd):
                q = i[a] * stride[a] + t[a] * dilation[a]
                j = q - padding[a] + offset[a]
                if not 0 <= j < target[a]:
                    break
                tg.append(j)
            else:
                lst.append((t, tuple(tg)))
        plan.append((i, lst))

    # forward
    T = _empty((batch, out_channels) + target)
    with counting() as c_fwd:
        for n, ci in _channel_loop(batch, c_in):
            g = ci // cig
            for i, lst in plan:
                xv = X[(n, ci) + i]
                for col in range(cog):
                    co = g * cog + col
                    for t, tg in lst:
                        _acc(T, (n, co) + tg, xv * W[(ci, col) + t])
        if bias:
            for idx in np.ndindex(*T.shape):
                cur = T[idx]
                bv = B[idx[1]]
                T[idx] = bv if cur is None else cur + bv
    if mode == "dense":
        Y = _empty((batch, out_channels) + out)
        for idx in np.ndindex(*Y.shape):
            Y[idx] = T[idx[:2] + tuple(j + p for j, p in zip(idx[2:], padding))]
    else:
        Y = T

    # gy in target coordinates (dense: zero-padded buffer)
    if mode == "dense":
        GT = _empty(T.shape)
        for idx in np.ndindex(*GT.shape):
            j = tuple(q - p for q, p in zip(idx[2:], padding))
            inside = all(0 <= jj < o for jj, o in zip(j, out))
            GT[idx] = GY[idx[:2] + j] if inside else Counted(0.0)
    else:
        GT = GY

    # backward input
    GX = _empty(X.shape)
    with counting() as c_bin:
        for n, ci in _channel_loop(batch, c_in):
            g = ci // cig
            for i, lst in plan:
                for col in range(cog):
                    co = g * cog + col
                    for t, tg in lst:
                        _acc(GX, (n, ci) + i, GT[(n, co) + tg] * W[(ci, col) + t])

    # backward weight
    GW = _empty(W.shape)
    with counting() as c_bw:
        for n, ci in _channel_loop(batch, c_in):
            g = ci // cig
            for i, lst in plan:
                xv = X[(n, ci) + i]
                for col in range(cog):
                    co = g * cog + col
                    for t, tg in lst:
                        _acc(GW, (ci, col) + t, xv * GT[(n, co) + tg])

    # backward bias: over every (cropped) output
    GB = None
    c_bb = None
    if bias:
        GB = _empty((out_channels,))
        with counting() as c_bb:
            for co in range(out_channels):
                for n in range(batch):
                    for o in np.ndindex(*out):
                        _acc(GB, co, GY[(n, co) + o])

    values = {
        "x": x,
        "w": w,
        "b": b,
        "gy": gy,
        "y": _to_float(Y),
        "gx": _to_float(GX),
        "gw": _to_float(GW),
        "gb": _to_float(GB) if bias else None,
    }
    return {
        "output_shape": (out_channels,) + out,
        "forward": c_fwd.as_dict(("mults", "adds")),
        "backward_input": c_bin.as_dict(("mults", "adds")),
        "backward_weight": c_bw.as_dict(("mults", "adds")),
        "backward_bias": c_bb.as_dict(("adds",)) if bias else None,
        "values": values,
    }


# ---------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------


def _pool_windows(spatial, kernel, stride, padding, dilation, out, mode):
    """Per output position, the positions of its window that exist, in scan order.

    exact: real input indices; dense: indices into the padded input (size L + 2p).
    """
    nd = len(spatial)
    taps = list(itertools.product(*(range(k) for k in kernel)))
    plan = []
    for o in np.ndindex(*out):
        lst = []
        for t in taps:
            pos = []
            for a in range(nd):
                q = o[a] * stride[a] + t[a] * dilation[a]
                if mode == "dense":
                    ok = 0 <= q < spatial[a] + 2 * padding[a]
                    idx = q
                else:
                    idx = q - padding[a]
                    ok = 0 <= idx < spatial[a]
                if not ok:
                    break
                pos.append(idx)
            else:
                lst.append(tuple(pos))
        plan.append((o, lst))
    return plan


def _pad_fill(X, padding, fill) -> np.ndarray:
    """Explicitly padded copy of X (N, C, *L) with Counted(fill) in the padding."""
    shape = X.shape[:2] + tuple(L + 2 * p for L, p in zip(X.shape[2:], padding))
    S = _empty(shape)
    for idx in np.ndindex(*shape):
        src = tuple(q - p for q, p in zip(idx[2:], padding))
        if all(0 <= s < L for s, L in zip(src, X.shape[2:])):
            S[idx] = X[idx[:2] + src]
        else:
            S[idx] = Counted(fill)
    return S


def _max_pool_run(S, plan, gy_shape, GY):
    """Forward (first max in scan order, strict '>' keeps the earliest) and routing."""
    batch, channels = S.shape[:2]
    Y = np.full(gy_shape, -math.inf)
    arg = {}
    with counting() as c_fwd:
        for n, c in _channel_loop(batch, channels):
            for o, lst in plan:
                if not lst:
                    continue
                best_pos = lst[0]
                best = S[(n, c) + best_pos]
                for pos in lst[1:]:
                    v = S[(n, c) + pos]
                    if v > best:
                        best, best_pos = v, pos
                Y[(n, c) + o] = best.v
                arg[(n, c) + o] = best_pos
    GS = _empty(S.shape)
    with counting() as c_bin:
        for (n, c, *o), pos in arg.items():
            _acc(GS, (n, c) + pos, GY[(n, c) + tuple(o)])
    return Y, GS, c_fwd, c_bin


def _make_pool_data(rng, shape, data):
    if isinstance(data, str):
        if data == "random":
            return rng.standard_normal(shape)
        if data == "ties":
            return rng.integers(0, 3, size=shape).astype(np.float64)
        raise ValueError(f"unknown data {data!r}")
    arr = np.asarray(data, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"data must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def max_pool_counts(
    input_shape,
    kernel,
    stride,
    padding,
    dilation,
    ceil_mode,
    batch,
    mode,
    seed=0,
    data="random",
):
    """Instrumented N-D max pool (PyTorch output size, symmetric per-axis padding).

    Per window with n existing elements, n - 1 comparisons (exact: real input only;
    dense: the -inf padded input of size L + 2p; positions beyond it do not exist).
    Backward routes gy to the first maximum in scan order.  ``data``: "random",
    "ties" (integers in {0, 1, 2}) or an explicit array of shape (N, C, *L).
    Random draws, in order: x (unless given), gy.  In dense mode gx is the padded
    input's gradient.
    """
    _check_mode(mode)
    channels, spatial = _split_shape(input_shape)
    nd = len(spatial)
    kernel = _tup(kernel, nd, "kernel")
    stride = kernel if stride is None else _tup(stride, nd, "stride")
    padding = _tup(padding, nd, "padding")
    dilation = _tup(dilation, nd, "dilation")
    out = tuple(
        _pool_out_size(L, k, s, p, d, ceil_mode)
        for L, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    )
    rng = np.random.default_rng(seed)
    x = _make_pool_data(rng, (batch, channels) + spatial, data)
    gy = rng.standard_normal((batch, channels) + out)
    X = _wrap(x)
    GY = _wrap(gy)
    S = _pad_fill(X, padding, -math.inf) if mode == "dense" else X
    plan = _pool_windows(spatial, kernel, stride, padding, dilation, out, mode)
    Y, GS, c_fwd, c_bin = _max_pool_run(S, plan, gy.shape, GY)
    return {
        "output_shape": (channels,) + out,
        "forward": c_fwd.as_dict(("compares",)),
        "backward_input": c_bin.as_dict(("adds",)),
        "values": {"x": x, "gy": gy, "y": Y, "gx": _to_float(GS)},
    }


def _min_hitting_set(windows) -> int:
    """Least number of positions hitting every window (brute force, increasing size)."""
    masks = set()
    for win in windows:
        mask = 0
        for p in win:
            mask |= 1 << p
        masks.add(mask)
    union = 0
    for m in masks:
        union |= m
    positions = [p for p in range(union.bit_length()) if union >> p & 1]
    if len(positions) > 24:
        raise ValueError("too many positions for a brute-force hitting set")
    masks = sorted(masks, key=lambda m: bin(m).count("1"))
    for size in range(len(positions) + 1):
        for combo in itertools.combinations(positions, size):
            chosen = 0
            for p in combo:
                chosen |= 1 << p
            if all(m & chosen for m in masks):
                return size
    raise AssertionError("unreachable")


def _worst_adds(windows_positions, grid_shape, batch, channels) -> int:
    nonempty = [lst for lst in windows_positions if lst]
    flat = [[int(np.ravel_multi_index(p, grid_shape)) for p in lst] for lst in nonempty]
    tau = _min_hitting_set(flat) if flat else 0
    return (len(nonempty) - tau) * batch * channels


def max_pool_worst_backward_adds(
    input_shape, kernel, stride, padding, dilation, ceil_mode, batch, mode
):
    """Worst case over inputs of the max-pool backward additions, by brute force:
    per channel, nonempty windows minus the minimum hitting set of their position sets
    (exact: real positions; dense: positions of the padded input), times N * C."""
    _check_mode(mode)
    channels, spatial = _split_shape(input_shape)
    nd = len(spatial)
    kernel = _tup(kernel, nd, "kernel")
    stride = kernel if stride is None else _tup(stride, nd, "stride")
    padding = _tup(padding, nd, "padding")
    dilation = _tup(dilation, nd, "dilation")
    out = tuple(
        _pool_out_size(L, k, s, p, d, ceil_mode)
        for L, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    )
    plan = _pool_windows(spatial, kernel, stride, padding, dilation, out, mode)
    grid = tuple(L + 2 * p for L, p in zip(spatial, padding)) if mode == "dense" else spatial
    return _worst_adds([lst for _, lst in plan], grid, batch, channels)


def _avg_pool_run(S, plan, divisors, gy_shape, GY):
    batch, channels = S.shape[:2]
    Y = _empty(gy_shape)
    with counting() as c_fwd:
        for n, c in _channel_loop(batch, channels):
            for (o, lst), div in zip(plan, divisors):
                total = _csum(S[(n, c) + pos] for pos in lst)
                if total is not None:
                    Y[(n, c) + o] = total / div
    GS = _empty(S.shape)
    with counting() as c_bin:
        for n, c in _channel_loop(batch, channels):
            for (o, lst), div in zip(plan, divisors):
                if not lst:
                    continue
                g = GY[(n, c) + o] / div
                for pos in lst:
                    _acc(GS, (n, c) + pos, g)
    return Y, GS, c_fwd, c_bin


def avg_pool_counts(
    input_shape,
    kernel,
    stride,
    padding,
    ceil_mode,
    count_include_pad,
    divisor_override,
    batch,
    mode,
    seed=0,
):
    """Instrumented N-D average pool (PyTorch output size and divisor).

    Per window with n summed elements (exact: real ones; dense: positions of the zero
    padded input, L + 2p), n - 1 additions and 1 division; backward 1 division per
    nonempty window then r - 1 additions per entry receiving r terms.  Divisor:
    divisor_override, else (count_include_pad) the window positions inside the padded
    input, else the real elements.  Random draws, in order: x, gy.  In dense mode gx is
    the padded input's gradient.
    """
    _check_mode(mode)
    channels, spatial = _split_shape(input_shape)
    nd = len(spatial)
    kernel = _tup(kernel, nd, "kernel")
    stride = kernel if stride is None else _tup(stride, nd, "stride")
    padding = _tup(padding, nd, "padding")
    ones = (1,) * nd
    out = tuple(
        _pool_out_size(L, k, s, p, 1, ceil_mode)
        for L, k, s, p in zip(spatial, kernel, stride, padding)
    )
    plan = _pool_windows(spatial, kernel, stride, padding, ones, out, mode)
    divisors = []
    for o, _ in plan:
        pool_size = 1
        real = 1
        for a in range(nd):
            start = o[a] * stride[a] - padding[a]
            end = min(start + kernel[a], spatial[a] + padding[a])
            pool_size *= end - start
            real *= max(min(end, spatial[a]) - max(start, 0), 0)
        if divisor_override:
            divisors.append(int(divisor_override))
        else:
            divisors.append(pool_size if count_include_pad else real)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels) + spatial)
    gy = rng.standard_normal((batch, channels) + out)
    X = _wrap(x)
    GY = _wrap(gy)
    S = _pad_fill(X, padding, 0.0) if mode == "dense" else X
    Y, GS, c_fwd, c_bin = _avg_pool_run(S, plan, divisors, gy.shape, GY)
    return {
        "output_shape": (channels,) + out,
        "forward": c_fwd.as_dict(("adds", "divides")),
        "backward_input": c_bin.as_dict(("adds", "divides")),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GS)},
    }


def _adaptive_windows(spatial, output_size):
    per_axis = []
    for length, n_out in zip(spatial, output_size):
        axis = []
        for i in range(n_out):
            start = (i * length) // n_out
            end = -((-(i + 1) * length) // n_out)
            axis.append(range(start, end))
        per_axis.append(axis)
    plan = []
    for o in np.ndindex(*output_size):
        ranges = [per_axis[a][o[a]] for a in range(len(spatial))]
        plan.append((o, list(itertools.product(*ranges))))
    return plan


def adaptive_pool_counts(kind, input_shape, output_size, batch, seed=0, data="random"):
    """Instrumented adaptive max / avg pool with PyTorch's windows
    start = floor(i*L/O), end = ceil((i+1)*L/O).  Max: forward compares, backward adds
    (first max in scan order).  Avg: as avg pool with divisor = window size.
    Random draws, in order: x (unless ``data`` is given, max only), gy."""
    channels, spatial = _split_shape(input_shape)
    nd = len(spatial)
    output_size = _tup(output_size, nd, "output_size")
    plan = _adaptive_windows(spatial, output_size)
    rng = np.random.default_rng(seed)
    if kind == "max":
        x = _make_pool_data(rng, (batch, channels) + spatial, data)
    elif kind == "avg":
        x = rng.standard_normal((batch, channels) + spatial)
    else:
        raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
    gy = rng.standard_normal((batch, channels) + output_size)
    X = _wrap(x)
    GY = _wrap(gy)
    if kind == "max":
        Y, GS, c_fwd, c_bin = _max_pool_run(X, plan, gy.shape, GY)
        fwd = c_fwd.as_dict(("compares",))
        bwd = c_bin.as_dict(("adds",))
        y = Y
    else:
        divisors = [len(lst) for _, lst in plan]
        Y, GS, c_fwd, c_bin = _avg_pool_run(X, plan, divisors, gy.shape, GY)
        fwd = c_fwd.as_dict(("adds", "divides"))
        bwd = c_bin.as_dict(("adds", "divides"))
        y = _to_float(Y)
    return {
        "output_shape": (channels,) + output_size,
        "forward": fwd,
        "backward_input": bwd,
        "values": {"x": x, "gy": gy, "y": y, "gx": _to_float(GS)},
    }


def adaptive_max_worst_backward_adds(input_shape, output_size, batch):
    """Brute-force worst case of the adaptive max-pool backward additions."""
    channels, spatial = _split_shape(input_shape)
    output_size = _tup(output_size, len(spatial), "output_size")
    plan = _adaptive_windows(spatial, output_size)
    return _worst_adds([lst for _, lst in plan], spatial, batch, channels)


# ---------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------


def linear_counts(input_shape, out_features, bias, batch, seed=0):
    """Instrumented linear layer y = x W^T + b on input (N, *lead, in_features).
    Random draws, in order: x, W (out, in), b, gy."""
    shape = tuple(int(v) for v in input_shape)
    lead, fin = shape[:-1], shape[-1]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + lead + (fin,))
    w = rng.standard_normal((out_features, fin))
    b = rng.standard_normal(out_features) if bias else None
    gy = rng.standard_normal((batch,) + lead + (out_features,))
    X, W, GY = _wrap(x), _wrap(w), _wrap(gy)
    B = _wrap(b) if bias else None
    rows = list(np.ndindex(*((batch,) + lead)))

    Y = _empty(gy.shape)
    with counting() as c_fwd:
        for r in rows:
            for o in range(out_features):
                acc = _csum(X[r + (i,)] * W[o, i] for i in range(fin))
                if bias:
                    acc = B[o] if acc is None else acc + B[o]
                Y[r + (o,)] = acc
    GX = _empty(x.shape)
    with counting() as c_bin:
        for r in rows:
            for i in range(fin):
                GX[r + (i,)] = _csum(GY[r + (o,)] * W[o, i] for o in range(out_features))
    GW = _empty(w.shape)
    with counting() as c_bw:
        for o in range(out_features):
            for i in range(fin):
                GW[o, i] = _csum(GY[r + (o,)] * X[r + (i,)] for r in rows)
    GB = None
    c_bb = None
    if bias:
        GB = _empty((out_features,))
        with counting() as c_bb:
            for o in range(out_features):
                GB[o] = _csum(GY[r + (o,)] for r in rows)
    return {
        "output_shape": lead + (out_features,),
        "forward": c_fwd.as_dict(("mults", "adds")),
        "backward_input": c_bin.as_dict(("mults", "adds")),
        "backward_weight": c_bw.as_dict(("mults", "adds")),
        "backward_bias": c_bb.as_dict(("adds",)) if bias else None,
        "values": {
            "x": x,
            "w": w,
            "b": b,
            "gy": gy,
            "y": _to_float(Y),
            "gx": _to_float(GX),
            "gw": _to_float(GW),
            "gb": _to_float(GB) if bias else None,
        },
    }


# ---------------------------------------------------------------------------------------
# Normalisation, activations, structural
# ---------------------------------------------------------------------------------------


def batchnorm_counts(input_shape, affine, batch, seed=0, eps=1e-5):
    """Instrumented training-mode BatchNorm (biased variance, no running statistics): the
    normalisation of a group per channel over the batch and spatial axes, with gamma and beta per
    channel when affine (``normalization_counts``, same draws). backward_weight /
    backward_bias are None without affine."""
    return normalization_counts(input_shape, batch, "batch", affine, affine, seed=seed, eps=eps)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _act_forward(name, x, slope):
    zero = Counted(0.0)
    if name == "relu":
        return x if x > 0.0 else zero
    if name == "relu6":
        a = x if x > 0.0 else zero
        return a if a < 6.0 else Counted(6.0)
    if name == "leaky_relu":
        positive = x > 0.0
        scaled = x * slope
        return x if positive else scaled
    if name == "sigmoid":
        return 1.0 / (1.0 + c_exp(-x))
    if name == "tanh":
        return c_tanh(x)
    if name == "silu":
        return x / (1.0 + c_exp(-x))
    if name == "gelu":
        return 0.5 * x * (1.0 + c_erf(x * _INV_SQRT2))
    if name in ("hardsigmoid", "hardswish"):
        shifted = x + 3.0
        low = shifted if shifted > 0.0 else zero
        clipped = low if low < 6.0 else Counted(6.0)
        return clipped / 6.0 if name == "hardsigmoid" else x * clipped / 6.0
    raise ValueError(f"unknown activation {name!r}")


def _act_backward(name, x, y, gy, slope):
    zero = Counted(0.0)
    if name == "relu":
        return gy if x > 0.0 else zero
    if name == "relu6":
        above = x > 0.0
        below = x < 6.0
        return gy if (above and below) else zero
    if name == "leaky_relu":
        positive = x > 0.0
        scaled = gy * slope
        return gy if positive else scaled
    if name == "sigmoid":
        return gy * y * (1.0 - y)
    if name == "tanh":
        return gy * (1.0 - y * y)
    if name == "silu":
        s = 1.0 / (1.0 + c_exp(-x))
        return gy * (s * (1.0 + x * (1.0 - s)))
    if name == "gelu":
        cdf = 0.5 * (1.0 + c_erf(x * _INV_SQRT2))
        pdf = c_exp(x * x * -0.5) * _INV_SQRT_2PI
        return gy * (cdf + x * pdf)
    if name == "hardsigmoid":
        above = x > -3.0
        below = x < 3.0
        share = gy / 6.0
        return share if (above and below) else zero
    if name == "hardswish":
        below = x < -3.0
        middle = x <= 3.0
        slope = (2.0 * x + 3.0) / 6.0 * gy
        return zero if below else (slope if middle else gy)
    raise ValueError(f"unknown activation {name!r}")


def activation_counts(name, input_shape, batch, negative_slope=0.01, seed=0):
    """Instrumented element-wise activation, branch-free per element (both sides of a
    selection are computed, e.g. LeakyReLU always computes slope * x).  Random draws, in
    order: x = 3 * standard normal (so ReLU6 sees values above 6), gy.  All count dicts
    carry every key of COUNT_KEYS."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    rng = np.random.default_rng(seed)
    x = 3.0 * rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    X, GY = _wrap(x), _wrap(gy)
    Y = _empty(shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*shape):
            Y[idx] = _act_forward(name, X[idx], negative_slope)
    GX = _empty(shape)
    with counting() as c_bin:
        for idx in np.ndindex(*shape):
            GX[idx] = _act_backward(name, X[idx], Y[idx], GY[idx], negative_slope)
    return {
        "output_shape": tuple(int(v) for v in input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GX)},
    }


def dropout_counts(input_shape, batch, p, seed=0, training=True):
    """Instrumented dropout: multiply by a precomputed mask of 0 or 1/(1-p) (building the
    mask is not counted).  Eval mode is an identity (free).  Random draws, in order:
    x, gy, the keep draws (uniform >= p keeps)."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    keep = rng.random(shape) >= p
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    mask = np.where(keep, scale, 0.0)
    X, GY = _wrap(x), _wrap(gy)
    Y = _empty(shape)
    GX = _empty(shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*shape):
            Y[idx] = X[idx] * float(mask[idx]) if training else X[idx]
    with counting() as c_bin:
        for idx in np.ndindex(*shape):
            GX[idx] = GY[idx] * float(mask[idx]) if training else GY[idx]
    return {
        "output_shape": tuple(int(v) for v in input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {
            "x": x,
            "gy": gy,
            "mask": mask if training else np.ones(shape),
            "y": _to_float(Y),
            "gx": _to_float(GX),
        },
    }


def add_counts(input_shape, n_inputs, batch, seed=0):
    """Instrumented element-wise add of k inputs: k - 1 additions per element; backward
    passes gy on unchanged to every input (free).  Random draws: the k inputs, gy."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape) for _ in range(n_inputs)]
    gy = rng.standard_normal(shape)
    XS = [_wrap(a) for a in xs]
    GY = _wrap(gy)
    Y = _empty(shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*shape):
            Y[idx] = _csum(X[idx] for X in XS)
    grads = []
    with counting() as c_bin:
        for _ in range(n_inputs):
            G = _empty(shape)
            for idx in np.ndindex(*shape):
                G[idx] = GY[idx]  # passed on unchanged: a copy
            grads.append(_to_float(G))
    return {
        "output_shape": tuple(int(v) for v in input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"xs": xs, "gy": gy, "y": _to_float(Y), "gxs": grads},
    }


def normalization_counts(
    input_shape, batch, kind, affine=True, bias=True, groups=1, normalized_ndim=1, seed=0, eps=1e-5
):
    """Instrumented normalisation in training mode (biased variance, no running statistics):
    each group of values is centred by its mean and scaled by 1/sqrt(var + eps), then by the
    affine gamma (and + beta with ``bias``). ``kind`` picks the groups and the affine entries:

    * ``batch``: a group per channel, over the batch and spatial axes; gamma per channel;
    * ``instance``: a group per image and channel, over the spatial axes; gamma per channel;
    * ``group``: a group per image and group of ``C / groups`` channels, over those channels
      and the spatial axes; gamma per channel;
    * ``layer``: a group per image and leading index, over the last ``normalized_ndim`` axes;
      gamma per entry of those axes.

    Random draws, in order: x (N, *input_shape), gamma, beta (when affine), gy.
    backward_weight / backward_bias are None without them. All count dicts carry every key."""
    shape = tuple(int(v) for v in input_shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + shape)
    param_shape = shape[len(shape) - normalized_ndim :] if kind == "layer" else (shape[0],)
    gamma = rng.standard_normal(param_shape) if affine else None
    beta = rng.standard_normal(param_shape) if affine and bias else None
    gy = rng.standard_normal(x.shape)
    X, GY = _wrap(x), _wrap(gy)
    G = _wrap(gamma) if affine else None
    Bt = _wrap(beta) if beta is not None else None

    def param(idx):  # the affine entry of element idx (batch included)
        return idx[len(idx) - normalized_ndim :] if kind == "layer" else (idx[1],)

    members = {}
    for idx in np.ndindex(*x.shape):
        if kind == "batch":
            key = (idx[1],)
        elif kind == "instance":
            key = idx[:2]
        elif kind == "group":
            key = (idx[0], idx[1] // (shape[0] // groups))
        else:
            key = idx[: len(idx) - normalized_ndim]
        members.setdefault(key, []).append(idx)

    Y = _empty(x.shape)
    saved = {}
    with counting() as c_fwd:
        for key, idxs in members.items():
            m = len(idxs)
            mean = _csum(X[i] for i in idxs) / m
            cen = [X[i] - mean for i in idxs]
            var = _csum(cv * cv for cv in cen) / m
            inv = 1.0 / c_sqrt(var + eps)
            xhat = [cv * inv for cv in cen]
            for i, xh in zip(idxs, xhat):
                y = xh * G[param(i)] if affine else xh
                Y[i] = y + Bt[param(i)] if Bt is not None else y
            saved[key] = (idxs, xhat, inv)

    GX = _empty(x.shape)
    with counting() as c_bin:
        for idxs, xhat, inv in saved.values():
            m = len(idxs)
            gxhat = [GY[i] * G[param(i)] for i in idxs] if affine else [GY[i] for i in idxs]
            s1 = _csum(gxhat)
            s2 = _csum(gh * xh for gh, xh in zip(gxhat, xhat))
            coef = inv / m
            for i, gh, xh in zip(idxs, gxhat, xhat):
                GX[i] = coef * ((m * gh - s1) - xh * s2)

    xhats = {i: xh for idxs, xhat, _ in saved.values() for i, xh in zip(idxs, xhat)}
    by_param = {}
    for idx in np.ndindex(*x.shape):
        by_param.setdefault(param(idx), []).append(idx)
    result = {
        "output_shape": shape,
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "backward_weight": None,
        "backward_bias": None,
    }
    values = {
        "x": x,
        "gamma": gamma,
        "beta": beta,
        "gy": gy,
        "y": _to_float(Y),
        "gx": _to_float(GX),
        "gw": None,
        "gb": None,
    }
    if affine:
        GW = _empty(param_shape)
        with counting() as c_bw:
            for p, idxs in by_param.items():
                GW[p] = _csum(GY[i] * xhats[i] for i in idxs)
        result["backward_weight"] = c_bw.as_dict()
        values["gw"] = _to_float(GW)
    if Bt is not None:
        GB = _empty(param_shape)
        with counting() as c_bb:
            for p, idxs in by_param.items():
                GB[p] = _csum(GY[i] for i in idxs)
        result["backward_bias"] = c_bb.as_dict()
        values["gb"] = _to_float(GB)
    result["values"] = values
    return result


def mul_counts(shape_a, shape_b, batch, seed=0):
    """Instrumented broadcasting product of two inputs of one rank (each axis equal or 1):
    one multiplication per output element; the backward multiplies the upstream gradient by the
    other input and sums it over the axes the input was repeated along. Random draws, in
    order: a, b, gy."""
    out = tuple(max(p, q) for p, q in zip(shape_a, shape_b))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch,) + tuple(shape_a))
    b = rng.standard_normal((batch,) + tuple(shape_b))
    gy = rng.standard_normal((batch,) + out)
    A, B, GY = _wrap(a), _wrap(b), _wrap(gy)

    def source(idx, shape):
        return (idx[0],) + tuple(0 if s == 1 else i for i, s in zip(idx[1:], shape))

    Y = _empty(gy.shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*gy.shape):
            Y[idx] = A[source(idx, shape_a)] * B[source(idx, shape_b)]
    with counting() as c_bin:
        for mine, other, shape in ((A, B, shape_b), (B, A, shape_a)):
            own = shape_a if mine is A else shape_b
            sums = {}
            for idx in np.ndindex(*gy.shape):
                sums.setdefault(source(idx, own), []).append(GY[idx] * other[source(idx, shape)])
            for terms in sums.values():
                _csum(terms)
    return {
        "output_shape": out,
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"a": a, "b": b, "gy": gy, "y": _to_float(Y)},
    }


def sum_counts(input_shape, dims, keepdim, batch, seed=0):
    """Instrumented sum over ``dims``: each output sums its n values; the backward copies each
    upstream gradient to the n inputs (free)."""
    return mean_counts(input_shape, dims, keepdim, batch, seed, divide=False)


def mean_counts(input_shape, dims, keepdim, batch, seed=0, divide=True):
    """Instrumented mean over ``dims`` (PyTorch numbering, batch = 0): each mean sums its n
    values and divides once; the backward divides each upstream gradient by n once and copies
    it to the n inputs. Random draws, in order: x, gy."""
    shape = tuple(int(v) for v in input_shape)
    axes = sorted((d + len(shape) + 1 if d < 0 else d) for d in dims)
    out = tuple(
        1 if a + 1 in axes else v for a, v in enumerate(shape) if keepdim or a + 1 not in axes
    )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + shape)
    gy = rng.standard_normal((batch,) + out)
    X, GY = _wrap(x), _wrap(gy)
    groups = {}
    for idx in np.ndindex(*x.shape):
        kept = tuple(0 if a in axes else v for a, v in enumerate(idx) if keepdim or a not in axes)
        groups.setdefault(kept, []).append(idx)
    Y = _empty(gy.shape)
    with counting() as c_fwd:
        for key, idxs in groups.items():
            total = _csum(X[i] for i in idxs)
            Y[key] = total / len(idxs) if divide else total
    GX = _empty(x.shape)
    with counting() as c_bin:
        for key, idxs in groups.items():
            share = GY[key] / len(idxs) if divide else GY[key]
            for i in idxs:
                GX[i] = share  # copied: free
    return {
        "output_shape": out,
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GX)},
    }


def moved_counts(move, shapes, batch, seed=0):
    """Instrumented data movement: ``move`` (reshape, transpose, take, concatenate, applied by
    NumPy to arrays of counting scalars) on random inputs of ``shapes``, and the same movement's
    adjoint on the upstream gradient (``move`` applied to it as ``move(*arrays, adjoint=gy)``
    must return the input gradients). Whatever arithmetic either performs is counted; moving
    values performs none. Random draws: each input, then gy."""
    rng = np.random.default_rng(seed)
    xs = [_wrap(rng.standard_normal((batch,) + tuple(s))) for s in shapes]
    with counting() as c_fwd:
        y = move(*xs)
    gy = _wrap(rng.standard_normal(y.shape))
    with counting() as c_bin:
        move(*xs, adjoint=gy)
    return {
        "output_shape": tuple(y.shape[1:]),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
    }


# ---------------------------------------------------------------------------------------
# Softmax and padding (softmax, padding families)
# ---------------------------------------------------------------------------------------


def c_log(x) -> Counted:
    _active.specials += 1
    return Counted(math.log(_v(x)))


def softmax_counts(input_shape, dim, log, batch, seed=0):
    """Instrumented numerically stable softmax (``log``: log-softmax) along ``dim`` (PyTorch
    numbering, batch = 0), row by row: the row's max by comparisons, x - max, exp, the sum,
    then a division per entry (log-softmax: one log of the sum and a subtraction per entry).
    Backward from the output y: softmax ``gx = y * (gy - sum(gy * y))``, log-softmax
    ``gx = gy - exp(y) * sum(gy)``. Random draws, in order: x, gy."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    axis = dim + len(shape) if dim < 0 else dim
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    X, GY = _wrap(x), _wrap(gy)
    rest = shape[:axis] + shape[axis + 1 :]
    rows = [
        [idx[:axis] + (i,) + idx[axis:] for i in range(shape[axis])] for idx in np.ndindex(*rest)
    ]
    Y = _empty(shape)
    with counting() as c_fwd:
        for row in rows:
            top = X[row[0]]
            for i in row[1:]:
                if X[i] > top:
                    top = X[i]
            z = [X[i] - top for i in row]
            if log:
                total = c_log(_csum(c_exp(v) for v in z))
                for i, v in zip(row, z):
                    Y[i] = v - total
            else:
                e = [c_exp(v) for v in z]
                total = _csum(e)
                for i, v in zip(row, e):
                    Y[i] = v / total
    GX = _empty(shape)
    with counting() as c_bin:
        for row in rows:
            if log:
                total = _csum(GY[i] for i in row)
                for i in row:
                    GX[i] = GY[i] - c_exp(Y[i]) * total
            else:
                total = _csum(GY[i] * Y[i] for i in row)
                for i in row:
                    GX[i] = Y[i] * (GY[i] - total)
    return {
        "output_shape": tuple(int(v) for v in input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GX)},
    }


def padding_counts(input_shape, pad, mode, batch, value=0.0, seed=0):
    """Instrumented F.pad: ``pad`` in PyTorch's order (the last axis's (before, after) first,
    negative entries crop), ``mode`` constant, reflect, replicate or circular. Each output entry
    is copied from its source entry or filled with ``value`` (no arithmetic); the backward
    accumulates each output gradient into its source entry (first term as is). Random draws,
    in order: x, gy."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    pairs = [(int(pad[2 * k]), int(pad[2 * k + 1])) for k in range(len(pad) // 2)]
    maps = [list(range(v)) for v in shape]
    for k, (before, after) in enumerate(pairs):
        a = len(shape) - 1 - k
        if mode == "circular":  # PyTorch crops first, then wraps around the cropped axis
            start = max(-before, 0)
            kept = shape[a] - start - max(-after, 0)
            m = _pad_map(kept, max(before, 0), max(after, 0), mode)
            maps[a] = [start + i for i in m]
            continue
        m = _pad_map(
            shape[a], max(before, 0), max(after, 0), "zeros" if mode == "constant" else mode
        )
        maps[a] = m[max(-before, 0) : len(m) - max(-after, 0)]
    out = tuple(len(m) for m in maps)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(out)
    X, GY = _wrap(x), _wrap(gy)
    Y = _empty(out)
    GX = _empty(shape)
    with counting() as c_fwd:
        for q in np.ndindex(*out):
            src = tuple(m[i] for m, i in zip(maps, q))
            Y[q] = Counted(value) if None in src else X[src]
    with counting() as c_bin:
        for q in np.ndindex(*out):
            src = tuple(m[i] for m, i in zip(maps, q))
            if None not in src:
                _acc(GX, src, GY[q])
    return {
        "output_shape": out[1:],
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GX)},
    }


# ---------------------------------------------------------------------------------------
# Matrix products and attention
# ---------------------------------------------------------------------------------------


def contraction_counts(labels, shape_a, shape_b, batch, alpha=1.0, beta=None, shape_c=None, seed=0):
    """Instrumented two-operand contraction (matmul, bmm, einsum; with ``beta`` baddbmm).
    ``labels`` = (a, b, out): one letter per per-sample axis of each; a label kept in the
    output may have size 1 in one operand (it broadcasts). Each output entry is the sum, over
    every value of the contracted labels, of a · b; then α · (when α != 1) and, when beta is
    not None and not 0, + β · c (β · c once per entry of c when β != 1). Backward: ε · α
    (when α != 1), then g_a and g_b accumulate one product per (output entry, contracted
    value); g_c sums ε over c's broadcast axes, then · β (when β != 1). Random draws, in
    order: a, b, c (with beta), gy."""
    la, lb, lo = labels
    sizes = {}
    for ls, shape in ((la, shape_a), (lb, shape_b)):
        for x, v in zip(ls, shape):
            sizes[x] = max(sizes.get(x, 1), v)
    out = tuple(sizes[x] for x in lo)
    summed = sorted((set(la) | set(lb)) - set(lo))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch,) + tuple(shape_a))
    b = rng.standard_normal((batch,) + tuple(shape_b))
    c = rng.standard_normal((batch,) + tuple(shape_c)) if beta is not None else None
    gy = rng.standard_normal((batch,) + out)
    A, B, GY = _wrap(a), _wrap(b), _wrap(gy)

    def at(ls, shape, n, where):
        return (n,) + tuple(0 if s == 1 else where[x] for x, s in zip(ls, shape))

    def c_at(idx):
        return (idx[0],) + tuple(0 if s == 1 else i for i, s in zip(idx[1:], shape_c))

    def tuples():
        for n in range(batch):
            for o in np.ndindex(*out):
                where = dict(zip(lo, o))
                for t in np.ndindex(*(sizes[x] for x in summed)):
                    yield (n,) + o, {**where, **dict(zip(summed, t))}

    Y = _empty(gy.shape)
    with counting() as c_fwd:
        for o_idx, where in tuples():
            n = o_idx[0]
            _acc(Y, o_idx, A[at(la, shape_a, n, where)] * B[at(lb, shape_b, n, where)])
        if alpha != 1:
            for idx in np.ndindex(*Y.shape):
                Y[idx] = alpha * Y[idx]
        if beta is not None and beta != 0:
            C = _wrap(c)
            if beta != 1:
                for idx in np.ndindex(*C.shape):
                    C[idx] = beta * C[idx]
            for idx in np.ndindex(*Y.shape):
                Y[idx] = Y[idx] + C[c_at(idx)]
    GA, GB = _empty(a.shape), _empty(b.shape)
    with counting() as c_bin:
        G = GY
        if alpha != 1:
            G = _empty(gy.shape)
            for idx in np.ndindex(*gy.shape):
                G[idx] = GY[idx] * alpha
        for o_idx, where in tuples():
            n = o_idx[0]
            _acc(GA, at(la, shape_a, n, where), G[o_idx] * B[at(lb, shape_b, n, where)])
            _acc(GB, at(lb, shape_b, n, where), G[o_idx] * A[at(la, shape_a, n, where)])
        if beta is not None and beta != 0:
            GC = _empty(c.shape)
            for idx in np.ndindex(*gy.shape):
                _acc(GC, c_at(idx), GY[idx])
            if beta != 1:
                for idx in np.ndindex(*GC.shape):
                    GC[idx] = GC[idx] * beta
    return {
        "output_shape": out,
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"a": a, "b": b, "c": c, "gy": gy, "y": _to_float(Y), "ga": _to_float(GA)},
    }


def attention_counts(
    q_shape, k_shape, v_shape, batch, mode, mask=None, is_causal=False, scale=None, seed=0
):
    """Instrumented scaled dot-product attention, per head (the leading per-sample axes) and
    per batch item, for q (L, E), k (S, E), v (S, Ev): scores s = Σ_d q·k, times scale, + a
    float ``mask`` (an (L, S) array) or, for a boolean one (or is_causal), masked scores
    replaced by -inf (a free selection); a stable softmax over each row (max by comparisons,
    minus the max, exp, sum, divide); y = Σ_j p·v. In ``exact`` mode a score the causal mask
    removes is never computed (its row is shorter); in ``dense`` every score is. Backward:
    g_v = Σ_i p·ε, g_p = Σ_e ε·v, g_s = p·(g_p − Σ_j p·g_p), g_s·scale, g_q = Σ_j g_s·k,
    g_k = Σ_i g_s·q, over the computed scores only. Random draws, in order: q, k, v, gy."""
    _check_mode(mode)
    *heads, L, E = q_shape
    S, Ev = k_shape[-2], v_shape[-1]
    factor = 1 / math.sqrt(E) if scale is None else scale
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch,) + tuple(q_shape))
    k = rng.standard_normal((batch,) + tuple(k_shape))
    v = rng.standard_normal((batch,) + tuple(v_shape))
    gy = rng.standard_normal((batch,) + tuple(heads) + (L, Ev))
    Q, K, V, GY = _wrap(q), _wrap(k), _wrap(v), _wrap(gy)
    kept = mask.dtype == bool if mask is not None else False

    def computed(i, j):
        return not (is_causal and mode == "exact" and j > i)

    def masked(i, j):
        return (is_causal and j > i) or (kept and not mask[i, j])

    instances = [(n,) + h for n in range(batch) for h in np.ndindex(*heads)]
    Y, P = _empty(gy.shape), {}
    with counting() as c_fwd:
        for g in instances:
            for i in range(L):
                row = {}
                for j in range(S):
                    if not computed(i, j):
                        continue
                    s = _csum(Q[g + (i, d)] * K[g + (j, d)] for d in range(E)) * factor
                    if mask is not None and not kept:
                        s = s + float(mask[i, j])
                    row[j] = Counted(-math.inf) if masked(i, j) else s
                top = None
                for s in row.values():
                    top = s if top is None or s > top else top
                ex = {j: c_exp(s - top) for j, s in row.items()}
                total = _csum(ex.values())
                P[g + (i,)] = {j: e / total for j, e in ex.items()}
                for e in range(Ev):
                    Y[g + (i, e)] = _csum(p * V[g + (j, e)] for j, p in P[g + (i,)].items())
    GQ, GK, GV = _empty(q.shape), _empty(k.shape), _empty(v.shape)
    with counting() as c_bin:
        for g in instances:
            for i in range(L):
                row = P[g + (i,)]
                for j, p in row.items():
                    for e in range(Ev):
                        _acc(GV, g + (j, e), p * GY[g + (i, e)])
                gp = {j: _csum(GY[g + (i, e)] * V[g + (j, e)] for e in range(Ev)) for j in row}
                dot = _csum(row[j] * gp[j] for j in row)
                gs = {j: row[j] * (gp[j] - dot) * factor for j in row}
                for d in range(E):
                    GQ[g + (i, d)] = _csum(gs[j] * K[g + (j, d)] for j in row)
                for j in row:
                    for d in range(E):
                        _acc(GK, g + (j, d), gs[j] * Q[g + (i, d)])
    return {
        "output_shape": tuple(heads) + (L, Ev),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"q": q, "k": k, "v": v, "gy": gy, "y": _to_float(Y), "gq": _to_float(GQ)},
    }


# ---------------------------------------------------------------------------------------
# Arithmetic with a parameter read in forward (param_arith)
# ---------------------------------------------------------------------------------------


def _param_source(idx, param_shape):
    """The parameter entry that batched output entry ``idx`` reads: torch's broadcast, axes
    aligned on the right, an axis of size 1 repeated."""
    tail = idx[len(idx) - len(param_shape) :]
    return tuple(0 if s == 1 else i for i, s in zip(tail, param_shape))


def _param_binary_counts(op, input_shape, param_shape, batch, seed=0):
    shape = (batch,) + tuple(int(v) for v in input_shape)
    param_shape = tuple(int(v) for v in param_shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    p = rng.standard_normal(param_shape)
    gy = rng.standard_normal(shape)
    X, P, GY = _wrap(x), _wrap(p), _wrap(gy)
    Y = _empty(shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*shape):
            pv = P[_param_source(idx, param_shape)]
            Y[idx] = X[idx] * pv if op == "mul" else X[idx] + pv
    GX = _empty(shape)
    with counting() as c_bin:
        for idx in np.ndindex(*shape):
            # a product for mul; for add the gradient passes on unchanged (a copy)
            GX[idx] = GY[idx] * P[_param_source(idx, param_shape)] if op == "mul" else GY[idx]
    GP = _empty(param_shape)
    with counting() as c_bw:
        for idx in np.ndindex(*shape):
            term = GY[idx] * X[idx] if op == "mul" else GY[idx]
            _acc(GP, _param_source(idx, param_shape), term)
    return {
        "output_shape": tuple(int(v) for v in input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "backward_weight": c_bw.as_dict(),
        "values": {
            "x": x,
            "p": p,
            "gy": gy,
            "y": _to_float(Y),
            "gx": _to_float(GX),
            "gp": _to_float(GP),
        },
    }


def param_mul_counts(input_shape, param_shape, batch, seed=0):
    """Instrumented y = x * p, p one parameter of ``param_shape`` (its full torch shape)
    broadcast against every sample: one multiplication per output element; backward
    g_x = gy * p, and g_p sums gy * x over the entries that read each p entry. Random draws,
    in order: x, p, gy."""
    return _param_binary_counts("mul", input_shape, param_shape, batch, seed)


def param_add_counts(input_shape, param_shape, batch, seed=0):
    """Instrumented y = x + p, p one parameter broadcast against every sample: one addition
    per output element; backward g_x = gy (a copy), and g_p sums gy over the entries that read
    each p entry. Random draws, in order: x, p, gy."""
    return _param_binary_counts("add", input_shape, param_shape, batch, seed)


def param_concat_counts(input_shape, dim, pieces, batch, seed=0):
    """Instrumented concatenation of the input with parameter pieces along ``dim`` (PyTorch
    numbering, batch = 0); ``pieces`` holds "input" once and each parameter's per-sample shape,
    in order. Every sample copies each piece; backward: the input's part of gy is copied, and
    each parameter entry sums its N terms of gy. Random draws: x, each piece, gy."""
    shape = (batch,) + tuple(int(v) for v in input_shape)
    axis = dim + len(shape) if dim < 0 else dim
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    params = [rng.standard_normal(tuple(p)) for p in pieces if p != "input"]
    X, PS = _wrap(x), [_wrap(p) for p in params]
    with counting() as c_fwd:
        parts, given = [], iter(PS)
        for piece in pieces:
            if piece == "input":
                parts.append(X)
                continue
            P = next(given)
            part = _empty((batch,) + P.shape)
            for n in range(batch):
                for idx in np.ndindex(*P.shape):
                    part[(n, *idx)] = P[idx]  # a copy per sample
            parts.append(part)
        Y = np.concatenate(parts, axis=axis)
    gy = rng.standard_normal(Y.shape)
    GY = _wrap(gy)
    grads = []
    with counting() as c_bin:
        start = 0
        for piece in pieces:
            size = x.shape[axis] if piece == "input" else piece[axis - 1]
            if piece == "input":
                GX = np.take(GY, np.arange(start, start + size), axis=axis)  # a copy
            start += size
    with counting() as c_bw:
        start = 0
        for piece in pieces:
            size = x.shape[axis] if piece == "input" else piece[axis - 1]
            if piece != "input":
                part = np.take(GY, np.arange(start, start + size), axis=axis)
                G = _empty(tuple(piece))
                for idx in np.ndindex(*part.shape):
                    _acc(G, idx[1:], part[idx])
                grads.append(_to_float(G))
            start += size
    return {
        "output_shape": tuple(Y.shape[1:]),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "backward_weight": c_bw.as_dict(),
        "values": {
            "x": x,
            "params": params,
            "gy": gy,
            "y": _to_float(Y),
            "gx": _to_float(GX),
            "gps": grads,
        },
    }


# ---------------------------------------------------------------------------------------
# Interpolation (nn.Upsample / F.interpolate)
# ---------------------------------------------------------------------------------------


def _interp_axis_taps(length, out, factor, mode, align_corners, count):
    """Per output of one axis, the (input index, weight) taps it reads, with the source
    coordinate in exact rational arithmetic (PyTorch's rules, without float rounding).
    ``factor`` is the scale factor the kernel is given (None: it uses L/O)."""
    from fractions import Fraction

    half = Fraction(1, 2)
    s = 1 / Fraction(factor) if factor is not None else Fraction(length, out)
    taps = []
    for d in range(out):
        if mode in ("nearest", "nearest-exact"):
            offset = 0 if mode == "nearest" else half
            taps.append([(min(math.floor((d + offset) * s), length - 1), 1.0)])
            continue
        if out == length:  # PyTorch's shortcut: weights (1, 0) on input d twice
            i0 = i1 = d
            lam = Fraction(0)
        else:
            if align_corners:
                src = d * (Fraction(length - 1, out - 1) if out > 1 else Fraction(0))
            else:
                src = max(Fraction(0), (d + half) * s - half)
            i0 = min(math.floor(src), length - 1)
            lam = min(max(src - i0, Fraction(0)), Fraction(1))
            i1 = min(i0 + 1, length - 1)
        if count == "exact" and i0 == i1:
            taps.append([(i0, 1.0)])
        else:
            taps.append([(i0, float(1 - lam)), (i1, float(lam))])
    return taps


def interpolate_counts(
    input_shape,
    size,
    scale_factor,
    mode,
    align_corners,
    recompute_scale_factor,
    batch,
    count,
    seed=0,
):
    """Instrumented interpolation, literally: each output is the weighted sum of the corner
    taps it reads, ``sum_t W_t * x[i_t]`` with ``W_t`` the product of the per-axis weights
    (computed outside the count: they depend on the sizes only); an output of one tap is a
    copy. ``exact`` reads one tap along an axis where both neighbours coincide; ``dense`` always
    both. Backward: each tap scatters ``gy * W_t`` (a copy scatters gy) into its input entry,
    first term as is. Random draws, in order: x, gy."""
    _check_mode(count)
    channels, spatial = _split_shape(input_shape)
    nd = len(spatial)
    if size is not None:
        out = _tup(size, nd, "size")
        factors = (None,) * nd
    else:
        given = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * nd
        out = tuple(math.floor(float(L) * float(f)) for L, f in zip(spatial, given))
        factors = (None,) * nd if recompute_scale_factor else tuple(float(f) for f in given)
    axes = [
        _interp_axis_taps(L, o, f, mode, bool(align_corners), count)
        for L, o, f in zip(spatial, out, factors)
    ]
    plan = []
    for o in np.ndindex(*out):
        taps = []
        for combo in itertools.product(*(axes[a][o[a]] for a in range(nd))):
            index = tuple(i for i, _ in combo)
            weight = math.prod(wt for _, wt in combo)
            taps.append((index, weight))
        plan.append((o, taps))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels) + spatial)
    gy = rng.standard_normal((batch, channels) + out)
    X, GY = _wrap(x), _wrap(gy)
    Y = _empty(gy.shape)
    with counting() as c_fwd:
        for n, c in _channel_loop(batch, channels):
            for o, taps in plan:
                if len(taps) == 1:
                    Y[(n, c) + o] = X[(n, c) + taps[0][0]]  # a copy
                else:
                    Y[(n, c) + o] = _csum(X[(n, c) + i] * wt for i, wt in taps)
    GX = _empty(x.shape)
    with counting() as c_bin:
        for n, c in _channel_loop(batch, channels):
            for o, taps in plan:
                g = GY[(n, c) + o]
                for i, wt in taps:
                    _acc(GX, (n, c) + i, g if len(taps) == 1 else g * wt)
    return {
        "output_shape": (channels,) + out,
        "forward": c_fwd.as_dict(("mults", "adds")),
        "backward_input": c_bin.as_dict(("mults", "adds")),
        "values": {"x": x, "gy": gy, "y": _to_float(Y), "gx": _to_float(GX)},
    }


def scalar_counts(op, value, input_shape, batch, seed=0):
    """Instrumented ``x op value`` elementwise, and its input gradient (ε·c, ε/c, or ε passed
    on unchanged). Random draws, in order: x, gy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape))
    gy = rng.standard_normal((batch, *input_shape))
    X, GY = _wrap(x), _wrap(gy)
    c = Counted(value)
    Y, GX = _empty(x.shape), _empty(x.shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*x.shape):
            a = X[idx]
            if op == "mul":
                Y[idx] = a * c
            elif op == "add":
                Y[idx] = a + c
            elif op == "sub":
                Y[idx] = a - c
            else:
                Y[idx] = a / c
    with counting() as c_bin:
        for idx in np.ndindex(*x.shape):
            g = GY[idx]
            GX[idx] = g * c if op == "mul" else g / c if op == "div" else g
    return {
        "output_shape": tuple(input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "gy": gy, "y": _to_float(Y)},
    }


def sub_counts(input_shape, batch, seed=0):
    """Instrumented x − y: one subtraction (an add) per element; the backward passes ε to x
    and −ε to y (a change of sign, not counted, as ``Counted.__neg__``). Random draws: x, y,
    gy."""
    shape = (batch, *input_shape)
    rng = np.random.default_rng(seed)
    x, y, gy = (rng.standard_normal(shape) for _ in range(3))
    X, Y_, GY = _wrap(x), _wrap(y), _wrap(gy)
    out, gx, gyy = _empty(shape), _empty(shape), _empty(shape)
    with counting() as c_fwd:
        for idx in np.ndindex(*shape):
            out[idx] = X[idx] - Y_[idx]
    with counting() as c_bin:
        for idx in np.ndindex(*shape):
            gx[idx], gyy[idx] = GY[idx], -GY[idx]
    return {
        "output_shape": tuple(input_shape),
        "forward": c_fwd.as_dict(),
        "backward_input": c_bin.as_dict(),
        "values": {"x": x, "y": y, "gy": gy, "y_out": _to_float(out)},
    }
