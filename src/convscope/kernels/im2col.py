"""The im2col core that every convolution and transposed convolution runs on.

For each kernel offset t the strided slice of the padded input that tap t sees is copied into
a column buffer of layout (groups, C_in/g · K, N · P) (K taps, P output positions), so that the
forward, the weight gradient and the column gradient are each one (batched over groups) BLAS
matmul. The input gradient adds the column gradient back, one strided slice per kernel offset.

Zero padding is never materialised: each tap reads only the box of outputs whose input lies
inside the unpadded input (``clipped_taps``), and the rest of its columns are zeros. Other
padding modes (reflect, replicate, circular) pad a copy first (``pad``) and fold the gradient
back (``pad_backward``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..geometry import PadPairs, Shape, prod, tap_slices
from .blockwise import run_parts

#: Most bytes one column buffer may take; the batch is processed in chunks to stay under it.
CONV_MEMORY_BUDGET = 256 * 2**20
#: Preferred column-buffer size: chunks that stay within the last-level cache gather and
#: multiply faster than one huge buffer, and fuller GEMMs beat one-image ones (measured on the
#: ResNet layers of benchmarks/conv2d_vs_torch.py, 32 MiB L3: 16 MiB 3–10% faster than 6).
#: At least one image.
CONV_CHUNK_BYTES = 16 * 2**20


def chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """Batch ranges whose column buffers each fit CONV_MEMORY_BUDGET and CONV_CHUNK_BYTES
    (at least one image)."""
    limit = min(CONV_MEMORY_BUDGET, CONV_CHUNK_BYTES)
    step = max(1, min(n, limit // max(1, bytes_per_image)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _split_channels(work: Callable[[slice], None], channels: int, nbytes: int) -> None:
    """Runs ``work`` on disjoint channel ranges in parallel: NumPy releases the GIL while it
    copies, and the ranges write disjoint memory, so the gathers and the strided
    accumulations use every core instead of one."""
    run_parts(lambda lo, hi: work(slice(lo, hi)), channels, nbytes)


def _grouped_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` over a leading group axis (a plain 2-D GEMM for one group)."""
    if a.shape[-1] == 1:  # an outer product: OpenBLAS's K = 1 GEMM took 15× longer (measured)
        return np.multiply(a, b, out=out)
    if a.shape[0] == 1:
        return np.matmul(a[0], b[0], out=None if out is None else out[0])[None]
    return np.matmul(a, b, out=out)


#: Per kernel offset: its index, the box of output positions whose input lies inside the
#: unpadded input (None: no position does), the input slices that box reads, and the indices
#: (of the trailing output axes) of the positions outside the box, whose columns are zeros.
ClippedTap = tuple[
    tuple[int, ...], tuple[slice, ...] | None, tuple[slice, ...], tuple[tuple[slice, ...], ...]
]


