"""Softmax and LogSoftmax along one axis, counted as a literal, numerically stable
implementation (docs/counting.md): the configuration, rules, passes, modules and registration
of the softmax family.

Per row of n values along the axis, the forward takes the row's maximum (n − 1 compares),
subtracts it (n adds), exponentiates (n specials), sums (n − 1 adds) and divides (n divides);
LogSoftmax instead takes one log of the sum (1 special) and subtracts it (n adds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, is_int, prod
from ..module import Module
from .base import Op, no_macs, no_params, not_linear, same_shape
from .structural import batch_free_dim

if TYPE_CHECKING:
    from ..receptive import Field

_NO_DIM = (
    "{layer}(dim=None) is PyTorch's deprecated implicit-dim form (the axis depends on the "
    "input's rank); give dim explicitly"
)


@dataclass(frozen=True)
class SoftmaxSpec(Op):
    """Softmax (or, with ``log``, LogSoftmax) along ``dim`` (PyTorch numbering, batch = 0)."""

    dim: int
    log: bool = False

    _hidden: ClassVar = ("log",)
    _positional: ClassVar = ("dim",)

    def __post_init__(self) -> None:
        if self.dim is None:
            raise LayerConfigError(_NO_DIM.format(layer=self.name))
        if not is_int(self.dim):
            raise LayerConfigError(f"{self.name} dim must be an int, got {self.dim!r}")

    @property
    def name(self) -> str:
        return "LogSoftmax" if self.log else "Softmax"

    def axis(self, shape: Shape) -> int:
        """The batch-free index of the softmax axis in ``shape``."""
        rank = len(shape) + 1
        resolved = self.dim + rank if self.dim < 0 else self.dim
        if not 1 <= resolved < rank:
            where = "the batch axis" if resolved == 0 else "out of range"
            raise ShapeError(
                f"{self.name} along dim {self.dim}: {where} for an input of shape "
                f"(N, {', '.join(map(str, shape))}) (batch = 0); convscope normalises per image"
            )
        return resolved - 1

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, self.name)
        self.axis(shape)
        return shape

    _shape = same_shape
    _params = no_params
    _macs = no_macs
    linear_map = not_linear(
        "is not linear (exp, then a division by a sum): the layers around it are not one "
        "convolution"
    )

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        n = input_shape[self.axis(input_shape)]
        values = {"N": batch, "E": prod(input_shape), "n": n}
        w.section(f"Rows: softmax over {n} values along dim {self.dim}, one per other position")
        rows = w.let("R", "N · E / n", batch * prod(input_shape) // n, values, why="rows")
        values["R"] = rows
        if self.log:
            w.section("Forward pass: y = (x − max) − log Σ exp(x − max), per row of n values")
            fwd = OpCount(
                compares=w.let("compares", "R · (n − 1)", rows * (n - 1), values, why="max"),
                adds=w.let(
                    "adds",
                    "R · (3·n − 1)",
                    rows * (3 * n - 1),
                    values,
                    why="x − max, the sum, minus the log",
                ),
                specials=w.let("specials", "R · (n + 1)", rows * (n + 1), values, why="exp, log"),
            )
            w.section("Backward pass: g_x = g − exp(y) · Σ g")
            back = OpCount(
                mults=w.let("mults", "R · n", rows * n, values),
                adds=w.let("adds", "R · (2·n − 1)", rows * (2 * n - 1), values, why="Σ g, g − …"),
                specials=w.let("specials", "R · n", rows * n, values, why="exp(y)"),
            )
            return Cost(fwd, back)
        w.section("Forward pass: y = exp(x − max) / Σ exp(x − max), per row of n values")
        fwd = OpCount(
            compares=w.let("compares", "R · (n − 1)", rows * (n - 1), values, why="max"),
            adds=w.let("adds", "R · (2·n − 1)", rows * (2 * n - 1), values, why="x − max, the sum"),
            divides=w.let("divides", "R · n", rows * n, values),
            specials=w.let("specials", "R · n", rows * n, values, why="exp"),
        )
        w.section("Backward pass: g_x = y · (g − Σ g · y)")
        back = OpCount(
            mults=w.let("mults", "2 · R · n", 2 * rows * n, values, why="g · y, y · (…)"),
            adds=w.let("adds", "R · (2·n − 1)", rows * (2 * n - 1), values, why="the sum, g − s"),
        )
        return Cost(fwd, back)

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Over the channels: pointwise. Over a spatial axis of L positions: every output sees
        all L of them, whatever its position: a window of the whole axis that does not move
        (stride 0), which later layers neither widen nor shift; exact."""
        if field.global_ or field.undefined or field.unknown:
            return field
        a = field.spatial_index(len(input_shape), self.axis(input_shape))
        if a is None:
            return field
        if a < 0:  # a reshape lost which axes are spatial
            return field.as_unknown()
        return field.spread(a, input_shape[self.axis(input_shape)])


