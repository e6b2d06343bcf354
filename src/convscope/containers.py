"""Containers: Sequential, Residual (a branch plus a shortcut, added) and Concat (parallel
branches joined along an axis), which run their children and add up their arithmetic; and
Graph, the network of steps that traced models and spec files become."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .counting import Cost, OpCount, ParamCount
from .errors import ConvScopeError
from .explain import Working, shape_text
from .geometry import Shape, prod
from .module import Module
from .ops.arithmetic import AddSpec
from .ops.base import Op, no_macs, no_params, not_linear
from .ops.structural import ConcatSpec, SliceSpec

if TYPE_CHECKING:
    from .receptive import Field


def add_costs(costs: Sequence[Cost]) -> Cost:
    """The sum of several costs; a gradient is present if any part has it."""

    def total(parts: list[OpCount | None]) -> OpCount | None:
        given = [p for p in parts if p is not None]
        return sum(given[1:], given[0]) if given else None

    return Cost(
        total([c.forward for c in costs]) or OpCount(),
        total([c.backward_input for c in costs]) or OpCount(),
        total([c.backward_weight for c in costs]),
        total([c.backward_bias for c in costs]),
    )


def fork_cost(shape: Shape, batch: int, branches: int) -> Cost:
    """An input read by several branches receives the sum of their gradients."""
    return Cost(OpCount(), AddSpec().cost([shape] * branches, batch).forward)


def gradient_sum_adds(shape: Shape, readers: Sequence[Op]) -> tuple[int, bool]:
    """Additions, per sample, that sum the gradients ``readers`` write into a tensor of
    ``shape`` (an entry written c times costs c − 1), and whether that is an upper bound. A
    slice writes its interval only; the parts of one split (unbind) together write each entry
    once; any other reader writes every entry. Slices along two axes are counted as whole
    readers: an upper bound."""
    slices = [spec for spec in readers if isinstance(spec, SliceSpec)]
    parts = [spec for spec in readers if getattr(spec, "selects_part", False)]
    whole = len(readers) - len(parts) + (len(parts) > len(slices))
    total = prod(shape)
    if not slices:
        return max(whole - 1, 0) * total, False
    if len({spec.dim for spec in slices}) > 1:
        return (whole + len(slices) - 1) * total, True
    size = shape[slices[0].dim - 1]
    points = sorted({0, size, *(s.start for s in slices), *(s.stop for s in slices)})
    adds = 0
    for a, b in zip(points, points[1:]):  # segments between slice boundaries, not entries
        covering = sum(s.start <= a and b <= s.stop for s in slices)
        adds += max(whole + covering - 1, 0) * (b - a) * (total // size)
    return adds, False


class Container(Module):
    """Shared behaviour: children in order, and parameters summed over them."""

    spec_attributes = False

    def _members(self) -> list[tuple[str, Module]]:
        raise NotImplementedError

    def children(self) -> Iterator[tuple[str, Module]]:
        return iter(self._members())

    def params(self) -> ParamCount:
        return sum((m.params() for _, m in self._members()), ParamCount())

    def explain(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise ConvScopeError(f"{type(self).__name__} has no single derivation; explain its layers")

    def analyze(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise ConvScopeError(f"{type(self).__name__}: analyze its layers one by one")

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}): {m!r}".replace("\n", "\n  ") for name, m in self._members())
        return f"{type(self).__name__}(\n{inner}\n)"


class Sequential(Container):
    """Layers applied one after another. Named like PyTorch's: ``Sequential(a, b)`` names
    them "0", "1"; ``Sequential({"conv1": a, "bn1": b})`` uses the given names."""

    def __init__(self, *layers: Module | Mapping[str, Module]) -> None:
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            self.names = list(layers[0].keys())
            self.layers = list(layers[0].values())
        else:
            self.layers = list(layers)  # type: ignore[arg-type]
            self.names = [str(i) for i in range(len(self.layers))]

    def _members(self) -> list[tuple[str, Module]]:
        return list(zip(self.names, self.layers))

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __getattr__(self, name: str) -> object:
        # named children read as attributes, as in PyTorch (model.conv1)
        names = self.__dict__.get("names", [])
        if name in names:
            return self.layers[names.index(name)]
        return super().__getattr__(name)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def shapes(self, input_shape: Sequence[int]) -> list[Shape]:
        """Each layer's input shape, and the final output shape last."""
        shapes = [tuple(input_shape)]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        shapes = self.shapes(input_shape)
        return sum(layer.macs(s, batch) for layer, s in zip(self.layers, shapes))

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        shapes = self.shapes(input_shape)
        return add_costs([layer.cost(s, batch, count) for layer, s in zip(self.layers, shapes)])


