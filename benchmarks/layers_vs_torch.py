"""Times convscope's NumPy depthwise conv, activations and BatchNorm2d against PyTorch CPU.

Run: python3 benchmarks/layers_vs_torch.py [--quick] [--only NAME ...]

float32, torch on the same thread count as numpy's BLAS (and convscope's copy threads). Each
layer's two implementations are timed in alternating blocks (ours, torch, a pause, ours, ...):
the times printed are each side's best, the ratio the median of the rounds' ratios, so a change
in the machine's load hits both alike. The peak of numpy's allocations in one forward +
backward (tracemalloc, which sees numpy arrays but not torch's or BLAS's buffers) is printed
relative to the bytes of input + output + weight.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import convscope.functional as cf
from convscope import nn

Run = Callable[[], object]


@dataclass
class Case:
    """One layer: our forward and forward + backward, torch's, and the bytes it must touch."""

    name: str
    ours_fwd: Run
    ours_both: Run
    torch_fwd: Run
    torch_both: Run
    essential_bytes: int  # input + output + weight (+ their gradients' worth is not counted)


def blas_threads() -> int:
    """numpy's BLAS thread count, via threadpoolctl when installed (else the CPU count)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return int(info["num_threads"])
    return os.cpu_count() or 1


def load() -> str:
    """The 1-minute load average, which says how much the timings can be trusted."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


#: Seconds between torch's calls and ours, so torch's spinning threads do not take our cores.
PAUSE_S = 0.3


def interleaved(ours: Run, theirs: Run, rounds: int, block: int = 2) -> tuple[float, float, float]:
    """Two functions timed in alternating blocks of ``block`` calls: the best time of each, and
    the median over the rounds of the ratio of the rounds' bests (robust to the machine's drift
    within a run)."""
    ours(), theirs()  # warm-up
    best = [float("inf"), float("inf")]
    ratios = []
    for _ in range(rounds):
        round_best = [float("inf"), float("inf")]
        for i, fn in enumerate((ours, theirs)):
            for _ in range(block):
                start = time.perf_counter()
                fn()
                round_best[i] = min(round_best[i], time.perf_counter() - start)
            if fn is theirs:  # torch's OpenMP threads spin a while after a call: let them stop
                time.sleep(PAUSE_S)
        ratios.append(round_best[0] / round_best[1])
        best = [min(a, b) for a, b in zip(best, round_best)]
    return best[0], best[1], float(np.median(ratios))


def peak_bytes(fn: Run) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def depthwise_case(n: int, c: int, hw: int, k: int, s: int, p: int, rng) -> Case:
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c, 1, k, k), dtype=np.float32) / np.float32(k)
    b = np.zeros(c, np.float32)
    y = cf.conv2d(x, w, b, s, p, 1, c)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
    gt = torch.from_numpy(g)

    def ours_both() -> object:
        cf.conv2d(x, w, b, s, p, 1, c)
        return cf.conv2d_backward(g, x, w, s, p, 1, c)

    def torch_fwd() -> object:
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, s, p, 1, c)

    def torch_both() -> object:
        xt.grad = wt.grad = bt.grad = None
        F.conv2d(xt, wt, bt, s, p, 1, c).backward(gt)

    return Case(
        f"depthwise conv ({n}, {c}, {hw}, k{k}, s{s}, p{p})",
        lambda: cf.conv2d(x, w, b, s, p, 1, c),
        ours_both,
        torch_fwd,
        torch_both,
        x.nbytes + y.nbytes + w.nbytes,
    )


# The engine's modules, as training runs them: Sigmoid and Tanh keep their output for the
# backward (as torch's autograd does), SiLU and GELU their input.
ACTIVATIONS = {
    "GELU": (nn.GELU, F.gelu),
    "SiLU": (nn.SiLU, F.silu),
    "Sigmoid": (nn.Sigmoid, torch.sigmoid),
    "Tanh": (nn.Tanh, torch.tanh),
}


def module_case(name: str, ours, theirs, x: np.ndarray, g: np.ndarray, essential: int) -> Case:
    """A layer run as a convscope module (``ours``) and as a torch callable (``theirs``; a
    torch module's parameter gradients are cleared before each backward)."""
    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(g)

    def ours_both() -> object:
        ours.forward(x)
        return ours.backward(g)

    def torch_fwd() -> object:
        with torch.no_grad():
            return theirs(xt)

    def torch_both() -> object:
        xt.grad = None
        if isinstance(theirs, torch.nn.Module):
            theirs.zero_grad(set_to_none=True)
        theirs(xt).backward(gt)

    return Case(name, lambda: ours.forward(x), ours_both, torch_fwd, torch_both, essential)


def activation_case(name: str, shape: tuple[int, ...], rng) -> Case:
    module, theirs = ACTIVATIONS[name]
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(3)
    g = rng.standard_normal(shape, dtype=np.float32)
    return module_case(f"{name} {shape}", module(), theirs, x, g, 2 * x.nbytes)


def batchnorm_case(shape: tuple[int, ...], rng) -> Case:
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(2) + np.float32(1)
    g = rng.standard_normal(shape, dtype=np.float32)
    ours, theirs = nn.BatchNorm2d(shape[1]), torch.nn.BatchNorm2d(shape[1])
    return module_case(
        f"BatchNorm2d train {shape}", ours, theirs, x, g, 2 * x.nbytes + 2 * shape[1] * 4
    )


def cases(only: list[str] | None) -> list[Case]:
    rng = np.random.default_rng(0)
    shape = (32, 64, 56, 56)
    makers: list[tuple[str, Callable[[], Case]]] = [
        ("depthwise", lambda: depthwise_case(32, 256, 28, 3, 1, 1, rng)),
        ("depthwise", lambda: depthwise_case(32, 96, 56, 3, 2, 1, rng)),
        *(
            (name.lower(), lambda name=name: activation_case(name, shape, rng))
            for name in ACTIVATIONS
        ),
        ("batchnorm", lambda: batchnorm_case(shape, rng)),
    ]
    return [make() for key, make in makers if not only or key in only]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--only",
        nargs="*",
        help="depthwise, gelu, silu, sigmoid, tanh or batchnorm (default: all)",
    )
    args = parser.parse_args()
    rounds = 3 if args.quick else 6
    threads = blas_threads()
    torch.set_num_threads(threads)
    print(f"numpy {np.__version__}, torch {torch.__version__}; {threads} threads for both")
    print(f"load (1 min) at start: {load()}")
    print()
    print(
        "| layer (float32) | fwd: ours / torch | fwd+bwd: ours / torch "
        "| peak / (in + out + weight) | load |"
    )
    print("|---|---|---|---|---|")
    for case in cases(args.only):
        fwd, fwd_torch, fwd_ratio = interleaved(case.ours_fwd, case.torch_fwd, rounds)
        both, both_torch, both_ratio = interleaved(case.ours_both, case.torch_both, rounds)
        peak = peak_bytes(case.ours_both)
        print(
            f"| {case.name} "
            f"| {fwd * 1e3:.1f} / {fwd_torch * 1e3:.1f} ms → {fwd_ratio:.2f} "
            f"| {both * 1e3:.1f} / {both_torch * 1e3:.1f} ms → {both_ratio:.2f} "
            f"| {peak / 2**20:.0f} MiB = {peak / case.essential_bytes:.2f}× "
            f"| {load()} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