# -- running: functional forward and backward ----------------------------------------------


def _checked(x: np.ndarray, dim: int, log: bool) -> np.ndarray:
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ShapeError(f"x must be batched (N, ...), got shape {x.shape}")
    SoftmaxSpec(dim, log).output_shape(x.shape[1:])
    return x


def _backward_args(grad_out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = float_array(y, "y")
    grad_out = float_array(grad_out, "grad_out")
    same_dtype(grad_out=grad_out, y=y)
    expect_shape(grad_out, y.shape, "grad_out", "(the shape of the forward's output y)")
    return grad_out, y


def softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """exp(x − max) / Σ exp(x − max) along ``dim`` (PyTorch numbering, batch = 0)."""
    x = _checked(x, dim, False)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward(grad_out: np.ndarray, y: np.ndarray, dim: int) -> np.ndarray:
    """The input gradient from the forward's output ``y``: y · (g − Σ g · y)."""
    grad_out, y = _backward_args(grad_out, y)
    _checked(y, dim, False)
    return y * (grad_out - (grad_out * y).sum(axis=dim, keepdims=True))


def log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """(x − max) − log Σ exp(x − max) along ``dim`` (PyTorch numbering, batch = 0)."""
    x = _checked(x, dim, True)
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def log_softmax_backward(grad_out: np.ndarray, y: np.ndarray, dim: int) -> np.ndarray:
    """The input gradient from the forward's output ``y``: g − exp(y) · Σ g."""
    grad_out, y = _backward_args(grad_out, y)
    _checked(y, dim, True)
    return grad_out - np.exp(y) * grad_out.sum(axis=dim, keepdims=True)


# -- running: modules -----------------------------------------------------------------------


class Softmax(Module):
    """Softmax along ``dim``, as torch.nn.Softmax (``dim=None`` is refused: give the axis)."""

    spec: SoftmaxSpec
    log: ClassVar[bool] = False

    def __init__(self, dim: int | None = None) -> None:
        if dim is None:
            raise LayerConfigError(_NO_DIM.format(layer=type(self).__name__))
        self.spec = SoftmaxSpec(dim, self.log)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The softmax of ``x``; keeps the output for backward."""
        passes = (log_softmax, log_softmax_backward) if self.log else (softmax, softmax_backward)
        y = passes[0](x, self.spec.dim)
        self.save_for_backward(y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input."""
        (y,) = self.saved()
        backward = log_softmax_backward if self.log else softmax_backward
        return backward(grad_out, y, self.spec.dim)


class LogSoftmax(Softmax):
    """log(Softmax) along ``dim``, as torch.nn.LogSoftmax (``dim=None`` is refused)."""

    log = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__(dim)


# -- registration -------------------------------------------------------------------------------


def _module_rule(cls: type[Softmax]) -> registry.ModuleRule:
    twin = registry.mirror(cls)

    def rule(module: Any) -> Op:
        if getattr(module, "dim", None) is None:
            raise registry.Unsupported(_NO_DIM.format(layer=cls.__name__))
        result = twin(module)
        assert result is not None
        return result

    return rule


def _call(log: bool) -> registry.CallRule:
    """softmax(x, dim), x.softmax(dim), with any dtype (the counts do not change)."""

    def rule(call: registry.TorchCall) -> Op:
        (dim,) = call.bind(("dim", None))
        layer = "LogSoftmax" if log else "Softmax"
        if dim is None:
            raise registry.Unsupported(_NO_DIM.format(layer=layer))
        batch_free_dim(dim, call.rank)
        if dim + call.rank < 0 or dim >= call.rank:
            raise registry.Unsupported(f"dim {dim} is out of range for {shape_text(call.output)}")
        return SoftmaxSpec(dim, log)

    return rule


_PATHS = {
    False: ("torch.nn.functional.softmax", "torch.softmax", "Tensor.softmax"),
    True: ("torch.nn.functional.log_softmax", "torch.log_softmax", "Tensor.log_softmax"),
}

FAMILY = registry.register(
    registry.Family(
        "softmax",
        (SoftmaxSpec,),
        registry.by_name(Softmax, LogSoftmax),
        registry.by_name(softmax, softmax_backward, log_softmax, log_softmax_backward),
        {
            "softmax": registry.SpecFileLayer(Softmax),
            "logsoftmax": registry.SpecFileLayer(LogSoftmax),
        },
        registry.TorchMapping(
            {"Softmax": _module_rule(Softmax), "LogSoftmax": _module_rule(LogSoftmax)},
            {path: _call(log) for log, paths in _PATHS.items() for path in paths},
        ),
    )
)
