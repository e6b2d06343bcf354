"""Normalisation kernels, one for every normalisation family: each group of values (the axes
``axes`` of an array, for every index of the others) is centred by its mean and scaled by
1/√(var + eps), with the biased variance; the backward is the same for every grouping.

With x̂ = (x − μ)·inv and g_x̂ the gradient w.r.t. x̂, over a group of m values:
``g_x = (inv / m)·(m·g_x̂ − Σ g_x̂ − x̂·Σ g_x̂·x̂)`` when the statistics are the group's own, and
``g_x = g_x̂·inv`` when they are constants (running statistics, at inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays import expect_shape, float_array, same_dtype
from ..errors import LayerConfigError, ShapeError
from ..geometry import Shape, prod
from .blockwise import run_parts

#: Bytes of a channel block: each thread runs all the steps of a pass on a few channels at a
#: time, so that the steps after the first read the block from cache instead of main memory.
CHANNEL_BLOCK_BYTES = 1 << 19


def run_channel_blocks(work: Any, x: np.ndarray) -> None:
    """Runs ``work(lo, hi)`` over cache-sized ranges of x's channels (axis 1), on the pool's
    threads."""
    channels = x.shape[1]
    step = max(1, CHANNEL_BLOCK_BYTES // max(1, x.nbytes // max(1, channels)))

    def part(lo: int, hi: int) -> None:
        for c0 in range(lo, hi, step):
            work(c0, min(hi, c0 + step))

    run_parts(part, channels, x.nbytes)


def moments(x: np.ndarray, axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the biased variance over ``axes`` (kept, for broadcasting)."""
    axes = tuple(axes)
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)


