"""torch.nn twins of the zoo's architectures, written independently in torchvision's style:
the oracle for the zoo's counts, outputs and gradients (tests) and torchinfo's input
(benchmarks)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as tnn


class TLeNet5(tnn.Sequential):
    def __init__(self):
        super().__init__(OrderedDict(
            c1=tnn.Conv2d(1, 6, 5), tanh1=tnn.Tanh(), s2=tnn.AvgPool2d(2),
            c3=tnn.Conv2d(6, 16, 5), tanh3=tnn.Tanh(), s4=tnn.AvgPool2d(2),
            flatten=tnn.Flatten(), c5=tnn.Linear(400, 120), tanh5=tnn.Tanh(),
            f6=tnn.Linear(120, 84), tanh6=tnn.Tanh(), output=tnn.Linear(84, 10),
        ))  # fmt: skip


class TAlexNet(tnn.Module):
    def __init__(self):
        super().__init__()
        r = lambda: tnn.ReLU(inplace=True)  # noqa: E731
        self.features = tnn.Sequential(
            tnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), r(),
            tnn.MaxPool2d(kernel_size=3, stride=2),
            tnn.Conv2d(64, 192, kernel_size=5, padding=2), r(),
            tnn.MaxPool2d(kernel_size=3, stride=2),
            tnn.Conv2d(192, 384, kernel_size=3, padding=1), r(),
            tnn.Conv2d(384, 256, kernel_size=3, padding=1), r(),
            tnn.Conv2d(256, 256, kernel_size=3, padding=1), r(),
            tnn.MaxPool2d(kernel_size=3, stride=2),
        )  # fmt: skip
        self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = tnn.Sequential(
            tnn.Dropout(0.5), tnn.Linear(9216, 4096), r(),
            tnn.Dropout(0.5), tnn.Linear(4096, 4096), r(),
            tnn.Linear(4096, 1000),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TVGG(tnn.Module):
    CFG = {
        11: [[64], [128], [256, 256], [512, 512], [512, 512]],
        16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    }

    def __init__(self, depth):
        super().__init__()
        layers, c = [], 3
        for stage in self.CFG[depth]:
            for width in stage:
                layers += [tnn.Conv2d(c, width, kernel_size=3, padding=1), tnn.ReLU(True)]
                c = width
            layers.append(tnn.MaxPool2d(kernel_size=2, stride=2))
        self.features = tnn.Sequential(*layers)
        self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = tnn.Sequential(
            tnn.Linear(25088, 4096), tnn.ReLU(True), tnn.Dropout(),
            tnn.Linear(4096, 4096), tnn.ReLU(True), tnn.Dropout(),
            tnn.Linear(4096, 1000),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TResNet(tnn.Module):
    def __init__(self, block, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, 1000)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def t_conv_bn_act(inp, oup, k, stride=1, groups=1):
    return tnn.Sequential(
        tnn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False),
        tnn.BatchNorm2d(oup),
        tnn.ReLU6(inplace=True),
    )


class TInvertedResidual(tnn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [t_conv_bn_act(inp, hidden_dim, 1)]
        layers += [
            t_conv_bn_act(hidden_dim, hidden_dim, 3, stride, groups=hidden_dim),
            tnn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            tnn.BatchNorm2d(oup),
        ]
        self.conv = tnn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TMobileNetV2(tnn.Module):
    def __init__(self):
        super().__init__()
        feats = [t_conv_bn_act(3, 32, 3, stride=2)]
        inp = 32
        for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                           [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]:  # fmt: skip
            for i in range(n):
                feats.append(TInvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        feats.append(t_conv_bn_act(inp, 1280, 1))
        self.features = tnn.Sequential(*feats)
        self.classifier = tnn.Sequential(tnn.Dropout(p=0.2), tnn.Linear(1280, 1000))

    def forward(self, x):
        x = tnn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


TWINS = {
    "lenet5": TLeNet5,
    "alexnet": TAlexNet,
    "vgg11": lambda: TVGG(11),
    "vgg16": lambda: TVGG(16),
    "resnet18": lambda: TResNet(TBasicBlock, [2, 2, 2, 2]),
    "resnet34": lambda: TResNet(TBasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: TResNet(TBottleneck, [3, 4, 6, 3]),
    "mobilenet_v2": TMobileNetV2,
}
