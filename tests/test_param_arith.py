"""The param_arith family beyond the contract's cases: ParamConcat (whose parameter entries
read no input, which the contract's receptive-field oracle cannot express) through the same
oracles, the refusals, and the adapter's mapping of parameters read in a forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as tnn

from convscope import ConvScopeError, nn, summary
from convscope.adapters.torch import from_torch
from convscope.errors import LayerConfigError, NotComposableError, ShapeError
from convscope.ops.arithmetic import AddSpec, MulSpec
from convscope.ops.param_arith import (
    ParamAddSpec,
    ParamConcatSpec,
    ParamMulSpec,
    param_concat,
    param_concat_backward,
)
from convscope.ops.structural import ConcatSpec
from tests import test_contract as contract
from tests.cases import Case, same_in_both_modes
from tests.reference import instrumented as ref


class TorchParamConcat(tnn.Module):
    """The twin of nn.ParamConcat: ``torch.cat`` of the input with ``weight_k`` (shape
    (1, *piece)) expanded over the batch, as ViT joins its class token."""

    def __init__(self, dim, pieces) -> None:
        super().__init__()
        self.dim, self.pieces = dim, pieces
        shapes = [p for p in pieces if p != "input"]
        for k, piece in enumerate(shapes):
            self.register_parameter(f"weight_{k}", tnn.Parameter(torch.zeros(1, *piece)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts, k = [], 0
        for piece in self.pieces:
            if piece == "input":
                parts.append(x)
            else:
                weight = getattr(self, f"weight_{k}")
                parts.append(weight.expand(x.shape[0], *piece))
                k += 1
        return torch.cat(parts, self.dim)


def concat_case(label, shape, dim, pieces, traced=True) -> Case:
    return Case(
        "param_arith",
        label,
        lambda: nn.ParamConcat(dim, pieces),
        lambda: TorchParamConcat(dim, pieces),
        (shape,),
        same_in_both_modes(lambda batch: ref.param_concat_counts(shape, dim, pieces, batch)),
        batch=3,
    )


CONCAT_CASES = [
    concat_case("ParamConcat-cls-token", (4, 6), 1, ((1, 6), "input")),
    concat_case("ParamConcat-cls-dist-last-axis", (3, 4), -1, ((3, 2), "input", (3, 1))),
    concat_case("ParamConcat-channels", (2, 3, 3), 1, ("input", (1, 3, 3))),
]
ADAPTED = CONCAT_CASES[0]  # the adapter sees one parameter piece, first (ViT's layout)

ORACLES = [
    contract.check_shape_vs_torch,
    contract.check_counts_vs_reference,
    contract.check_backward_vs_finite_differences,
    contract.check_backward_vs_autograd,
    contract.check_specfile_round_trip,
]


@pytest.mark.parametrize("check", ORACLES, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("case", CONCAT_CASES, ids=lambda c: c.label)
def test_param_concat_oracles(case, check):
    check(case)


def test_param_concat_adapter_mapping():
    contract.check_adapter_mapping(ADAPTED)


@pytest.mark.parametrize("case", CONCAT_CASES, ids=lambda c: c.label)
def test_param_concat_receptive_field_vs_dependence(case):
    """Each output entry reads exactly one input entry, or (a parameter entry) none; the rule
    keeps the input's field."""
    spec = case.build().spec
    shape = case.shapes[0]
    field = contract.Field.identity(len(shape) - 1)
    assert spec.receptive_field(field, shape, spec.output_shape(shape)) == field
    _, (hits,) = contract.dependence(case)
    axis = spec.axis(len(shape) + 1, shape)
    offset = sum(p[axis] for p in spec.pieces[: spec.pieces.index("input")])
    for o in np.ndindex(*hits.shape[: len(shape)]):
        found = [tuple(int(v) for v in row) for row in np.argwhere(hits[o])]
        inside = offset <= o[axis] < offset + shape[axis]
        if inside:
            expected = list(o)
            expected[axis] -= offset
            assert found == [tuple(expected)], o
        else:
            assert found == [], o


