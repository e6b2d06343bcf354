"""What the normalisation families share (``normalization``): the counting rule of
normalising groups of values, the base of their specs, and the modules that hold γ, β and the
running statistics. The array passes are ``convscope.kernels.normalize``'s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_input_rank, prod, set_counts
from ..kernels.normalize import (
    channel_axes,
    channel_norm,
    enough_values,
    norm_backward,
    per_channel,
)
from ..module import Module, Parameter, constant_init
from .base import Op, no_macs, not_linear, of_rank, same_shape

if TYPE_CHECKING:
    from ..receptive import Field


def normalize_cost(
    w: Working, symbol: str, groups: int, m: int, a: int, b: int, group: str
) -> tuple[OpCount, OpCount]:
    """Forward and input-gradient counts of normalising ``groups`` groups of m values each:
    mean, centre, variance, 1/√(var + eps), normalise, then ·γ (a = 1) and + β (b = 1)."""
    v = {symbol: groups, "m": m, "a": a, "b": b}
    w.note("mean, centre, variance, 1/√(var + eps), normalise, then γ·x̂ (a = 1) + β (b = 1).")
    forward = OpCount(
        mults=w.let("mults", f"{symbol} · (2·m + a·m)", groups * (2 * m + a * m), v),
        adds=w.let("adds", f"{symbol} · (3·m − 1 + b·m)", groups * (3 * m - 1 + b * m), v),
        divides=w.let("divides", f"3·{symbol}", 3 * groups, v),
        specials=w.let("specials", symbol, groups, v, why=f"one square root per {group}"),
    )
    w.section("Backward pass: the gradient w.r.t. the input")
    w.note("g_x = (inv / m)·(m·g_x̂ − Σ g_x̂ − x̂·Σ g_x̂·x̂), with g_x̂ = ε·γ when affine.")
    backward_input = OpCount(
        mults=w.let("mults", f"{symbol} · (4·m + a·m)", groups * (4 * m + a * m), v),
        adds=w.let("adds", f"{symbol} · (4·m − 2)", groups * (4 * m - 2), v),
        divides=w.let("divides", symbol, groups, v),
    )
    return forward, backward_input


@dataclass(frozen=True)
class NormSpec(Op):
    """What every normalisation shares: its cost (``normalize_cost`` over the groups that
    ``_groups`` names, and γ's and β's gradients, each entry summing its share of the values),
    its parameters (γ and β per affine entry, running statistics as buffers) and its linear map
    (none: it normalises with statistics of its input)."""

    _shape = same_shape
    _macs = no_macs
    linear_map = not_linear("normalises with statistics of its own input: not a fixed linear map")

    @property
    def has_weight(self) -> bool:
        return bool(getattr(self, "affine", getattr(self, "elementwise_affine", False)))

    @property
    def has_bias(self) -> bool:
        return self.has_weight and bool(getattr(self, "bias", True))

    @property
    def tracks(self) -> bool:
        """Whether it keeps running statistics (2 per channel, and the batch count)."""
        return bool(getattr(self, "track_running_stats", False))

    def _display(self, field: str) -> Any:
        if field == "bias" and not self.has_weight:
            return True  # no affine: no β either way
        return getattr(self, field)

    def _entries(self) -> tuple[str, int]:
        """The symbol and number of γ entries."""
        return "C", self._channels()

    def _channels(self) -> int:
        raise NotImplementedError

    def _groups(self, shape: Shape, batch: int, w: Working) -> tuple[str, int, int, str]:
        """The symbol and number of groups, the values per group and the group's name."""
        raise NotImplementedError

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        symbol, e = self._entries()
        weights = w.let("weights", symbol, e, {symbol: e}, why="γ") if self.has_weight else 0
        biases = w.let("biases", symbol, e, {symbol: e}, why="β") if self.has_bias else 0
        c = self._channels()
        buffers = 0
        if self.tracks:
            why = "running mean, variance, count"
            buffers = w.let("buffers", "2·C + 1", 2 * c + 1, {"C": c}, why=why)
        return ParamCount(weights, biases, buffers)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        symbol, groups, m, word = self._groups(input_shape, batch, w)
        a, b = int(self.has_weight), int(self.has_bias)
        forward, backward_input = normalize_cost(w, symbol, groups, m, a, b, word)
        weight = bias = None
        if a:
            e_symbol, e = self._entries()
            w.section("Backward pass: the gradients w.r.t. γ and β, each entry over its values")
            v = {"N": batch, "V": prod(input_shape), e_symbol: e}
            t = w.let(
                "t",
                f"N · V / {e_symbol}",
                batch * prod(input_shape) // e,
                v,
                why="V: values per image; t: values per γ entry",
            )
            v["t"] = t
            weight = OpCount(
                mults=w.let("mults", f"{e_symbol} · t", e * t, v),
                adds=w.let("adds", f"{e_symbol} · (t − 1)", e * (t - 1), v),
            )
            if b:
                bias = OpCount(adds=w.let("adds", f"{e_symbol} · (t − 1)", e * (t - 1), v))
        return Cost(forward, backward_input, weight, bias)

    def _statistics_field(self, field: Field, input_shape: Shape, own: bool) -> Field:
        """With statistics of the input's own spatial positions, every position reaches an
        output; with running statistics (inference) an output reads its own entry only."""
        return field.with_statistics() if own and len(input_shape) > 1 else field