@functools.lru_cache(maxsize=256)
def clipped_taps(
    kernel: Shape, stride: Shape, dilation: Shape, out: Shape, pads: PadPairs, sizes: Shape
) -> tuple[ClippedTap, ...]:
    """For each kernel offset of a convolution of an input of spatial ``sizes`` zero-padded by
    ``pads``: the outputs it reads real input for, and where. Output o of tap t reads padded
    position o·s + t·d, input position o·s + t·d − pad_before: inside when 0 ≤ it < size.
    (Cached: a training loop asks for the same geometry every step.)"""
    taps: list[ClippedTap] = []
    for t, slices in tap_slices(kernel, stride, dilation, out):
        box: list[slice] | None = []
        reads = []
        for sl, o, (before, _), size in zip(slices, out, pads, sizes):
            start, step = sl.start, sl.step
            first = max(0, -(-(before - start) // step))
            stop = min(o, (before + size - 1 - start) // step + 1)
            if stop <= first:
                box = None
                break
            box.append(slice(first, stop))
            lo = start + first * step - before
            reads.append(slice(lo, lo + (stop - first - 1) * step + 1, step))
        if box is None:
            taps.append((t, None, (), ((),)))
        else:
            taps.append((t, tuple(box), tuple(reads), _outside(tuple(box), out)))
    return tuple(taps)


def _outside(box: tuple[slice, ...], out: Shape) -> tuple[tuple[slice, ...], ...]:
    """The positions of an output grid outside ``box``, as disjoint slabs: per axis, before and
    after the box's range, within the box's ranges on the axes before it."""
    every = slice(None)
    slabs = []
    for axis, (inside, size) in enumerate(zip(box, out)):
        rest = (every,) * (len(out) - axis - 1)
        for edge in (slice(0, inside.start), slice(inside.stop, size)):
            if edge.stop > edge.start:
                slabs.append((*box[:axis], edge, *rest))
    return tuple(slabs)


def conv_core(
    x: np.ndarray | None,
    weight: np.ndarray,
    stride: Shape,
    dilation: Shape,
    out: Shape,
    groups: int,
    dy: np.ndarray | None = None,
    want_y: bool = False,
    want_gw: bool = False,
    input_sizes: Shape | None = None,
    pads: PadPairs | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The convolution of ``x``, read as zero-padded by ``pads`` (none by default), with output
    sizes ``out``: its forward ``y`` (if ``want_y``), the weight gradient for the output
    gradient ``dy`` (if ``want_gw``) and the gradient w.r.t. ``x`` (if its spatial
    ``input_sizes`` are given).

    Per batch chunk one gather feeds the forward and weight-gradient matmuls; the same column
    buffer then takes the column gradient, which is added back per kernel offset.
    """
    ref = x if x is not None else dy
    assert ref is not None
    n, dtype = ref.shape[0], ref.dtype
    c_out, c_g = weight.shape[:2]
    kernel = weight.shape[2:]
    k, p = prod(kernel), prod(out)
    co_g, c = c_out // groups, c_g * groups
    w = weight.reshape(groups, co_g, c_g * k)
    sizes = x.shape[2:] if x is not None else input_sizes
    assert sizes is not None
    pads = tuple(map(tuple, pads)) if pads else ((0, 0),) * len(out)
    taps = clipped_taps(tuple(kernel), tuple(stride), tuple(dilation), tuple(out), pads, sizes)
    y = np.empty((n, c_out, *out), dtype=dtype) if want_y else None
    gw = np.zeros((groups, co_g, c_g * k), dtype=dtype) if want_gw else None
    gx = np.zeros((n, c, *input_sizes), dtype=dtype) if input_sizes is not None else None
    if n == 0:  # an empty batch, as PyTorch allows: nothing to gather, gradients stay zero
        return y, None if gw is None else gw.reshape(weight.shape), gx
    ranges = chunks(n, c * k * p * dtype.itemsize)
    buffer = np.empty(c * k * p * (ranges[0][1] - ranges[0][0]), dtype=dtype)
    every = slice(None)
    for n0, n1 in ranges:
        nb = n1 - n0
        cols2 = buffer[: c * k * nb * p].reshape(groups, c_g * k, nb * p)
        cols = cols2.reshape(groups, c_g, *kernel, nb, *out)
        dy_t = None
        if dy is not None:
            dy_t = np.ascontiguousarray(dy[n0:n1].swapaxes(0, 1)).reshape(groups, co_g, nb * p)
        if want_y or want_gw:
            assert x is not None
            # Channel-first view of the chunk, split into groups: (G, C/g, nb, *spatial).
            src = x[n0:n1].swapaxes(0, 1).reshape(groups, c_g, nb, *sizes)

            def gather(ch: slice, src: np.ndarray = src, cols: np.ndarray = cols) -> None:
                for t, box, reads, outside in taps:
                    block = cols[(every, ch, *t)]
                    if box is not None:
                        block[(every, every, every, *box)] = src[(every, ch, every, *reads)]
                    for slab in outside:  # the outputs whose tap t reads the padding
                        block[(..., *slab)] = 0

            _split_channels(gather, c_g, cols.nbytes)
            if y is not None:
                y_t = _grouped_matmul(w, cols2).reshape(c_out, nb, *out)
                y.swapaxes(0, 1)[:, n0:n1] = y_t
            if gw is not None:
                # cols @ dy_tᵀ (then transposed) is the faster GEMM orientation for OpenBLAS.
                gw += _grouped_matmul(cols2, dy_t.transpose(0, 2, 1)).transpose(0, 2, 1)
        if gx is not None:
            _grouped_matmul(w.transpose(0, 2, 1), dy_t, out=cols2)
            dst = gx[n0:n1].swapaxes(0, 1).reshape(groups, c_g, nb, *input_sizes)

            def scatter(ch: slice, dst: np.ndarray = dst, cols: np.ndarray = cols) -> None:
                for t, box, reads, _ in taps:
                    if box is not None:  # the columns outside the box fall on the padding
                        target = dst[(every, ch, every, *reads)]
                        target += cols[(every, ch, *t, every, *box)]

            _split_channels(scatter, c_g, cols.nbytes)
    return y, None if gw is None else gw.reshape(weight.shape), gx


_NUMPY_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x: np.ndarray, pads: PadPairs, mode: str) -> np.ndarray:
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


def pad_backward(g: np.ndarray, sizes: Shape, pads: PadPairs, mode: str) -> np.ndarray:
    """The adjoint of ``pad``: folds the padded gradient back onto the input's positions."""
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


# -- grouped weights -----------------------------------------------------------------------------


def dense_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped weight (C_out, C_in/g, *k) as the dense (C_out, C_in, *k) one, zeros outside."""
    c_out, c_g, *kernel = weight.shape
    co_g = c_out // groups
    out = np.zeros((c_out, c_g * groups, *kernel), dtype=weight.dtype)
    view = out.reshape(groups, co_g, groups, c_g, *kernel)
    g = np.arange(groups)
    view[g, :, g] = weight.reshape(groups, co_g, c_g, *kernel)
    return out


def grouped_weight(dense: np.ndarray, groups: int) -> np.ndarray:
    """The diagonal blocks of a dense weight, as the (C_out, C_in/g, *k) grouped weight."""
    c_out, c_in, *kernel = dense.shape
    view = dense.reshape(groups, c_out // groups, groups, c_in // groups, *kernel)
    g = np.arange(groups)
    return view[g, :, g].reshape(c_out, c_in // groups, *kernel)
