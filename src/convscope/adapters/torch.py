"""PyTorch models as convscope graphs: traced with torch.fx, shapes propagated on fake tensors
(no weights read, no arithmetic run), and every traced operation mapped to a convscope spec.
An operation without a mapping is listed in ``Graph.unsupported``, never counted as zero."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as tnn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from ..containers import Graph, Node
from ..errors import ConvScopeError
from ..geometry import Shape
from ..ops.activation import ElementwiseSpec
from ..ops.base import Op
from ..ops.conv import ConvSpec
from ..ops.conv_transpose import ConvTransposeSpec
from ..ops.linear import LinearSpec
from ..ops.normalization import BatchNormSpec, LayerNormSpec
from ..ops.pooling import AdaptivePoolSpec, PoolSpec
from ..ops.structural import (
    AddSpec,
    ConcatSpec,
    FlattenSpec,
    MeanSpec,
    MulSpec,
    OpaqueSpec,
    PermuteSpec,
    ReshapeSpec,
    SliceSpec,
)

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
    shape = tuple(input_shape)
    if not shape or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise ConvScopeError(f"input shape must be sizes >= 1 without the batch, got {shape}")
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


class _Unsupported(Exception):
    """Raised by a handler for an operation it cannot count; the message says why."""


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
        if n.op == "call_module":
            handler = _MODULES.get(type(self.modules[n.target]))
        elif n.op == "call_method":
            handler = _METHODS.get(n.target)
        else:
            handler = _FUNCTIONS.get(n.target)
        try:
            if handler is None:
                raise _Unsupported("")
            handler(self, n)
        except _Unsupported as why:
            self._unsupported(n, str(why))

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

    def alias(self, n: torch.fx.Node, arg: Any) -> None:
        """Node ``n`` is its argument (contiguous, clone, Identity)."""
        self.env[n] = self.step(n, arg)

    def _add(self, name: str, spec: Op, inputs: Sequence[str], n: torch.fx.Node, out: Shape,
             kind: str | None = None) -> None:  # fmt: skip
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


def _bind(n: torch.fx.Node, *names_defaults: tuple[str, Any]) -> list[Any]:
    """The call's arguments after the tensor, by position or keyword, with defaults."""
    args = list(n.args[1:])
    out = []
    for i, (name, default) in enumerate(names_defaults):
        out.append(args[i] if i < len(args) else n.kwargs.get(name, default))
    return out


def _dim(dim: Any, rank: int) -> int:
    """A PyTorch axis (with the batch) resolved; the batch axis itself is refused."""
    if not isinstance(dim, int):
        raise _Unsupported(f"a dim that is not an int: {dim!r}")
    resolved = dim + rank if dim < 0 else dim
    if resolved == 0:
        raise _Unsupported("it acts along the batch axis")
    return resolved


# -- handlers ---------------------------------------------------------------------------------
Handler = Callable[[_Builder, torch.fx.Node], None]


def _module_handler(build: Callable[[Any], Op | None]) -> Handler:
    def handle(b: _Builder, n: torch.fx.Node) -> None:
        if len(n.args) != 1 or n.kwargs:
            raise _Unsupported("called with more than one argument")
        x = b.step(n, n.args[0])
        spec = build(b.modules[n.target])
        if spec is None:
            b.alias(n, n.args[0])
        else:
            b.emit(n, spec, [x])

    return handle


def _conv(ndim: int) -> Callable[[Any], Op]:
    def build(m: Any) -> Op:
        return ConvSpec.create(
            ndim, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
            m.groups, m.bias is not None, m.padding_mode,
        )  # fmt: skip

    return build


def _conv_transpose(ndim: int) -> Callable[[Any], Op]:
    def build(m: Any) -> Op:
        if m.padding_mode != "zeros":
            raise _Unsupported(f"padding_mode {m.padding_mode!r}")
        return ConvTransposeSpec.create(
            ndim, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
            m.output_padding, m.groups, m.bias is not None, m.dilation,
        )  # fmt: skip

    return build


