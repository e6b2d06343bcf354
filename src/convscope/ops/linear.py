"""Linear (fully connected) layer, ``y = x · Wᵀ + b`` over the last axis: configuration, shape
rule, parameters, exact costs, working, receptive field, the passes, the module and the
registration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import registry
from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, prod, set_counts
from ..grammar import Context, LayerKind, Option, parse_int
from ..module import Module, WeightedModule
from .base import Op, not_a_convolution, weight_params

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class LinearSpec(Op):
    """A linear layer's configuration."""

    in_features: int
    out_features: int
    bias: bool = True

    name = "Linear"

    def __post_init__(self) -> None:
        set_counts(self, "in_features", "out_features")

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, "Linear", "a (..., in_features) input")
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
        biases = ("out", self.out_features) if self.bias else None
        return weight_params(w, values, ("in · out", self.in_features * self.out_features), biases)

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

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Every output mixes every entry of the last axis: along a spatial axis the field is
        global; along the channels (channels last, tokens) each position keeps its own."""
        if field.global_ or field.unknown:
            return field
        axes = field.spatial_axes(len(input_shape))
        if axes is None:
            return field.as_unknown()
        return field.as_global() if len(input_shape) - 1 in axes else field

    linear_map = not_a_convolution


# -- running: functional forward and backward --------------------------------------------------


def _check(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, LinearSpec]:
    """Checks the arguments of linear and builds its spec."""
    x = float_array(x, "x")
    weight = float_array(weight, "weight")
    expect_rank(weight, 2, "weight", "(out_features, in_features)")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"x has shape {tuple(x.shape)} and weight has shape {tuple(weight.shape)}: the last "
            f"axis of x must be in_features={weight.shape[1]}"
        )
    if bias is not None:
        bias = float_array(bias, "bias")
        expect_shape(bias, (weight.shape[0],), "bias", f"for weight {tuple(weight.shape)}")
    same_dtype(x=x, weight=weight, bias=bias)
    spec = LinearSpec(int(weight.shape[1]), int(weight.shape[0]), bias is not None)
    return x, weight, bias, spec


def _output_shape(x: np.ndarray, spec: LinearSpec) -> tuple[int, ...]:
    """The output shape for ``x`` (last axis checked by _check). Not the spec's shape rule,
    which takes sizes >= 1: as in PyTorch, a leading axis (the batch) may be empty."""
    return (*x.shape[:-1], spec.out_features)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``y = x · Wᵀ + b`` over the last axis: x (..., in), weight (out, in), bias (out,)."""
    x, weight, bias, spec = _check(x, weight, bias)
    out_shape = _output_shape(x, spec)
    y = x.reshape(-1, spec.in_features) @ weight.T
    if bias is not None:
        y += bias
    return y.reshape(out_shape)


def linear_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The gradients of linear w.r.t. the input, the weight and (with ``bias``) the bias."""
    x, weight, _, spec = _check(x, weight, None)
    grad_out = float_array(grad_out, "grad_out")
    same_dtype(grad_out=grad_out, x=x)
    expect_shape(
        grad_out,
        _output_shape(x, spec),
        "grad_out",
        f"for x {tuple(x.shape)} and weight {tuple(weight.shape)}",
    )
    g = grad_out.reshape(-1, spec.out_features)
    grad_input = (g @ weight).reshape(x.shape)
    grad_weight = g.T @ x.reshape(-1, spec.in_features)
    grad_bias = g.sum(axis=0) if bias else None
    return grad_input, grad_weight, grad_bias


# -- running: module ----------------------------------------------------------------------------


class Linear(WeightedModule):
    """``y = x · Wᵀ + b`` with PyTorch's arguments."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.spec = LinearSpec(in_features, out_features, bool(bias))
        self._register_weights(
            (out_features, in_features), in_features, out_features if bias else None
        )

    def _forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        return linear(x, weight, bias)

    def _backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, has_bias: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return linear_backward(grad_out, x, weight, has_bias)


# -- registration -------------------------------------------------------------------------------


def _build(values: dict[str, Any], ctx: Context) -> Module:
    in_features = ctx.shape[-1] if ctx.shape is not None else ctx.channels
    return Linear(in_features, values.pop("out_features", in_features), **values)


def _linear_call(call: registry.TorchCall) -> LinearSpec:
    """F.linear(x, weight, bias), the weight a parameter (out_features, in_features)."""
    weight, bias = call.bind(("weight", None), ("bias", None))
    weight = registry.constant(weight, "weight")
    registry.constant(bias, "bias", optional=True)
    if len(weight.shape) != 2:
        raise registry.Unsupported(f"a weight of shape {weight.shape}, not 2-D")
    return LinearSpec(weight.shape[1], weight.shape[0], bias is not None)


def _addmm_call(call: registry.TorchCall) -> LinearSpec:
    """torch.addmm(bias, x, weight_t) with beta = alpha = 1: a linear layer on rows."""
    (weight,) = call.bind(("mat2", None))
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    if len(call.leading) != 1 or beta != 1 or alpha != 1:
        raise registry.Unsupported("not bias + x @ weight (scaled, or the bias computed)")
    weight = registry.constant(weight, "weight")
    registry.constant(call.leading[0], "bias")
    return LinearSpec(weight.shape[0], weight.shape[1], True)


FAMILY = registry.register_twins(
    "linear",
    LinearSpec,
    (Linear,),
    (linear, linear_backward),
    "in_features",
    -1,
    functions={
        "torch.nn.functional.linear": _linear_call,
        "torch.addmm": _addmm_call,
        "Tensor.addmm": _addmm_call,
    },
    kinds=(
        LayerKind(
            "linear",
            (
                Option("out_features", "f", "--out-features", parse_int, required=True),
                Option("bias", "bias", "--no-bias", switch=False, help="no bias"),
            ),
            _build,
            help="a fully connected layer",
            text=False,
            calculator=True,
            ranks=(),
        ),
    ),
)
