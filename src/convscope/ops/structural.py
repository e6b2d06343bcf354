"""Structural ops: Flatten, elementwise Add (residual) and Concat."""

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
        w.section("Cost")
        w.note("A reshape: no arithmetic.")
        return Cost(OpCount(), OpCount())


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
        w.section("Cost")
        w.note("A copy: no arithmetic.")
        return Cost(OpCount(), OpCount())


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
