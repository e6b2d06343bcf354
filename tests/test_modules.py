"""One module contract for every layer the registry holds: PyTorch's attribute names, read-only
and read from the spec; backward before forward refused with ConvScopeError; one rule for
sizes; and a repr that shows only what differs from the defaults."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from convscope import ConvScopeError, ShapeError, nn, registry
from convscope.containers import Graph, Node
from convscope.module import Module
from convscope.ops.arithmetic import AddSpec
from tests import cases

#: Small values for the required constructor arguments of every layer.
REQUIRED = {
    "in_channels": 2, "out_channels": 2, "kernel_size": 1, "num_features": 2, "in_features": 2,
    "out_features": 2, "output_size": 1, "normalized_shape": 2, "num_groups": 1,
    "num_channels": 2, "padding": 1, "value": 0.5, "shape": (2, 1, 1), "dim": 1,
    "pieces": ((1, 2, 2), "input"), "upscale_factor": 2, "downscale_factor": 2,
}  # fmt: skip
#: Layers whose defaults alone do not make a layer (PyTorch's too: Upsample needs a size).
CHOSEN = {"Softmax": {"dim": 1}, "LogSoftmax": {"dim": 1}, "Upsample": {"scale_factor": 2}}


def every_layer() -> list[Module]:
    layers = []
    for name, cls in registry.modules().items():
        params = inspect.signature(cls.__init__).parameters.values()
        required = [p.name for p in params if p.name != "self" and p.default is p.empty]
        kwargs = {name: REQUIRED[name] for name in required}
        layers.append(cls(**kwargs, **CHOSEN.get(name, {})))
    return layers


CONTAINERS = [
    nn.Sequential(nn.ReLU(), nn.ReLU()),
    nn.Residual(nn.ReLU()),
    nn.Concat(nn.ReLU(), nn.ReLU()),
    Graph({"add": Node(AddSpec(), ["input", "input"])}, "add"),
    Module(),
]


@pytest.mark.parametrize("module", every_layer() + CONTAINERS, ids=lambda m: type(m).__name__)
def test_backward_before_forward_is_a_convscope_error(module):
    with pytest.raises(ConvScopeError, match="before forward"):
        module.backward(np.zeros((1, 2, 1), dtype=np.float32))


def _same(ours, theirs):
    """PyTorch keeps some arguments as given (an int for every axis); ours are per axis."""
    if isinstance(ours, tuple) and not isinstance(theirs, (tuple, list)):
        return all(v == theirs for v in ours)
    return ours == (tuple(theirs) if isinstance(theirs, list) else theirs)


MODULE_CASES = [c for group in cases.CASES.values() for c in group if isinstance(c.build(), Module)]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_attributes_are_pytorchs_and_read_only(case):
    ours, theirs = case.build(), case.twin()
    names = [p for p in inspect.signature(type(ours).__init__).parameters if p != "self"]
    for name in names:
        if name in ("bias", "weight"):  # the Parameters, as in PyTorch
            assert (getattr(ours, name) is None) == (getattr(theirs, name) is None), name
            continue
        assert _same(getattr(ours, name), getattr(theirs, name)), name
        with pytest.raises(AttributeError):
            setattr(ours, name, getattr(ours, name))


def test_the_attribute_a_pytorch_user_expects():
    conv = nn.Conv2d(3, 8, 3, stride=2)
    assert conv.stride == (2, 2) and conv.kernel_size == (3, 3) and conv.padding == (0, 0)
    assert conv.stride == torch.nn.Conv2d(3, 8, 3, stride=2).stride
    assert nn.BatchNorm2d(4, momentum=0.3).momentum == 0.3 and nn.Dropout(0.2).p == 0.2


@pytest.mark.parametrize("shape", [(True, 2), (2, 2.0), (0, 2), (), "ab", None])
@pytest.mark.parametrize(
    "layer",
    [nn.ReLU(), nn.Flatten(), nn.Linear(2, 2), nn.Conv1d(2, 2, 1), nn.LayerNorm(2)],
    ids=lambda m: type(m).__name__,
)
def test_one_rule_for_sizes(layer, shape):
    with pytest.raises(ShapeError, match=">= 1"):
        layer.output_shape(shape)


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        (nn.Conv2d(3, 8, 3), "Conv2d(3, 8, kernel_size=3, stride=1)"),
        (nn.Conv2d(3, 8, (3, 5), padding=1, bias=False), "Conv2d(3, 8, kernel_size=(3, 5), "
         "stride=1, padding=1, bias=False)"),
        (nn.MaxPool2d(3, 2, 1), "MaxPool2d(kernel_size=3, stride=2, padding=1)"),
        (nn.BatchNorm2d(4), "BatchNorm2d(4)"),
        (nn.BatchNorm2d(4, affine=False), "BatchNorm2d(4, affine=False)"),
        (nn.LeakyReLU(0.2), "LeakyReLU(negative_slope=0.2)"),
        (nn.ReLU(inplace=True), "ReLU(inplace=True)"),
        (nn.GroupNorm(2, 8, eps=1e-3), "GroupNorm(2, 8, eps=0.001)"),
        (nn.Linear(4, 2), "Linear(in_features=4, out_features=2)"),
    ],
)  # fmt: skip
def test_repr_shows_what_differs_from_the_defaults(layer, text):
    assert repr(layer) == text
