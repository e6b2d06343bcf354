"""Times convscope's NumPy conv2d (forward, and forward + backward) against PyTorch CPU.

Run: python3 benchmarks/conv2d_vs_torch.py [--quick]

float32, the same thread count for torch as numpy's BLAS uses. The machine is shared and its
speed drifts within a run, so each layer is timed in rounds: per round the best of a few calls
of ours, a pause, then the best of a few of torch's; the ratio printed is the median of the
rounds' ratios, the times the best of all rounds. Peak memory is measured in a separate run
with tracemalloc, which sees numpy's array allocations (not BLAS's internal buffers).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F

from convscope import conv2d, conv2d_backward
from convscope.kernels.im2col import CONV_MEMORY_BUDGET

# (N, C_in, C_out, H = W, k, stride, pad)
LAYERS = [
    (32, 64, 64, 56, 3, 1, 1),
    (32, 128, 128, 28, 3, 1, 1),
    (32, 256, 256, 14, 3, 1, 1),
    (32, 64, 128, 56, 1, 2, 0),
    (64, 3, 32, 32, 5, 1, 2),
    (128, 1, 32, 28, 3, 1, 0),
    (1, 1, 1, 128, 3, 1, 0),
]


def blas_threads() -> tuple[int, str]:
    """Threads and kernel (architecture) of numpy's BLAS, via threadpoolctl when installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1, "unknown (threadpoolctl not installed)"
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            arch = f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')}"
            return int(info["num_threads"]), arch
    return os.cpu_count() or 1, "unknown"


def best_time(fn, repeats: int, budget_s: float = 4.0) -> float:
    fn()  # warm-up
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best


def gemm_gflops(repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    return 2 * 2048**3 / best_time(lambda: a @ b, repeats) / 1e9


def peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7  # rounds per layer

    threads, arch = blas_threads()
    torch.set_num_threads(threads)
    gemm = gemm_gflops(repeats)
    print(f"numpy BLAS: {arch}, {threads} threads; torch {torch.__version__}, {threads} threads")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')!r}")
    print(f"float32 GEMM (2048^3 np.matmul): {gemm:.0f} GFLOP/s")
    print(f"column-buffer budget: {CONV_MEMORY_BUDGET / 2**20:.0f} MiB")
    print("peak memory: tracemalloc peak of numpy allocations during one forward + backward")
    print()
    header = (
        f"{'layer (N,Cin,Cout,HW,k,s,p)':<30} {'GFLOP':>6} {'fwd ms':>8} {'torch':>8} {'ratio':>6}"
        f" {'f+b ms':>8} {'torch':>8} {'ratio':>6} {'GFLOP/s f+b':>11} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for layer in LAYERS:
        n, ci, co, hw, k, s, p = layer
        x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
        w = rng.standard_normal((co, ci, k, k), dtype=np.float32) / np.float32(np.sqrt(ci * k * k))
        b = np.zeros(co, np.float32)
        y = conv2d(x, w, b, s, p)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        flop = 2 * y.size * ci * k * k

        def ours_fwd(x=x, w=w, b=b, s=s, p=p):
            return conv2d(x, w, b, s, p)

        def ours_both(x=x, w=w, b=b, g=g, s=s, p=p):
            conv2d(x, w, b, s, p)
            return conv2d_backward(g, x, w, s, p)

        xt = torch.from_numpy(x).requires_grad_(True)
        wt = torch.from_numpy(w).requires_grad_(True)
        bt = torch.from_numpy(b).requires_grad_(True)
        gt = torch.from_numpy(g)

        def torch_fwd(s=s, p=p, xt=xt, wt=wt, bt=bt):
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, s, p)

        def torch_both(s=s, p=p, xt=xt, wt=wt, bt=bt, gt=gt):
            xt.grad = wt.grad = bt.grad = None
            F.conv2d(xt, wt, bt, s, p).backward(gt)

        reps = 2 if flop > 1e8 else 10
        mem = peak_mib(ours_both)
        rounds = []  # per round: (ours fwd, ours f+b, torch fwd, torch f+b)
        for _ in range(repeats):
            ours = best_time(ours_fwd, reps), best_time(ours_both, reps)
            # torch's OpenMP threads spin for a while after each call and would take the cores
            # from OpenBLAS's threads: a pause between the two sides
            time.sleep(0.3)
            theirs = best_time(torch_fwd, reps), best_time(torch_both, reps)
            time.sleep(0.3)
            rounds.append((*ours, *theirs))
        tf, bf, tt, bt_ = (min(r[i] for r in rounds) for i in range(4))
        fwd_ratio = float(np.median([r[0] / r[2] for r in rounds]))
        both_ratio = float(np.median([r[1] / r[3] for r in rounds]))
        print(
            f"{str(layer):<30} {flop / 1e9:6.2f} {tf * 1e3:8.2f} {tt * 1e3:8.2f} {fwd_ratio:6.2f}"
            f" {bf * 1e3:8.2f} {bt_ * 1e3:8.2f} {both_ratio:6.2f}"
            f" {3 * flop / bf / 1e9:7.0f}/{gemm:.0f} {mem:9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
