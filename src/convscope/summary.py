"""Whole-network analysis: every layer's shape, parameters, MACs, exact costs, activation
memory and receptive field, and the totals, computed symbolically from the layers' specs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np

from .containers import Concat, Container, Graph, Residual, Sequential, add_costs, fork_cost
from .counting import COUNT_MODES, Cost, OpCount, ParamCount
from .errors import ConvScopeError
from .explain import Explanation
from .geometry import Shape, check_batch, check_sizes, is_int
from .module import Module
from .ops.arithmetic import AddSpec
from .ops.structural import ConcatSpec
from .receptive import Field


@dataclass
class LayerRow:
    """One layer (or a container's total) of a summary."""

    name: str
    kind: str
    depth: int
    output_shape: Shape
    params: int
    buffers: int
    macs: int
    cost: Cost
    activation_bytes: int
    field: Field | None
    container: bool = False
    explanation: Explanation | None = None
    repeat: int = 1  # runs per sample (a traced batch axis regrouped into windows or heads)
    frozen: int = 0  # parameters that do not require a gradient

    @property
    def backward_weight(self) -> OpCount:
        """Weight and bias gradients together."""
        parts = [p for p in (self.cost.backward_weight, self.cost.backward_bias) if p is not None]
        return sum(parts[1:], parts[0]) if parts else OpCount()

    def to_dict(self, batch: int | None) -> dict[str, Any]:
        shape = list(self.output_shape)
        if batch is not None or self.repeat != 1:
            shape = [self.repeat * (batch or 1), *shape]
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "depth": self.depth,
            "container": self.container,
            "output_shape": shape,
            "params": self.params,
            "macs": self.macs,
            "forward": self.cost.forward.to_dict(),
            "backward_input": self.cost.backward_input.to_dict(),
            "backward_weight": self.backward_weight.to_dict(),
            "activation_bytes": self.activation_bytes,
        }
        if self.field is not None:
            out["receptive_field"] = _field_dict(self.field)
        return out


def _number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def _field_dict(f: Field) -> dict[str, Any]:
    return {
        "size": [_number(v) for v in f.size],
        "stride": [_number(v) for v in f.stride],
        "padding": [_number(v) for v in f.padding],
        "global": f.global_,
        "misaligned": f.misaligned,
        "varies": f.undefined,
        "unknown": f.unknown,
        "statistics": f.statistics,
    }


@dataclass
class Report:
    """A whole network's analysis: ``layers`` (containers included, with their totals) and the
    network's totals."""

    model: str
    input_shape: Shape
    batch: int
    count: str
    layers: list[LayerRow] = field(default_factory=list)
    itemsize: int = 4
    unsupported: list[str] = field(default_factory=list)
    method: str | None = None  # how a PyTorch model was read

    def _leaves(self) -> list[LayerRow]:
        return [row for row in self.layers if not row.container]

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self._leaves())

    @property
    def trainable_params(self) -> int:
        """Weights and biases that require a gradient; running statistics are buffers."""
        return self.total_params - sum(row.frozen for row in self._leaves())

    @property
    def total_buffers(self) -> int:
        return sum(row.buffers for row in self._leaves())

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self._leaves())

    @property
    def cost(self) -> Cost:
        return add_costs([row.cost for row in self._leaves()])

    @property
    def forward(self) -> OpCount:
        return self.cost.forward

    @property
    def backward(self) -> OpCount:
        """Input, weight and bias gradients of every layer together."""
        return self.cost.backward

    @property
    def training_step(self) -> OpCount:
        """Forward plus backward for one batch (the optimizer's update excluded)."""
        return self.forward + self.backward

    @property
    def param_bytes(self) -> int:
        return (self.total_params + self.total_buffers) * self.itemsize

    @property
    def activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self._leaves())

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        depth = check_depth(depth)
        batch = self.batch
        return {
            "model": self.model,
            "input_shape": [batch, *self.input_shape],
            "batch": batch,
            "count": self.count,
            "layers": [r.to_dict(batch) for r in self.layers if _shown(r, depth)],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "buffers": self.total_buffers,
            "total_macs": self.total_macs,
            "forward": self.forward.to_dict(),
            "backward": self.backward.to_dict(),
            "backward_input": self.cost.backward_input.to_dict(),
            "training_step": self.training_step.to_dict(),
            "param_bytes": self.param_bytes,
            "activation_bytes": self.activation_bytes,
            "unsupported": self.unsupported,
            "method": self.method,
        }

    def shown(self, depth: int | None = None) -> list[LayerRow]:
        """The rows down to ``depth`` (all when None)."""
        depth = check_depth(depth)
        return [row for row in self.layers if _shown(row, depth)]

    def json(self, depth: int | None = None) -> str:
        return json.dumps(self.to_dict(depth))

    def table(self, depth: int | None = None) -> str:
        """A plain-text table, nested modules indented by depth, then the totals."""
        return self._render("text", depth)

    def markdown(self, depth: int | None = None) -> str:
        return self._render("markdown", depth)

    def csv(self, depth: int | None = None) -> str:
        return self._render("csv", depth)

    def _render(self, fmt: str, depth: int | None) -> str:
        from .render import render
        from .render.documents import summary_document

        return render(summary_document(self, depth), fmt)


