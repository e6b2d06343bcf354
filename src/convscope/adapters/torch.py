"""PyTorch models as convscope graphs: traced with torch.fx, shapes propagated on fake tensors
(no weights read, no arithmetic run), and every traced operation mapped to a convscope spec by
the rules the operation families declare (``convscope.registry``). An operation without a rule
is listed in ``Graph.unsupported``, never counted as zero."""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as tnn
from torch._subclasses.fake_tensor import FakeTensorMode

from .. import registry
from ..containers import Graph, Node, OpaqueSpec
from ..errors import ConvScopeError
from ..geometry import Shape, check_sizes
from ..ops.base import Op
from ..ops.structural import SliceSpec, batch_free_dim

TRACE_BATCH = 2  # the batch of the traced input: 2 tells the batch axis from a size-1 axis


def from_torch(module: tnn.Module, input_shape: Sequence[int] | None = None) -> Graph:
    """The module as a Graph of convscope specs, for inputs of ``input_shape`` (channel-first,
    without the batch), which the tracing needs to resolve reshapes."""
    if not isinstance(module, tnn.Module):
        raise ConvScopeError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    if input_shape is None:
        raise ConvScopeError(
            f"from_torch needs the input shape of {type(module).__name__} (channel-first, "
            "without the batch, e.g. (3, 224, 224)) to trace it"
        )
    shape = check_sizes(input_shape, "from_torch")
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as error:
        raise ConvScopeError(
            f"torch.fx cannot trace {type(module).__name__}: {type(error).__name__}: {error}"
        ) from error
    values = _propagate(gm, shape)
    return _Builder(gm, values).build()


