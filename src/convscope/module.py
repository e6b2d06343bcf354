"""The base of ``convscope.nn`` modules: a layer object whose configuration is its ``spec``."""

from __future__ import annotations

from collections.abc import Sequence

from .counting import Cost, ParamCount
from .explain import Explanation
from .geometry import Shape
from .ops.base import Analysis, Op


class Module:
    """A layer. Its configuration lives in ``spec``; the analysis faces read it from there."""

    spec: Op

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """The output shape for an input shape, both channel-first and without the batch."""
        return self.spec.output_shape(input_shape)

    def params(self) -> ParamCount:
        """Weights, biases and buffers, in elements."""
        return self.spec.params()

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        """Multiply-accumulates in the torchvision convention."""
        return self.spec.macs(input_shape, batch)

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        """Exact operation counts of the forward pass and of each backward output."""
        return self.spec.cost(input_shape, batch, count)

    def analyze(
        self,
        input_shape: Sequence[int],
        batch: int = 1,
        count: str = "exact",
        explain: bool = False,
    ) -> Analysis:
        """Shape, parameters, MACs and costs at once, optionally with the working."""
        return self.spec.analyze(input_shape, batch, count, explain)

    def explain(
        self, input_shape: Sequence[int], batch: int = 1, count: str = "exact"
    ) -> Explanation:
        """The worked derivation of every answer."""
        return self.spec.explain(input_shape, batch, count)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.describe()})"