def check_depth(depth: int | None) -> int | None:
    """``depth`` as the deepest nesting shown: None (all) or an int >= 0 (0: the top rows)."""
    if depth is None:
        return None
    if not is_int(depth) or depth < 0:
        raise ConvScopeError(f"depth must be None or an int >= 0, got {depth!r}")
    return int(depth)


def _shown(row: LayerRow, depth: int | None) -> bool:
    return depth is None or row.depth <= depth


class _Walker:
    """Walks a module tree in execution order, recording a row per layer and per container."""

    def __init__(self, batch: int, count: str, itemsize: int, explain: bool = False) -> None:
        self.batch, self.count, self.itemsize, self.explain = batch, count, itemsize, explain
        self.rows: list[LayerRow] = []
        self.unsupported: list[str] = []
        self.method: str | None = None

    def leaf(
        self,
        name: str,
        kind: str,
        depth: int,
        spec: Any,
        shape: Any,
        f: Field | None,
        params: ParamCount | None = None,
        repeat: int = 1,
    ) -> tuple[Shape, Field | None]:
        out = spec.output_shape(shape)
        params = params if params is not None else spec.params()
        runs = self.batch * repeat
        row = LayerRow(
            name,
            kind,
            depth,
            out,
            params.params,
            params.buffers,
            spec.macs(shape, runs),
            spec.cost(shape, runs, self.count),
            runs * int(np.prod(out)) * self.itemsize,
            None,
            repeat=repeat,
            frozen=params.frozen,
        )
        row.field = _next_field(spec, shape, out, f)
        if self.explain:
            row.explanation = spec.explain(shape, runs, self.count)
        self.rows.append(row)
        return out, row.field

    def walk(
        self, module: Module, name: str, depth: int, shape: Shape, f: Field | None
    ) -> tuple[Shape, Field | None]:
        if not isinstance(module, Container):
            return self.leaf(name, type(module).__name__, depth, module.spec, shape, f)
        start = len(self.rows)
        self.rows.append(None)  # type: ignore[arg-type]  # the container's row, filled below
        prefix = f"{name}." if name else ""
        if isinstance(module, Sequential):
            for child_name, child in module.children():
                shape, f = self.walk(child, prefix + child_name, depth + 1, shape, f)
            out, out_field = shape, f
        elif isinstance(module, Residual):
            main, main_field = self.walk(module.branch, prefix + "branch", depth + 1, shape, f)
            side, side_field = shape, f
            if module.shortcut is not None:
                side, side_field = self.walk(
                    module.shortcut, prefix + "shortcut", depth + 1, shape, f
                )
            out, out_field = self.join(
                prefix + "add",
                "Add",
                depth + 1,
                AddSpec(),
                [main, side],
                [main_field, side_field],
                shape,
                2,
            )
        elif isinstance(module, Concat):
            shapes, fields = [], []
            for child_name, child in module.children():
                s, cf = self.walk(child, prefix + child_name, depth + 1, shape, f)
                shapes.append(s)
                fields.append(cf)
            if len(shapes) == 1:
                out, out_field = shapes[0], fields[0]
            else:
                out, out_field = self.join(
                    prefix + "concat",
                    "Concat",
                    depth + 1,
                    ConcatSpec(module.spec.dim),
                    shapes,
                    fields,
                    shape,
                    len(shapes),
                )
        elif isinstance(module, Graph):
            out, out_field = self.graph(module, prefix, depth + 1, shape, f)
        else:
            raise ConvScopeError(f"summary cannot walk a {type(module).__name__}")
        inner = [r for r in self.rows[start + 1 :] if not r.container]
        self.rows[start] = LayerRow(
            name or type(module).__name__,
            type(module).__name__,
            depth,
            out,
            sum(r.params for r in inner),
            sum(r.buffers for r in inner),
            sum(r.macs for r in inner),
            add_costs([r.cost for r in inner]) if inner else Cost(OpCount(), OpCount()),
            sum(r.activation_bytes for r in inner),
            out_field,
            container=True,
            frozen=sum(r.frozen for r in inner),
        )
        return out, out_field

    def graph(
        self, graph: Graph, prefix: str, depth: int, shape: Shape, f: Field | None
    ) -> tuple[Shape, Field | None]:
        """A graph's steps in order; a step with several inputs merges their fields."""
        shapes: dict[str, Any] = {graph.input_name: shape}
        fields: dict[str, Field | None] = {graph.input_name: f}
        rows: dict[str, LayerRow] = {}
        for name, node in graph.nodes.items():
            given = node.input_shape(shapes)
            in_fields = [fields[i] for i in node.inputs]
            start = in_fields[0] if in_fields else f  # a step on parameters reads no input
            for other in in_fields[1:]:
                start = start.merge(other) if start is not None and other is not None else None
            out, _ = self.leaf(
                prefix + name,
                node.kind,
                depth,
                node.spec,
                given,
                None,
                node.own_params,
                node.repeat,
            )
            row = self.rows[-1]
            row.field = _next_field(node.spec, given, out, start)
            if node.repeat != 1 and row.field is not None and row.field.global_:
                row.field = row.field.as_unknown()  # global over one group (window), not the input
            shapes[name], fields[name] = out, row.field
            rows[name] = row
        for extra in graph.extra_params:
            self.rows.append(
                LayerRow(
                    prefix + extra.name,
                    "parameters read by no operation",
                    depth,
                    (),
                    extra.count.params,
                    extra.count.buffers,
                    0,
                    Cost(OpCount(), OpCount()),
                    0,
                    None,
                    frozen=extra.count.frozen,
                )
            )
        # an output read by k later steps receives the sum of k gradients: k − 1 additions
        for name, fork in graph.fork_costs(shapes, self.batch).items():
            row = rows[name]
            row.cost = replace(row.cost, backward_input=row.cost.backward_input + fork)
        self.unsupported += graph.unsupported
        self.method = self.method or graph.method
        return shapes[graph.output], fields[graph.output]

    def join(
        self,
        name: str,
        kind: str,
        depth: int,
        spec: Any,
        shapes: list[Shape],
        fields: list[Field | None],
        input_shape: Shape,
        branches: int,
    ) -> tuple[Shape, Field | None]:
        """An Add or Concat of several paths; the input fork's gradient sum is counted here."""
        out, _ = self.leaf(name, kind, depth, spec, shapes, None)
        fork = fork_cost(input_shape, self.batch, branches).backward_input
        row = self.rows[-1]
        row.cost = Cost(row.cost.forward, row.cost.backward_input + fork)
        merged = None
        if all(fl is not None for fl in fields):
            merged = fields[0]
            for other in fields[1:]:
                merged = merged.merge(other)  # type: ignore[union-attr]
        row.field = merged
        return out, merged