def _propagate(gm: torch.fx.GraphModule, shape: Shape) -> dict[torch.fx.Node, Any]:
    """Every node's result on a fake input: tensors as their shapes, tuples of tensors as
    tuples of shapes, anything else as is."""
    first = next(iter([*gm.parameters(), *gm.buffers()]), None)
    device = first.device if first is not None else torch.device("cpu")
    values: dict[torch.fx.Node, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            values[n] = _shapes_of(result)
            return result

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len([n for n in placeholders if not n.args]) > 1:
        names = ", ".join(n.target for n in placeholders)
        raise ConvScopeError(f"from_torch analyses models of one input; forward takes {names}")
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            Recorder(gm).run(torch.empty((TRACE_BATCH, *shape), device=device))
    except Exception as error:
        raise ConvScopeError(
            f"{type(gm).__name__} fails on an input of shape {(TRACE_BATCH, *shape)}: "
            f"{type(error).__name__}: {error}"
        ) from error
    return values


class _Shape(tuple):
    """A traced tensor's shape, batch included (unlike a torch.Size, which is a value)."""


def _shapes_of(result: Any) -> Any:
    if isinstance(result, torch.Tensor):
        return _Shape(int(v) for v in result.shape)
    if isinstance(result, (tuple, list)) and any(isinstance(r, torch.Tensor) for r in result):
        return tuple(_shapes_of(r) for r in result)
    return result


@dataclass(frozen=True)
class _Parts:
    """The pieces of a chunk or split: slices [start, stop) of ``step`` along ``dim``."""

    step: str
    dim: int
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Constant:
    """A tensor that is not computed from the input (a parameter or buffer read directly)."""

    name: str


@dataclass(frozen=True)
class _Opaque:
    """The tuple result of an unsupported operation (already listed), read by getitem."""

    inputs: tuple[str, ...]


_Unsupported = registry.Unsupported

#: Calls whose result is a tuple of parts of one tensor, read by getitem: tracing plumbing.
_PARTS = ("torch.chunk", "torch.split", "Tensor.chunk", "Tensor.split")


def _target(path: str) -> Any:
    """The object a dotted path names (``torch.nn.functional.relu``), or the method name of a
    ``Tensor.NAME`` path; None when this torch has no such object."""
    if path.startswith("Tensor."):
        return path.removeprefix("Tensor.")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        parent, _, child = module.rpartition(".")
        try:
            return getattr(getattr(importlib.import_module(parent), child), name)
        except (ImportError, AttributeError):
            return None


@functools.cache
def _call_rules() -> dict[Any, registry.CallRule]:
    """Every traced call the families map, keyed by function object or method name."""
    rules = {_target(path): rule for path, rule in registry.torch_functions().items()}
    rules.pop(None, None)
    return rules


@functools.cache
def _parts_targets() -> set[Any]:
    return {_target(path) for path in _PARTS} - {None}


def _qualified(target: Any) -> str:
    try:
        name = torch.fx.node._get_qualified_name(target)
    except Exception:
        name = getattr(target, "__name__", repr(target))
    return name.replace("_operator.", "operator.")


class _Builder:
    """Maps the traced nodes, in order, to graph steps."""

    def __init__(self, gm: torch.fx.GraphModule, values: dict[torch.fx.Node, Any]) -> None:
        self.gm, self.values = gm, values
        self.modules = dict(gm.named_modules())
        self.env: dict[torch.fx.Node, Any] = {}
        self.nodes: dict[str, Node] = {}
        self.shapes: dict[str, Shape] = {}
        self.unsupported: list[str] = []
        self.input_name = "input"

    # -- the walk -------------------------------------------------------------------------
    def build(self) -> Graph:
        output = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if n.args:  # an argument with a default: a constant
                    self.env[n] = None
                    continue
                self.input_name = n.name
                self.env[n] = n.name
                self.shapes[n.name] = self.values[n][1:]
            elif n.op == "get_attr":
                self.env[n] = _Constant(n.target)
            elif n.op == "output":
                output = self._output(n.args[0])
            else:
                self._call(n)
        assert output is not None
        return Graph(self.nodes, output, self.input_name, self.unsupported)

    def _output(self, value: Any) -> str:
        if isinstance(value, (tuple, list)) and value:
            value = next((v for v in value if isinstance(self.env.get(v), str)), value[0])
        if isinstance(value, dict) and value:
            value = next(iter(value.values()))
        found = self.env.get(value) if isinstance(value, torch.fx.Node) else None
        if not isinstance(found, str):
            raise ConvScopeError("the traced model returns no tensor computed from its input")
        return found

    def _label(self, n: torch.fx.Node) -> str:
        if n.op == "call_module":
            mod = self.modules[n.target]
            return f"call_module {type(mod).__module__}.{type(mod).__qualname__} ('{n.target}')"
        if n.op == "call_method":
            return f"call_method Tensor.{n.target}"
        return f"call_function {_qualified(n.target)}"

    def _call(self, n: torch.fx.Node) -> None:
        value = self.values.get(n)
        if not _is_tensor_result(value) and not _is_tensors(value):
            # sizes and Python arithmetic on them (x.size(0), h // 2): no tensor work
            self.env[n] = None
            return
        if n.op == "call_function" and n.target is operator.getitem:
            self._getitem(n)
            return
        try:
            if n.op == "call_module":
                self._module(n)
            elif n.target in _parts_targets():
                self._split(n)
            else:
                self._function(n)
        except ConvScopeError as why:
            self._unsupported(n, str(why))

    def _module(self, n: torch.fx.Node) -> None:
        """A torch.nn module by its family's rule."""
        module = self.modules[n.target]
        cls = type(module)
        rule = registry.torch_modules().get(cls.__name__)
        if rule is None or not cls.__module__.startswith("torch.nn"):
            raise _Unsupported("")
        if len(n.args) != 1 or n.kwargs:
            raise _Unsupported("called with more than one argument")
        x = self.step(n, n.args[0])
        spec = rule(module)
        if spec is None:
            self.env[n] = x
        else:
            self.emit(n, spec, [x])

    def _function(self, n: torch.fx.Node) -> None:
        """A traced function or method by its family's rule, on torch-free arguments."""
        rule = _call_rules().get(n.target)
        if rule is None:
            raise _Unsupported("")
        operands: list[str] = []

        def plain(value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return type(value)(plain(v) for v in value)
            if not isinstance(value, torch.fx.Node):
                return value
            found = self.env.get(value)
            if isinstance(found, _Constant):
                raise _Unsupported(f"reads the tensor '{found.name}' directly")
            if isinstance(found, str):
                operands.append(found)
                return registry.Tensor(self.shapes[found])
            if isinstance(found, (_Parts, _Opaque)):
                raise _Unsupported("an operand that is not a tensor computed from the input")
            return self.values.get(value)  # a size or other plain value, as traced

        args = plain(tuple(n.args))
        kwargs = {k: plain(v) for k, v in n.kwargs.items()}
        if not operands:
            raise _Unsupported("an operand that is not a tensor computed from the input")
        call = registry.TorchCall(
            args[1:], kwargs, tuple(self.shapes[o] for o in operands), self.traced(n)
        )
        spec = rule(call)
        if spec is None:
            self.env[n] = operands[0]
        else:
            self.emit(n, spec, operands)

    # -- emitting steps -------------------------------------------------------------------
    def tensor(self, arg: Any) -> str | None:
        """The step an argument is, or None when it is not a step."""
        found = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if isinstance(found, _Constant):
            raise _Unsupported(f"reads the tensor '{found.name}' directly")
        return found if isinstance(found, str) else None

    def step(self, n: torch.fx.Node, arg: Any) -> str:
        """The step an argument must be."""
        found = self.tensor(arg)
        if found is None:
            raise _Unsupported("an operand that is not a tensor computed from the input")
        return found

    def traced(self, n: torch.fx.Node) -> Shape:
        """The traced output shape without the batch."""
        value = self.values[n]
        if not _is_tensor_result(value) or not value or value[0] != TRACE_BATCH:
            raise _Unsupported(f"its output {value} does not keep the batch axis first")
        return value[1:]

    def emit(
        self, n: torch.fx.Node, spec: Op, inputs: Sequence[str], name: str | None = None
    ) -> None:
        """A step for node ``n``, after checking that convscope's shape is the traced one."""
        expected = self.traced(n)
        given = [self.shapes[i] for i in inputs]
        try:
            out = spec.output_shape(given[0] if len(given) == 1 else given)
        except ConvScopeError as error:
            raise _Unsupported(str(error)) from error
        if out != expected:
            raise _Unsupported(f"convscope's output shape {out} differs from the traced {expected}")
        self._add(name or (n.target if n.op == "call_module" else n.name), spec, inputs, n, out)

    def _add(
        self,
        name: str,
        spec: Op,
        inputs: Sequence[str],
        n: torch.fx.Node,
        out: Shape,
        kind: str | None = None,
    ) -> None:
        base, i = name, 1
        while name in self.shapes:
            name, i = f"{base}_{i}", i + 1
        self.nodes[name] = Node(spec, inputs or [self.input_name], kind)
        self.shapes[name] = out
        self.env[n] = name

    def _unsupported(self, n: torch.fx.Node, why: str) -> None:
        label = self._label(n)
        self.unsupported.append(f"{label} at node '{n.name}'" + (f" ({why})" if why else ""))
        inputs = []
        for a in _node_args(n):
            found = self.env.get(a)
            if isinstance(found, str):
                inputs.append(found)
            elif isinstance(found, _Parts):
                inputs.append(found.step)
            elif isinstance(found, _Opaque):
                inputs.extend(found.inputs)
        inputs = list(dict.fromkeys(inputs)) or [self.input_name]
        value = self.values.get(n)
        if _is_tensors(value):
            self.env[n] = _Opaque(tuple(inputs))
            return
        if _is_tensor_result(value) and value and value[0] == TRACE_BATCH:
            spec = OpaqueSpec(label, value[1:])
            self._add(n.name, spec, inputs, n, value[1:], f"{_short(label)} (not counted)")
        else:
            self.env[n] = None

    def _split(self, n: torch.fx.Node) -> None:
        """chunk and split: the pieces' bounds along the axis, from the traced shapes."""
        x = self.step(n, n.args[0])
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
        resolved = batch_free_dim(dim, len(self.shapes[x]) + 1)
        bounds, start = [], 0
        for shape in self.values[n]:
            bounds.append((start, start + shape[resolved]))
            start += shape[resolved]
        self.env[n] = _Parts(x, resolved, tuple(bounds))

    def _getitem(self, n: torch.fx.Node) -> None:
        source, index = n.args
        found = self.env.get(source)
        if isinstance(found, _Parts) and isinstance(index, int):
            start, stop = found.bounds[index]
            self.emit(n, SliceSpec(found.dim, start, stop), [found.step])
        elif isinstance(found, _Opaque):
            value = self.values[n]
            if _is_tensor_result(value) and value and value[0] == TRACE_BATCH:
                spec = OpaqueSpec(f"part of an unsupported result at node '{n.name}'", value[1:])
                self._add(n.name, spec, list(found.inputs), n, value[1:], "(not counted)")
            else:
                self.env[n] = None
        elif found is None and not _is_tensor_result(self.values.get(n)):
            self.env[n] = None
        else:
            self._unsupported(n, "indexing a tensor")


def _short(label: str) -> str:
    """The last part of a qualified name, for the layer table."""
    words = label.split(" ")
    return words[1].rsplit(".", 1)[-1] if len(words) > 1 else label


def _is_tensor_result(value: Any) -> bool:
    return isinstance(value, _Shape)


def _is_tensors(value: Any) -> bool:
    """A tuple holding traced tensors (chunk, split, max with indices)."""
    return type(value) is tuple and any(isinstance(v, _Shape) for v in value)


def _node_args(n: torch.fx.Node) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((n.args, n.kwargs), found.append)
    return found