def normalize(
    x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """x̂ = (x − mean)·inv and inv = 1/√(var + eps)."""
    inv = 1 / np.sqrt(var + eps)
    return (x - mean) * inv, inv


def _total(a: np.ndarray) -> np.floating:
    """The sum of one channel's values (N, *spatial): each image's row first, where NumPy sums
    a contiguous row pairwise and fastest (measured 1.6× faster than a.sum())."""
    return a.reshape(a.shape[0], -1).sum(axis=1).sum()


def standardize(
    x: np.ndarray,
    axes: Sequence[int],
    eps: float,
    affine: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``moments`` then ``normalize`` with the group's own statistics, in three passes over x
    and two new arrays: (x̂, inv, mean, var, spare), ``spare`` an array of x's shape whose
    values are no longer needed (the squares the variance was summed from). With BatchNorm's
    axes and ``affine``, the per-channel vectors (γ, β or None), ``spare`` is y = γ·x̂ + β,
    computed while each channel's x̂ is still in cache."""
    axes = tuple(axes)
    assert 1 not in axes, "the channels are split among threads"
    kept = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    mean, var, inv = (np.empty(kept, x.dtype) for _ in range(3))
    xhat, spare = np.empty_like(x), np.empty_like(x)

    if axes == batch_axes(x):  # BatchNorm: one mean per channel, a scalar in each step
        m = x.size // x.shape[1]
        flat_mean, flat_var, flat_inv = mean.reshape(-1), var.reshape(-1), inv.reshape(-1)

        def one_channel(lo: int, hi: int) -> None:
            for c in range(lo, hi):
                xh, squares = xhat[:, c], spare[:, c]
                mu = _total(x[:, c]) / m
                np.subtract(x[:, c], mu, out=xh)
                np.square(xh, out=squares)
                v = _total(squares) / m
                iv = 1 / np.sqrt(v + eps)
                xh *= iv
                flat_mean[c], flat_var[c], flat_inv[c] = mu, v, iv
                if affine is not None:
                    gamma, beta = affine
                    np.multiply(xh, gamma[c], out=squares)
                    if beta is not None:
                        squares += beta[c]

        run_channel_blocks(one_channel, x)
        return xhat, inv, mean, var, spare

    def channels(lo: int, hi: int) -> None:
        part = (slice(None), slice(lo, hi))
        mean[part] = x[part].mean(axis=axes, keepdims=True)
        np.subtract(x[part], mean[part], out=xhat[part])
        np.square(xhat[part], out=spare[part])
        var[part] = spare[part].mean(axis=axes, keepdims=True)
        inv[part] = 1 / np.sqrt(var[part] + eps)
        xhat[part] *= inv[part]

    run_channel_blocks(channels, x)
    return xhat, inv, mean, var, spare


def _shared_gamma_input_gradient(
    grad_out: np.ndarray,
    xhat: np.ndarray,
    inv: np.ndarray,
    gamma: np.ndarray,
    axes: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g_x, Σ ε·x̂, Σ ε) when γ is constant over each statistics group (BatchNorm): then
    Σ g_x̂ = γ·Σ ε and Σ g_x̂·x̂ = γ·Σ ε·x̂ are γ's and β's gradients times γ, and
    ``g_x = γ·inv·(ε − mean(ε) − x̂·mean(ε·x̂))``: four passes, one new array."""
    m = prod(xhat.shape[a] for a in axes)
    grad_input = np.empty_like(xhat)
    sum_gx, sum_g = np.empty_like(inv), np.empty_like(inv)
    scale = np.ascontiguousarray(np.broadcast_to(gamma * inv, inv.shape))

    flat_gx, flat_g, flat_scale = sum_gx.reshape(-1), sum_g.reshape(-1), scale.reshape(-1)

    def channels(lo: int, hi: int) -> None:
        for c in range(lo, hi):  # per channel, so that every step's other operand is a scalar
            gx, g, xh = grad_input[:, c], grad_out[:, c], xhat[:, c]
            np.multiply(g, xh, out=gx)
            flat_gx[c], flat_g[c] = _total(gx), _total(g)
            np.multiply(xh, flat_gx[c] / m, out=gx)
            gx += flat_g[c] / m
            np.subtract(g, gx, out=gx)
            gx *= flat_scale[c]

    run_channel_blocks(channels, xhat)
    return grad_input, sum_gx, sum_g


def input_gradient(
    g_xhat: np.ndarray, xhat: np.ndarray, inv: np.ndarray, axes: Sequence[int], own: bool
) -> np.ndarray:
    """g_x from g_x̂: through the group's own statistics (``own``) or through constants."""
    if not own:
        return g_xhat * inv
    axes = tuple(axes)
    m = int(np.prod([g_xhat.shape[a] for a in axes]))
    if m == 0:  # an empty batch (BatchNorm's axes hold it): no values, no division by m
        return np.zeros_like(g_xhat)
    s1 = g_xhat.sum(axis=axes, keepdims=True)
    s2 = (g_xhat * xhat).sum(axis=axes, keepdims=True)
    return (inv / m) * (m * g_xhat - s1 - xhat * s2)


def affine_gradients(
    grad_out: np.ndarray, xhat: np.ndarray, axes: Sequence[int], bias: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """γ's and β's gradients: ε·x̂ and ε summed over ``axes`` (every axis but γ's)."""
    axes = tuple(axes)
    gamma = (grad_out * xhat).sum(axis=axes)
    return gamma, grad_out.sum(axis=axes) if bias else None


def update_running(running: np.ndarray, value: np.ndarray, momentum: float) -> None:
    """``running ← (1 − momentum)·running + momentum·value``, in place."""
    running *= 1 - momentum
    running += momentum * value


# -- the passes every normalisation family runs on ------------------------------------------------

Grads = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast against (N, C, *spatial)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def checked_vector(v: Any, name: str, shape: Shape, x: np.ndarray) -> np.ndarray | None:
    if v is None:
        return None
    v = float_array(v, name)
    expect_shape(v, shape, name, f"for an input of shape {x.shape}")
    return v


def scale_shift(xhat: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    y = xhat if weight is None else xhat * weight
    return y if bias is None else y + bias


def batch_axes(x: np.ndarray) -> tuple[int, ...]:
    """BatchNorm's statistics axes: all but the channels."""
    return (0, *range(2, x.ndim))


def channel_axes(x: np.ndarray, per_image: bool) -> tuple[int, ...]:
    """The axes a channel's statistics run over: the positions, and the batch for BatchNorm."""
    return tuple(range(2, x.ndim)) if per_image else batch_axes(x)


def enough_values(name: str, x: np.ndarray, per_image: bool) -> int:
    """The values each channel's statistics run over, which training needs more than one of."""
    m = prod(x.shape[a] for a in channel_axes(x, per_image))
    if m == 1:
        what = "spatial element" if per_image else "value per channel"
        raise ShapeError(
            f"Expected more than 1 {what} when training, got an input of shape {x.shape} ({name})"
        )
    return m


def channel_norm(
    name: str,
    x: np.ndarray,
    per_image: bool,
    running: tuple[Any, Any],
    affine: tuple[Any, Any],
    own: bool,
    momentum: float | None,
    eps: float,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, tuple[int, ...], bool]]:
    """BatchNorm (statistics per channel over the batch) and InstanceNorm (per image and
    channel) of ``x`` with the running (mean, var) and the affine (γ, β): the output and
    (x̂, inv, axes, own). With ``own`` the input's statistics, updating the running ones in place
    (the variance unbiased), as PyTorch; else the running ones."""
    c = (x.shape[1],)
    names = ("running_mean", "running_var", "weight", "bias")
    rm, rv, weight, bias = (checked_vector(v, n, c, x) for v, n in zip((*running, *affine), names))
    same_dtype(x=x, weight=weight, bias=bias, running_mean=rm, running_var=rv)
    if (rm is None) != (rv is None):
        raise ShapeError(f"{name} takes both running_mean and running_var, or neither")
    axes = channel_axes(x, per_image)
    fused = None  # (γ, β) when standardize writes y too
    if own and x.shape[0] == 0:
        # An empty batch (as PyTorch allows) has no statistics: nothing to normalise, and the
        # running ones stay as they are, as PyTorch's. Avoids NaN means of empty slices.
        kept = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
        mean, var = np.zeros(kept, x.dtype), np.ones(kept, x.dtype)
    elif own:
        m = enough_values(name, x, per_image)
        fused = None if per_image or weight is None else (weight, bias)
        xhat, inv, mean, var, spare = standardize(x, axes, eps, fused)
        if rm is not None and rv is not None:
            if momentum is None:
                raise LayerConfigError(
                    f"{name} needs a float momentum; the cumulative average (momentum=None) is "
                    "the module's, which counts the batches"
                )
            update_running(rm, mean.reshape(-1, c[0]).mean(axis=0), momentum)
            unbiased = var.reshape(-1, c[0]).mean(axis=0) * (m / (m - 1))
            update_running(rv, unbiased, momentum)
    else:
        if rm is None or rv is None:
            raise ShapeError(f"{name} in eval mode needs running_mean and running_var")
        mean, var = per_channel(rm, x.ndim), per_channel(rv, x.ndim)
    if not own or x.shape[0] == 0:
        xhat, inv = normalize(x, mean, var, eps)
        spare = None
    w, b = (None if v is None else per_channel(v, x.ndim) for v in (weight, bias))
    if spare is None or w is None:
        return scale_shift(xhat, w, b), (xhat, inv, axes, own)
    y = spare  # the squares are spent: their memory takes y
    if fused is not None:  # standardize has written it
        return y, (xhat, inv, axes, own)

    def channels(lo: int, hi: int) -> None:
        part = (slice(None), slice(lo, hi))
        np.multiply(xhat[part], w[part], out=y[part])
        if b is not None:
            y[part] += b[part]

    run_channel_blocks(channels, x)
    return y, (xhat, inv, axes, own)


def norm_backward(
    grad_out: Any,
    x: np.ndarray,
    saved: Any,
    gamma: np.ndarray | None,
    gamma_axes: Sequence[int],
    bias: bool,
) -> Grads:
    """The gradients of any normalisation from what its forward saved; ``gamma`` is γ shaped to
    broadcast against x (None without), ``gamma_axes`` the axes γ's gradient sums over."""
    xhat, inv, axes, own = saved
    grad_out = float_array(grad_out, "grad_out")
    expect_shape(grad_out, x.shape, "grad_out", "(the shape of x)")
    same_dtype(grad_out=grad_out, x=x)
    if own and gamma is not None and tuple(gamma_axes) == tuple(axes) and xhat.size:
        gx, gw, gb = _shared_gamma_input_gradient(grad_out, xhat, inv, gamma, tuple(axes))
        return gx, gw.reshape(-1), gb.reshape(-1) if bias else None
    g_xhat = (grad_out if gamma is None else grad_out * gamma).reshape(xhat.shape)
    grad_input = input_gradient(g_xhat, xhat, inv, axes, own).reshape(x.shape)
    if gamma is None:
        return grad_input, None, None
    gw, gb = affine_gradients(grad_out, xhat.reshape(x.shape), gamma_axes, bias)
    return grad_input, gw, gb