def _max_pool(ndim: int) -> Callable[[Any], Op]:
    def build(m: Any) -> Op:
        if m.return_indices:
            raise _Unsupported("return_indices=True")
        return PoolSpec.create(
            ndim, "max", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
        )

    return build


def _avg_pool(ndim: int) -> Callable[[Any], Op]:
    def build(m: Any) -> Op:
        divisor = getattr(m, "divisor_override", None)
        return PoolSpec.create(
            ndim, "avg", m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
            m.count_include_pad, divisor,
        )  # fmt: skip

    return build


def _adaptive(ndim: int, mode: str) -> Callable[[Any], Op]:
    def build(m: Any) -> Op:
        if getattr(m, "return_indices", False):
            raise _Unsupported("return_indices=True")
        return AdaptivePoolSpec.create(ndim, mode, m.output_size)

    return build


def _gelu_spec(approximate: str) -> Op:
    if approximate != "none":
        raise _Unsupported(f"approximate={approximate!r}; only the erf form is counted")
    return ElementwiseSpec("GELU")


def _layer_norm(m: Any) -> Op:
    return LayerNormSpec(
        tuple(m.normalized_shape), m.eps, m.elementwise_affine, getattr(m, "bias", None) is not None
    )


_MODULES: dict[type, Handler] = {
    **{
        cls: _module_handler(_conv(d))
        for d, cls in ((1, tnn.Conv1d), (2, tnn.Conv2d), (3, tnn.Conv3d))
    },
    **{
        cls: _module_handler(_conv_transpose(d))
        for d, cls in ((1, tnn.ConvTranspose1d), (2, tnn.ConvTranspose2d), (3, tnn.ConvTranspose3d))
    },
    **{
        cls: _module_handler(
            lambda m, d=d: BatchNormSpec(
                d, m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats
            )
        )
        for d, cls in ((1, tnn.BatchNorm1d), (2, tnn.BatchNorm2d), (3, tnn.BatchNorm3d))
    },
    **{
        cls: _module_handler(_max_pool(d))
        for d, cls in ((1, tnn.MaxPool1d), (2, tnn.MaxPool2d), (3, tnn.MaxPool3d))
    },
    **{
        cls: _module_handler(_avg_pool(d))
        for d, cls in ((1, tnn.AvgPool1d), (2, tnn.AvgPool2d), (3, tnn.AvgPool3d))
    },
    **{
        cls: _module_handler(_adaptive(d, mode))
        for d, mode, cls in (
            (1, "avg", tnn.AdaptiveAvgPool1d),
            (2, "avg", tnn.AdaptiveAvgPool2d),
            (3, "avg", tnn.AdaptiveAvgPool3d),
            (1, "max", tnn.AdaptiveMaxPool1d),
            (2, "max", tnn.AdaptiveMaxPool2d),
            (3, "max", tnn.AdaptiveMaxPool3d),
        )
    },
    tnn.Linear: _module_handler(
        lambda m: LinearSpec(m.in_features, m.out_features, m.bias is not None)
    ),
    tnn.LayerNorm: _module_handler(_layer_norm),
    tnn.LeakyReLU: _module_handler(
        lambda m: ElementwiseSpec("LeakyReLU", negative_slope=m.negative_slope)
    ),
    tnn.GELU: _module_handler(lambda m: _gelu_spec(m.approximate)),
    tnn.Dropout: _module_handler(lambda m: ElementwiseSpec("Dropout", p=m.p)),
    tnn.Flatten: _module_handler(lambda m: FlattenSpec(m.start_dim, m.end_dim)),
    tnn.Identity: _module_handler(lambda m: None),
    **{
        cls: _module_handler(lambda m, op=cls.__name__: ElementwiseSpec(op))
        for cls in (
            tnn.ReLU,
            tnn.ReLU6,
            tnn.Sigmoid,
            tnn.Tanh,
            tnn.SiLU,
            tnn.Hardswish,
            tnn.Hardsigmoid,
        )
    },
}


