"""Interpolation beyond the contract test: the closed forms against the literal reference over
many sizes and factors, PyTorch's shape and index rules, the adapter's calls and refusals."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from convscope import functional as F
from convscope import nn, registry
from convscope.adapters.torch import from_torch
from convscope.compose.chain import chain_links, parse_chain
from convscope.errors import ConvScopeError, LayerConfigError, NotComposableError, ShapeError
from convscope.grammar import Context
from convscope.ops.interpolate import InterpolateSpec
from convscope.ops.interpolating import Axis, axis_count, axis_window
from tests.cases import Wrap
from tests.reference import instrumented as ref

FACTORS = (0.3, 0.5, 0.7, 0.9, 1.15, 1.5, 2.0, 2.5, 3.0, 1 / 3, 4.0)
MODES = (
    ("nearest", None),
    ("nearest-exact", None),
    ("linear", False),
    ("linear", True),
)


def _configs_1d():
    """(L, size, scale_factor, recompute) over sizes 1…13, output sizes and factors."""
    for length in range(1, 14):
        for out in (1, 2, 3, 5, 7, length, 2 * length, 3 * length + 1):
            yield length, out, None, None
        for factor, recompute in itertools.product(FACTORS, (None, True)):
            if int(length * factor) >= 1:
                yield length, None, factor, recompute


def _kwargs(size, factor, mode, align, recompute):
    kw = {"size": size, "scale_factor": factor, "mode": mode, "align_corners": align}
    if recompute:
        kw["recompute_scale_factor"] = True
    return kw


@pytest.mark.parametrize("mode,align", MODES)
def test_closed_forms_equal_the_literal_reference_in_1d(mode, align):
    """Up and down, integer and fractional scales, L = 1, O = 1, O = L: both count modes."""
    for length, size, factor, recompute in _configs_1d():
        spec = InterpolateSpec(**_kwargs(size, factor, mode, align, recompute))
        for count in ("exact", "dense"):
            theirs = ref.interpolate_counts(
                (2, length), size, factor, mode, align, recompute, 1, count
            )
            cost = spec.cost((2, length), 1, count)
            assert spec.output_shape((2, length)) == theirs["output_shape"]
            mine = {
                "forward": {"mults": cost.forward.mults, "adds": cost.forward.adds},
                "backward_input": {
                    "mults": cost.backward_input.mults,
                    "adds": cost.backward_input.adds,
                },
            }
            for part in mine:
                assert mine[part] == theirs[part], (length, size, factor, recompute, count, part)


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((1, 3, 4), {"scale_factor": (1.5, 0.5), "mode": "bilinear"}),
        ((2, 1, 5), {"size": (3, 2), "mode": "bilinear", "align_corners": True}),
        ((1, 4, 3), {"size": (4, 7), "mode": "bilinear"}),
        ((1, 2, 3, 2), {"size": (3, 1, 5), "mode": "trilinear"}),
        ((1, 3, 2, 2), {"scale_factor": (0.7, 2.5, 1.0), "mode": "trilinear"}),
        ((1, 5, 4), {"scale_factor": 0.6, "mode": "nearest-exact"}),
        ((1, 3, 2, 3), {"size": (5, 1, 2)}),
    ],
)
def test_closed_forms_equal_the_literal_reference_in_2d_and_3d(shape, kw):
    spec = nn.Upsample(**kw).spec
    args = [kw.get(k) for k in ("size", "scale_factor")]
    for count in ("exact", "dense"):
        theirs = ref.interpolate_counts(
            shape, *args, kw.get("mode", "nearest"), kw.get("align_corners"), None, 2, count
        )
        cost = spec.cost(shape, 2, count)
        assert (cost.forward.mults, cost.forward.adds) == tuple(
            theirs["forward"][k] for k in ("mults", "adds")
        )
        assert (cost.backward_input.mults, cost.backward_input.adds) == tuple(
            theirs["backward_input"][k] for k in ("mults", "adds")
        )


def test_per_axis_counts_on_larger_sizes():
    """The per-axis closed forms against the reference's taps, up to L = 60."""
    for length, out, align in itertools.product(range(1, 61, 3), range(1, 130, 7), (False, True)):
        axis = Axis(length, out, None, "linear", align)
        for count in ("exact", "dense"):
            taps = ref._interp_axis_taps(length, out, None, "linear", align, count)
            mine = axis_count(axis, count == "dense")
            assert mine.taps == sum(len(t) for t in taps)
            assert mine.reached == len({i for t in taps for i, _ in t})
            assert mine.single == sum(len(t) == 1 for t in taps)


