"""Families that move values without arithmetic: Flatten, Reshape, Permute, Slice and Concat,
with their rules, passes, modules and registrations, and what every structural family shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, is_int, prod
from ..module import Module
from .base import NOT_A_CONVOLUTION as NOT_A_CONVOLUTION  # importable here too
from .base import Op, no_macs, no_params, not_a_convolution, noted_shape

if TYPE_CHECKING:
    from ..receptive import Field


def moves_values(self: Op, field: Field, input_shape: Any, output_shape: Shape) -> Field:
    """The face of a reshape, reordering, view or copy: each output entry is one input entry
    and keeps that entry's field, wherever the entry moves."""
    return field


class StructuralOp(Op):
    """An op that moves, joins or reduces values: no weights, no MACs, no convolution."""

    @property
    def name(self) -> str:
        """The class's name without ``Spec``: Flatten, Concat, Add."""
        return type(self).__name__.removesuffix("Spec")

    _params = no_params
    _macs = no_macs
    linear_map = not_a_convolution


class MovingOp(StructuralOp):
    """A reshape, reordering or view: each output entry is one input entry and keeps its field;
    where the axes are merged or split, the field follows the spatial axes (``Field.relaid``)."""

    def receptive_field(self, field: Field, input_shape: Any, output_shape: Shape) -> Field:
        """Each output entry is one input entry; a change of rank moves the spatial axes."""
        if len(input_shape) == len(output_shape):
            return field
        return field.relaid(tuple(input_shape), tuple(output_shape))


def free_cost(w: Working, why: str) -> Cost:
    """The cost of an op that only moves or views data: nothing, with the reason recorded."""
    w.section("Cost")
    w.note(why)
    return Cost(OpCount(), OpCount())


