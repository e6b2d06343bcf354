"""What every operation answers: shape, parameters, MACs and exact costs, with the working."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..counting import COUNT_MODES, Cost, ParamCount
from ..errors import ConvScopeError
from ..explain import NO_WORKING, Explanation, Working
from ..geometry import Shape, check_batch


@dataclass(frozen=True)
class Analysis:
    """Everything one layer answers for one input (shapes exclude the batch dimension)."""

    layer: Op
    input_shape: Shape | tuple[Shape, ...]
    output_shape: Shape
    batch: int
    count: str
    params: ParamCount
    macs: int
    cost: Cost
    explanation: Explanation | None = None


class Op:
    """Base of every operation's configuration. Subclasses are frozen dataclasses that validate
    themselves on construction and implement ``_shape``, ``_params`` and ``_cost``."""

    # -- rules each family implements -------------------------------------------------------
    def describe(self) -> str:
        """The configuration as constructor arguments, for display."""
        raise NotImplementedError

    def _check_input(self, input_shape: Any) -> Any:
        raise NotImplementedError

    def _shape(self, input_shape: Any, w: Working) -> Shape:
        raise NotImplementedError

    def _params(self, w: Working) -> ParamCount:
        return ParamCount()

    def _macs(self, input_shape: Any, output_shape: Shape, batch: int, w: Working) -> int:
        return 0

    def _cost(
        self, input_shape: Any, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        raise NotImplementedError

    # -- public faces -----------------------------------------------------------------------
    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """The output shape for an input shape, both channel-first and without the batch."""
        return self._shape(self._check_input(input_shape), NO_WORKING)

    def params(self) -> ParamCount:
        """Weights, biases and buffers, in elements."""
        return self._params(NO_WORKING)

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        """Multiply-accumulates in the torchvision convention (conv and linear, dense, no bias)."""
        shape = self._check_input(input_shape)
        return self._macs(shape, self._shape(shape, NO_WORKING), check_batch(batch), NO_WORKING)

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        """Exact operation counts of the forward pass and of each backward output."""
        shape = self._check_input(input_shape)
        out = self._shape(shape, NO_WORKING)
        return self._cost(shape, out, check_batch(batch), _check_count(count), NO_WORKING)

    def analyze(
        self,
        input_shape: Sequence[int],
        batch: int = 1,
        count: str = "exact",
        explain: bool = False,
    ) -> Analysis:
        """All answers at once; with ``explain`` also the worked derivation of each."""
        w = Working(record=explain)
        shape = self._check_input(input_shape)
        batch = check_batch(batch)
        count = _check_count(count)
        out = self._shape(shape, w)
        params = self._params(w)
        cost = self._cost(shape, out, batch, count, w)
        macs = self._macs(shape, out, batch, w)
        return Analysis(
            self, shape, out, batch, count, params, macs, cost, w.explanation if explain else None
        )

    def explain(
        self, input_shape: Sequence[int], batch: int = 1, count: str = "exact"
    ) -> Explanation:
        """The worked derivation of the shape, parameters and every count."""
        explanation = self.analyze(input_shape, batch, count, explain=True).explanation
        assert explanation is not None
        return explanation


def describe_args(*positional: Any, **keywords: tuple[Any, Any]) -> str:
    """Constructor arguments as PyTorch's repr shows them: positional values, then each
    keyword given as (value, default) only where it differs from its default. A per-axis
    tuple whose entries agree is shown as one value."""

    def compact(value: Any) -> Any:
        if isinstance(value, tuple) and value and all(v == value[0] for v in value):
            return compact(value[0]) if not isinstance(value[0], tuple) else value
        return value

    parts = [repr(compact(v)) for v in positional]
    for name, (value, default) in keywords.items():
        if compact(value) != compact(default):
            parts.append(f"{name}={compact(value)!r}")
    return ", ".join(parts)


def _check_count(count: str) -> str:
    if count not in COUNT_MODES:
        raise ConvScopeError(f"count must be one of {', '.join(COUNT_MODES)}, got {count!r}")
    return count
