"""Softmax, padding and pixel-shuffle beyond the contract cases: positive constant padding (whose
padding outputs read nothing, which the contract's dependence oracle does not allow), the
engine against torch over many padding configurations, the closed-form counts against brute
force, refusals, receptive fields and the adapter's handling of unsupported forms."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

from convscope import functional as F
from convscope import nn
from convscope.adapters.torch import from_torch
from convscope.errors import ConvScopeError, LayerConfigError, ShapeError
from convscope.ops.padding import PadSpec, _sources, reached
from convscope.ops.pixel_shuffle import PixelShuffleSpec
from convscope.ops.softmax import SoftmaxSpec
from convscope.receptive import Field
from convscope.specfile import load_spec
from tests import test_contract as contract
from tests.cases import Wrap, padding

# -- positive constant padding: every contract oracle but dependence, and an exact one here ---

CONSTANT = [
    padding("ZeroPad1d-12", "ZeroPad1d", (2, 4), (1, 2)),
    padding("ZeroPad2d-1", "ZeroPad2d", (2, 3, 3), 1),
    padding("ZeroPad3d-mixed", "ZeroPad3d", (1, 2, 3, 3), (1, 0, -1, 2, 0, 1)),
    padding("ConstantPad2d-value", "ConstantPad2d", (2, 3, 4), (2, -1, 0, 1), -1.5),
    padding("ConstantPad1d-value", "ConstantPad1d", (3, 4), 2, 0.25),
    padding(
        "F.pad-constant-channels",
        "ConstantPad3d",
        (2, 3, 3),
        (0, 1, 1, 0, 1, 1),
        3.0,
        traced=lambda: Wrap(lambda x: TF.pad(x, (0, 1, 1, 0, 1, 1), value=3.0)),
    ),
]
ORACLES = [name for name in contract.ORACLES if name != "receptive_field_vs_dependence"]


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("case", CONSTANT, ids=[c.id for c in CONSTANT])
def test_constant_padding_oracles(case, oracle):
    contract.ORACLES[oracle][0](case)


@pytest.mark.parametrize("case", CONSTANT, ids=[c.id for c in CONSTANT])
def test_constant_padding_field_is_the_shift(case):
    """Each output reads exactly the position its field says (o − before), or nothing."""
    spec = case.build().spec
    shape = case.shapes[0]
    out = spec.output_shape(shape)
    field = spec.receptive_field(Field.identity(len(shape) - 1), shape, out)
    assert not (field.unknown or field.undefined or field.global_)
    base, (hits,) = contract.dependence(case)
    for o in np.ndindex(*base.shape):
        found = contract.positions(hits, o, len(shape))
        assert len(found) <= 1, o
        if found:
            want = tuple(
                int(o[a + 1] * j - p) for a, (j, p) in enumerate(zip(field.stride, field.padding))
            )
            assert found[0] == want, (o, found, want)
            assert all(r == 1 for r in field.size)


# -- the engine against torch, and the closed-form adds against brute force ---------------------

CONFIGS = [
    (mode, (size,), pad)
    for mode in ("constant", "reflect", "replicate", "circular")
    for size in (1, 3, 5)
    for pad in itertools.product(range(-3, 5), repeat=2)
]


def _valid(mode: str, shape, pad) -> bool:
    try:
        PadSpec(pad, mode).output_shape((2, *shape))
    except ConvScopeError:
        return False
    return True


@pytest.mark.parametrize("mode", ("constant", "reflect", "replicate", "circular"))
def test_pad_engine_and_counts_vs_torch(mode):
    rng = np.random.default_rng(0)
    checked = 0
    for _, (size,), pad in (c for c in CONFIGS if c[0] == mode):
        if not _valid(mode, (size,), pad):
            continue
        x = rng.standard_normal((2, 2, size))
        y = F.pad(x, pad, mode, 0.5 if mode == "constant" else 0.0)
        t = torch.tensor(x, requires_grad=True)
        yt = TF.pad(t, pad, mode, 0.5 if mode == "constant" else None)
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=str(pad))
        g = rng.standard_normal(y.shape)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(F.pad_backward(g, x, pad, mode), t.grad.numpy(), atol=1e-12)
        src = _sources(size, *pad, mode)
        distinct = len(set(src[src >= 0].tolist()))
        assert reached(size, *pad, mode) == distinct, (pad, size)
        adds = PadSpec(pad, mode).cost((2, size), batch=3).backward_input.adds
        expected = 0 if mode == "constant" else 3 * 2 * ((src >= 0).sum() - distinct)
        assert adds == expected, (pad, size)
        checked += 1
    assert checked > 20


def test_pad_engine_2d_and_3d_vs_torch():
    rng = np.random.default_rng(1)
    for mode, pad, shape in [
        ("reflect", (2, -1, 1, 3), (2, 4, 5)),
        ("replicate", (3, 0, -2, 4, 1, 1), (1, 3, 4, 2)),
        ("circular", (1, -1, 2, 2, -1, 1), (2, 3, 3, 4)),
        ("constant", (1, 2, -1, 0, 2, -1, 1, 0), (2, 3, 4, 3)),
    ]:
        x = rng.standard_normal((2, *shape))
        t = torch.tensor(x, requires_grad=True)
        yt = TF.pad(t, pad, mode)
        y = F.pad(x, pad, mode)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        g = rng.standard_normal(y.shape)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(F.pad_backward(g, x, pad, mode), t.grad.numpy(), atol=1e-12)
        assert PadSpec(pad, mode).output_shape(shape) == tuple(yt.shape[1:])


# -- refusals --------------------------------------------------------------------------------


def test_reflection_refuses_padding_not_smaller_than_the_size():
    with pytest.raises(ShapeError, match=r"smaller than the size.*\(4, 0\).*size 4"):
        nn.ReflectionPad1d((4, 0)).output_shape((2, 4))
    nn.ReflectionPad1d((3, 3)).output_shape((2, 4))


def test_circular_refuses_wrapping_twice_and_crops_to_nothing():
    with pytest.raises(ShapeError, match="wrap at most once"):
        nn.CircularPad1d((5, 0)).output_shape((2, 4))
    with pytest.raises(ShapeError, match="crops"):
        nn.ZeroPad1d((-2, -2)).output_shape((2, 4))
    with pytest.raises(ShapeError, match="never pads the batch"):
        nn.ZeroPad3d(1).output_shape((4, 4))


def test_softmax_refuses_dim_none_and_the_batch_axis():
    with pytest.raises(LayerConfigError, match="dim=None"):
        nn.Softmax()
    with pytest.raises(LayerConfigError, match="dim=None"):
        nn.LogSoftmax(None)
    with pytest.raises(ShapeError, match="batch axis"):
        nn.Softmax(0).output_shape((3, 4))
    graph = from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.Softmax()), (3, 6, 6))
    assert len(graph.unsupported) == 1 and "dim=None" in graph.unsupported[0]


def test_pixel_shuffle_refuses_indivisible_sizes():
    with pytest.raises(ShapeError, match="divisible by r² = 4"):
        nn.PixelShuffle(2).output_shape((6, 3, 3))
    with pytest.raises(ShapeError, match="H and W divisible"):
        nn.PixelUnshuffle(2).output_shape((1, 4, 5))
    with pytest.raises(LayerConfigError, match="upscale_factor"):
        nn.PixelShuffle(0)


# -- receptive fields ---------------------------------------------------------------------------


def test_softmax_over_space_is_a_fixed_window_that_later_layers_keep():
    field = Field.identity(2).window((3, 3), (2, 2), (1, 1), (1, 1))  # a conv k3 s2 p1
    after = SoftmaxSpec(-1).receptive_field(field, (4, 5, 6), (4, 5, 6))
    assert after.size == (Fraction(3), Fraction(2 * 5 + 3))
    assert after.stride == (Fraction(2), Fraction(0))
    again = after.window((3, 3), (2, 2), (1, 1), (1, 1))
    assert again.size[1] == after.size[1] and again.padding[1] == after.padding[1]
    assert SoftmaxSpec(1).receptive_field(field, (4, 5, 6), (4, 5, 6)) == field


def test_pixel_shuffle_fields():
    field = Field.identity(2)
    shuffle = PixelShuffleSpec(2).receptive_field(field, (8, 3, 3), (2, 6, 6))
    assert shuffle.stride == (Fraction(1, 2),) * 2 and not shuffle.undefined
    assert PixelShuffleSpec(2, True).receptive_field(field, (1, 4, 4), (4, 2, 2)).undefined
    assert PixelShuffleSpec(2).receptive_field(field, (2, 8, 3, 3), (2, 2, 6, 6)).unknown


# -- the other faces ---------------------------------------------------------------------------


def test_spec_file_keys_and_explanations():
    model = load_spec(
        {
            "input": [4, 6, 6],
            "layers": [
                {"reflectionpad2d": {"padding": [1, 1, 2, 0]}},
                {"constantpad1d": {"padding": 1, "value": 2.0}},
                {"pixelunshuffle": {"downscale_factor": 2}},
                {"pixelshuffle": {"upscale_factor": 2}},
                {"logsoftmax": {"dim": 1}},
            ],
        }
    )
    assert model.output_shape((4, 6, 6)) == (4, 8, 10)
    shapes = [(4, 6, 6), (4, 8, 8), (4, 8, 10), (16, 4, 5), (4, 8, 10)]
    for layer, shape in zip(model, shapes):
        assert "Cost" in layer.explain(shape).text() or "Backward" in layer.explain(shape).text()
    assert model[0].padding == (1, 1, 2, 0) and model[1].value == 2.0
    assert model[2].downscale_factor == 2 and model[4].dim == 1
    assert repr(model[0]) == "ReflectionPad2d((1, 1, 2, 0))"


def test_adapter_maps_modules_and_calls_to_one_spec():
    model = tnn.Sequential(
        tnn.ZeroPad2d(1),
        tnn.PixelUnshuffle(2),
        tnn.LogSoftmax(1),
        tnn.ReplicationPad2d((1, 0, 0, 1)),
    )
    graph = from_torch(model, (2, 6, 6))
    assert graph.unsupported == []
    specs = [node.spec for node in graph.nodes.values()]
    assert specs == [
        nn.ZeroPad2d(1).spec,
        nn.PixelUnshuffle(2).spec,
        nn.LogSoftmax(1).spec,
        nn.ReplicationPad2d((1, 0, 0, 1)).spec,
    ]
    traced = from_torch(Wrap(lambda x: TF.pad(x, (1, 1), mode="reflect").softmax(-1)), (3, 5))
    assert [n.spec for n in traced.nodes.values()] == [
        nn.ReflectionPad1d(1).spec,
        nn.Softmax(-1).spec,
    ]
    batch = from_torch(Wrap(lambda x: TF.pad(x, (1, 1, 0, 0, 0, 0, 0, 1))), (2, 3, 3))
    assert len(batch.unsupported) == 1 and "batch" in batch.unsupported[0]
