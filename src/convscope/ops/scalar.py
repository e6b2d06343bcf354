"""Arithmetic with a fixed number: ``x * c``, ``x + c``, ``x - c``, ``x / c`` (attention's
``q * scale``, a ``(x + 3) / 6``). One operation per element forward; the backward scales the
gradient for ``*`` and ``/`` and passes it unchanged for ``+`` and ``−``. The number is part of
the spec; nothing is learned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import float_array
from ..counting import Cost, OpCount
from ..errors import LayerConfigError
from ..explain import Working
from ..geometry import Shape, check_sizes, prod
from .base import Op, no_macs, no_params, not_linear, pointwise_field, same_shape
from .structural import graph_family

#: each operator: (the count it costs per element forward, backward input; and its symbol)
_OPERATORS: dict[str, tuple[str, str | None, str]] = {
    "mul": ("mults", "mults", "·"),
    "add": ("adds", None, "+"),
    "sub": ("adds", None, "−"),
    "div": ("divides", "divides", "/"),
}


@dataclass(frozen=True)
class ScalarSpec(Op):
    """``x op value`` for a fixed number ``value``, elementwise."""

    op: str
    value: float

    name = "Scalar"
    _positional: ClassVar = ("op", "value")

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise LayerConfigError(
                f"Scalar op must be one of {', '.join(_OPERATORS)}, got {self.op!r}"
            )
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise LayerConfigError(f"Scalar value must be a number, got {self.value!r}")

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        return check_sizes(input_shape, f"Scalar {self.op}")

    _shape = same_shape
    _params = no_params
    _macs = no_macs
    receptive_field = pointwise_field
    linear_map = not_linear("is elementwise arithmetic, not a convolution")

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        forward, backward, symbol = _OPERATORS[self.op]
        values = {"N": batch, "m": prod(output_shape)}
        w.section(f"Forward pass: y = x {symbol} {self.value}")
        n = w.let(forward, "N · m", batch * prod(output_shape), values, why="m: elements per image")
        w.section("Backward pass")
        if backward is None:
            w.note("The gradient passes unchanged: no arithmetic.")
            return Cost(OpCount(**{forward: n}), OpCount())
        back = w.let(backward, "N · m", n, values, why=f"ε {symbol} {self.value} per element")
        return Cost(OpCount(**{forward: n}), OpCount(**{backward: back}))


# -- engine --------------------------------------------------------------------------------------


def scalar(x: np.ndarray, op: str, value: float) -> np.ndarray:
    """``x op value`` elementwise."""
    x = float_array(x, "x")
    ScalarSpec(op, value)
    c = x.dtype.type(value)
    return {"mul": np.multiply, "add": np.add, "sub": np.subtract, "div": np.divide}[op](x, c)


def scalar_backward(grad_out: np.ndarray, op: str, value: float) -> np.ndarray:
    """The input gradient: ε scaled by the number for ``*`` and ``/``, ε itself otherwise."""
    g = float_array(grad_out, "grad_out")
    c = g.dtype.type(value)
    if op == "mul":
        return g * c
    if op == "div":
        return g / c
    return g.copy()


# -- the torch rule -------------------------------------------------------------------------------


def number(value: Any) -> bool:
    """A plain Python number (a bool is a flag, not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalar_rule(op: str, call: registry.TorchCall) -> ScalarSpec:
    """``x op c`` with ``c`` a Python number after the tensor (``c * x`` arrives as ``x * c``
    for * and +); ``c - x`` and ``c / x`` are not this spec."""
    if call.leading or len(call.args) != 1 or not number(call.args[0]):
        raise registry.Unsupported("not x with one number after it")
    extra = {k: v for k, v in call.kwargs.items() if v is not None and k != "out"}
    if extra or call.kwargs.get("out") is not None:
        raise registry.Unsupported(f"extra arguments {sorted(call.kwargs)}")
    return ScalarSpec(op, call.args[0])


def _forms(op: str) -> tuple[str, ...]:
    return tuple(form.format(op) for form in ("torch.{}", "Tensor.{}", "Tensor.{}_"))


SCALAR = graph_family(
    "scalar",
    ScalarSpec,
    {"scalar": scalar, "scalar_backward": scalar_backward},
    # x − c reaches it through sub's rule; x * c and x + c through mul's and add's
    dict.fromkeys(_forms("div"), lambda call: scalar_rule("div", call)),
)
