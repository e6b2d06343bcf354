"""Structural ops: Flatten, Reshape, Permute, Slice, elementwise Add (residual) and Mul
(gates), Concat, Mean, and the placeholder for an operation that is not counted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..arrays import expect_shape
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from ..module import Module
from .base import Op


def free_cost(w: Working, why: str) -> Cost:
    """The cost of an op that only moves or views data: nothing, with the reason recorded."""
    w.section("Cost")
    w.note(why)
    return Cost(OpCount(), OpCount())


def _check_shape(shape: Sequence[int], layer: str) -> Shape:
    shape = tuple(shape)
    if not shape or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape
    ):
        raise ShapeError(f"{layer} takes shapes of sizes >= 1 without the batch, got {shape}")
    return shape


def _check_shapes(shapes: Sequence[Sequence[int]], layer: str) -> tuple[Shape, ...]:
    if isinstance(shapes, tuple) and shapes and isinstance(shapes[0], int):
        raise ShapeError(f"{layer} takes a list of input shapes, got one shape {shapes}")
    out = tuple(_check_shape(s, layer) for s in shapes)
    if len(out) < 2:
        raise ShapeError(f"{layer} needs at least 2 inputs, got {len(out)}")
    return out


@dataclass(frozen=True)
class FlattenSpec(Op):
    """Merges axes start_dim..end_dim, counted as PyTorch does with the batch as axis 0."""

    start_dim: int = 1
    end_dim: int = -1

    name = "Flatten"

    def describe(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

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
        shape = out[1:]
        w.section("Output shape")
        w.note(f"{shape_text(input_shape)} → {shape_text(shape)}")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        return free_cost(w, "A reshape: no arithmetic.")


@dataclass(frozen=True)
class AddSpec(Op):
    """Elementwise sum of inputs of one shape (a residual connection)."""

    name = "Add"

    def describe(self) -> str:
        return ""

    def _check_input(self, input_shape: Sequence[Sequence[int]]) -> tuple[Shape, ...]:
        shapes = _check_shapes(input_shape, "Add")
        if len(set(shapes)) != 1:
            raise ShapeError(
                f"Add needs inputs of one shape, got {', '.join(shape_text(s) for s in shapes)}"
            )
        return shapes

    def _shape(self, input_shape: tuple[Shape, ...], w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"The inputs' shape: {shape_text(input_shape[0])}")
        return input_shape[0]

    def _cost(
        self,
        input_shape: tuple[Shape, ...],
        output_shape: Shape,
        batch: int,
        count: str,
        w: Working,
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
class ConcatSpec(Op):
    """Concatenation along an axis (PyTorch numbering, batch = 0; default the channels)."""

    dim: int = 1

    name = "Concat"

    def describe(self) -> str:
        return f"dim={self.dim}"

    def _check_input(self, input_shape: Sequence[Sequence[int]]) -> tuple[Shape, ...]:
        shapes = _check_shapes(input_shape, "Concat")
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
        return shapes

    def _shape(self, input_shape: tuple[Shape, ...], w: Working) -> Shape:
        rank = len(input_shape[0]) + 1
        axis = (self.dim + rank if self.dim < 0 else self.dim) - 1
        first = input_shape[0]
        shape = first[:axis] + (sum(s[axis] for s in input_shape),) + first[axis + 1 :]
        w.section("Output shape")
        w.note(f"Sizes along dim {self.dim} add up: {shape_text(shape)}")
        return shape

    def _cost(
        self,
        input_shape: tuple[Shape, ...],
        output_shape: Shape,
        batch: int,
        count: str,
        w: Working,
    ) -> Cost:
        return free_cost(w, "A copy: no arithmetic.")


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

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        if not all(isinstance(d, int) for d in (start_dim, end_dim)):
            raise LayerConfigError(f"Flatten dims must be ints, got {start_dim!r}, {end_dim!r}")
        self.spec = FlattenSpec(start_dim, end_dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return flatten(x, self.spec.start_dim, self.spec.end_dim)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._shape)


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
class ReshapeSpec(Op):
    """A view or reshape to a fixed shape (without the batch; one entry may be -1)."""

    shape: Shape

    name = "Reshape"

    def __post_init__(self) -> None:
        sizes = tuple(self.shape)
        if (
            not sizes
            or sum(v == -1 for v in sizes) > 1
            or not all(isinstance(v, int) and (v >= 1 or v == -1) for v in sizes)
        ):
            raise LayerConfigError(
                f"Reshape takes a shape of sizes >= 1 (one may be -1), without the batch, got "
                f"{self.shape!r}"
            )

    def describe(self) -> str:
        return f"shape={tuple(self.shape)}"

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
        w.section("Output shape")
        w.note(f"{shape_text(input_shape)} → {shape_text(shape)}, the same elements")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        return free_cost(w, "A reshape: no arithmetic.")


@dataclass(frozen=True)
class PermuteSpec(Op):
    """A reordering of the axes (PyTorch numbering, batch = 0, which must stay first)."""

    dims: Shape

    name = "Permute"

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        if sorted(dims) != list(range(len(dims))) or not dims or dims[0] != 0:
            raise LayerConfigError(
                f"Permute takes a reordering of 0 … rank − 1 that keeps the batch axis 0 first, "
                f"got {self.dims!r}"
            )

    def describe(self) -> str:
        return f"dims={tuple(self.dims)}"

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
        shape = tuple(full[d] for d in self.dims[1:])
        w.section("Output shape")
        w.note(f"{shape_text(input_shape)} → {shape_text(shape)}")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        return free_cost(w, "A reordering (at most a copy): no arithmetic.")


@dataclass(frozen=True)
class SliceSpec(Op):
    """The entries start … stop − 1 along one axis (PyTorch numbering, batch = 0)."""

    dim: int
    start: int
    stop: int

    name = "Slice"

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise LayerConfigError(
                f"Slice needs 0 <= start < stop, got start={self.start}, stop={self.stop}"
            )

    def describe(self) -> str:
        return f"dim={self.dim}, start={self.start}, stop={self.stop}"

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
        w.section("Output shape")
        w.note(f"{shape_text(input_shape)} → {shape_text(shape)}")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        return free_cost(
            w, "A view: no arithmetic; its gradient fills the rest of the input with zeros."
        )


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
class MulSpec(Op):
    """Elementwise product of two inputs with broadcasting (a squeeze-and-excitation gate)."""

    name = "Mul"

    def describe(self) -> str:
        return ""

    def _check_input(self, input_shape: Sequence[Sequence[int]]) -> tuple[Shape, ...]:
        shapes = _check_shapes(input_shape, "Mul")
        if len(shapes) != 2:
            raise ShapeError(f"Mul takes 2 inputs, got {len(shapes)}")
        broadcast_shape(shapes, "Mul")
        return shapes

    def _shape(self, input_shape: tuple[Shape, ...], w: Working) -> Shape:
        shape = broadcast_shape(input_shape, "Mul")
        w.section("Output shape")
        w.note(f"The inputs broadcast (an axis of size 1 repeats): {shape_text(shape)}")
        return shape

    def _cost(
        self,
        input_shape: tuple[Shape, ...],
        output_shape: Shape,
        batch: int,
        count: str,
        w: Working,
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
class MeanSpec(Op):
    """The mean over some non-batch axes (PyTorch numbering, batch = 0)."""

    dims: Shape
    keepdim: bool = False

    name = "Mean"

    def __post_init__(self) -> None:
        if not self.dims or len(set(self.dims)) != len(self.dims):
            raise LayerConfigError(f"Mean takes distinct axes to reduce, got {self.dims!r}")

    def describe(self) -> str:
        return f"dims={tuple(self.dims)}, keepdim={self.keepdim}"

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
        w.section("Output shape")
        w.note(f"{shape_text(input_shape)} → {shape_text(shape)}")
        return shape

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


@dataclass(frozen=True)
class OpaqueSpec(Op):
    """An operation convscope cannot count: it passes on a known output shape and costs
    nothing here, so it must also be listed in the graph's ``unsupported``."""

    label: str
    shape: Shape

    name = "NOT COUNTED"

    def describe(self) -> str:
        return self.label

    def _check_input(self, input_shape: object) -> object:
        return input_shape

    def _shape(self, input_shape: object, w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"As traced: {shape_text(self.shape)}; the operation itself is not counted.")
        return tuple(self.shape)

    def _cost(
        self, input_shape: object, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.note(f"{self.label}: not counted (listed as unsupported).")
        return Cost(OpCount(), OpCount())