def check_norm_numbers(eps: Any, momentum: Any = None) -> None:
    """eps a finite number > 0 (it is added under a square root) and momentum None or a
    finite number in [0, 1], as a running average needs."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise LayerConfigError(f"eps must be a finite number > 0, got {eps!r}")
    if momentum is not None and (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not 0 <= momentum <= 1
    ):
        raise LayerConfigError(f"momentum must be None or a number in [0, 1], got {momentum!r}")


def _expect_channels(spec: Any, shape: Shape, channels: int) -> Shape:
    if shape[0] != channels:
        raise ShapeError(
            f"{spec.name} expects {channels} channels, got an input of shape {shape_text(shape)}"
        )
    return shape


@dataclass(frozen=True)
class ChannelNormSpec(NormSpec):
    """BatchNorm and InstanceNorm: ``num_features`` channels of (C, *spatial) inputs of a rank,
    each with its own γ and β, and, when tracked, running statistics (at inference, the
    statistics an output reads are those, not its input's). Subclasses add ``affine``,
    ``track_running_stats`` and ``bias`` with their defaults, and name their ``_kind``."""

    ndim: int
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1

    _positional: ClassVar = ("num_features",)
    _hidden: ClassVar = ("ndim",)
    _kind: ClassVar[str]

    def __post_init__(self) -> None:
        set_counts(self, "num_features")
        check_norm_numbers(self.eps, self.momentum)

    @property
    def name(self) -> str:
        return f"{self._kind}{self.ndim}d"

    def _channels(self) -> int:
        return self.num_features

    def _ranks(self) -> tuple[int, ...]:
        """The input ranks it takes, without the batch."""
        return (self.ndim + 1,)

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_input_rank(input_shape, self._ranks(), self.name)
        return _expect_channels(self, shape, self.num_features)

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """The input's own statistics (an image's, or a batch's without running ones) reach
        every position; at inference running ones scale and shift each entry by its channel's
        alone."""
        return self._statistics_field(field, input_shape, not self.track_running_stats)


# -- the modules ---------------------------------------------------------------------------------


class NormModule(Module):
    """γ (ones) and β (zeros) of ``shape`` when affine, and for BatchNorm and InstanceNorm the
    running statistics, under PyTorch's state-dict names; its backward adds γ's and β's
    gradients into their ``grad``."""

    spec: Any

    def _parameters(self, shape: Shape, weight: bool, bias: bool, channels: int, track: bool):
        self.weight = (
            self.register("weight", Parameter(shape, constant_init(1.0))) if weight else None
        )
        self.bias = self.register("bias", Parameter(shape, constant_init(0.0))) if bias else None
        self.running_mean = self.running_var = self.num_batches_tracked = None
        if track:
            buffer = {"trainable": False}
            self.running_mean = self.register(
                "running_mean", Parameter((channels,), constant_init(0.0), **buffer)
            )
            self.running_var = self.register(
                "running_var", Parameter((channels,), constant_init(1.0), **buffer)
            )
            self.num_batches_tracked = self.register(
                "num_batches_tracked",
                Parameter((), constant_init(0), dtype=np.int64, trainable=False),
            )

    def _data(self, p: Parameter | None) -> np.ndarray | None:
        return None if p is None else p.data

    def _gradients(
        self, grad_out: Any, x: np.ndarray, saved: Any, gamma: Any, gamma_axes: Sequence[int]
    ) -> np.ndarray:
        """The input gradient of what forward kept; adds γ's and β's gradients into their
        ``grad`` (``gamma`` is γ shaped against x, ``gamma_axes`` the axes its gradient sums)."""
        gx, gw, gb = norm_backward(grad_out, x, saved, gamma, gamma_axes, self.bias is not None)
        if self.weight is not None and gw is not None:
            self.weight.accumulate(gw)
        if self.bias is not None and gb is not None:
            self.bias.accumulate(gb)
        return gx


class ChannelNorm(NormModule):
    """BatchNorm and InstanceNorm: per-channel γ and β and, when tracked, running statistics
    (momentum None: their cumulative average)."""

    per_image = False
    ndim = 2

    def _setup(
        self,
        spec: type[ChannelNormSpec],
        num_features: int,
        eps: float,
        momentum: float | None,
        affine: bool,
        track_running_stats: bool,
        bias: bool,
    ) -> None:
        """The ``spec`` and parameters of PyTorch's arguments (β only with γ)."""
        affine, track = bool(affine), bool(track_running_stats)
        self.spec = spec(
            self.ndim, num_features, eps, momentum, affine, track, bool(bias and affine)
        )
        self._parameters((num_features,), affine, affine and bias, num_features, track)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The input's statistics in training (updating the running ones); the running ones in
        eval (without them, the input's too, as PyTorch)."""
        x = float_array(x, "x")
        spec = self.spec
        self.spec.output_shape(x.shape[1:])
        tracked = self.running_mean is not None
        own = self.training or not tracked
        momentum = spec.momentum
        if self.training and tracked:
            # a batch that fails the checks is not counted
            enough_values(spec.name, x, self.per_image)
            same_dtype(x=x, running_mean=self.running_mean.data)
            count = self.num_batches_tracked.data
            count += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(count)
        running = (self._data(self.running_mean), self._data(self.running_var))
        affine = (self._data(self.weight), self._data(self.bias))
        y, saved = channel_norm(
            spec.name, x, self.per_image, running, affine, own, momentum, spec.eps
        )
        self.save_for_backward(x, saved)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds γ's and β's gradients into their ``grad``."""
        x, saved = self.saved()
        weight = self._data(self.weight)
        gamma = None if weight is None else per_channel(weight, x.ndim)
        return self._gradients(grad_out, x, saved, gamma, channel_axes(x, False))


# -- the functional forms' torch rules -----------------------------------------------------------


def _parameters(*values: Any) -> None:
    """The tensors a functional norm is given must be the model's (or None)."""
    for value in values:
        registry.constant(value, "statistic or affine parameter", optional=True)


def channel_norm_call(classes: Sequence[type[Module]], flag: str) -> registry.CallRule:
    """F.batch_norm / F.instance_norm(x, running_mean, running_var, weight, bias, ``flag``,
    momentum, eps): the module of the input's rank, affine and tracked as the tensors given
    say."""

    def rule(call: registry.TorchCall) -> Op:
        mean, var, weight, bias, _, momentum, eps = call.bind(
            ("running_mean", None),
            ("running_var", None),
            ("weight", None),
            ("bias", None),
            (flag, None),
            ("momentum", 0.1),
            ("eps", 1e-5),
        )
        _parameters(mean, var, weight, bias)
        cls = of_rank(tuple(classes), max(len(call.operands[0]) - 1, 1))
        affine = weight is not None
        channels = call.operands[0][0]
        module = cls(
            channels, eps, momentum, affine, mean is not None, bias=not affine or bias is not None
        )
        return module.spec

    return rule


def norm_call(first: str, build: Any) -> registry.CallRule:
    """F.layer_norm(x, normalized_shape, …) and F.group_norm(x, num_groups, …): ``build(x's
    shape, first, eps, affine, bias)`` makes the spec."""

    def rule(call: registry.TorchCall) -> Op:
        value, weight, bias, eps = call.bind(
            (first, None), ("weight", None), ("bias", None), ("eps", 1e-5)
        )
        _parameters(weight, bias)
        affine = weight is not None
        return build(call.operands[0], value, eps, affine, affine and bias is not None)

    return rule
