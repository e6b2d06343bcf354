"""Threads for the engine's memory-bound loops, and elementwise kernels run block by block.

NumPy releases the GIL inside its ufuncs and copies, so work split into disjoint parts runs on
every core. An elementwise formula of many steps (a polynomial, a rational function) is fastest
evaluated on cache-sized blocks with in-place ufuncs: each step then reads and writes the cache
instead of main memory, and no step allocates a temporary as large as the array.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Threads the engine splits copies and elementwise work over (NumPy's ufuncs are one-threaded).
THREADS = max(1, min(4, os.cpu_count() or 1))
POOL = ThreadPoolExecutor(THREADS) if THREADS > 1 else None
#: Below this many bytes a split is not worth the hand-off to another thread.
PARALLEL_BYTES = 1 << 20
#: Elements per block (1 MiB of float32 per buffer). Smaller blocks would stay in L2, but each
#: ufunc call takes the GIL: with many small calls the threads queue for it (measured: 32 Ki
#: elements ran GELU slower on two threads than on one).
BLOCK = 1 << 18


def run_parts(work: Callable[[int, int], None], size: int, nbytes: int) -> None:
    """Runs ``work(lo, hi)`` on disjoint ranges covering ``range(size)``, on the pool's threads
    when ``nbytes`` is large enough to pay for them."""
    parts = min(THREADS, size) if POOL is not None and nbytes >= PARALLEL_BYTES else 1
    if parts <= 1:
        work(0, size)
        return
    bounds = [size * i // parts for i in range(parts + 1)]
    futures = [POOL.submit(work, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    for future in futures:
        future.result()


#: An elementwise kernel: ``kernel(out, inputs, scratch)`` fills ``out`` from the same-length
#: 1-D ``inputs``, free to overwrite the 1-D ``scratch`` buffers.
Kernel = Callable[[np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...]], None]


def blockwise(
    kernel: Kernel,
    inputs: tuple[np.ndarray, ...],
    dtype: np.dtype,
    scratch: int = 0,
    ignore: tuple[str, ...] = (),
) -> np.ndarray:
    """A new array of the first input's shape and ``dtype``, filled by ``kernel`` one block at
    a time, each thread with its own ``scratch`` buffers of one block.

    ``ignore`` names the floating-point errors the kernel expects ("over", "under", ...): they
    are silenced; others follow the caller's ``np.errstate`` on its own thread and NumPy's
    default (a warning) on the pool's threads, which do not see the caller's.
    """
    shape = inputs[0].shape
    flat = tuple(np.ascontiguousarray(a).reshape(-1) for a in inputs)
    out = np.empty(shape, dtype)
    flat_out = out.reshape(-1)
    size = flat_out.size
    blocks = -(-size // BLOCK)

    def work(first: int, last: int) -> None:
        length = min(BLOCK, size)
        buffers = tuple(np.empty(length, dtype) for _ in range(scratch))
        with np.errstate(**dict.fromkeys(ignore, "ignore")):
            for b in range(first, last):
                lo, hi = b * BLOCK, min(size, (b + 1) * BLOCK)
                n = hi - lo
                blocks_in = tuple(a[lo:hi] for a in flat)
                kernel(flat_out[lo:hi], blocks_in, tuple(t[:n] for t in buffers))

    run_parts(work, blocks, out.nbytes)
    return out
