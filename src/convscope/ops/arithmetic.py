"""Families of structural arithmetic: the elementwise Add of a residual connection, the
broadcasting Mul of a gate, and the Mean over axes, with their rules, passes and
registrations. Each is a step of traced graphs; PyTorch has no module for them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, is_int, prod
from .base import Op, noted_shape, pointwise_field
from .structural import (
    JoiningOp,
    Shapes,
    StructuralOp,
    _check_shape,
    _full_dim,
    _paths,
    batch_free_dim,
    graph_family,
    moved,
)

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class AddSpec(JoiningOp):
    """Elementwise sum of inputs of one shape (a residual connection)."""

    #: The summary merges the inputs' fields; each output entry adds the same position of each.
    receptive_field = pointwise_field

    def _check_joined(self, shapes: Shapes) -> None:
        if len(set(shapes)) != 1:
            raise ShapeError(
                f"Add needs inputs of one shape, got {', '.join(shape_text(s) for s in shapes)}"
            )

    def _shape(self, input_shape: Shapes, w: Working) -> Shape:
        return noted_shape(w, input_shape[0], f"The inputs' shape: {shape_text(input_shape[0])}")

    def _cost(
        self, input_shape: Shapes, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.section("Forward pass")
        values = {"k": len(input_shape), "N": batch, "m": prod(output_shape)}
        adds = w.let(
            "adds", "N · m · (k − 1)", batch * prod(output_shape) * (len(input_shape) - 1), values
        )
        w.section("Backward pass")
        w.note("Each input receives the output gradient unchanged: no arithmetic.")
        return Cost(OpCount(adds=adds), OpCount())


@dataclass(frozen=True)
class SubSpec(AddSpec):
    """Elementwise difference of two inputs of one shape (``pool(x) − x`` in PoolFormer)."""

    name = "Sub"

    def _check_joined(self, shapes: Shapes) -> None:
        if len(shapes) != 2:
            raise ShapeError(f"Sub takes 2 inputs, got {len(shapes)}")
        super()._check_joined(shapes)

    def _cost(
        self, input_shape: Shapes, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.section("Forward pass: y = x₁ − x₂")
        values = {"N": batch, "m": prod(output_shape)}
        adds = w.let("adds", "N · m", batch * prod(output_shape), values)
        w.section("Backward pass: g₁ = ε, g₂ = −ε")
        w.note("A copy and a change of sign: no arithmetic (a sign is not counted).")
        return Cost(OpCount(adds=adds), OpCount())


def broadcast_shape(shapes: Sequence[Shape], layer: str) -> Shape:
    """PyTorch's broadcast of inputs of one rank (each axis equal or 1)."""
    if len({len(s) for s in shapes}) != 1:
        raise ShapeError(
            f"{layer} takes inputs of one rank, got {', '.join(shape_text(s) for s in shapes)}"
        )
    out = []
    for sizes in zip(*shapes):
        big = {v for v in sizes if v != 1}
        if len(big) > 1:
            raise ShapeError(
                f"{layer}: shapes {', '.join(shape_text(s) for s in shapes)} do not broadcast"
            )
        out.append(big.pop() if big else 1)
    return tuple(out)


