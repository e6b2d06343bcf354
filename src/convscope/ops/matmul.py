"""The matrix product family: ``torch.matmul`` (``@``, ``bmm``) with broadcasting, ``baddbmm``
(``β·input + α·(a @ b)``) and two-operand ``einsum`` contractions, with their rules, passes and
registration. A product of two tensors computed from the input is a step of traced graphs
(attention scores, ``q @ kᵀ``); PyTorch has no module for it.

Every form is one contraction: each output entry is a sum of ``K`` products ``a · b``, ``K``
the product of the contracted axes' sizes (``K`` mults and ``K − 1`` adds per output entry,
as a linear layer counts). Both count modes agree: nothing is padded.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from .arithmetic import _unbroadcast
from .base import noted_shape
from .structural import JoiningOp, Shapes, graph_family

if TYPE_CHECKING:
    from ..receptive import Field

#: Axis labels of a contraction, one per axis of an operand or of the output.
Labels = tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A contraction over per-sample axes: the labels of a, b and the output, and each label's
    size (an output label of size 1 in one operand broadcasts)."""

    a: Labels
    b: Labels
    out: Labels
    sizes: dict[str, int]

    @property
    def contracted(self) -> Labels:
        """The labels summed over: in an operand, not in the output."""
        return tuple(sorted((set(self.a) | set(self.b)) - set(self.out)))

    def shape(self) -> Shape:
        return tuple(self.sizes[x] for x in self.out)


def _split_terms(equation: str) -> tuple[list[str], str | None]:
    text = equation.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    terms = lhs.split(",")
    if len(terms) != 2 or (arrow and "," in rhs) or text.count("->") > 1:
        raise LayerConfigError(f"einsum takes 2 operands and one output, got {equation!r}")
    for term in (*terms, rhs):
        rest = term.replace("...", "", 1)
        if not all(c in string.ascii_letters for c in rest):
            raise LayerConfigError(f"einsum {equation!r}: {term!r} is not letters (and one ...)")
    return terms, rhs if arrow else None


def _expand(term: str, rank: int, width: int, equation: str) -> Labels:
    """``term``'s labels for a tensor of ``rank`` axes (batch included), '...' spread over the
    axes the letters leave, aligned from the right over ``width`` ellipsis labels."""
    head, dots, tail = term.partition("...")
    if not dots:
        if len(term) != rank:
            raise ShapeError(f"einsum {equation!r}: {term!r} names {len(term)} axes, not {rank}")
        return tuple(term)
    spread = rank - len(head) - len(tail)
    if spread < 0:
        raise ShapeError(f"einsum {equation!r}: {term!r} names more than {rank} axes")
    return (*head, *(f".{i}" for i in range(width - spread, width)), *tail)


def einsum_plan(equation: str, shapes: Sequence[Shape]) -> Plan:
    """The contraction of ``equation`` (torch's, the batch axis included) over per-sample
    ``shapes``: the batch must be the first axis of both operands and of the output."""
    terms, rhs = _split_terms(equation)
    ranks = [len(s) + 1 for s in shapes]
    width = max(r - len(t.replace("...", "")) for r, t in zip(ranks, terms))
    a, b = (_expand(t, r, width, equation) for t, r in zip(terms, ranks))
    if rhs is None:  # implicit output: the ellipsis, then the letters used once, sorted
        dots = tuple(f".{i}" for i in range(width)) if "..." in "".join(terms) else ()
        once = sorted(x for x in set(a + b) if len(x) == 1 and (a + b).count(x) == 1)
        out: Labels = (*dots, *once)
    else:
        out = _expand(rhs, len(rhs.replace("...", "")) + width * ("..." in rhs), width, equation)
    for labels in (a, b, out):
        if len(set(labels)) != len(labels):
            raise LayerConfigError(f"einsum {equation!r}: a repeated index (a diagonal)")
    if set(out) - set(a) - set(b):
        raise LayerConfigError(f"einsum {equation!r}: an output index no operand has")
    lonely = [x for x in set(a) ^ set(b) if x not in out]
    if lonely:
        raise LayerConfigError(
            f"einsum {equation!r}: {', '.join(sorted(lonely))} summed in one operand alone"
        )
    if not (a[:1] == b[:1] == out[:1]):
        raise ShapeError(f"einsum {equation!r}: the batch must be the first axis of every tensor")
    return _sized(Plan(a[1:], b[1:], out[1:], {}), shapes, f"einsum {equation!r}")