class Residual(Container):
    """``branch(x) + shortcut(x)``; without a shortcut, ``branch(x) + x``."""

    def __init__(self, branch: Module, shortcut: Module | None = None) -> None:
        self.branch = branch
        self.shortcut = shortcut

    def _members(self) -> list[tuple[str, Module]]:
        members = [("branch", self.branch)]
        return members + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.branch(x)
        return main + (self.shortcut(x) if self.shortcut is not None else x)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad = self.branch.backward(grad_out)
        return grad + (self.shortcut.backward(grad_out) if self.shortcut is not None else grad_out)

    def _shapes(self, input_shape: Sequence[int]) -> tuple[Shape, Shape]:
        main = self.branch.output_shape(input_shape)
        side = self.shortcut.output_shape(input_shape) if self.shortcut else tuple(input_shape)
        return main, side

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return AddSpec().output_shape(list(self._shapes(input_shape)))

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        side = self.shortcut.macs(input_shape, batch) if self.shortcut else 0
        return self.branch.macs(input_shape, batch) + side

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        main, side = self._shapes(input_shape)
        parts = [
            self.branch.cost(input_shape, batch, count),
            AddSpec().cost([main, side], batch, count),
            fork_cost(tuple(input_shape), batch, 2),
        ]
        if self.shortcut is not None:
            parts.append(self.shortcut.cost(input_shape, batch, count))
        return add_costs(parts)


