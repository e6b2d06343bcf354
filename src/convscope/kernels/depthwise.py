"""The direct depthwise convolution: groups = C_in, each input channel c feeding its own m output
channels c·m, ..., c·m + m − 1 (a channel multiplier m = C_out / C_in).

im2col would run it as C_in tiny GEMMs with K = k taps. Here every pass is a sum over the k
kernel offsets t of the strided view ``xp[..., sl_t]`` that tap t reads (``tap_slices``):

    F:    y[n, c, j, o]     = Σ_t xp[n, c, o·s + t·d] · w[c, j, t]
    G_x:  g_xp[n, c, sl_t] += Σ_j dy[n, c, j, o] · w[c, j, t]            (for each t)
    G_w:  g_w[c, j, t]      = Σ_{n, o} xp[n, c, o·s + t·d] · dy[n, c, j, o]

Zero padding is read in place, as im2col reads it (``clipped_taps``): each tap touches only
the box of outputs whose input is real. Other padding modes pass an already padded input
(``im2col.pad``). The batch is processed a chunk of images at a time, on the pool's threads,
so each tap's temporary stays in cache.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..geometry import PadPairs, Shape, prod
from .blockwise import run_parts
from .im2col import clipped_taps

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
    x: np.ndarray,
    weight: np.ndarray,
    stride: Shape,
    dilation: Shape,
    out: Shape,
    dy: np.ndarray | None = None,
    want_y: bool = False,
    want_grads: bool = False,
    pads: PadPairs | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``conv_core`` for groups = C_in: the forward ``y`` of ``x`` read as zero-padded by
    ``pads`` (none by default) (if ``want_y``), and with ``dy`` (if ``want_grads``) the weight
    gradient and the gradient w.r.t. ``x``."""
    n, c = x.shape[:2]
    c_out, _, *kernel = weight.shape
    m = c_out // c
    dtype = x.dtype
    spatial = len(out)
    pads = tuple(map(tuple, pads)) if pads else ((0, 0),) * spatial
    taps = clipped_taps(
        tuple(kernel), tuple(stride), tuple(dilation), tuple(out), pads, x.shape[2:]
    )
    # w[c, j, t] as (C, m, 1, ..., 1) per tap, to broadcast against (n, C, m, *out).
    w = weight.reshape(c, m, prod(kernel))
    w_taps = [w[:, :, i].reshape(c, m, *(1,) * spatial) for i in range(len(taps))]
    every = slice(None)
    # per tap with real input: the input view (the channel axis gains a length-1 axis for the
    # multiplier j), the output box it reaches, and the tap's weights
    reads = [
        ((every, every, None, *r), (every, every, every, *box), w_t)
        for (_, box, r, _), w_t in zip(taps, w_taps)
        if box is not None
    ]
    # a tap whose box is every output (the centre one, under "same" padding) starts the sum
    whole = [
        i
        for i, (_, box, _) in enumerate(reads)
        if all(b.start == 0 and b.stop == o for b, o in zip(box[3:], out))
    ]
    chunks = _image_chunks(n, c_out * prod(out) * dtype.itemsize)
    nbytes = n * c_out * prod(out) * dtype.itemsize

    y = None
    if want_y:
        y = np.empty((n, c, m, *out), dtype)

        def forward(_: int, n0: int, n1: int) -> None:
            chunk = x[n0:n1]
            y_chunk = y[n0:n1]
            product = np.empty_like(y_chunk)
            rest = reads
            if whole:  # that tap writes every output: no zeros needed
                view, _, w_t = reads[whole[0]]
                np.multiply(chunk[view], w_t, out=y_chunk)
                rest = reads[: whole[0]] + reads[whole[0] + 1 :]
            else:
                y_chunk[...] = 0
            for view, box, w_t in rest:
                part = product[box]
                np.multiply(chunk[view], w_t, out=part)
                y_chunk[box] += part

        _run_chunks(forward, chunks, nbytes)
        y = y.reshape(n, c_out, *out)

    gw = gx = None
    if want_grads:
        assert dy is not None
        dy_split = dy.reshape(n, c, m, *out)
        gx = np.zeros_like(x)
        # each chunk's weight gradient, summed after: threads never add into one array
        gw_parts = np.zeros((len(chunks), c, m, len(taps)), dtype)
        reduce_axes = (0, *range(3, 3 + spatial))
        tap_index = [i for i, (_, box, _, _) in enumerate(taps) if box is not None]

        def backward(index: int, n0: int, n1: int) -> None:
            chunk, dy_chunk, gx_chunk = x[n0:n1], dy_split[n0:n1], gx[n0:n1]
            product = np.empty_like(dy_chunk)
            for i, (view, box, w_t) in zip(tap_index, reads):
                dy_box, part = dy_chunk[box], product[box]
                np.multiply(chunk[view], dy_box, out=part)
                gw_parts[index, :, :, i] = part.sum(axis=reduce_axes)
                np.multiply(dy_box, w_t, out=part)
                # Σ_j over the multiplier; with m = 1 that is the product itself
                target = gx_chunk[view]
                np.add(target, part if m == 1 else part.sum(2, keepdims=True), out=target)

        _run_chunks(backward, chunks, nbytes)
        gw = gw_parts.sum(axis=0).reshape(weight.shape)
    return y, gw, gx