def matmul_plan(shapes: Sequence[Shape]) -> Plan:
    """torch.matmul over per-sample shapes ``(*batch, m, k)`` and ``(*batch, k, n)`` of one
    rank (the batch axis leads both), the other batch axes broadcasting."""
    a, b = shapes
    if len(a) != len(b) or len(a) < 2:
        raise ShapeError(
            f"Matmul takes two inputs of one rank >= 2 without the batch (the batch axis leads "
            f"both), got {shape_text(a)} and {shape_text(b)}"
        )
    lead = tuple(f"B{i}" for i in range(len(a) - 2))
    plan = Plan((*lead, "m", "k"), (*lead, "k", "n"), (*lead, "m", "n"), {})
    return _sized(plan, shapes, "Matmul")


def _sized(plan: Plan, shapes: Sequence[Shape], layer: str) -> Plan:
    sizes: dict[str, int] = {}
    for labels, shape in zip((plan.a, plan.b), shapes):
        for x, v in zip(labels, shape):
            known = sizes.get(x, v)
            if x in plan.out and 1 in (known, v):  # a kept axis of size 1 broadcasts
                sizes[x] = max(known, v)
            elif known != v:
                raise ShapeError(
                    f"{layer}: shapes {shape_text(shapes[0])} and {shape_text(shapes[1])} "
                    f"disagree on an axis ({known} against {v})"
                )
            else:
                sizes[x] = v
    return Plan(plan.a, plan.b, plan.out, sizes)