def test_param_concat_counts_and_params():
    spec = ParamConcatSpec(1, ((1, 8), "input"))  # ViT-like: 196 patches of 8 channels
    assert spec.output_shape((196, 8)) == (197, 8)
    assert spec.params().weights == 8
    cost = spec.cost((196, 8), batch=4)
    assert cost.forward.total == 0 and cost.backward_input.total == 0
    assert cost.backward_weight.adds == 3 * 8
    assert spec.macs((196, 8), 4) == 0
    assert "(N − 1) · T" in str(spec.explain((196, 8), batch=4))


def test_param_concat_engine_values():
    x = np.arange(12.0).reshape(2, 2, 3)
    tok = np.array([[[10.0, 20.0, 30.0]]])
    y = param_concat(x, [tok], 1, ((1, 3), "input"))
    np.testing.assert_array_equal(y[:, 0], np.broadcast_to(tok[0], (2, 3)))
    np.testing.assert_array_equal(y[:, 1:], x)
    g = np.ones_like(y)
    gx, (gt,) = param_concat_backward(g, 1, ((1, 3), "input"))
    assert gx.shape == x.shape and gt.shape == (1, 1, 3)
    np.testing.assert_array_equal(gt, np.full((1, 1, 3), 2.0))


# -- the elementwise specs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, shape, batch, forward, back_input, back_weight",
    [
        (ParamMulSpec((8,)), (5, 8), 3, {"mults": 120}, {"mults": 120}, (120, 120 - 8)),
        (ParamMulSpec((1, 4, 1, 1)), (4, 2, 2), 2, {"mults": 32}, {"mults": 32}, (32, 28)),
        (ParamAddSpec((1, 5, 8)), (5, 8), 2, {"adds": 80}, {}, (0, 80 - 40)),
        (ParamMulSpec(()), (3,), 2, {"mults": 6}, {"mults": 6}, (6, 5)),
    ],
)
def test_elementwise_counts(spec, shape, batch, forward, back_input, back_weight):
    cost = spec.cost(shape, batch)
    assert spec.output_shape(shape) == shape
    assert {k: v for k, v in cost.forward.to_dict().items() if v} == forward
    assert {k: v for k, v in cost.backward_input.to_dict().items() if v} == back_input
    assert (cost.backward_weight.mults, cost.backward_weight.adds) == back_weight
    assert cost.backward_bias is None
    assert spec.macs(shape, batch) == 0
    assert spec.params().weights == int(np.prod(spec.shape))
    for count in ("exact", "dense"):
        assert spec.cost(shape, batch, count) == cost


def test_explanations_show_the_working():
    text = str(ParamMulSpec((8,)).explain((5, 8), batch=3))
    assert "N · m − P" in text and "3 · 40 − 8 = 112" in text
    assert "g_x = ε" in str(ParamAddSpec((8,)).explain((5, 8)))


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        (ParamMulSpec((2, 5, 8)), (5, 8), "leading axis stands for the batch"),
        (ParamMulSpec((1, 1, 5, 8)), (5, 8), "more axes than the input"),
        (ParamAddSpec((3, 8)), (1, 8), "would enlarge the output"),
        (ParamAddSpec((4, 8)), (5, 8), "does not broadcast"),
        (ParamConcatSpec(1, ((1, 7), "input")), (5, 8), "needs the input's other axes"),
        (ParamConcatSpec(3, ((1, 8), "input")), (5, 8), "is not a non-batch axis"),
    ],
)
def test_shape_errors(spec, shape, message):
    with pytest.raises(ShapeError, match=message):
        spec.output_shape(shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParamMulSpec((0, 3)),
        lambda: ParamAddSpec("8"),
        lambda: ParamConcatSpec(1, ("input",)),
        lambda: ParamConcatSpec(1, ((1, 8), (1, 8))),
        lambda: ParamConcatSpec(1, ("input", (1, 8), "input")),
        lambda: ParamConcatSpec(1.5, ((1, 8), "input")),
    ],
)
def test_config_errors(make):
    with pytest.raises(LayerConfigError):
        make()


