"""The direct depthwise convolution: groups = C_in, each input channel c feeding its own m output
channels c·m, ..., c·m + m − 1 (a channel multiplier m = C_out / C_in).

im2col would run it as C_in tiny GEMMs with K = k taps. Here every pass is a sum over the k
kernel offsets t of the strided view ``xp[..., sl_t]`` that tap t reads (``tap_slices``):

    F:    y[n, c, j, o]     = Σ_t xp[n, c, o·s + t·d] · w[c, j, t]
    G_x:  g_xp[n, c, sl_t] += Σ_j dy[n, c, j, o] · w[c, j, t]            (for each t)
    G_w:  g_w[c, j, t]      = Σ_{n, o} xp[n, c, o·s + t·d] · dy[n, c, j, o]

The input is already padded (``im2col.pad``), so every padding mode works unchanged. The batch
is processed a chunk of images at a time, on the pool's threads, so each tap's temporary stays
in cache.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..geometry import Shape, prod, tap_slices
from .blockwise import run_parts

#: Bytes of output per batch chunk: small enough that a tap's temporary stays in cache.
DEPTHWISE_CHUNK_BYTES = 2 * 2**20


def _image_chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    step = max(1, min(n, DEPTHWISE_CHUNK_BYTES // max(1, bytes_per_image)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _run_chunks(
    work: Callable[[int, int, int], None], ranges: list[tuple[int, int]], nbytes: int
) -> None:
    """Runs ``work(index, n0, n1)`` on every batch chunk, shared among the pool's threads."""

    def part(lo: int, hi: int) -> None:
        for index in range(lo, hi):
            work(index, *ranges[index])

    run_parts(part, len(ranges), nbytes)


def depthwise_core(
    xp: np.ndarray,
    weight: np.ndarray,
    stride: Shape,
    dilation: Shape,
    out: Shape,
    dy: np.ndarray | None = None,
    want_y: bool = False,
    want_grads: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``conv_core`` for groups = C_in: the forward ``y`` of the padded input ``xp`` (if
    ``want_y``), and with ``dy`` (if ``want_grads``) the weight gradient and the gradient
    w.r.t. ``xp``."""
    n, c = xp.shape[:2]
    c_out, _, *kernel = weight.shape
    m = c_out // c
    dtype = xp.dtype
    spatial = len(out)
    taps = tap_slices(tuple(kernel), stride, dilation, out)
    # w[c, j, t] as (C, m, 1, ..., 1) per tap, to broadcast against (n, C, m, *out).
    w = weight.reshape(c, m, prod(kernel))
    w_taps = [w[:, :, i].reshape(c, m, *(1,) * spatial) for i in range(len(taps))]
    every = slice(None)
    # The input's channel axis gains a length-1 axis for the multiplier j.
    views = [(every, every, None, *sl) for _, sl in taps]
    chunks = _image_chunks(n, c_out * prod(out) * dtype.itemsize)
    nbytes = n * c_out * prod(out) * dtype.itemsize

    y = None
    if want_y:
        y = np.empty((n, c, m, *out), dtype)

        def forward(_: int, n0: int, n1: int) -> None:
            chunk = xp[n0:n1]
            y_chunk = y[n0:n1]
            product = np.empty_like(y_chunk)
            np.multiply(chunk[views[0]], w_taps[0], out=y_chunk)
            for view, w_t in zip(views[1:], w_taps[1:]):
                np.multiply(chunk[view], w_t, out=product)
                y_chunk += product

        _run_chunks(forward, chunks, nbytes)
        y = y.reshape(n, c_out, *out)

    gw = gxp = None
    if want_grads:
        assert dy is not None
        dy_split = dy.reshape(n, c, m, *out)
        gxp = np.zeros_like(xp)
        # each chunk's weight gradient, summed after: threads never add into one array
        gw_parts = np.zeros((len(chunks), c, m, len(taps)), dtype)
        reduce_axes = (0, *range(3, 3 + spatial))

        def backward(index: int, n0: int, n1: int) -> None:
            chunk, dy_chunk, gxp_chunk = xp[n0:n1], dy_split[n0:n1], gxp[n0:n1]
            product = np.empty_like(dy_chunk)
            for i, (view, w_t) in enumerate(zip(views, w_taps)):
                np.multiply(chunk[view], dy_chunk, out=product)
                gw_parts[index, :, :, i] = product.sum(axis=reduce_axes)
                np.multiply(dy_chunk, w_t, out=product)
                # Σ_j over the multiplier; with m = 1 that is the product itself
                target = gxp_chunk[view]
                np.add(target, product if m == 1 else product.sum(2, keepdims=True), out=target)

        _run_chunks(backward, chunks, nbytes)
        gw = gw_parts.sum(axis=0).reshape(weight.shape)
    return y, gw, gxp
