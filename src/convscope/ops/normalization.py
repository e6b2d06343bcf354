"""Batch normalisation (1-D, 2-D, 3-D), counted in training mode per docs/counting.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from ..module import Module
from .base import Op


@dataclass(frozen=True)
class BatchNormSpec(Op):
    """Batch normalisation over the channel axis of (C, *spatial) inputs."""

    ndim: int
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.num_features, int) or self.num_features < 1:
            raise LayerConfigError(f"num_features must be an int >= 1, got {self.num_features!r}")

    @property
    def name(self) -> str:
        return f"BatchNorm{self.ndim}d"

    def describe(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        ranks = (1, 2) if self.ndim == 1 else (self.ndim + 1,)
        if len(shape) not in ranks or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise ShapeError(
                f"{self.name} takes an input of {' or '.join(map(str, ranks))} axes without the "
                f"batch, all sizes >= 1, got {shape}"
            )
        if shape[0] != self.num_features:
            raise ShapeError(
                f"{self.name} expects {self.num_features} channels, got an input of shape "
                f"{shape_text(shape)}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"Unchanged: {shape_text(input_shape)}")
        return input_shape

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        c = self.num_features
        weights = w.let("weights", "C", c, {"C": c}, why="γ") if self.affine else 0
        biases = w.let("biases", "C", c, {"C": c}, why="β") if self.affine else 0
        buffers = (
            w.let("buffers", "2·C + 1", 2 * c + 1, {"C": c}, why="running mean, variance, count")
            if self.track_running_stats
            else 0
        )
        return ParamCount(weights, biases, buffers)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        c, a = self.num_features, int(self.affine)
        w.section("Forward pass (training mode, per channel over m values)")
        spatial = prod(input_shape[1:])
        m = w.let(
            "m",
            "N · S",
            batch * spatial,
            {"N": batch, "S": spatial},
            why="S: values per channel in one image",
        )
        v = {"C": c, "m": m, "a": a}
        w.note(
            "mean, centre, variance, 1/√(var + eps), normalise, then γ·x̂ + β when affine (a = 1)."
        )
        forward = OpCount(
            mults=w.let("mults", "C · (2·m + a·m)", c * (2 * m + a * m), v),
            adds=w.let("adds", "C · (3·m − 1 + a·m)", c * (3 * m - 1 + a * m), v),
            divides=w.let("divides", "3·C", 3 * c, v),
            specials=w.let("specials", "C", c, v, why="one square root per channel"),
        )
        w.section("Backward pass: the gradient w.r.t. the input")
        w.note("g_x = (inv / m)·(m·g_x̂ − Σ g_x̂ − x̂·Σ g_x̂·x̂), with g_x̂ = ε·γ when affine.")
        backward_input = OpCount(
            mults=w.let("mults", "C · (4·m + a·m)", c * (4 * m + a * m), v),
            adds=w.let("adds", "C · (4·m − 2)", c * (4 * m - 2), v),
            divides=w.let("divides", "C", c, v),
        )
        weight = bias = None
        if self.affine:
            w.section("Backward pass: the gradients w.r.t. γ and β")
            weight = OpCount(
                mults=w.let("mults", "C · m", c * m, v),
                adds=w.let("adds", "C · (m − 1)", c * (m - 1), v),
            )
            bias = OpCount(adds=w.let("adds", "C · (m − 1)", c * (m - 1), v))
        return Cost(forward, backward_input, weight, bias)


class _BatchNormNd(Module):
    ndim = 2

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        self.spec = BatchNormSpec(
            self.ndim, num_features, eps, momentum, bool(affine), bool(track_running_stats)
        )


class BatchNorm1d(_BatchNormNd):
    """Batch normalisation of (C,) or (C, L) inputs."""

    ndim = 1


class BatchNorm2d(_BatchNormNd):
    """Batch normalisation of (C, H, W) inputs."""

    ndim = 2


class BatchNorm3d(_BatchNormNd):
    """Batch normalisation of (C, D, H, W) inputs."""

    ndim = 3