@dataclass(frozen=True)
class MulSpec(JoiningOp):
    """Elementwise product of two inputs with broadcasting (a squeeze-and-excitation gate)."""

    #: The summary merges the inputs' fields (a gate's path is global, so is the product's).
    receptive_field = pointwise_field

    def _check_joined(self, shapes: Shapes) -> None:
        if len(shapes) != 2:
            raise ShapeError(f"Mul takes 2 inputs, got {len(shapes)}")
        broadcast_shape(shapes, "Mul")

    def _shape(self, input_shape: Shapes, w: Working) -> Shape:
        shape = broadcast_shape(input_shape, "Mul")
        note = f"The inputs broadcast (an axis of size 1 repeats): {shape_text(shape)}"
        return noted_shape(w, shape, note)

    def _cost(
        self, input_shape: Shapes, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        m, (a, b) = prod(output_shape), (prod(s) for s in input_shape)
        values = {"N": batch, "m": m, "a": a, "b": b}
        w.section("Forward pass: y = x₁ · x₂")
        mults = w.let("mults", "N · m", batch * m, values, why="m: output elements per image")
        w.section("Backward pass: g₁ = Σ ε · x₂, g₂ = Σ ε · x₁, summed over broadcast axes")
        back_mults = w.let("mults", "2 · N · m", 2 * batch * m, values)
        adds = w.let(
            "adds",
            "N · (m − a) + N · (m − b)",
            batch * (2 * m - a - b),
            values,
            why="a, b: elements per image of each input; an input repeated r times sums r terms",
        )
        return Cost(OpCount(mults=mults), OpCount(mults=back_mults, adds=adds))


@dataclass(frozen=True)
class MeanSpec(StructuralOp):
    """The mean over some non-batch axes (PyTorch numbering, batch = 0)."""

    dims: Shape
    keepdim: bool = False

    def __post_init__(self) -> None:
        if not self.dims or len(set(self.dims)) != len(self.dims):
            raise LayerConfigError(f"Mean takes distinct axes to reduce, got {self.dims!r}")

    def _axes(self, shape: Shape) -> list[int]:
        return sorted(_full_dim(d, len(shape) + 1, "Mean", shape) - 1 for d in self.dims)

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, "Mean")
        axes = self._axes(shape)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"Mean: dims {tuple(self.dims)} name one axis twice")
        if not self.keepdim and len(axes) == len(shape):
            raise ShapeError("Mean over every non-batch axis without keepdim leaves no axis")
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        axes = self._axes(input_shape)
        if self.keepdim:
            shape = tuple(1 if i in axes else v for i, v in enumerate(input_shape))
        else:
            shape = tuple(v for i, v in enumerate(input_shape) if i not in axes)
        return moved(w, input_shape, shape)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        n = prod(input_shape[a] for a in self._axes(input_shape))
        outs = prod(output_shape)
        values = {"N": batch, "M": outs, "n": n}
        w.section("Forward pass: a sum of n values, then one division, per mean")
        adds = w.let("adds", "N · M · (n − 1)", batch * outs * (n - 1), values, why="M: means")
        divides = w.let("divides", "N · M", batch * outs, values)
        w.section("Backward pass: ε / n, copied to the n inputs of each mean")
        back = w.let("divides", "N · M", batch * outs, values)
        return Cost(OpCount(adds=adds, divides=divides), OpCount(divides=back))

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Over every spatial axis: global. Over some, kept (keepdim): each of those axes is
        seen whole. Over the channels: the same place. Where the spatial axes are not known,
        or one is dropped while others stay, the field is unknown."""
        if field.global_ or field.undefined or field.unknown:
            return field
        axes = self._axes(input_shape)
        places = field.spatial_axes(len(input_shape))
        if places is None:
            return field.as_unknown()
        reduced = [places.index(a) for a in axes if a in places]
        if not reduced:
            return field
        if len(reduced) == len(places):
            return field.as_global()
        if not self.keepdim:
            return field.as_unknown()
        for axis in reduced:
            field = field.spread(axis, input_shape[places[axis]])
        return field


@dataclass(frozen=True)
class SumSpec(MeanSpec):
    """The sum over some non-batch axes (PyTorch numbering, batch = 0): a mean without its
    division (the radix sum of split attention, a sum over tokens)."""

    name = "Sum"

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        n = prod(input_shape[a] for a in self._axes(input_shape))
        values = {"N": batch, "M": prod(output_shape), "n": n}
        w.section("Forward pass: a sum of n values per output")
        adds = w.let("adds", "N · M · (n − 1)", batch * values["M"] * (n - 1), values)
        w.section("Backward pass: ε copied to the n inputs of each sum")
        w.note("Copies only: no arithmetic.")
        return Cost(OpCount(adds=adds), OpCount())


# -- engine: forward and backward pairs --------------------------------------------------------


def add(*xs: np.ndarray) -> np.ndarray:
    """The elementwise sum of arrays of one shape."""
    arrays = [float_array(x, "x") for x in xs]
    AddSpec().output_shape([a.shape[1:] for a in arrays])
    return np.sum(arrays, axis=0) if len(arrays) > 2 else arrays[0] + arrays[1]


def add_backward(grad_out: np.ndarray, inputs: int = 2) -> tuple[np.ndarray, ...]:
    """Each input's gradient: the output gradient, unchanged."""
    return (float_array(grad_out, "grad_out"),) * inputs


