"""Times convscope.summary of PyTorch models against torchinfo.summary of the same models.

Run: python3 benchmarks/summary_vs_torchinfo.py   (torchinfo from `pip install -e '.[bench]'`)

The models are torch.nn modules written as torchvision and timm write theirs (tests/torch_twins.py
and tests/torch_patterns.py): ResNet-50, MobileNetV2 and VGG-16 twins, a ConvNeXt-T-sized
ConvNeXt, a ViT-S/16-sized ViT, a Swin-T-sized Swin stage and timm-style subclassed layers.
convscope reads a model by running it once on shape-only (meta) tensors at batch 1, so its time
should not grow with the batch or the resolution; torchinfo runs a real forward pass at the
batch given, so its time does. Each figure is the best of a few runs after a warm-up run (the
first run of a process also pays one-time imports, reported separately).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

import convscope

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.torch_patterns import Swin, ViT, convnext, timm_style_cnn  # noqa: E402
from tests.torch_twins import TWINS  # noqa: E402

#: name → (make the model, [(batch, input shape without the batch), …])
MODELS = {
    "resnet50": (TWINS["resnet50"], [(1, (3, 224, 224)), (64, (3, 512, 512))]),
    "mobilenet_v2": (TWINS["mobilenet_v2"], [(1, (3, 224, 224)), (64, (3, 512, 512))]),
    "vgg16": (TWINS["vgg16"], [(1, (3, 224, 224))]),
    "convnext_t": (lambda: convnext(96, 3, 1000), [(1, (3, 224, 224)), (16, (3, 512, 512))]),
    "vit_s16": (lambda: ViT(224, 16, 384, 12), [(1, (3, 224, 224)), (64, (3, 224, 224))]),
    "swin_t_stage": (lambda: Swin(96, 4, 7), [(1, (3, 224, 224)), (64, (3, 224, 224))]),
    "timm_style_cnn": (timm_style_cnn, [(1, (3, 224, 224))]),
}


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
    print(f"load average: {os.getloadavg()[0]:.2f}; torch {torch.__version__}")
    start = time.perf_counter()
    convscope.summary(TWINS["resnet18"](), (3, 32, 32))
    print(f"first summary of the process (one-time imports): {time.perf_counter() - start:.2f} s")
    print(
        f"{'model':15} {'input':>16} {'convscope ms':>13} {'torchinfo ms':>13} {'ratio':>7} "
        f"{'MACs':>15}"
    )
    for name, (make, inputs) in MODELS.items():
        model = make().eval()
        for batch, shape in inputs:
            report = convscope.summary(model, shape, batch=batch)  # the warm-up run
            ours = best(lambda m=model, s=shape, b=batch: convscope.summary(m, s, batch=b))
            theirs = float("nan")
            if torchinfo is not None and batch * shape[-1] * shape[-2] <= 64 * 224 * 224:
                run = lambda m=model, s=(batch, *shape): torchinfo.summary(m, s, verbose=0)  # noqa: E731
                theirs = best(run, repeats=1)
            ratio = theirs / ours if theirs == theirs else float("nan")
            size = f"{batch}x" + "x".join(map(str, shape))
            print(
                f"{name:15} {size:>16} {1000 * ours:13.1f} {1000 * theirs:13.1f} {ratio:7.1f} "
                f"{report.total_macs:15,}"
            )


if __name__ == "__main__":
    main()