@pytest.mark.parametrize("mode,align", MODES)
def test_shapes_and_values_follow_torch(mode, align):
    """Output sizes ⌊L·s⌋ or size; nearest copies exactly the entry torch copies (float32 and
    float64) and its counts read as many inputs; linear values agree to rounding, also the
    reference's."""
    torch_mode = {"linear": "linear"}.get(mode, mode)
    for length, size, factor, recompute in _configs_1d():
        kw = _kwargs(size, factor, torch_mode, align, recompute)
        for dtype in (np.float32, np.float64):
            x = np.random.default_rng(length).standard_normal((2, 3, length)).astype(dtype)
            theirs = TF.interpolate(torch.tensor(x), **kw).numpy()
            ours = F.interpolate(x, **kw)
            assert ours.shape == theirs.shape and ours.dtype == dtype
            if mode.startswith("nearest"):
                np.testing.assert_array_equal(ours, theirs)
            else:
                # float32 torch computes λ in float32, the engine in double
                np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-5)
        if mode.startswith("nearest"):
            # the counts' exact rule may copy a neighbour where torch's float product lands
            # within rounding of an integer, but it reads as many inputs as torch does
            index = TF.interpolate(torch.arange(float(length)).reshape(1, 1, -1), **kw)
            axis = InterpolateSpec(**kw).axes((1, length))[0]
            assert axis_count(axis, False).reached == len(set(index.flatten().tolist()))
            continue
        counted = ref.interpolate_counts(
            (3, length), size, factor, mode, align, recompute, 2, "exact"
        )
        x64 = torch.tensor(counted["values"]["x"])
        np.testing.assert_allclose(
            counted["values"]["y"], TF.interpolate(x64, **kw).numpy(), rtol=1e-12, atol=1e-12
        )