def sub(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The elementwise difference of two arrays of one shape."""
    x, y = float_array(x, "x"), float_array(y, "y")
    SubSpec().output_shape([x.shape[1:], y.shape[1:]])
    return x - y


def sub_backward(grad_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ε, −ε)."""
    grad_out = float_array(grad_out, "grad_out")
    return grad_out, -grad_out


def _unbroadcast(grad: np.ndarray, shape: Shape) -> np.ndarray:
    axes = tuple(i for i, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def mul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The elementwise product of two arrays of one rank that broadcast."""
    x, y = float_array(x, "x"), float_array(y, "y")
    MulSpec().output_shape([x.shape[1:], y.shape[1:]])
    return x * y


def mul_backward(grad_out: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(g_x, g_y): ε·y and ε·x, each summed over the axes its input was broadcast along."""
    grad_out, x, y = (float_array(a, n) for a, n in ((grad_out, "grad_out"), (x, "x"), (y, "y")))
    return _unbroadcast(grad_out * y, x.shape), _unbroadcast(grad_out * x, y.shape)


def _reduced_axes(spec: MeanSpec, x: np.ndarray) -> tuple[int, ...]:
    """The array axes (batch = 0) that ``spec`` reduces, after checking ``x``'s sample shape."""
    return tuple(a + 1 for a in spec._axes(spec._check_input(x.shape[1:])))


def _spread_back(spec: MeanSpec, grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The output gradient copied to every input of its reduction (the adjoint of a sum)."""
    x, grad_out = float_array(x, "x"), float_array(grad_out, "grad_out")
    axes = _reduced_axes(spec, x)
    what = f"(the {spec.name.lower()})"
    expect_shape(grad_out, (x.shape[0], *spec.output_shape(x.shape[1:])), "grad_out", what)
    kept = grad_out if spec.keepdim else np.expand_dims(grad_out, axes)
    return np.broadcast_to(kept, x.shape).copy()


def mean(x: np.ndarray, dims: Sequence[int], keepdim: bool = False) -> np.ndarray:
    """The mean over ``dims`` (PyTorch numbering, batch = 0, which is never reduced)."""
    x = float_array(x, "x")
    return x.mean(axis=_reduced_axes(MeanSpec(tuple(dims), keepdim), x), keepdims=keepdim)


def mean_backward(
    grad_out: np.ndarray, x: np.ndarray, dims: Sequence[int], keepdim: bool = False
) -> np.ndarray:
    """ε / n copied to the n inputs of each mean."""
    spec = MeanSpec(tuple(dims), keepdim)
    n = prod(np.shape(x)[a] for a in _reduced_axes(spec, float_array(x, "x")))
    return _spread_back(spec, float_array(grad_out, "grad_out") / n, x)


def sum_(x: np.ndarray, dims: Sequence[int], keepdim: bool = False) -> np.ndarray:
    """The sum over ``dims`` (PyTorch numbering, batch = 0, which is never reduced)."""
    x = float_array(x, "x")
    return x.sum(axis=_reduced_axes(SumSpec(tuple(dims), keepdim), x), keepdims=keepdim)


def sum_backward(
    grad_out: np.ndarray, x: np.ndarray, dims: Sequence[int], keepdim: bool = False
) -> np.ndarray:
    """ε copied to the n inputs of each sum."""
    return _spread_back(SumSpec(tuple(dims), keepdim), grad_out, x)


sum_.__name__ = "sum"  # the engine's public name, as torch.sum


# -- registration -------------------------------------------------------------------------------


def _binary(op: str, spec: type[Op]) -> dict[str, registry.CallRule]:
    """x + y (equal shapes) and x * y (broadcasting), both computed from the input: the
    operator, torch and Tensor forms of ``op``, in place or not."""

    def rule(call: registry.TorchCall) -> Op:
        if len(call.operands) == 1 and any(
            isinstance(a, registry.Constant) for a in (*call.leading, *call.args)
        ):
            from .param_arith import binary_rule  # a parameter operand: its own family

            return binary_rule(op, call)
        if len(call.operands) == 1 and call.args and isinstance(call.args[0], (int, float)):
            from .scalar import scalar_rule  # a number: its own family

            return scalar_rule(op, call)
        if len(call.args) != 1 or set(call.kwargs) - {"out"} or call.kwargs.get("out") is not None:
            raise registry.Unsupported("not a plain binary call (alpha or extra arguments)")
        if len(call.operands) != 2:
            raise registry.Unsupported("an operand that is a constant, not computed from the input")
        return spec()

    forms = ("operator.{}", "operator.i{}", "torch.{}", "Tensor.{}", "Tensor.{}_")
    return dict.fromkeys((form.format(op) for form in forms), rule)


def _sub(call: registry.TorchCall) -> Op:
    """x − y of two inputs; x − c with a number is the scalar family's."""
    if len(call.operands) == 1:
        from .scalar import scalar_rule  # a number: its own family

        return scalar_rule("sub", call)
    if len(call.args) != 1 or call.kwargs.get("alpha", 1) != 1 or len(call.operands) != 2:
        raise registry.Unsupported("not a plain x − y (alpha or extra arguments)")
    return SubSpec()


def _reduction(spec: type[MeanSpec]) -> registry.CallRule:
    """x.mean(dim, keepdim) / x.sum(dim, keepdim) over non-batch axes."""

    def rule(call: registry.TorchCall) -> Op:
        dim, keepdim = call.bind(("dim", None), ("keepdim", False))
        if dim is None or call.kwargs.get("dtype") is not None:
            raise registry.Unsupported("a reduction over every axis (the batch included)")
        dims = (dim,) if is_int(dim) else tuple(dim)
        return spec(tuple(batch_free_dim(d, call.rank) for d in dims), bool(keepdim))

    return rule


ADD = graph_family(
    "add",
    AddSpec,
    {"add": add, "add_backward": add_backward},
    _binary("add", AddSpec),
    registry.NotSupported("a spec file joins branches with residual and concat blocks"),
)
MUL = graph_family(
    "mul", MulSpec, {"mul": mul, "mul_backward": mul_backward}, _binary("mul", MulSpec)
)
MEAN = graph_family(
    "mean",
    MeanSpec,
    {"mean": mean, "mean_backward": mean_backward},
    dict.fromkeys(_paths("mean"), _reduction(MeanSpec)),
)
SUB = graph_family(
    "sub",
    SubSpec,
    {"sub": sub, "sub_backward": sub_backward},
    dict.fromkeys(("torch.sub", "Tensor.sub", "Tensor.sub_", "torch.subtract"), _sub),
)
SUM = graph_family(
    "sum",
    SumSpec,
    {"sum": sum_, "sum_backward": sum_backward},
    dict.fromkeys(_paths("sum"), _reduction(SumSpec)),
)