class Concat(Container):
    """Parallel branches on one input, joined along ``dim`` (PyTorch numbering, batch = 0)."""

    def __init__(self, *branches: Module, dim: int = 1) -> None:
        if len(branches) < 1:
            raise ConvScopeError("Concat needs at least one branch")
        self.branches = list(branches)
        self.spec = ConcatSpec(dim)

    def _members(self) -> list[tuple[str, Module]]:
        return [(str(i), m) for i, m in enumerate(self.branches)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        outputs = [branch(x) for branch in self.branches]
        self.save_for_backward([out.shape[self.spec.dim] for out in outputs])
        return np.concatenate(outputs, axis=self.spec.dim)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (sizes,) = self.saved()
        cuts = np.cumsum(sizes)[:-1]
        parts = np.split(grad_out, cuts, axis=self.spec.dim)
        grads = [branch.backward(part) for branch, part in zip(self.branches, parts)]
        return sum(grads[1:], grads[0])

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        shapes = [b.output_shape(input_shape) for b in self.branches]
        if len(shapes) > 1:
            return self.spec.output_shape(shapes)
        self.spec.output_shape(shapes * 2)  # one branch is its output; dim must be one of its axes
        return shapes[0]

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        return sum(b.macs(input_shape, batch) for b in self.branches)

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        parts = [b.cost(input_shape, batch, count) for b in self.branches]
        if len(parts) > 1:
            parts.append(fork_cost(tuple(input_shape), batch, len(parts)))
        return add_costs(parts)


@dataclass(frozen=True)
class RunShapeSpec(Op):
    """A step of a traced model whose output shape the run gave (``shape``), not a rule of
    one sample; ``label`` names the call. Neither parameters (the model's are on the step
    that reads them) nor MACs of its own."""

    label: str
    shape: Shape

    _positional: ClassVar = ("label",)
    _hidden: ClassVar = ("shape",)
    _shape_note: ClassVar[str]
    _cost_note: ClassVar[str]

    def _check_input(self, input_shape: object) -> object:
        return input_shape

    def _shape(self, input_shape: object, w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"{self.label}: {self._shape_note} {shape_text(self.shape)}.")
        return tuple(self.shape)

    def _cost(
        self, input_shape: object, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.section("Cost")
        w.note(self._cost_note)
        return Cost(OpCount(), OpCount())

    _params = no_params
    _macs = no_macs


@dataclass(frozen=True)
class OpaqueSpec(RunShapeSpec):
    """An operation convscope cannot count: it passes on a known output shape, and the graph
    lists it in ``unsupported``, so that the totals say what they leave out."""

    name = "NOT COUNTED"
    _shape_note = "as the run gave it (the operation itself is not counted):"
    _cost_note = "Not counted (listed as unsupported)."
    linear_map = not_linear("is an operation convscope does not count")

    def receptive_field(self, field: Field, input_shape: object, output_shape: Shape) -> Field:
        """Not known: convscope has no rule for the operation (nor for where the axes went)."""
        return replace(field.as_unknown(), layout_lost=True)


@dataclass(frozen=True)
class RegroupSpec(RunShapeSpec):
    """Values of a traced model moved where no structural rule of one sample describes it (the
    batch axis regrouped into windows, heads or tokens and back, a roll, an index): each output
    entry is one input entry, so there is no arithmetic and each entry keeps its receptive
    field. Only a graph has it: the run gives its output shape."""

    selects_part: bool = False  # one of the parts of a split (unbind, an index)

    name = "Move"
    _hidden: ClassVar = ("shape", "selects_part")
    _shape_note = "moves values, as the run laid them out:"
    _cost_note = "Values only move: no arithmetic."
    linear_map = not_linear("regroups the batch axis, which a per-sample map cannot")

    def receptive_field(self, field: Field, input_shape: object, output_shape: Shape) -> Field:
        """Each output entry is one input entry and keeps its field; where the spatial axes
        went across the batch axis is not followed."""
        return replace(field, layout_lost=True)


@dataclass(frozen=True)
class OnParametersSpec(Op):
    """An operation a traced model runs on its own parameters or buffers, not on the input
    (a relative-position MLP on a coordinate table, a conv on a positional grid, a weight
    standardised in forward): ``inner`` on ``shapes`` (the first operand's leading axis run
    ``repeat`` times). It runs once per forward, whatever the batch, so its counts do not
    scale with it; its result feeds the network as a constant."""

    inner: Op
    shapes: Shape | tuple[Shape, ...]
    repeat: int = 1

    _positional: ClassVar = ("inner",)
    _hidden: ClassVar = ("shapes", "repeat")

    @property
    def name(self) -> str:
        return f"{self.inner.name} (on parameters)"

    def _given(self) -> Any:
        return (
            list(self.shapes) if self.shapes and isinstance(self.shapes[0], tuple) else self.shapes
        )

    def _check_input(self, input_shape: object) -> object:
        return input_shape

    def _shape(self, input_shape: object, w: Working) -> Shape:
        w.section("Output shape")
        out = self.inner.output_shape(self._given())
        w.note(f"{self.inner.describe()} on parameters of {self.shapes}: {shape_text(out)}.")
        return out

    def _cost(
        self, input_shape: object, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.section("Cost: once per forward, whatever the batch")
        return self.inner.cost(self._given(), self.repeat, count)

    def _macs(self, input_shape: object, output_shape: Shape, batch: int, w: Working) -> int:
        return self.inner.macs(self._given(), self.repeat)

    _params = no_params  # the parameters it reads are on its row (the adapter's claim)
    linear_map = not_linear("runs on parameters, not on the input")

    def receptive_field(self, field: Field, input_shape: object, output_shape: Shape) -> Field:
        """It reads no input position: its field is none (shown as unknown)."""
        return field.as_unknown()

    def describe(self) -> str:
        return self.inner.describe()


@dataclass(frozen=True)
class ParamsRow:
    """Parameters or buffers of a traced model that no counted or listed operation read (an
    unused layer, a tensor read only to build a constant): still the model's, so still in
    its totals, on a row of their own."""

    name: str
    count: ParamCount


class Node(Module):
    """One step of a Graph: an operation (its spec) applied to the outputs of earlier steps.

    ``params`` (from a traced model) are the parameters and buffers the step reads first, which
    replace the spec's own count: a tensor shared by several steps belongs to the first.
    ``repeat`` is how many times the step runs per sample (a traced batch axis regrouped into
    windows or heads), the spec's shapes being those of one run."""

    spec_attributes = False

    def __init__(
        self,
        spec: Op,
        inputs: Sequence[str],
        kind: str | None = None,
        params: ParamCount | None = None,
        repeat: int = 1,
    ) -> None:
        self.spec = spec
        self.inputs = list(inputs)
        self.kind = kind or getattr(spec, "name", type(spec).__name__)
        self.own_params = params
        self.repeat = repeat

    def params(self) -> ParamCount:
        """The step's parameters: those it was found to read, or else its spec's."""
        return self.own_params if self.own_params is not None else self.spec.params()

    def input_shape(self, shapes: dict[str, Shape]) -> Shape | list[Shape]:
        """This step's input shape (a list of shapes for several inputs)."""
        given = [shapes[name] for name in self.inputs]
        return given[0] if len(given) == 1 else given


class Graph(Container):
    """A network as a directed acyclic graph of steps, in execution order: what the PyTorch
    adapter and spec files produce. It answers the analysis questions; it does not run.

    ``unsupported`` lists operations that were found but cannot be counted.
    """

    def __init__(
        self,
        nodes: Mapping[str, Node],
        output: str,
        input_name: str = "input",
        unsupported: Sequence[str] = (),
        params: Sequence[ParamsRow] = (),
        method: str | None = None,
    ) -> None:
        self.nodes = dict(nodes)
        self.output, self.input_name = output, input_name
        self.unsupported = list(unsupported)
        self.extra_params = list(params)
        self.method = method
        known = {input_name}
        for name, node in self.nodes.items():
            missing = [i for i in node.inputs if i not in known]
            if missing:
                raise ConvScopeError(f"graph step {name!r} reads {missing}, defined later or never")
            known.add(name)
        if output not in known:
            raise ConvScopeError(f"graph output {output!r} is not a step")

    def _members(self) -> list[tuple[str, Module]]:
        return list(self.nodes.items())

    def params(self) -> ParamCount:
        return sum((row.count for row in self.extra_params), super().params())

    def shapes(self, input_shape: Sequence[int]) -> dict[str, Shape]:
        """Every step's output shape."""
        shapes: dict[str, Shape] = {self.input_name: tuple(input_shape)}
        for name, node in self.nodes.items():
            shapes[name] = node.spec.output_shape(node.input_shape(shapes))
        return shapes

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        return self.shapes(input_shape)[self.output]

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        shapes = self.shapes(input_shape)
        return sum(
            n.spec.macs(n.input_shape(shapes), batch * n.repeat) for n in self.nodes.values()
        )

    def fork_costs(self, shapes: Mapping[str, Shape], batch: int) -> dict[str, OpCount]:
        """The gradient sums of outputs read by several steps, keyed by the step that pays:
        the producer, or for the graph's input its first reader (``gradient_sum_adds``)."""
        readers: dict[str, list[Node]] = {}
        for node in self.nodes.values():
            for name in node.inputs:
                readers.setdefault(name, []).append(node)
        forks = {}
        for name, nodes in readers.items():
            adds, bound = gradient_sum_adds(shapes[name], [n.spec for n in nodes])
            if adds:
                payer = (
                    name
                    if name in self.nodes
                    else next(step for step, n in self.nodes.items() if name in n.inputs)
                )
                runs = self.nodes[name].repeat if name in self.nodes else 1
                forks[payer] = OpCount(adds=batch * runs * adds, upper_bound=bound)
        return forks

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        shapes = self.shapes(input_shape)
        costs = [
            n.spec.cost(n.input_shape(shapes), batch * n.repeat, count) for n in self.nodes.values()
        ]
        forks = [Cost(OpCount(), fork) for fork in self.fork_costs(shapes, batch).values()]
        return add_costs(costs + forks)