def _elementwise(op: str, *names_defaults: tuple[str, Any]) -> Handler:
    """relu(x), x.relu(), F.leaky_relu(x, slope), F.gelu(x, approximate=...), F.dropout(x, p)."""

    def handle(b: _Builder, n: torch.fx.Node) -> None:
        x = b.step(n, n.args[0])
        extra = dict(zip((k for k, _ in names_defaults), _bind(n, *names_defaults)))
        if op == "GELU":
            spec = _gelu_spec(extra["approximate"])
        elif op == "LeakyReLU":
            spec = ElementwiseSpec(op, negative_slope=extra["negative_slope"])
        elif op == "Dropout":
            spec = ElementwiseSpec(op, p=extra["p"])
        else:
            spec = ElementwiseSpec(op)
        b.emit(n, spec, [x])

    return handle


def _binary(kind: str) -> Handler:
    """x + y (equal shapes) and x * y (broadcasting), both computed from the input."""

    def handle(b: _Builder, n: torch.fx.Node) -> None:
        if len(n.args) != 2 or set(n.kwargs) - {"out"} or n.kwargs.get("out") is not None:
            raise _Unsupported("not a plain binary call (alpha or extra arguments)")
        left, right = (b.tensor(a) for a in n.args)
        if left is None or right is None:
            raise _Unsupported("an operand that is a constant, not computed from the input")
        b.emit(n, AddSpec() if kind == "add" else MulSpec(), [left, right])

    return handle


def _cat(b: _Builder, n: torch.fx.Node) -> None:
    tensors = n.args[0] if n.args else n.kwargs.get("tensors")
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    steps = [b.step(n, t) for t in tensors]
    if len(steps) == 1:
        b.env[n] = steps[0]
        return
    _dim(dim, len(b.shapes[steps[0]]) + 1)
    b.emit(n, ConcatSpec(dim), steps)


def _flatten(b: _Builder, n: torch.fx.Node) -> None:
    start, end = _bind(n, ("start_dim", 0), ("end_dim", -1))
    b.emit(n, FlattenSpec(start, end), [b.step(n, n.args[0])])


def _reshape(b: _Builder, n: torch.fx.Node) -> None:
    x = b.step(n, n.args[0])
    b.emit(n, ReshapeSpec(b.traced(n)), [x])


def _permute(b: _Builder, n: torch.fx.Node) -> None:
    x = b.step(n, n.args[0])
    rank = len(b.shapes[x]) + 1
    dims = n.args[1:] if len(n.args) > 1 else (n.kwargs.get("dims"),)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    dims = tuple(d + rank if isinstance(d, int) and d < 0 else d for d in dims)
    if dims[:1] != (0,):
        raise _Unsupported("it moves the batch axis")
    b.emit(n, PermuteSpec(dims), [x])


def _transpose(b: _Builder, n: torch.fx.Node) -> None:
    x = b.step(n, n.args[0])
    rank = len(b.shapes[x]) + 1
    d0, d1 = (_dim(d, rank) for d in _bind(n, ("dim0", None), ("dim1", None)))
    dims = list(range(rank))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    b.emit(n, PermuteSpec(tuple(dims)), [x])


def _split(b: _Builder, n: torch.fx.Node) -> None:
    """chunk and split: the pieces' bounds along the axis, from the traced shapes."""
    x = b.step(n, n.args[0])
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    rank = len(b.shapes[x]) + 1
    resolved = _dim(dim, rank)
    bounds, start = [], 0
    for shape in b.values[n]:
        bounds.append((start, start + shape[resolved]))
        start += shape[resolved]
    b.env[n] = _Parts(x, resolved, tuple(bounds))


def _mean(b: _Builder, n: torch.fx.Node) -> None:
    x = b.step(n, n.args[0])
    dim, keepdim = _bind(n, ("dim", None), ("keepdim", False))
    if dim is None:
        raise _Unsupported("a mean over every axis, the batch included")
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    rank = len(b.shapes[x]) + 1
    b.emit(n, MeanSpec(tuple(_dim(d, rank) for d in dims), bool(keepdim)), [x])


