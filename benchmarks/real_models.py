"""Checks convscope.summary on real torchvision and timm models against PyTorch itself: the
parameters and buffers against the model's own tensors, the MACs against FlopCounterMode / 2.
Run by hand (minutes, and a separate environment): torchvision does not import beside the
CPU torch 2.13 the tests use.

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    /tmp/tvenv/bin/pip install -e .
    /tmp/tvenv/bin/python benchmarks/real_models.py [NAME ...]   (tv:resnet50, timm:swin_...)

The reference runs the model on a random input of batch 1 with attention on PyTorch's math
path (``sdpa_kernel(SDPBackend.MATH)``: FlopCounterMode does not count the CPU's fused
kernel) and with gradients on (under ``no_grad`` nn.MultiheadAttention takes a fused fast
path that FlopCounterMode does not count either).
"""

from __future__ import annotations

import sys
import time
import traceback

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import convscope

TIMM = [
    "resnet50",
    "resnetv2_50x1_bit",
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "mobilenetv3_large_100",
    "lcnet_050",
    "convnext_tiny",
    "convnextv2_tiny",
    "swin_tiny_patch4_window7_224",
    "swinv2_tiny_window8_256",
    "vit_small_patch16_224",
    "deit_small_distilled_patch16_224",
    "beit_base_patch16_224",
    "mobilevit_s",
    "mobilevitv2_050",
    "maxvit_tiny_tf_224",
    "coatnet_0_rw_224",
    "regnety_016",
    "dla34",
    "densenet121",
    "inception_v3",
    "xception41",
    "nfnet_l0",
    "dm_nfnet_f0",
    "res2net50_26w_4s",
    "resnest50d",
    "skresnet18",
    "cspdarknet53",
    "ghostnet_100",
    "hrnet_w18_small",
    "levit_128s",
    "poolformer_s12",
    "edgenext_small",
    "efficientformer_l1",
    "fastvit_t8",
    "repvgg_a2",
    "rexnet_100",
    "mixnet_s",
    "twins_svt_small",
    "pit_s_224",
    "cait_xxs24_224",
    "crossvit_tiny_240",
    "volo_d1_224",
    "eva02_tiny_patch14_224",
    "efficientvit_b0",
    "gcvit_xxtiny",
    "focalnet_tiny_srf",
    "davit_tiny",
    "pvt_v2_b0",
    "caformer_s18",
    "nextvit_small",
]


def build(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    source, _, model = name.partition(":")
    if source == "tv":
        import torchvision

        shape = (3, 299, 299) if model == "inception_v3" else (3, 224, 224)
        return torchvision.models.get_model(model, weights=None).eval(), shape
    import timm

    module = timm.create_model(model, pretrained=False).eval()
    return module, tuple(module.pretrained_cfg["input_size"])


def reference(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Parameters, trainable parameters, buffers (unique tensors) and FlopCounterMode / 2."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    params = list(model.parameters())  # unique tensors: a tied weight once
    return (
        sum(p.numel() for p in params),
        sum(p.numel() for p in params if p.requires_grad),
        sum(b.numel() for b in model.buffers()),
        counter.get_total_flops() // 2,
    )


def main(names: list[str]) -> None:
    torch.set_num_threads(2)
    if not names:
        import torchvision

        names = [f"tv:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
        names += [f"timm:{n}" for n in TIMM]
    print(f"{'model':40} {'params':>6} {'MACs':>6} {'seconds':>8}  not counted")
    exact = 0
    for name in names:
        try:
            model, shape = build(name)
            start = time.perf_counter()
            report = convscope.summary(model, shape)
            seconds = time.perf_counter() - start
            params, trainable, buffers, macs = reference(model, shape)
        except Exception:
            print(f"{name:40} FAILED\n{traceback.format_exc(limit=3)}")
            continue
        same = (report.total_params, report.trainable_params, report.total_buffers) == (
            params,
            trainable,
            buffers,
        )
        ratio = report.total_macs / macs if macs else float("nan")
        exact += same and report.total_macs == macs
        calls = sorted({u.split(" in ")[0].split(" (")[0] for u in report.unsupported})
        print(f"{name:40} {'exact' if same else 'WRONG':>6} {ratio:6.4f} {seconds:8.2f}  {calls}")
    print(f"{exact} of {len(names)} exact in parameters, buffers and MACs")


if __name__ == "__main__":
    main(sys.argv[1:])
