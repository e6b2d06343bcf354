"""Pointwise activations and dropout, counted branch-free per element (docs/counting.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from ..module import Module
from .base import Op

# name: (forward per element, backward per element, formula shown)
ACTIVATIONS: dict[str, tuple[OpCount, OpCount, str]] = {
    "ReLU": (OpCount(compares=1), OpCount(compares=1), "max(x, 0)"),
    "ReLU6": (OpCount(compares=2), OpCount(compares=2), "min(max(x, 0), 6)"),
    "LeakyReLU": (
        OpCount(mults=1, compares=1),
        OpCount(mults=1, compares=1),
        "x if x > 0 else a·x",
    ),
    "Sigmoid": (
        OpCount(adds=1, divides=1, specials=1),
        OpCount(mults=2, adds=1),
        "1 / (1 + exp(−x))",
    ),
    "Tanh": (OpCount(specials=1), OpCount(mults=2, adds=1), "tanh(x)"),
    "SiLU": (
        OpCount(adds=1, divides=1, specials=1),
        OpCount(mults=3, adds=3, divides=1, specials=1),
        "x / (1 + exp(−x))",
    ),
    "GELU": (
        OpCount(mults=3, adds=1, specials=1),
        OpCount(mults=7, adds=2, specials=2),
        "0.5·x·(1 + erf(x/√2))",
    ),
    "Dropout": (OpCount(mults=1), OpCount(mults=1), "x · mask, mask ∈ {0, 1/(1 − p)}"),
}


def _scaled(per_element: OpCount, m: int) -> OpCount:
    return OpCount(
        per_element.mults * m,
        per_element.adds * m,
        per_element.compares * m,
        per_element.divides * m,
        per_element.specials * m,
    )


@dataclass(frozen=True)
class ElementwiseSpec(Op):
    """A pointwise op (activation or dropout): shape unchanged, a fixed cost per element."""

    op: str
    negative_slope: float = 0.01
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.op not in ACTIVATIONS:
            raise LayerConfigError(
                f"unknown activation {self.op!r}; known: {', '.join(ACTIVATIONS)}"
            )
        if not 0.0 <= self.p <= 1.0:
            raise LayerConfigError(f"dropout probability must be between 0 and 1, got p={self.p}")

    @property
    def name(self) -> str:
        return self.op

    def describe(self) -> str:
        if self.op == "LeakyReLU":
            return f"negative_slope={self.negative_slope}"
        return f"p={self.p}" if self.op == "Dropout" else ""

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        if not shape or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise ShapeError(f"{self.op} takes a non-empty shape of sizes >= 1, got {shape}")
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"Unchanged: {shape_text(input_shape)}")
        return input_shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        forward, backward, formula = ACTIVATIONS[self.op]
        w.section(f"Cost: y = {formula}, counted per element")
        size = prod(input_shape)
        m = w.let("m", "N · E", batch * size, {"N": batch, "E": size}, why="E: elements per image")
        w.note(f"forward per element: {_per_element(forward)}; backward: {_per_element(backward)}")
        return Cost(_scaled(forward, m), _scaled(backward, m))


def _per_element(count: OpCount) -> str:
    parts = count.to_dict(keys=())
    return ", ".join(f"{v} {k}" for k, v in parts.items()) or "nothing"


class _Elementwise(Module):
    op = "ReLU"

    def __init__(self) -> None:
        self.spec = ElementwiseSpec(self.op)


class ReLU(_Elementwise):
    """max(x, 0)."""

    op = "ReLU"


class ReLU6(_Elementwise):
    """min(max(x, 0), 6)."""

    op = "ReLU6"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(−x))."""

    op = "Sigmoid"


class Tanh(_Elementwise):
    """tanh(x)."""

    op = "Tanh"


class SiLU(_Elementwise):
    """x · sigmoid(x)."""

    op = "SiLU"


class GELU(_Elementwise):
    """0.5 · x · (1 + erf(x / √2))."""

    op = "GELU"


class LeakyReLU(Module):
    """x for x > 0, else negative_slope · x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.spec = ElementwiseSpec("LeakyReLU", negative_slope=negative_slope)


class Dropout(Module):
    """Zeroes each element with probability p in training and scales the rest by 1 / (1 − p)."""

    def __init__(self, p: float = 0.5) -> None:
        self.spec = ElementwiseSpec("Dropout", p=p)
