"""Built-in models: LeNet-5 and torchvision's AlexNet, VGG-11/16, ResNet-18/34/50 and
MobileNetV2, built from ``convscope.nn`` so that each both runs and answers analysis.

The torchvision architectures are layer for layer those of ``torchvision.models`` (ResNet v1.5:
the stride on the 3×3 conv), so parameter and MAC totals equal torchvision's published figures.
State dict names equal torchvision's except inside blocks with a skip connection, which are
containers here (see ``torchvision_key``). Initialisation is convscope's (PyTorch's layer
defaults), not torchvision's kaiming/normal schemes: only training from scratch would notice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from . import nn
from .containers import Residual, Sequential
from .errors import ConvScopeError
from .module import Module


def Named(**layers: Module) -> Sequential:  # noqa: N802 - reads like the container it builds
    """A Sequential whose children have names: they become the state dict's prefixes."""
    return Sequential(layers)


# -- LeNet-5 ----------------------------------------------------------------------------------


def lenet5(num_classes: int = 10) -> Module:
    """LeNet-5 (LeCun et al., 1998) on a 1×32×32 input.

    The common simplification: C3 connects to all six S2 maps (not the paper's sparse table),
    S2/S4 are plain 2×2 average pools (no trainable scale and bias), tanh instead of the scaled
    1.7159·tanh(2x/3), C5 as Linear(400, 120) on the flattened 16×5×5 maps (the same weights
    and MACs as the paper's 5×5 conv), and a Linear output layer instead of RBF units.
    """
    return Named(
        c1=nn.Conv2d(1, 6, 5),
        tanh1=nn.Tanh(),
        s2=nn.AvgPool2d(2),
        c3=nn.Conv2d(6, 16, 5),
        tanh3=nn.Tanh(),
        s4=nn.AvgPool2d(2),
        flatten=nn.Flatten(),
        c5=nn.Linear(16 * 5 * 5, 120),
        tanh5=nn.Tanh(),
        f6=nn.Linear(120, 84),
        tanh6=nn.Tanh(),
        output=nn.Linear(84, num_classes),
    )


# -- AlexNet and VGG --------------------------------------------------------------------------


def alexnet(num_classes: int = 1000, dropout: float = 0.5) -> Module:
    """AlexNet as torchvision has it (the "one weird trick" variant, 64-192-384-256-256)."""
    features = Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
    )
    classifier = Sequential(
        nn.Dropout(dropout),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Linear(4096, num_classes),
    )
    return Named(
        features=features,
        avgpool=nn.AdaptiveAvgPool2d((6, 6)),
        flatten=nn.Flatten(),
        classifier=classifier,
    )


# VGG configurations 'A' (11 weight layers) and 'D' (16); "M" is a 2×2 max pool.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(config: str, num_classes: int, dropout: float) -> Module:
    """torchvision's VGG without batch norm."""
    layers: list[Module] = []
    channels = 3
    for v in VGG_CONFIGS[config]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    classifier = Sequential(
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, num_classes),
    )
    return Named(
        features=Sequential(*layers),
        avgpool=nn.AdaptiveAvgPool2d((7, 7)),
        flatten=nn.Flatten(),
        classifier=classifier,
    )


def vgg11(num_classes: int = 1000, dropout: float = 0.5) -> Module:
    """VGG-11 (configuration 'A'), no batch norm."""
    return _vgg("A", num_classes, dropout)


def vgg16(num_classes: int = 1000, dropout: float = 0.5) -> Module:
    """VGG-16 (configuration 'D'), no batch norm."""
    return _vgg("D", num_classes, dropout)


# -- ResNet -----------------------------------------------------------------------------------


def _shortcut(in_ch: int, out_ch: int, stride: int) -> Module | None:
    """torchvision's ``downsample``: a strided 1×1 conv and BN where the shape changes."""
    if stride == 1 and in_ch == out_ch:
        return None  # identity
    return Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
    )


def basic_block(in_ch: int, planes: int, stride: int = 1) -> Module:
    """Two 3×3 convs with BN; ReLU after the addition."""
    branch = Named(
        conv1=nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False),
        bn1=nn.BatchNorm2d(planes),
        relu=nn.ReLU(),
        conv2=nn.Conv2d(planes, planes, 3, padding=1, bias=False),
        bn2=nn.BatchNorm2d(planes),
    )
    return Sequential(Residual(branch, _shortcut(in_ch, planes, stride)), nn.ReLU())