def test_not_composable():
    for spec in (
        ParamMulSpec((3, 1, 1)),
        ParamAddSpec((3, 1, 1)),
        ParamConcatSpec(1, ((1, 3), "input")),
    ):
        with pytest.raises(NotComposableError):
            spec.linear_map(3)


def test_modules_read_their_spec():
    layer = nn.ParamMul([1, 4])
    assert layer.spec == ParamMulSpec((1, 4)) and layer.shape == (1, 4)
    assert layer.weight.shape == (1, 4)
    concat = nn.ParamConcat(1, [[1, 3], "input"])
    assert concat.spec.pieces == ((1, 3), "input")
    assert concat.weight_0.shape == (1, 1, 3)
    assert concat.params().weights == 3


# -- the adapter ----------------------------------------------------------------------------------


class ViTish(tnn.Module):
    """A class token, a position embedding and a layer scale, read in forward."""

    def __init__(self, c=8, n=4) -> None:
        super().__init__()
        self.cls_token = tnn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = tnn.Parameter(torch.zeros(1, n + 1, c))
        self.gamma = tnn.Parameter(torch.ones(c))
        self.scale = tnn.Parameter(torch.ones(c))

    def forward(self, x):
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        x = self.gamma * x  # the parameter first
        return x.mul(self.scale)


def test_adapter_maps_a_vit_stem():
    graph = from_torch(ViTish(), (4, 8))
    assert graph.unsupported == []
    specs = [node.spec for node in graph.nodes.values()]
    assert specs == [
        ParamConcatSpec(1, ((1, 8), "input")),
        ParamAddSpec((1, 5, 8)),
        ParamMulSpec((8,)),
        ParamMulSpec((8,)),
    ]
    report = summary(ViTish(), (4, 8), batch=2)
    assert report.total_params == 8 + 40 + 8 + 8
    assert report.unsupported == []


class Mixed(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = tnn.Parameter(torch.ones(3))

    def forward(self, x):
        y = x * x  # two input-derived operands: Mul as before
        y = y + x  # Add as before
        y = torch.add(y, self.p)  # the torch form with a parameter
        return torch.cat([y, y], 1)  # Concat as before


def test_adapter_keeps_the_two_operand_forms():
    graph = from_torch(Mixed(), (2, 3))
    assert graph.unsupported == []
    assert [node.spec for node in graph.nodes.values()] == [
        MulSpec(),
        AddSpec(),
        ParamAddSpec((3,)),
        ConcatSpec(1),
    ]


class Refused(tnn.Module):
    def __init__(self, shape, alpha=None) -> None:
        super().__init__()
        self.p = tnn.Parameter(torch.ones(shape))
        self.alpha = alpha

    def forward(self, x):
        if self.alpha is not None:
            return torch.add(x, self.p, alpha=self.alpha)
        return x * self.p


@pytest.mark.parametrize(
    "model, shape, why",
    [
        (Refused((3,), alpha=2.0), (2, 3), "alpha"),
        (Refused((4, 2, 3)), (2, 3), "enlarge the output"),
    ],
)
def test_adapter_lists_what_it_cannot_count(model, shape, why):
    graph = from_torch(model, shape)
    assert len(graph.unsupported) == 1 and why in graph.unsupported[0]


def test_a_scale_after_a_conv_is_counted_with_its_parameters():
    class Scaled(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tnn.Conv2d(4, 2, 3, padding=1)
            self.scale = tnn.Parameter(torch.ones(1, 2, 1, 1))

        def forward(self, x):
            return self.conv(x) * self.scale

    report = summary(Scaled(), (4, 6, 6), batch=2)
    assert report.unsupported == []
    assert report.total_params == 2 * 4 * 9 + 2 + 2
    row = report.layers[-1]
    assert row.params == 2


def test_errors_are_convscope_errors():
    with pytest.raises(ConvScopeError):
        nn.ParamAdd((2, 3)).output_shape((3, 3))
