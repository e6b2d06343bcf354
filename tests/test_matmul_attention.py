"""The matmul and attention families beyond the contract's cases: broadcasting, einsum forms,
baddbmm's scalings, multi-head attention, causal and explicit masks (the contract's oracles on
them), MACs against torch's FlopCounterMode, and the torch call rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convscope import functional as F
from convscope import registry
from convscope.adapters.torch import from_torch
from convscope.errors import ConvScopeError
from convscope.ops.attention import AttentionSpec
from convscope.ops.matmul import MatmulSpec
from tests import cases
from tests.cases import Case, Wrap, graph_run, same_in_both_modes
from tests.reference import instrumented as ref
from tests.test_contract import (
    check_backward_vs_autograd,
    check_backward_vs_finite_differences,
    check_counts_vs_reference,
    check_shape_vs_torch,
    shape_argument,
    spec_of,
)

sdpa = torch.nn.functional.scaled_dot_product_attention


def product(label: str, spec: MatmulSpec, shapes, labels, equation: str | None = None) -> Case:
    """A matmul (or, with ``equation``, einsum) case; ``labels`` for the reference."""
    if equation is None:
        twin, run = (lambda a, b: a @ b), graph_run(F.matmul, F.matmul_backward)
    else:
        twin = lambda a, b: torch.einsum(equation, a, b)  # noqa: E731
        run = graph_run(
            lambda a, b: F.einsum(equation, a, b),
            lambda g, a, b: F.einsum_backward(g, equation, a, b),
        )
    return Case(
        "matmul",
        label,
        lambda: spec,
        lambda: twin,
        shapes,
        same_in_both_modes(lambda batch: ref.contraction_counts(labels, *shapes, batch)),
        run=run,
    )


def baddbmm_case(beta: float, alpha: float) -> Case:
    shapes = ((1, 4), (3, 2), (2, 4))
    return Case(
        "matmul",
        f"Baddbmm-beta{beta}-alpha{alpha}",
        lambda: MatmulSpec(alpha=alpha, beta=beta),
        lambda: lambda c, a, b: torch.baddbmm(c, a, b, beta=beta, alpha=alpha),
        shapes,
        same_in_both_modes(
            lambda batch: ref.contraction_counts(
                ("ik", "kj", "ij"), shapes[1], shapes[2], batch, alpha, beta, shapes[0]
            )
        ),
        run=graph_run(
            lambda c, a, b: F.baddbmm(c, a, b, beta, alpha),
            lambda g, c, a, b: F.baddbmm_backward(g, c, a, b, beta, alpha),
        ),
    )


def attention_case(label: str, shapes, mask=None, is_causal=False, scale=None) -> Case:
    kind = None if mask is None else ("bool" if mask.dtype == bool else "float")
    theirs = None if mask is None else torch.tensor(mask)
    return Case(
        "attention",
        label,
        lambda: AttentionSpec(kind, is_causal, scale),
        lambda: lambda q, k, v: sdpa(q, k, v, theirs, is_causal=is_causal, scale=scale),
        shapes,
        lambda batch, mode: ref.attention_counts(*shapes, batch, mode, mask, is_causal, scale),
        run=graph_run(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, is_causal, scale),
            lambda g, q, k, v: F.scaled_dot_product_attention_backward(
                g, q, k, v, mask, is_causal, scale
            ),
        ),
    )


_KEEP = np.array(
    [[True, False, True, False], [False, True, True, True], [True, True, False, False]]
)

EXTRA = [
    product("Matmul-broadcast", MatmulSpec(), ((1, 3, 4), (2, 4, 5)), ("hik", "hkj", "hij")),
    product("Bmm", MatmulSpec(), ((3, 2), (2, 4)), ("ik", "kj", "ij")),
    product(
        "Einsum-qk",
        MatmulSpec("bhqd,bhkd->bhqk"),
        ((2, 3, 4), (2, 5, 4)),
        ("hqd", "hkd", "hqk"),
        "bhqd,bhkd->bhqk",
    ),
    product(
        "Einsum-pv",
        MatmulSpec("bhqk,bhkd->bhqd"),
        ((2, 3, 5), (2, 5, 4)),
        ("hqk", "hkd", "hqd"),
        "bhqk,bhkd->bhqd",
    ),
    product(
        "Einsum-ellipsis-broadcast",
        MatmulSpec("...qd,...kd->...qk"),
        ((1, 3, 4), (2, 5, 4)),
        ("hqd", "hkd", "hqk"),
        "...qd,...kd->...qk",
    ),
    product("Einsum-outer", MatmulSpec("bi,bj->bij"), ((3,), (4,)), ("i", "j", "ij"), "bi,bj->bij"),
    product(
        "Einsum-two-contracted",
        MatmulSpec("bijk,bjkl->bli"),
        ((2, 3, 2), (3, 2, 4)),
        ("ijk", "jkl", "li"),
        "bijk,bjkl->bli",
    ),
    baddbmm_case(0.0, 1.0),
    baddbmm_case(1.0, 1.0),
    baddbmm_case(-1.5, 0.5),
    attention_case("SDPA-heads", ((2, 4, 3), (2, 5, 3), (2, 5, 6))),
    attention_case("SDPA-causal-L>S", ((2, 5, 3), (2, 4, 3), (2, 4, 2)), is_causal=True),
    attention_case("SDPA-causal-L<S-scale", ((3, 2), (5, 2), (5, 3)), is_causal=True, scale=0.3),
    attention_case("SDPA-bool-mask", ((3, 2), (4, 2), (4, 3)), mask=_KEEP),
    attention_case(
        "SDPA-float-mask",
        ((2, 3, 2), (2, 4, 2), (2, 4, 3)),
        mask=np.random.default_rng(5).standard_normal((3, 4)),
    ),
]
ALL = EXTRA + cases.CASES["matmul"] + cases.CASES["attention"]
IDS = [c.id for c in ALL]


@pytest.mark.parametrize("case", EXTRA, ids=[c.id for c in EXTRA])
@pytest.mark.parametrize(
    "check",
    [
        check_shape_vs_torch,
        check_counts_vs_reference,
        check_backward_vs_finite_differences,
        check_backward_vs_autograd,
    ],
    ids=["shape", "counts", "finite_differences", "autograd"],
)
def test_matmul_attention_oracles(case: Case, check) -> None:
    check(case)


@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_matmul_attention_macs_vs_flop_counter(case: Case) -> None:
    """MACs are the products' multiply-accumulates, dense, without the addend: torch's flop
    counter / 2. On CPU it counts sdpa through its math decomposition (two bmm), so the causal
    and masked forms count every score too. An einsum that contracts nothing (an outer product)
    runs as torch's elementwise mul: 0 flops, and 0 MACs."""
    xs = [torch.randn(case.batch, *s, dtype=torch.float64) for s in case.shapes]
    with FlopCounterMode(display=False) as counter:
        case.twin()(*xs)
    assert spec_of(case.build()).macs(shape_argument(case), case.batch) * 2 == (
        counter.get_total_flops()
    )


