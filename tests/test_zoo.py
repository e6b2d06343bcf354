"""The zoo against torchvision's published figures and against an independent torch.nn twin of
each architecture: parameter counts, MACs, state dict layout, and numbers out of a forward and
backward pass with the same weights."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
import torch
import torch.nn as tnn
from torch.utils.flop_counter import FlopCounterMode

from convscope import ConvScopeError, zoo
from tests.torch_twins import TWINS

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