def test_backward_is_the_adjoint_and_matches_autograd():
    rng = np.random.default_rng(3)
    for shape, kw in [
        ((2, 3, 4, 5), {"scale_factor": 1.5, "mode": "bilinear"}),
        ((1, 2, 3, 2, 4), {"size": (2, 5, 3), "mode": "trilinear", "align_corners": True}),
        ((2, 2, 7), {"scale_factor": 0.4, "mode": "nearest"}),
        ((1, 2, 5, 3), {"size": (8, 2), "mode": "nearest-exact"}),
    ]:
        x = rng.standard_normal(shape)
        y = F.interpolate(x, **kw)
        g = rng.standard_normal(y.shape)
        gx = F.interpolate_backward(g, x, **kw)
        # <g, A x> = <A^T g, x>
        assert np.isclose(np.sum(g * y), np.sum(gx * x))
        t = torch.tensor(x, requires_grad=True)
        TF.interpolate(t, **kw).backward(torch.tensor(g))
        np.testing.assert_allclose(gx, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_nearest_backward_is_not_its_forwards_adjoint_where_o_equals_l():
    """PyTorch's CPU nearest forward reads ⌊d/1.15⌋ = (0, 0) for L = 2, scale_factor 1.15, but
    its backward takes the O = L shortcut (identity). The engine follows the forward and keeps
    its backward the adjoint."""
    x = np.array([[[1.0, 2.0]]])
    assert F.interpolate(x, scale_factor=1.15).tolist() == [[[1.0, 1.0]]]
    assert F.interpolate_backward(np.array([[[1.0, 10.0]]]), x, scale_factor=1.15).tolist() == [
        [[11.0, 0.0]]
    ]


def test_receptive_field_windows():
    """Integer factors give windows; fractional ones and odd linear upsampling vary."""
    from fractions import Fraction as Fr

    assert axis_window(Axis(4, 8, 2.0, "nearest", False)) == (1, Fr(1, 2), 0)
    assert axis_window(Axis(4, 12, None, "nearest-exact", False)) == (1, Fr(1, 3), 0)
    assert axis_window(Axis(9, 3, None, "nearest-exact", False)) == (1, 3, -1)
    assert axis_window(Axis(4, 8, None, "linear", False)) == (2, Fr(1, 2), Fr(1, 4))
    assert axis_window(Axis(8, 4, None, "linear", False)) == (2, 2, Fr(-1, 2))
    assert axis_window(Axis(4, 12, None, "linear", False)) is None
    assert axis_window(Axis(4, 6, None, "nearest", False)) is None
    assert axis_window(Axis(7, 4, None, "linear", True)) == (1, 2, 0)
    assert axis_window(Axis(4, 9, None, "linear", True)) is None
    assert axis_window(Axis(10, 11, 1.15, "nearest", False)) is None


def test_errors_name_the_rule():
    with pytest.raises(LayerConfigError, match="exactly one of size and scale_factor"):
        nn.Upsample(size=4, scale_factor=2)
    with pytest.raises(LayerConfigError, match="align_corners applies to the linear modes"):
        nn.Upsample(scale_factor=2, align_corners=True)
    with pytest.raises(LayerConfigError, match="bicubic"):
        nn.Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(ShapeError, match="'bilinear' takes 2 spatial axes, got 1"):
        nn.Upsample(scale_factor=2, mode="bilinear").output_shape((3, 4))
    with pytest.raises(ShapeError, match="has 2 entries for 3 spatial axes"):
        nn.Upsample(size=(2, 3)).output_shape((1, 2, 2, 2))
    with pytest.raises(ShapeError, match="sizes must be >= 1"):
        nn.Upsample(scale_factor=0.2).output_shape((1, 4))
    with pytest.raises(ShapeError, match="beyond a double"):
        nn.Upsample(scale_factor=1e308).output_shape((1, 4))
    with pytest.raises(ShapeError, match="beyond a double"):
        nn.Upsample(scale_factor=2.0).output_shape((1, 10**400))
    with pytest.raises(NotComposableError, match="is linear but no convolution"):
        nn.Upsample(scale_factor=2).spec.linear_map(3)


def test_adapter_calls_and_refusals():
    up = from_torch(Wrap(lambda x: TF.interpolate(x, size=(5, 7), mode="nearest-exact")), (2, 3, 4))
    assert [n.spec for n in up.nodes.values() if isinstance(n.spec, InterpolateSpec)] == [
        InterpolateSpec(size=(5, 7), mode="nearest-exact")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = from_torch(
            Wrap(lambda x: TF.upsample(x, scale_factor=2, mode="bilinear", align_corners=True)),
            (2, 3, 4),
        )
    assert [n.spec for n in old.nodes.values() if isinstance(n.spec, InterpolateSpec)] == [
        InterpolateSpec(scale_factor=2.0, mode="bilinear", align_corners=True)
    ]
    bicubic = from_torch(
        torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bicubic")), (2, 3, 4)
    )
    assert any("bicubic" in line for line in bicubic.unsupported)
    aa = from_torch(
        Wrap(lambda x: TF.interpolate(x, scale_factor=2, mode="bilinear", antialias=True)),
        (2, 3, 4),
    )
    assert any("antialias" in line for line in aa.unsupported)
    assert "torch.nn.functional.interpolate" in registry.torch_functions()


def test_layer_text_and_spec_file_key():
    kind = registry.layer_kinds()["upsample"]
    values = kind.parse_text(["s=2", "mode=bilinear", "ac=1"], "upsample s=2 mode=bilinear ac=1")
    module = kind.build(values, Context(3, 2, (3, 4, 4)))
    assert module.spec == InterpolateSpec(scale_factor=2.0, mode="bilinear", align_corners=True)
    assert registry.spec_file_layers()["upsample"].module is nn.Upsample
    with pytest.raises(ConvScopeError, match="is linear but no convolution"):
        chain_links(parse_chain(["upsample s=2"], (3, 4, 4)))
