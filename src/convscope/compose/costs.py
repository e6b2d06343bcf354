"""The cost of a chain beside the cost of the single layer it composes to, each from the layers'
own counting rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..containers import Sequential
from ..counting import Cost, OpCount, ParamCount
from ..explain import Working
from ..geometry import Shape
from ..module import Module
from .chain import check_chain_shape, flatten_layers
from .specs import compose_spec


@dataclass(frozen=True)
class CostComparison:
    """The chain's parameters and counts (sums of its layers' own) beside the single layer's."""

    chain_params: ParamCount
    single_params: ParamCount
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    chain_cost: Cost | None = None
    single_cost: Cost | None = None
    chain_macs: int | None = None
    single_macs: int | None = None

    def rows(self) -> list[tuple[str, int, int]]:
        """(what, chain, single) for the parameters and, with a shape, each pass's operations."""
        rows = [("params", self.chain_params.params, self.single_params.params)]
        if self.chain_cost is not None and self.single_cost is not None:
            rows.append(("macs", self.chain_macs or 0, self.single_macs or 0))
            for key in ("forward", "backward_input", "backward_weight", "backward_bias"):
                a = getattr(self.chain_cost, key) or OpCount()
                b = getattr(self.single_cost, key) or OpCount()
                rows.append((key, a.total, b.total))
        return rows

    def cheaper(self) -> dict[str, str]:
        """For each row (params, macs and each pass's total operations), which side is
        cheaper: chain, single or equal."""
        return {
            what: "equal" if a == b else ("chain" if a < b else "single")
            for what, a, b in self.rows()
        }

    def to_dict(self) -> dict[str, Any]:
        def side(params: ParamCount, cost: Cost | None, macs: int | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "params": params.params,
                "weights": params.weights,
                "biases": params.biases,
                "buffers": params.buffers,
            }
            if cost is not None:
                out["macs"] = macs
                for key in ("forward", "backward_input", "backward_weight", "backward_bias"):
                    part = getattr(cost, key)
                    keys = ("mults", "adds", "compares", "divides", "specials")
                    out[key] = None if part is None else part.to_dict(keys)
            return out

        return {
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "chain": side(self.chain_params, self.chain_cost, self.chain_macs),
            "single": side(self.single_params, self.single_cost, self.single_macs),
            "cheaper": self.cheaper(),
        }


def compare_cost(
    layers: Sequence[Module] | Module,
    input_shape: Sequence[int] | None = None,
    batch: int = 1,
    count: str = "exact",
    w: Working | None = None,
    in_channels: int | None = None,
) -> CostComparison:
    """Parameters and, for an input shape, exact operation counts of the chain (the sum of its
    layers' own ``.params()`` and ``.cost()``) and of the single equivalent convolution."""
    modules = flatten_layers(layers)
    input_shape = check_chain_shape(input_shape)
    chain = Sequential(*modules)
    single = compose_spec(modules, input_shape, in_channels=in_channels).spec
    w = w or Working(record=False)
    w.section("Cost side by side" + ("" if input_shape is None else f" ({count} count)"))
    _sum_step(w, "params", [m.params().params for m in modules], single.params().params)
    if input_shape is None:
        return CostComparison(chain.params(), single.params())
    shape = tuple(input_shape)
    shapes = chain.shapes(shape)
    costs = [m.cost(s, batch, count) for m, s in zip(modules, shapes)]
    own = single.cost(shape, batch, count)
    for key in ("mults", "adds"):
        _sum_step(
            w, f"fwd{key}", [getattr(c.forward, key) for c in costs], getattr(own.forward, key)
        )
    w.note("Each layer's count is its own rule (docs/counting.md), for its own input shape.")
    return CostComparison(
        chain.params(),
        single.params(),
        shape,
        shapes[-1],
        chain.cost(shape, batch, count),
        own,
        chain.macs(shape, batch),
        single.macs(shape, batch),
    )


def _sum_step(w: Working, name: str, parts: list[int], single: int) -> None:
    symbols = [f"{name}_{i}" for i in range(1, len(parts) + 1)]
    w.let(f"{name}_chain", " + ".join(symbols), sum(parts), dict(zip(symbols, parts)))
    verdict = (
        "equal"
        if sum(parts) == single
        else ("the chain is cheaper" if sum(parts) < single else "the single layer is cheaper")
    )
    w.let(f"{name}_single", "", single, why=verdict)