def bottleneck(in_ch: int, planes: int, stride: int = 1) -> Module:
    """1×1 reduce, 3×3 (carrying the stride: v1.5), 1×1 expand ×4, each with BN."""
    out_ch = planes * 4
    branch = Named(
        conv1=nn.Conv2d(in_ch, planes, 1, bias=False),
        bn1=nn.BatchNorm2d(planes),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
        bn2=nn.BatchNorm2d(planes),
        relu2=nn.ReLU(),
        conv3=nn.Conv2d(planes, out_ch, 1, bias=False),
        bn3=nn.BatchNorm2d(out_ch),
    )
    return Sequential(Residual(branch, _shortcut(in_ch, out_ch, stride)), nn.ReLU())


def _resnet(block: str, depths: list[int], num_classes: int) -> Module:
    make, expansion = (basic_block, 1) if block == "basic" else (bottleneck, 4)
    stages: dict[str, Module] = {}
    in_ch = 64
    for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        blocks = []
        for j in range(depth):
            blocks.append(make(in_ch, planes, 2 if i > 0 and j == 0 else 1))
            in_ch = planes * expansion
        stages[f"layer{i + 1}"] = Sequential(*blocks)
    return Named(
        conv1=nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(64),
        relu=nn.ReLU(),
        maxpool=nn.MaxPool2d(3, stride=2, padding=1),
        **stages,
        avgpool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(512 * expansion, num_classes),
    )


def resnet18(num_classes: int = 1000) -> Module:
    """ResNet-18: basic blocks, 2-2-2-2."""
    return _resnet("basic", [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> Module:
    """ResNet-34: basic blocks, 3-4-6-3."""
    return _resnet("basic", [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000) -> Module:
    """ResNet-50 v1.5: bottlenecks, 3-4-6-3."""
    return _resnet("bottleneck", [3, 4, 6, 3], num_classes)


# -- MobileNetV2 ------------------------------------------------------------------------------


def _conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> Module:
    """torchvision's Conv2dNormActivation with ReLU6: conv (no bias), BN, ReLU6."""
    return Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


def inverted_residual(in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> Module:
    """1×1 expansion (skipped for ratio 1), 3×3 depthwise, linear 1×1 projection; added to
    the input only when the stride is 1 and the channels are unchanged."""
    hidden = round(in_ch * expand_ratio)
    layers = [_conv_bn_relu6(in_ch, hidden, 1)] if expand_ratio != 1 else []
    layers += [
        _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
        nn.Conv2d(hidden, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if stride == 1 and in_ch == out_ch:
        return Residual(Sequential(*layers))
    return Named(conv=Sequential(*layers))


# (expansion t, channels c, repeats n, first stride s), width multiplier 1.0.
MOBILENET_V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v2(num_classes: int = 1000, dropout: float = 0.2) -> Module:
    """MobileNetV2, width 1.0: 32-channel stem, 17 inverted residuals, 1280-channel last conv."""
    features: list[Module] = [_conv_bn_relu6(3, 32, 3, stride=2)]
    in_ch = 32
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            features.append(inverted_residual(in_ch, c, s if i == 0 else 1, t))
            in_ch = c
    features.append(_conv_bn_relu6(in_ch, 1280, 1))
    return Named(
        features=Sequential(*features),
        avgpool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        classifier=Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes)),
    )


# -- registry ---------------------------------------------------------------------------------

MODELS: dict[str, Callable[..., Module]] = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
}

IMAGENET_INPUT = (3, 224, 224)


def _check(name: str) -> None:
    if name not in MODELS:
        raise ConvScopeError(f"unknown model {name!r}; the zoo has: {', '.join(MODELS)}")


def get(name: str, **kwargs: object) -> Module:
    """A fresh model by name (``num_classes=...`` and the like pass through)."""
    _check(name)
    return MODELS[name](**kwargs)


def default_input(name: str) -> tuple[int, ...]:
    """The input shape a model is defined for, channel-first without the batch."""
    _check(name)
    return (1, 32, 32) if name == "lenet5" else IMAGENET_INPUT


# The two places where the names cannot be torchvision's: a ResNet block is
# Sequential(Residual(branch, shortcut), ReLU()) where torchvision has one module, and a
# MobileNetV2 block with a skip is Residual(branch) where torchvision names it ``conv``.
_TORCHVISION_KEYS = [
    (re.compile(r"^(layer\d\.\d+)\.0\.branch\."), r"\1."),
    (re.compile(r"^(layer\d\.\d+)\.0\.shortcut\."), r"\1.downsample."),
    (re.compile(r"^(features\.\d+)\.branch\."), r"\1.conv."),
]


def torchvision_key(key: str) -> str:
    """The torchvision state dict key for one of a zoo model's keys."""
    for pattern, replacement in _TORCHVISION_KEYS:
        key = pattern.sub(replacement, key)
    return key


def torchvision_keys(model: Module) -> Iterator[tuple[str, str]]:
    """(convscope key, torchvision key) for every parameter and buffer, without allocating."""
    for key, _ in model._named(""):
        yield key, torchvision_key(key)