@dataclass(frozen=True)
class MatmulSpec(JoiningOp):
    """A batched product of two inputs: torch.matmul semantics, or an einsum ``equation``
    (torch's, batch axis first in every tensor); with ``beta`` (baddbmm) a third input, first,
    is added: ``β · input + α · (a @ b)``. A scaling by 1 is no operation; β = 0 ignores
    ``input``, as PyTorch does."""

    equation: str | None = None
    alpha: float = 1.0
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.equation is not None:
            _split_terms(self.equation)
            if self.beta is not None or self.alpha != 1:
                raise LayerConfigError("einsum takes no alpha or beta")

    @property
    def name(self) -> str:
        """Einsum, Baddbmm or Matmul."""
        if self.equation is not None:
            return "Einsum"
        return "Matmul" if self.beta is None else "Baddbmm"

    def _factors(self, shapes: Shapes) -> Shapes:
        return shapes[1:] if self.beta is not None else shapes

    def plan(self, shapes: Sequence[Shape]) -> Plan:
        """The contraction of the two factors' per-sample ``shapes``."""
        if self.equation is not None:
            return einsum_plan(self.equation, shapes)
        return matmul_plan(shapes)

    def _check_joined(self, shapes: Shapes) -> None:
        wanted = 2 if self.beta is None else 3
        if len(shapes) != wanted:
            raise ShapeError(f"{self.name} takes {wanted} inputs, got {len(shapes)}")
        out = self.plan(self._factors(shapes)).shape()
        if self.beta is not None:
            c = shapes[0]
            if len(c) != len(out) or any(u not in (1, v) for u, v in zip(c, out)):
                raise ShapeError(
                    f"Baddbmm: input {shape_text(c)} does not broadcast to the product "
                    f"{shape_text(out)} (same rank, each axis equal or 1)"
                )

    def _shape(self, input_shape: Shapes, w: Working) -> Shape:
        plan = self.plan(self._factors(input_shape))
        gone = ", ".join(plan.contracted) or "none"
        note = f"The contracted axes ({gone}) go, the others broadcast: {shape_text(plan.shape())}"
        return noted_shape(w, plan.shape(), note)

    def _sizes(self, input_shape: Shapes, batch: int) -> dict[str, int]:
        plan = self.plan(self._factors(input_shape))
        a, b = (prod(s) for s in self._factors(input_shape))
        out, k = prod(plan.shape()), prod(plan.sizes[x] for x in plan.contracted)
        return {"N": batch, "M": out, "K": k, "a": a, "b": b}

    def _macs(self, input_shape: Shapes, output_shape: Shape, batch: int, w: Working) -> int:
        w.section("MACs (dense, no addend)")
        values = self._sizes(input_shape, batch)
        if not self.plan(self._factors(input_shape)).contracted:
            w.note("Nothing is contracted: an elementwise product (as Mul, torch's own), 0 MACs.")
            return 0
        return w.let("MACs", "N · M · K", batch * values["M"] * values["K"], values)

    def _cost(
        self, input_shape: Shapes, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        v = self._sizes(input_shape, batch)
        n, m, k = batch, v["M"], v["K"]
        scaled = self.alpha != 1
        w.section("Forward pass: y = Σ_K a · b per output entry")
        w.note("M: output entries per image; K: the product of the contracted axes' sizes.")
        mults = w.let("mults", "N · M · K", n * m * k, v)
        adds = w.let("adds", "N · M · (K − 1)", n * m * (k - 1), v)
        back_mults = back_adds = 0
        if scaled:
            w.section(f"Forward pass: α · (a @ b), α = {self.alpha}")
            mults += w.let("mults", "N · M", n * m, v)
        if self.beta is not None:
            c = prod(input_shape[0])
            cv = {**v, "c": c}
            w.section(f"Forward pass: + β · input, β = {self.beta}")
            if self.beta not in (0, 1):
                mults += w.let("mults", "N · c", n * c, cv, why="c: input entries per image")
            if self.beta != 0:
                adds += w.let("adds", "N · M", n * m, cv)
                w.section("Backward pass: g_input = β · Σ ε over the broadcast axes")
                back_adds += w.let("adds", "N · (M − c)", n * (m - c), cv)
                if self.beta != 1:
                    back_mults += w.let("mults", "N · c", n * c, cv)
            else:
                w.note("β = 0: the input is not read, its gradient is zero.")
        if scaled:
            w.section("Backward pass: ε · α")
            back_mults += w.let("mults", "N · M", n * m, v)
        w.section("Backward pass: g_a and g_b, each a contraction of ε with the other factor")
        w.note("Each of the N · M · K products feeds one entry of g_a (and one of g_b).")
        back_mults += w.let("mults", "2 · N · M · K", 2 * n * m * k, v)
        back_adds += w.let(
            "adds",
            "N · (M · K − a) + N · (M · K − b)",
            n * (2 * m * k - v["a"] - v["b"]),
            v,
            why="a, b: entries per image of each factor; an entry that sums r products: r − 1",
        )
        forward = OpCount(mults=mults, adds=adds)
        return Cost(forward, OpCount(mults=back_mults, adds=back_adds))

    def receptive_field(self, field: Field, input_shape: Shapes, output_shape: Shape) -> Field:
        """An output entry mixes a whole contracted axis (tokens, features): global, as a
        linear layer's."""
        return field.as_global()


# -- engine: forward and backward pairs --------------------------------------------------------


def _arrays(*named: tuple[np.ndarray, str]) -> list[np.ndarray]:
    arrays = [float_array(x, name) for x, name in named]
    same_dtype(**{name: x for x, (_, name) in zip(arrays, named)})
    return arrays


def _swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` over the last two axes, the other axes (batch first) broadcasting."""
    a, b = _arrays((a, "a"), (b, "b"))
    MatmulSpec().output_shape([a.shape[1:], b.shape[1:]])
    return a @ b


def matmul_backward(
    grad_out: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(g_a, g_b) = (ε @ bᵀ, aᵀ @ ε), each summed over the axes its factor broadcast along."""
    grad_out, a, b = _arrays((grad_out, "grad_out"), (a, "a"), (b, "b"))
    out = MatmulSpec().output_shape([a.shape[1:], b.shape[1:]])
    expect_shape(grad_out, (a.shape[0], *out), "grad_out", "(the product)")
    return _unbroadcast(grad_out @ _swap(b), a.shape), _unbroadcast(_swap(a) @ grad_out, b.shape)


def baddbmm(
    c: np.ndarray, a: np.ndarray, b: np.ndarray, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """``β · c + α · (a @ b)``; a scaling by 1 is skipped, β = 0 ignores ``c`` (as PyTorch)."""
    c, a, b = _arrays((c, "input"), (a, "batch1"), (b, "batch2"))
    MatmulSpec(alpha=alpha, beta=beta).output_shape([c.shape[1:], a.shape[1:], b.shape[1:]])
    y = a @ b
    if alpha != 1:
        y = alpha * y
    if beta != 0:
        y = y + (c if beta == 1 else beta * c)
    return y


def baddbmm_backward(
    grad_out: np.ndarray,
    c: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g_input, g_batch1, g_batch2) of baddbmm."""
    grad_out, c = _arrays((grad_out, "grad_out"), (c, "input"))
    if beta == 0:
        g_c = np.zeros_like(c)
    else:
        g_c = _unbroadcast(grad_out, c.shape)
        g_c = g_c if beta == 1 else beta * g_c
    g = grad_out if alpha == 1 else alpha * grad_out
    return (g_c, *matmul_backward(g, a, b))


def _letters(equation: str, a: np.ndarray, b: np.ndarray) -> tuple[Plan, str, str, str]:
    plan = einsum_plan(equation, [a.shape[1:], b.shape[1:]])
    names = {x: string.ascii_letters[i + 1] for i, x in enumerate(dict.fromkeys(plan.a + plan.b))}
    return plan, *("a" + "".join(names[x] for x in ls) for ls in (plan.a, plan.b, plan.out))


def einsum(equation: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torch.einsum of two operands, the batch axis first in each (no repeated index)."""
    a, b = _arrays((a, "a"), (b, "b"))
    _, la, lb, lo = _letters(equation, a, b)
    return np.einsum(f"{la},{lb}->{lo}", a, b)


def einsum_backward(
    grad_out: np.ndarray, equation: str, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(g_a, g_b): ε contracted with the other operand, summed where the operand broadcast."""
    grad_out, a, b = _arrays((grad_out, "grad_out"), (a, "a"), (b, "b"))
    plan, la, lb, lo = _letters(equation, a, b)
    expect_shape(grad_out, (a.shape[0], *plan.shape()), "grad_out", f"(einsum {equation!r})")
    # NumPy's einsum broadcasts a label of size 1; the sum over it comes after
    g_a = np.einsum(f"{lo},{lb}->{la}", grad_out, b)
    g_b = np.einsum(f"{lo},{la}->{lb}", grad_out, a)
    return _unbroadcast(g_a, a.shape), _unbroadcast(g_b, b.shape)


# -- registration -------------------------------------------------------------------------------

_CONSTANT = "an operand that is a constant (a parameter): write it as a Linear layer"


def _tensors(call: registry.TorchCall, count: int, aligned: bool = False) -> None:
    """Every tensor argument computed from the input, ``count`` of them, and no ``out``; of
    one rank unless the call names its axes (``aligned``: an einsum's letters)."""
    if call.kwargs.get("out") is not None:
        raise registry.Unsupported("an out= tensor")
    if len(call.operands) != count or any(
        isinstance(v, registry.Constant) for v in (*call.args, *call.kwargs.values())
    ):
        raise registry.Unsupported(_CONSTANT)
    if not aligned and len({len(s) for s in call.operands}) != 1:
        raise registry.Unsupported("operands of different ranks (the batch axis would not align)")


def _matmul(call: registry.TorchCall) -> MatmulSpec:
    _tensors(call, 2)
    if len(call.operands[0]) < 2:
        raise registry.Unsupported("a product of vectors (each item of the batch a vector)")
    return MatmulSpec()


def _baddbmm(call: registry.TorchCall) -> MatmulSpec:
    _tensors(call, 3)
    _, _, beta, alpha = call.bind(("batch1", None), ("batch2", None), ("beta", 1), ("alpha", 1))
    return MatmulSpec(alpha=float(alpha), beta=float(beta))


def _einsum(call: registry.TorchCall) -> MatmulSpec:
    # the equation precedes the operands (``call.leading``); without it there is no rule
    given = (*getattr(call, "leading", ()), call.kwargs.get("equation"), *call.args)
    equation = next((v for v in given if isinstance(v, str)), None)
    if equation is None:
        raise registry.Unsupported("the traced call does not carry the einsum equation")
    _tensors(call, 2, aligned=True)
    try:
        return MatmulSpec(equation=equation)
    except LayerConfigError as why:
        raise registry.Unsupported(str(why)) from why


FAMILY = graph_family(
    "matmul",
    MatmulSpec,
    {
        "matmul": matmul,
        "matmul_backward": matmul_backward,
        "baddbmm": baddbmm,
        "baddbmm_backward": baddbmm_backward,
        "einsum": einsum,
        "einsum_backward": einsum_backward,
    },
    {
        **dict.fromkeys(
            ("torch.matmul", "Tensor.matmul", "Tensor.__matmul__", "torch.bmm", "Tensor.bmm"),
            _matmul,
        ),
        **dict.fromkeys(("torch.baddbmm", "Tensor.baddbmm"), _baddbmm),
        "torch.einsum": _einsum,
    },
    registry.NotSupported("a product of two tensors joins branches: it comes from traced models"),
)