def _next_field(spec: Any, shape: Any, out: Shape, f: Field | None) -> Field | None:
    """The receptive field after one layer, by the layer's own rule."""
    return None if f is None else spec.receptive_field(f, shape, out)


def _resolve(model: Any, input_shape: Sequence[int]) -> tuple[Module, str]:
    if isinstance(model, str):
        from . import zoo

        return zoo.get(model), model
    if isinstance(model, Module):
        return model, type(model).__name__
    # a torch.nn.Module, user-defined ones included, recognised without importing torch
    if any(c.__module__.startswith("torch.nn.") for c in type(model).__mro__):
        from .adapters.torch import from_torch

        return from_torch(model, tuple(input_shape)), type(model).__name__
    raise ConvScopeError(
        f"summary takes a convscope module, a zoo name or a torch.nn.Module, got "
        f"{type(model).__name__}"
    )


def summary(
    model: Any,
    input_shape: Sequence[int],
    batch: int = 1,
    count: str = "exact",
    dtype: str = "float32",
    explain: bool = False,
) -> Report:
    """Analyses a network for an input shape (channel-first, without the batch), symbolically:
    no weights are allocated and nothing is computed on tensors. With ``explain`` each layer's
    row also holds its worked derivation."""
    # the arguments first, each named: nothing is built or traced for a call that cannot run
    shape = check_sizes(input_shape, "summary", "an input_shape (C, *spatial)")
    batch = check_batch(batch)
    if not isinstance(count, str) or count not in COUNT_MODES:
        raise ConvScopeError(f"count must be one of {', '.join(COUNT_MODES)}, got {count!r}")
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        raise ConvScopeError(
            f"dtype must be a NumPy dtype such as 'float32', got {dtype!r}"
        ) from None
    module, label = _resolve(model, shape)
    walker = _Walker(batch, count, itemsize, explain)
    spatial = len(shape) - 1
    walker.walk(module, "", 0, shape, Field.identity(spatial) if spatial >= 1 else None)
    return Report(
        label, shape, batch, count, walker.rows, itemsize, walker.unsupported, walker.method
    )
