"""The zoo against torchvision's published figures and against an independent torch.nn twin of
each architecture: parameter counts, MACs, state dict layout, and numbers out of a forward and
backward pass with the same weights."""

from __future__ import annotations

from collections import OrderedDict
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
import torch
import torch.nn as tnn
from torch.utils.flop_counter import FlopCounterMode

from convscope import ConvScopeError, zoo

# Published by torchvision: <Model>_Weights.IMAGENET1K_V1.meta["num_params"] and ["_ops"]
# (torchvision/models/{alexnet,vgg,resnet,mobilenetv2}.py), which the documentation renders
# in its classification table and weight pages as "Params" and "GFLOPS" (there to 2 decimals,
# e.g. resnet50 4.09). torchvision's "GFLOPS" counts a multiply-add once: they are GMACs.
PUBLISHED = {
    "alexnet": (61_100_840, "0.714"),
    "vgg11": (132_863_336, "7.609"),
    "vgg16": (138_357_544, "15.47"),
    "resnet18": (11_689_512, "1.814"),
    "resnet34": (21_797_672, "3.664"),
    "resnet50": (25_557_032, "4.089"),
    "mobilenet_v2": (3_504_872, "0.301"),
}


# -- the twins: torchvision's architectures written again with torch.nn -----------------------


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


def twin_counts(name):
    """(parameters, MACs) of the twin: numel summed, and conv + matmul FLOPs / 2 counted by
    PyTorch's FlopCounterMode on a meta-device forward of one image."""
    with torch.device("meta"):
        model = TWINS[name]().eval()
        x = torch.empty(1, *zoo.default_input(name))
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_flop_counts()["Global"]
    aten = torch.ops.aten
    counted = {aten.convolution, aten.addmm, aten.mm}
    assert set(flops) <= counted, set(flops) - counted  # nothing else was charged
    total = sum(flops.values())
    assert total % 2 == 0
    return params, total // 2


# -- counts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_counts_equal_the_twin_and_allocate_nothing(name):
    model = zoo.get(name)
    shape = zoo.default_input(name)
    params, macs = model.params().params, model.macs(shape)
    assert (params, macs) == twin_counts(name)
    assert model.output_shape(shape) == ((10,) if name == "lenet5" else (1000,))
    model.cost(shape)  # the full operation counts are symbolic too
    assert not [key for key, p in model._named("") if p.allocated]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counts_equal_torchvisions_published_figures(name):
    model = zoo.get(name)
    published_params, published_gflops = PUBLISHED[name]
    assert model.params().params == published_params
    digits = Decimal(published_gflops).as_tuple().exponent
    gmacs = Decimal(model.macs((3, 224, 224))) / 10**9
    assert gmacs.quantize(Decimal(1).scaleb(digits), ROUND_HALF_EVEN) == Decimal(published_gflops)


def test_lenet5_counts_by_hand():
    # conv: out_ch · (in_ch·k² + 1) weights; MACs per output position in_ch·k²
    params = 6 * (1 * 25 + 1) + 16 * (6 * 25 + 1) + 120 * 401 + 84 * 121 + 10 * 85
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    model = zoo.lenet5()
    assert (model.params().params, model.macs((1, 32, 32))) == (params, macs) == (61706, 416520)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_state_dict_layout_is_torchvisions(name):
    """Same entries, same order, same shapes; the names equal torchvision's directly except
    inside skip blocks, where ``torchvision_key`` maps them."""
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in TWINS[name]().state_dict().items()}
    model = zoo.get(name)
    ours = [(tv_key, p.shape) for (_, p), (_, tv_key) in
            zip(model._named(""), zoo.torchvision_keys(model))]  # fmt: skip
    assert ours == list(theirs.items())
    renamed = [key for key, tv_key in zoo.torchvision_keys(model) if key != tv_key]
    if name.startswith("resnet") or name == "mobilenet_v2":
        assert renamed
    else:
        assert not renamed
    assert not [key for key, p in model._named("") if p.allocated]


def test_resnet_names():
    keys = dict(zoo.torchvision_keys(zoo.resnet18()))
    assert keys["conv1.weight"] == "conv1.weight"
    assert keys["layer1.0.0.branch.conv1.weight"] == "layer1.0.conv1.weight"
    assert keys["layer2.0.0.shortcut.0.weight"] == "layer2.0.downsample.0.weight"
    assert keys["fc.bias"] == "fc.bias"


# -- running ----------------------------------------------------------------------------------


def load_twin(name, seed=0):
    """A float64 twin with random weights and BN statistics, and the zoo model holding them."""
    torch.manual_seed(seed)
    theirs = TWINS[name]().double()
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    ours = zoo.get(name).astype(np.float64)
    ours.load_state_dict({key: state[tv_key] for key, tv_key in zoo.torchvision_keys(ours)})
    return ours, theirs


@pytest.mark.parametrize(
    "name, shape", [("lenet5", (2, 1, 32, 32)), ("resnet18", (2, 3, 64, 64)),
                    ("resnet50", (1, 3, 64, 64)), ("mobilenet_v2", (1, 3, 64, 64))],
)  # fmt: skip
def test_eval_forward_matches_twin(name, shape):
    ours, theirs = load_twin(name)
    x = np.random.default_rng(1).standard_normal(shape)
    y = ours.eval()(x)
    with torch.no_grad():
        expected = theirs.eval()(torch.tensor(x)).numpy()
    assert y.shape == (shape[0], *ours.output_shape(shape[1:]))
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_resnet18_trains_like_the_twin():
    """Training mode (batch statistics): output, input gradient and every parameter gradient."""
    ours, theirs = load_twin("resnet18", seed=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64))
    g = np.random.default_rng(4).standard_normal((2, 1000))
    y = ours.train()(x)
    ours.zero_grad()
    gx = ours.backward(g)

    tx = torch.tensor(x, requires_grad=True)
    ty = theirs.train()(tx)
    ty.backward(torch.tensor(g))
    assert y.shape == gx.shape[:1] + (1000,) and gx.shape == x.shape
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-8, atol=1e-11)
    tparams = dict(theirs.named_parameters())
    for key, tv_key in zoo.torchvision_keys(ours):
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        p = dict(ours.named_parameters())[key]
        expected = tparams[tv_key].grad.numpy()
        np.testing.assert_allclose(p.grad, expected, rtol=1e-8, atol=1e-10, err_msg=key)


# -- registry ---------------------------------------------------------------------------------


def test_registry():
    assert list(zoo.MODELS) == ["lenet5", "alexnet", "vgg11", "vgg16",
                                "resnet18", "resnet34", "resnet50", "mobilenet_v2"]  # fmt: skip
    assert zoo.default_input("lenet5") == (1, 32, 32)
    assert zoo.default_input("resnet50") == (3, 224, 224)
    assert zoo.get("resnet18", num_classes=7).output_shape((3, 224, 224)) == (7,)
    assert zoo.get("resnet18") is not zoo.get("resnet18")
    with pytest.raises(ConvScopeError, match="resnet18.*mobilenet_v2"):
        zoo.get("resnet19")
    with pytest.raises(ConvScopeError, match="lenet5"):
        zoo.default_input("nope")