def no_arithmetic(why: str) -> Callable[..., Cost]:
    """The cost face of an op that only moves or views data (``free_cost``)."""

    def _cost(
        self: Op, input_shape: Any, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        return free_cost(w, why)

    return _cost


def moved(w: Working, input_shape: Shape, shape: Shape, detail: str = "") -> Shape:
    """``shape`` as the output shape that ``input_shape`` becomes."""
    return noted_shape(w, shape, f"{shape_text(input_shape)} → {shape_text(shape)}{detail}")


#: The input shapes of an op of several inputs.
Shapes = tuple[Shape, ...]


def _check_shape(shape: Sequence[int], layer: str) -> Shape:
    return check_sizes(shape, layer, "shapes")


def _check_shapes(shapes: Sequence[Sequence[int]], layer: str) -> Shapes:
    if isinstance(shapes, tuple) and shapes and isinstance(shapes[0], int):
        raise ShapeError(f"{layer} takes a list of input shapes, got one shape {shapes}")
    out = tuple(_check_shape(s, layer) for s in shapes)
    if len(out) < 2:
        raise ShapeError(f"{layer} needs at least 2 inputs, got {len(out)}")
    return out


@dataclass(frozen=True)
class FlattenSpec(MovingOp):
    """Merges axes start_dim..end_dim, counted as PyTorch does with the batch as axis 0."""

    start_dim: int = 1
    end_dim: int = -1

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, "Flatten")
        rank = len(shape) + 1
        start, end = (d + rank if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not (0 <= start < rank and 0 <= end < rank):
            raise ShapeError(
                f"Flatten dims ({self.start_dim}, {self.end_dim}) are out of range for a "
                f"{rank}-axis input (batch included) of shape (N, {', '.join(map(str, shape))})"
            )
        if start > end:
            raise ShapeError(
                f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim}"
            )
        if start == 0 and end > 0:
            raise ShapeError(
                "Flatten with start_dim=0 merges the batch axis; convscope shapes exclude it"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        rank = len(input_shape) + 1
        start, end = (d + rank if d < 0 else d for d in (self.start_dim, self.end_dim))
        full = (1, *input_shape)
        out = full[:start] + (prod(full[start : end + 1]),) + full[end + 1 :]
        return moved(w, input_shape, out[1:])

    _cost = no_arithmetic("A reshape: no arithmetic.")


class JoiningOp(StructuralOp):
    """An op of two or more inputs (Concat, Add, Mul), whose shapes ``_check_joined`` checks
    together."""

    def _check_input(self, input_shape: Sequence[Sequence[int]]) -> Shapes:
        shapes = _check_shapes(input_shape, self.name)
        self._check_joined(shapes)
        return shapes

    def _check_joined(self, shapes: Shapes) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class ConcatSpec(JoiningOp):
    """Concatenation along an axis (PyTorch numbering, batch = 0; default the channels)."""

    dim: int = 1

    #: The summary merges the inputs' fields; each output entry is one input entry.
    receptive_field = moves_values

    def _check_joined(self, shapes: Shapes) -> None:
        rank = len(shapes[0]) + 1
        dim = self.dim + rank if self.dim < 0 else self.dim
        if any(len(s) + 1 != rank for s in shapes) or not 1 <= dim < rank:
            raise ShapeError(
                f"Concat along dim {self.dim} needs inputs of one rank with that axis (batch = 0), "
                f"got {', '.join(shape_text(s) for s in shapes)}"
            )
        rest = {s[: dim - 1] + s[dim:] for s in shapes}
        if len(rest) != 1:
            raise ShapeError(
                f"Concat along dim {self.dim} needs the other axes equal, got "
                f"{', '.join(shape_text(s) for s in shapes)}"
            )

    def _shape(self, input_shape: Shapes, w: Working) -> Shape:
        rank = len(input_shape[0]) + 1
        axis = (self.dim + rank if self.dim < 0 else self.dim) - 1
        first = input_shape[0]
        shape = first[:axis] + (sum(s[axis] for s in input_shape),) + first[axis + 1 :]
        return noted_shape(w, shape, f"Sizes along dim {self.dim} add up: {shape_text(shape)}")

    _cost = no_arithmetic("A copy: no arithmetic.")


def flatten(x: np.ndarray, start_dim: int = 1, end_dim: int = -1) -> np.ndarray:
    """Merges axes start_dim..end_dim of a batched array (a view where NumPy allows)."""
    spec = FlattenSpec(start_dim, end_dim)
    shape = spec.output_shape(x.shape[1:])
    return x.reshape((x.shape[0], *shape))


def flatten_backward(
    grad_out: np.ndarray, x: np.ndarray, start_dim: int = 1, end_dim: int = -1
) -> np.ndarray:
    """The output gradient reshaped back to the input's shape."""
    expected = (x.shape[0], *FlattenSpec(start_dim, end_dim).output_shape(x.shape[1:]))
    expect_shape(grad_out, expected, "grad_out", f"for flatten of an input of shape {x.shape}")
    return grad_out.reshape(x.shape)


class Flatten(Module):
    """Merges axes start_dim..end_dim (batch = axis 0), as torch.nn.Flatten."""

    spec: FlattenSpec

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        if not all(is_int(d) for d in (start_dim, end_dim)):
            raise LayerConfigError(f"Flatten dims must be ints, got {start_dim!r}, {end_dim!r}")
        self.spec = FlattenSpec(start_dim, end_dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` with the axes merged (a view where NumPy allows)."""
        self.save_for_backward(x.shape)
        return flatten(x, self.spec.start_dim, self.spec.end_dim)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The output gradient in the input's shape."""
        (shape,) = self.saved()
        return grad_out.reshape(shape)


def _full_dim(dim: int, rank: int, layer: str, shape: Shape) -> int:
    """A PyTorch axis number (batch = 0, negatives from the end) resolved for ``rank`` axes."""
    resolved = dim + rank if dim < 0 else dim
    if not 1 <= resolved < rank:
        raise ShapeError(
            f"{layer}: dim {dim} is not a non-batch axis of an input of shape "
            f"(N, {', '.join(map(str, shape))})"
        )
    return resolved


@dataclass(frozen=True)
class ReshapeSpec(MovingOp):
    """A view or reshape to a fixed shape (without the batch; one entry may be -1)."""

    shape: Shape

    def __post_init__(self) -> None:
        sizes = tuple(self.shape)
        if (
            not sizes
            or sum(v == -1 for v in sizes) > 1
            or not all(is_int(v) and (v >= 1 or v == -1) for v in sizes)
        ):
            raise LayerConfigError(
                f"Reshape takes a shape of sizes >= 1 (one may be -1), without the batch, got "
                f"{self.shape!r}"
            )

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, "Reshape")
        known = prod(v for v in self.shape if v != -1)
        if (-1 in self.shape and prod(shape) % known) or (
            -1 not in self.shape and known != prod(shape)
        ):
            raise ShapeError(
                f"Reshape to {tuple(self.shape)} needs {known} elements per image, the input "
                f"{shape_text(shape)} has {prod(shape)}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        known = prod(v for v in self.shape if v != -1)
        shape = tuple(prod(input_shape) // known if v == -1 else v for v in self.shape)
        return moved(w, input_shape, shape, ", the same elements")

    _cost = no_arithmetic("A reshape: no arithmetic.")


@dataclass(frozen=True)
class PermuteSpec(MovingOp):
    """A reordering of the axes (PyTorch numbering, batch = 0, which must stay first)."""

    dims: Shape

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        if sorted(dims) != list(range(len(dims))) or not dims or dims[0] != 0:
            raise LayerConfigError(
                f"Permute takes a reordering of 0 … rank − 1 that keeps the batch axis 0 first, "
                f"got {self.dims!r}"
            )

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, "Permute")
        if len(shape) + 1 != len(self.dims):
            raise ShapeError(
                f"Permute{tuple(self.dims)} needs a {len(self.dims)}-axis input (batch included), "
                f"got (N, {', '.join(map(str, shape))})"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        full = (1, *input_shape)
        return moved(w, input_shape, tuple(full[d] for d in self.dims[1:]))

    _cost = no_arithmetic("A reordering (at most a copy): no arithmetic.")

    def receptive_field(self, field: Field, input_shape: Any, output_shape: Shape) -> Field:
        """Each output entry is one input entry; the spatial axes move with the reordering."""
        return field.permuted(self.dims)


@dataclass(frozen=True)
class SliceSpec(MovingOp):
    """The entries start … stop − 1 along one axis (PyTorch numbering, batch = 0)."""

    dim: int
    start: int
    stop: int

    #: slices of one tensor write disjoint parts of its gradient (``Graph.fork_costs``)
    selects_part: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise LayerConfigError(
                f"Slice needs 0 <= start < stop, got start={self.start}, stop={self.stop}"
            )

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = _check_shape(input_shape, "Slice")
        axis = _full_dim(self.dim, len(shape) + 1, "Slice", shape) - 1
        if self.stop > shape[axis]:
            raise ShapeError(
                f"Slice {self.start}:{self.stop} along dim {self.dim} exceeds its size "
                f"{shape[axis]} in {shape_text(shape)}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        axis = _full_dim(self.dim, len(input_shape) + 1, "Slice", input_shape) - 1
        shape = input_shape[:axis] + (self.stop - self.start,) + input_shape[axis + 1 :]
        return moved(w, input_shape, shape)

    _cost = no_arithmetic(
        "A view: no arithmetic; its gradient fills the rest of the input with zeros."
    )


# -- registration: the torch forms of each structural op ----------------------------------------


def batch_free_dim(dim: Any, rank: int) -> int:
    """A PyTorch axis (batch = 0, negatives from the end) of a traced call, resolved; an axis
    that is no int, or the batch axis itself, makes the call unsupported."""
    if not is_int(dim):
        raise registry.Unsupported(f"a dim that is not an int: {dim!r}")
    resolved = dim + rank if dim < 0 else dim
    if resolved == 0:
        raise registry.Unsupported("it acts along the batch axis")
    return resolved


def _cat(call: registry.TorchCall) -> Op | None:
    (dim,) = call.bind(("dim", 0))
    if len(call.operands) == 1 and call.output != call.operands[0]:
        from .param_arith import concat_rule  # the other pieces are parameters: their family

        return concat_rule(call, dim)
    if len(call.operands) == 1:
        return None  # the one tensor itself
    batch_free_dim(dim, call.rank)
    return ConcatSpec(dim)


def _flatten(call: registry.TorchCall) -> Op:
    start, end = call.bind(("start_dim", 0), ("end_dim", -1))
    return FlattenSpec(start, end)


def _permute(call: registry.TorchCall) -> Op:
    dims = call.args if call.args else (call.kwargs.get("dims"),)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    dims = tuple(d + call.rank if is_int(d) and d < 0 else d for d in dims)
    if dims[:1] != (0,):
        raise registry.Unsupported("it moves the batch axis")
    return PermuteSpec(dims)


def _transpose(call: registry.TorchCall) -> Op:
    d0, d1 = (batch_free_dim(d, call.rank) for d in call.bind(("dim0", None), ("dim1", None)))
    dims = list(range(call.rank))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return PermuteSpec(tuple(dims))


def _paths(*names: str) -> tuple[str, ...]:
    """``torch.NAME`` and ``Tensor.NAME`` for each name."""
    return tuple(f"{root}.{name}" for name in names for root in ("torch", "Tensor"))


_NO_MODULE = registry.NotSupported("PyTorch has no module for it: in a model it is a call")
_NO_KEY = registry.NotSupported("spec files have no key for it: it comes from traced models")


def graph_family(
    name: str,
    spec: type[Op],
    functional: dict[str, Any],
    functions: dict[str, registry.CallRule],
    spec_file: Any = _NO_KEY,
    modules: Any = None,
) -> registry.Family:
    """A family of traced graphs: a spec, its forward/backward pair and its torch calls."""
    torch = registry.TorchMapping(modules=modules or {}, functions=functions)
    return registry.register(
        registry.Family(name, (spec,), _NO_MODULE, functional, spec_file, torch)
    )


# -- engine: forward and backward pairs --------------------------------------------------------


def concat(xs: Sequence[np.ndarray], dim: int = 1) -> np.ndarray:
    """Arrays joined along ``dim`` (PyTorch numbering, batch = 0)."""
    arrays = [float_array(x, "x") for x in xs]
    ConcatSpec(dim).output_shape([a.shape[1:] for a in arrays])
    return np.concatenate(arrays, axis=dim)


def concat_backward(
    grad_out: np.ndarray, xs: Sequence[np.ndarray], dim: int = 1
) -> tuple[np.ndarray, ...]:
    """Each input's gradient: its own part of the output gradient."""
    cuts = np.cumsum([x.shape[dim] for x in xs])[:-1]
    return tuple(np.split(float_array(grad_out, "grad_out"), cuts, axis=dim))


def reshape(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``x`` viewed with each item of the batch in ``shape`` (one entry may be -1)."""
    x = float_array(x, "x")
    return x.reshape((x.shape[0], *ReshapeSpec(tuple(shape)).output_shape(x.shape[1:])))


def reshape_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The output gradient in the input's shape."""
    return float_array(grad_out, "grad_out").reshape(np.shape(x))


def permute(x: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """``x`` with its axes reordered (the batch axis 0 stays first)."""
    x = float_array(x, "x")
    PermuteSpec(tuple(dims)).output_shape(x.shape[1:])
    return x.transpose(dims)


def permute_backward(grad_out: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """The output gradient with the inverse reordering."""
    return float_array(grad_out, "grad_out").transpose(np.argsort(dims))


def slice_along(x: np.ndarray, dim: int, start: int, stop: int) -> np.ndarray:
    """The entries ``start … stop − 1`` along ``dim`` (PyTorch numbering, batch = 0)."""
    x = float_array(x, "x")
    SliceSpec(dim, start, stop).output_shape(x.shape[1:])
    return np.take(x, np.arange(start, stop), axis=dim)


def slice_along_backward(
    grad_out: np.ndarray, x: np.ndarray, dim: int, start: int, stop: int
) -> np.ndarray:
    """The output gradient in its place, zeros elsewhere."""
    grad = np.zeros(np.shape(x), dtype=float_array(grad_out, "grad_out").dtype)
    index = [slice(None)] * grad.ndim
    index[dim] = slice(start, stop)
    grad[tuple(index)] = grad_out
    return grad


# -- registration -------------------------------------------------------------------------------


FLATTEN = registry.register_twins(
    "flatten",
    FlattenSpec,
    (Flatten,),
    (flatten, flatten_backward),
    functions=dict.fromkeys(_paths("flatten"), _flatten),
)
CONCAT = graph_family(
    "concat",
    ConcatSpec,
    {"concat": concat, "concat_backward": concat_backward},
    dict.fromkeys(("torch.cat", "torch.concat"), _cat),
    registry.NotSupported("a spec file joins branches with residual and concat blocks"),
)
RESHAPE = graph_family(
    "reshape",
    ReshapeSpec,
    {"reshape": reshape, "reshape_backward": reshape_backward},
    {
        **dict.fromkeys(
            _paths("reshape", "unflatten", "squeeze", "unsqueeze") + ("Tensor.view",),
            lambda call: ReshapeSpec(call.output),
        ),
        # the same values under another name: the step is its input
        **dict.fromkeys(
            ("Tensor.contiguous", "Tensor.clone", "Tensor.detach", "torch.clone"), lambda call: None
        ),
    },
    modules={"Identity": lambda module: None},
)
PERMUTE = graph_family(
    "permute",
    PermuteSpec,
    {"permute": permute, "permute_backward": permute_backward},
    {
        **dict.fromkeys(_paths("permute"), _permute),
        **dict.fromkeys(_paths("transpose"), _transpose),
    },
)
# chunk and split reach it through the adapter, which splits their tuple results into slices
SLICE = graph_family(
    "slice",
    SliceSpec,
    {"slice_along": slice_along, "slice_along_backward": slice_along_backward},
    {},
)