def test_causal_exact_skips_masked_scores() -> None:
    spec, shapes = AttentionSpec(is_causal=True), [(4, 3), (4, 3), (4, 2)]
    exact, dense = spec.cost(shapes, 1, "exact"), spec.cost(shapes, 1, "dense")
    assert exact.forward.specials == 4 + 3 + 2 + 1 and dense.forward.specials == 16
    assert AttentionSpec().cost(shapes, 1, "exact") == dense


def test_explanations_name_every_count() -> None:
    text = str(AttentionSpec(attn_mask="float").explain([(2, 3), (4, 3), (4, 5)], 2))
    assert "exps" in text and "compares" in text
    assert "β" in str(MatmulSpec(alpha=2.0, beta=0.5).explain([(3, 1), (3, 4), (4, 1)]))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: MatmulSpec("bii,bij->bj"),  # a diagonal
        lambda: MatmulSpec("bij,bjk->bk"),  # i summed in one operand alone
        lambda: MatmulSpec("bi,bj,bk->bijk"),  # three operands
        lambda: AttentionSpec("bool", is_causal=True),
        lambda: AttentionSpec("int"),
    ],
)
def test_refused_configurations(bad) -> None:
    with pytest.raises(ConvScopeError):
        bad().output_shape([(2, 2), (2, 2)])


def test_shape_errors() -> None:
    with pytest.raises(ConvScopeError):
        MatmulSpec().output_shape([(3, 4), (5, 2)])
    with pytest.raises(ConvScopeError):
        MatmulSpec().output_shape([(2, 3, 4), (4, 2)])  # the batch axis would not align
    with pytest.raises(ConvScopeError):
        AttentionSpec().output_shape([(3, 4), (5, 2), (5, 2)])


# -- torch call rules ----------------------------------------------------------------------------


def _einsum_rule() -> registry.CallRule:
    return registry.torch_functions()["torch.einsum"]


def test_einsum_rule_reads_the_equation() -> None:
    call = registry.TorchCall((registry.Tensor((5, 4)),), {}, ((3, 4), (5, 4)), (3, 5))
    with pytest.raises(registry.Unsupported, match="equation"):
        _einsum_rule()(call)
    leading = registry.TorchCall(
        (registry.Tensor((5, 4)),), {}, ((3, 4), (5, 4)), (3, 5), ("bqd,bkd->bqk",)
    )
    assert _einsum_rule()(leading) == MatmulSpec("bqd,bkd->bqk")


def test_einsum_traced() -> None:
    graph = from_torch(Wrap(lambda x: torch.einsum("bqd,bkd->bqk", x, x)), (3, 4))
    if graph.unsupported:
        pytest.xfail("the adapter does not hand einsum's equation (TorchCall.leading) yet")
    found = [n.spec for n in graph.nodes.values() if isinstance(n.spec, MatmulSpec)]
    assert found == [MatmulSpec("bqd,bkd->bqk")]


class _Masked(torch.nn.Module):
    """A mask computed from the input: data, which no shape rule knows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sdpa(x, x, x, attn_mask=x[:, :, :3])


class _BufferMask(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(3, 3, dtype=torch.bool).tril())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sdpa(x, x, x, attn_mask=self.mask)


def test_a_mask_held_by_the_model_is_counted_by_its_dtype() -> None:
    graph = from_torch(_BufferMask(), (3, 3))
    assert graph.unsupported == []
    specs = [n.spec for n in graph.nodes.values() if isinstance(n.spec, AttentionSpec)]
    assert specs == [AttentionSpec("bool")]


class _Weighted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


@pytest.mark.parametrize(
    "model, why",
    [
        (_Masked(), "attn_mask computed from the input"),
        (_Weighted(), "constant"),
        (Wrap(lambda x: sdpa(x, x, x, dropout_p=0.5)), "dropout_p"),
    ],
    ids=["mask", "parameter", "dropout"],
)
def test_unsupported_calls_say_why(model: torch.nn.Module, why: str) -> None:
    graph = from_torch(model, (3, 4) if why == "constant" else (3, 3))
    assert graph.unsupported, "the call must not be counted silently"
    assert why in str(graph.unsupported)
