"""Linear (fully connected) layer: ``y = x · Wᵀ + b`` over the last axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from ..module import Module
from .base import Op


@dataclass(frozen=True)
class LinearSpec(Op):
    """A linear layer's configuration."""

    in_features: int
    out_features: int
    bias: bool = True

    name = "Linear"

    def __post_init__(self) -> None:
        for label, value in (
            ("in_features", self.in_features),
            ("out_features", self.out_features),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayerConfigError(f"{label} must be an int >= 1, got {value!r}")

    def describe(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias}"

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        if not shape or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise ShapeError(f"Linear takes a (..., in_features) input of sizes >= 1, got {shape}")
        if shape[-1] != self.in_features:
            raise ShapeError(
                f"Linear expects the last axis to be in_features={self.in_features}, got an input "
                f"of shape {shape_text(shape)}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        shape = (*input_shape[:-1], self.out_features)
        w.section("Output shape")
        w.note(
            f"The last axis becomes out_features: {shape_text(input_shape)} → {shape_text(shape)}"
        )
        return shape

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        values = {"in": self.in_features, "out": self.out_features}
        weights = w.let("weights", "in · out", self.in_features * self.out_features, values)
        biases = w.let("biases", "out", self.out_features, values) if self.bias else 0
        w.let(
            "params", "weights + biases", weights + biases, {"weights": weights, "biases": biases}
        )
        return ParamCount(weights, biases)

    def _macs(self, input_shape: Shape, output_shape: Shape, batch: int, w: Working) -> int:
        w.section("MACs (no bias)")
        rows = batch * prod(input_shape[:-1])
        values = {"M": rows, "in": self.in_features, "out": self.out_features}
        return w.let("MACs", "M · in · out", rows * self.in_features * self.out_features, values)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        i, o, b = self.in_features, self.out_features, int(self.bias)
        w.section("Forward pass")
        lead = prod(input_shape[:-1])
        rows = w.let(
            "M",
            "N · R",
            batch * lead,
            {"N": batch, "R": lead},
            why="R: rows per image, the product of the leading axes",
        )
        values = {"M": rows, "in": i, "out": o, "b": b}
        products = w.let("mults", "M · in · out", rows * i * o, values)
        fwd_adds = w.let(
            "adds",
            "M · out · (in − 1 + b)",
            rows * o * (i - 1 + b),
            values,
            why="b = 1 with a bias",
        )
        w.section("Backward pass: g_x = ε · W")
        w.let("mults", "M · in · out", products, values)
        bi_adds = w.let("adds", "M · in · (out − 1)", rows * i * (o - 1), values)
        w.section("Backward pass: g_W = εᵀ · x")
        w.let("mults", "M · in · out", products, values)
        bw_adds = w.let("adds", "in · out · (M − 1)", i * o * (rows - 1), values)
        bias_grad = None
        if self.bias:
            w.section("Backward pass: g_b = Σ ε over the rows")
            bias_grad = OpCount(adds=w.let("adds", "out · (M − 1)", o * (rows - 1), values))
        return Cost(
            OpCount(mults=products, adds=fwd_adds),
            OpCount(mults=products, adds=bi_adds),
            OpCount(mults=products, adds=bw_adds),
            bias_grad,
        )


class Linear(Module):
    """``y = x · Wᵀ + b`` with PyTorch's arguments."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.spec = LinearSpec(in_features, out_features, bool(bias))