def _adaptive_fn(ndim: int, mode: str) -> Handler:
    def handle(b: _Builder, n: torch.fx.Node) -> None:
        (size,) = _bind(n, ("output_size", None))
        if mode == "max" and _bind(n, ("output_size", None), ("return_indices", False))[1]:
            raise _Unsupported("return_indices=True")
        b.emit(n, AdaptivePoolSpec.create(ndim, mode, size), [b.step(n, n.args[0])])

    return handle


def _max_pool_fn(ndim: int) -> Handler:
    def handle(b: _Builder, n: torch.fx.Node) -> None:
        k, s, p, d, ceil, indices = _bind(
            n, ("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
            ("ceil_mode", False), ("return_indices", False),
        )  # fmt: skip
        if indices:
            raise _Unsupported("return_indices=True")
        spec = PoolSpec.create(ndim, "max", k, s or None, p, d, ceil)
        b.emit(n, spec, [b.step(n, n.args[0])])

    return handle


def _avg_pool_fn(ndim: int) -> Handler:
    def handle(b: _Builder, n: torch.fx.Node) -> None:
        k, s, p, ceil, include, divisor = _bind(
            n, ("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
            ("count_include_pad", True), ("divisor_override", None),
        )  # fmt: skip
        spec = PoolSpec.create(ndim, "avg", k, s or None, p, 1, ceil, include, divisor)
        b.emit(n, spec, [b.step(n, n.args[0])])

    return handle


def _alias(b: _Builder, n: torch.fx.Node) -> None:
    b.alias(n, n.args[0])


_SIMPLE = {
    "ReLU": (F.relu, torch.relu, "relu", "relu_"),
    "ReLU6": (F.relu6, "relu6"),
    "Sigmoid": (F.sigmoid, torch.sigmoid, "sigmoid", "sigmoid_"),
    "Tanh": (F.tanh, torch.tanh, "tanh", "tanh_"),
    "SiLU": (F.silu,),
    "Hardswish": (F.hardswish,),
    "Hardsigmoid": (F.hardsigmoid,),
}

_TABLE: dict[Any, Handler] = {
    **{t: _elementwise(op) for op, targets in _SIMPLE.items() for t in targets},
    F.leaky_relu: _elementwise("LeakyReLU", ("negative_slope", 0.01)),
    F.gelu: _elementwise("GELU", ("approximate", "none")),
    F.dropout: _elementwise("Dropout", ("p", 0.5)),
    **{t: _binary("add") for t in (operator.add, operator.iadd, torch.add, "add", "add_")},
    **{t: _binary("mul") for t in (operator.mul, operator.imul, torch.mul, "mul", "mul_")},
    torch.cat: _cat,
    torch.concat: _cat,
    torch.flatten: _flatten,
    "flatten": _flatten,
    **{t: _reshape for t in ("view", "reshape", "unflatten", "squeeze", "unsqueeze")},
    **{t: _reshape for t in (torch.reshape, torch.unflatten, torch.squeeze, torch.unsqueeze)},
    torch.permute: _permute,
    "permute": _permute,
    torch.transpose: _transpose,
    "transpose": _transpose,
    **{t: _split for t in (torch.chunk, torch.split, "chunk", "split")},
    torch.mean: _mean,
    "mean": _mean,
    **{t: _alias for t in ("contiguous", "clone", "detach", torch.clone)},
    **{
        fn: _adaptive_fn(d, mode)
        for d, mode, fn in (
            (1, "avg", F.adaptive_avg_pool1d),
            (2, "avg", F.adaptive_avg_pool2d),
            (3, "avg", F.adaptive_avg_pool3d),
            (1, "max", F.adaptive_max_pool1d),
            (2, "max", F.adaptive_max_pool2d),
            (3, "max", F.adaptive_max_pool3d),
        )
    },
    **{fn: _max_pool_fn(d) for d, fn in ((1, F.max_pool1d), (2, F.max_pool2d), (3, F.max_pool3d))},
    **{fn: _avg_pool_fn(d) for d, fn in ((1, F.avg_pool1d), (2, F.avg_pool2d), (3, F.avg_pool3d))},
}
_METHODS = {k: v for k, v in _TABLE.items() if isinstance(k, str)}
_FUNCTIONS = {k: v for k, v in _TABLE.items() if not isinstance(k, str)}
