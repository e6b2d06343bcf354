"""Normalisation families: BatchNorm (1-D to 3-D), LayerNorm over the trailing axes, GroupNorm
and InstanceNorm (1-D to 3-D). Each normalises groups of values by their own mean and biased
variance (or, at inference, by running statistics), then scales by γ and shifts by β; they
differ in the groups. Counted in training mode, per docs/counting.md. Each family's
configuration, rules, passes, modules and registration; the array kernel they share is
``convscope.kernels.normalize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import float_array, same_dtype
from ..errors import LayerConfigError, NotComposableError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, is_int, prod, set_counts
from ..grammar import Context, LayerKind
from ..kernels import normalize as kernel
from ..kernels.normalize import (
    Grads,
    channel_axes,
    channel_norm,
    checked_vector,
    norm_backward,
    per_channel,
    scale_shift,
)
from ..module import Module
from .base import RANKS, LinearMap, of_rank, rank_class
from .conv import ConvSpec
from .normalizing import (
    ChannelNorm,
    ChannelNormSpec,
    NormModule,
    NormSpec,
    _expect_channels,
    channel_norm_call,
    check_norm_numbers,
    norm_call,
)

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class BatchNormSpec(ChannelNormSpec):
    """Batch normalisation over the channel axis of (C, *spatial) inputs."""

    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True

    _kind = "BatchNorm"

    def _ranks(self) -> tuple[int, ...]:
        return (1, 2) if self.ndim == 1 else (self.ndim + 1,)

    def _groups(self, shape: Shape, batch: int, w: Working) -> tuple[str, int, int, str]:
        w.section("Forward pass (training mode, per channel over m values)")
        s = prod(shape[1:])
        m = w.let(
            "m", "N · S", batch * s, {"N": batch, "S": s}, why="S: values per channel in one image"
        )
        return "C", self.num_features, m, "channel"

    def linear_map(self, channels: int | None, module: Module | None = None) -> LinearMap:
        """In eval mode with running statistics, a depthwise 1×1 convolution with a bias."""
        if not self.track_running_stats or (module is not None and module.running_mean is None):
            raise NotComposableError(
                "has no running statistics (track_running_stats=False): it normalises with "
                "each batch's, which is not a fixed linear map"
            )
        if module is not None and module.training:
            raise NotComposableError(
                "is in training mode: it normalises with the batch's statistics, which is not a "
                "fixed linear map. Call .eval() to fold it with the running statistics"
            )
        c = self.num_features
        conv = ConvSpec.create(self.ndim, c, c, 1, groups=c)

        def arrays() -> tuple[np.ndarray, np.ndarray]:
            if module is None:
                raise NotComposableError(f"{self.name}: its statistics come from a module")
            scale, shift = bn_affine(module)
            return np.diag(scale).reshape(c, c, *(1,) * self.ndim), shift

        form = f"{conv.name}({conv.describe()})"
        reads = f"(eval mode) is the depthwise {form}: w = γ / √(σ² + ε), b = β − μ·w per channel"
        return LinearMap(conv, reads, arrays)


def bn_affine(bn: Module) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BatchNorm as ``y = scale·x + shift`` per channel (float64)."""
    mean = bn.running_mean.data.astype(np.float64)
    var = bn.running_var.data.astype(np.float64)
    gamma = bn.weight.data.astype(np.float64) if bn.weight is not None else 1.0
    beta = bn.bias.data.astype(np.float64) if bn.bias is not None else 0.0
    scale = gamma / np.sqrt(var + bn.spec.eps)
    return np.broadcast_to(scale, mean.shape).copy(), beta - mean * scale


@dataclass(frozen=True)
class LayerNormSpec(NormSpec):
    """Layer normalisation over the last axes (``normalized_shape``) of each row."""

    normalized_shape: Shape
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    name = "LayerNorm"
    _positional: ClassVar = ("normalized_shape",)

    def __post_init__(self) -> None:
        check_norm_numbers(self.eps)
        if not isinstance(self.normalized_shape, tuple):
            raise LayerConfigError(
                f"normalized_shape must be a tuple, got {self.normalized_shape!r}"
            )
        try:
            check_sizes(self.normalized_shape, "LayerNorm", "a normalized_shape")
        except ShapeError as error:
            raise LayerConfigError(str(error)) from None

    def _entries(self) -> tuple[str, int]:
        return "m", prod(self.normalized_shape)

    def _channels(self) -> int:
        return prod(self.normalized_shape)

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        k = len(self.normalized_shape)
        shape = check_sizes(input_shape, "LayerNorm")
        if shape[-k:] != self.normalized_shape:
            raise ShapeError(
                f"LayerNorm expects the last axes to be {self.normalized_shape}, got an input of "
                f"shape {shape_text(shape) if shape else '()'}"
            )
        return shape

    def _groups(self, shape: Shape, batch: int, w: Working) -> tuple[str, int, int, str]:
        w.section("Forward pass, per row of m values")
        lead = prod(shape[: len(shape) - len(self.normalized_shape)])
        rows = w.let("R", "N · L", batch * lead, {"N": batch, "L": lead}, why="L: rows per image")
        return "R", rows, prod(self.normalized_shape), "row"

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """The normalised axes are the last ones: with a spatial axis among them, the
        statistics reach every position along it (channels last: none is)."""
        axes = field.spatial_axes(len(input_shape))
        if axes is not None:
            normalised = range(len(input_shape) - len(self.normalized_shape), len(input_shape))
            return field.with_statistics() if set(axes) & set(normalised) else field
        return self._statistics_field(field, input_shape, True)


@dataclass(frozen=True)
class GroupNormSpec(NormSpec):
    """Group normalisation: the channels of (C, *spatial) inputs in ``num_groups`` groups, each
    normalised over its channels and every position, per image."""

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True
    bias: bool = True

    name = "GroupNorm"
    _positional: ClassVar = ("num_groups", "num_channels")

    def __post_init__(self) -> None:
        set_counts(self, "num_groups", "num_channels")
        check_norm_numbers(self.eps)
        if self.num_channels % self.num_groups:
            raise LayerConfigError(
                f"num_groups must divide num_channels: {self.num_channels} is not divisible by "
                f"num_groups={self.num_groups}"
            )

    def _channels(self) -> int:
        return self.num_channels

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        return _expect_channels(self, check_sizes(input_shape, self.name), self.num_channels)

    def _groups(self, shape: Shape, batch: int, w: Working) -> tuple[str, int, int, str]:
        w.section("Forward pass (per image and group, over its channels' m values)")
        v = {"N": batch, "g": self.num_groups, "C": self.num_channels, "S": prod(shape[1:])}
        groups = w.let("G", "N · g", batch * self.num_groups, v)
        m = w.let(
            "m",
            "(C / g) · S",
            self.num_channels // self.num_groups * v["S"],
            v,
            why="S: values per channel in one image",
        )
        return "G", groups, m, "group"

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Each image's statistics reach every position."""
        return self._statistics_field(field, input_shape, True)


@dataclass(frozen=True)
class InstanceNormSpec(ChannelNormSpec):
    """Instance normalisation: each channel of each image normalised over its positions."""

    affine: bool = False
    track_running_stats: bool = False
    bias: bool = True

    _kind = "InstanceNorm"

    def _groups(self, shape: Shape, batch: int, w: Working) -> tuple[str, int, int, str]:
        w.section("Forward pass (training mode, per image and channel over its m positions)")
        v = {"N": batch, "C": self.num_features}
        groups = w.let("G", "N · C", batch * self.num_features, v)
        return "G", groups, prod(shape[1:]), "image and channel"


# -- engine: functional forward and backward ----------------------------------------------------

Array = np.ndarray


def batch_norm(
    x: Array,
    running_mean: Array | None,
    running_var: Array | None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Array:
    """Batch normalisation over the channel axis of (N, C, *spatial) inputs.

    In training mode it normalises with the batch's statistics and updates ``running_mean`` and
    ``running_var`` in place (the variance unbiased), as PyTorch; in eval it uses them.
    """
    running, affine = (running_mean, running_var), (weight, bias)
    return _channel_norm("batch norm", False, x, running, affine, training, momentum, eps)


def batch_norm_backward(
    grad_out: Array,
    x: Array,
    weight: Array | None = None,
    training: bool = True,
    running_var: Array | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    running_mean: Array | None = None,
) -> Grads:
    """The gradients of batch_norm w.r.t. the input, the weight and the bias (None unless affine).

    In training mode the batch statistics are recomputed from ``x``; in eval mode the running
    statistics are constants (``running_mean`` is needed only for the weight gradient).
    """
    x = _input(x, "batch norm", False)
    if not training and (running_var is None or (affine and running_mean is None)):
        raise ShapeError(
            "batch_norm_backward in eval mode needs running_var (and running_mean "
            "for the weight gradient)"
        )
    stats = (
        (None, None)
        if training
        else (np.zeros_like(running_var) if running_mean is None else running_mean, running_var)
    )
    if affine and weight is None:  # γ = 1
        weight = np.ones(x.shape[1], x.dtype)
    return _channel_gradients(
        "batch norm", False, grad_out, x, weight, stats, training, eps, affine
    )


def _input(x: Any, name: str, per_image: bool) -> np.ndarray:
    """``x`` as (N, C, *spatial), with a spatial axis for an image's statistics."""
    x = float_array(x, "x")
    least = 3 if per_image else 2
    if not least <= x.ndim <= 5:
        raise ShapeError(
            f"{name} takes an input of {least} to 5 axes (N, C, *spatial), got shape {x.shape}"
        )
    return x


def _channel_norm(
    name: str,
    per_image: bool,
    x: Any,
    running: tuple[Any, Any],
    affine: tuple[Any, Any],
    own: bool,
    momentum: float,
    eps: float,
) -> np.ndarray:
    """``channel_norm``'s output for ``x``, checked as ``_input`` checks it."""
    x = _input(x, name, per_image)
    return channel_norm(name, x, per_image, running, affine, own, momentum, eps)[0]


def _channel_gradients(
    name: str,
    per_image: bool,
    grad_out: Any,
    x: np.ndarray,
    weight: Any,
    stats: tuple[Any, Any],
    own: bool,
    eps: float,
    bias: bool,
) -> Grads:
    """The gradients of ``channel_norm`` of ``x`` (with ``stats``, or its own with ``own``) and
    of γ = ``weight`` per channel and β (with ``bias``)."""
    _, saved = channel_norm(name, x, per_image, stats, (None, None), own, None, eps)
    weight = checked_vector(weight, "weight", x.shape[1:2], x)
    gamma = None if weight is None else per_channel(weight, x.ndim)
    return norm_backward(grad_out, x, saved, gamma, channel_axes(x, False), bias)


def instance_norm(
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Array:
    """Instance normalisation of (N, C, *spatial) inputs, as F.instance_norm: each image's
    channels over their positions, updating the running statistics (averaged over the batch)
    in place; with ``use_input_stats=False`` the running ones."""
    running, affine = (running_mean, running_var), (weight, bias)
    return _channel_norm("instance norm", True, x, running, affine, use_input_stats, momentum, eps)


def instance_norm_backward(
    grad_out: Array,
    x: Array,
    weight: Array | None = None,
    use_input_stats: bool = True,
    running_var: Array | None = None,
    eps: float = 1e-5,
    bias: bool = True,
    running_mean: Array | None = None,
) -> Grads:
    """The gradients of instance_norm w.r.t. the input, the weight and the bias (both None
    without a weight; the bias's None when ``bias`` is false)."""
    x = _input(x, "instance norm", True)
    stats = (None, None) if use_input_stats else (running_mean, running_var)
    return _channel_gradients(
        "instance norm", True, grad_out, x, weight, stats, use_input_stats, eps, bias
    )


def _layer_norm(x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: float) -> tuple:
    x = float_array(x, "x")
    shape = (normalized_shape,) if is_int(normalized_shape) else tuple(normalized_shape)
    LayerNormSpec(shape, eps).output_shape(x.shape[1:])
    weight, bias = (
        checked_vector(weight, "weight", shape, x),
        checked_vector(bias, "bias", shape, x),
    )
    same_dtype(x=x, weight=weight, bias=bias)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    xhat, inv = kernel.normalize(x, *kernel.moments(x, axes), eps)
    return x, scale_shift(xhat, weight, bias), (xhat, inv, axes, True), weight


def layer_norm(
    x: Array,
    normalized_shape: int | Sequence[int],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Layer normalisation over the last axes of (N, ..., *normalized_shape), as F.layer_norm."""
    return _layer_norm(x, normalized_shape, weight, bias, eps)[1]


def layer_norm_backward(
    grad_out: Array,
    x: Array,
    normalized_shape: int | Sequence[int],
    weight: Array | None = None,
    eps: float = 1e-5,
    bias: bool = True,
) -> Grads:
    """The gradients of layer_norm w.r.t. the input, the weight and the bias (both None without
    a weight; the bias's None when ``bias`` is false)."""
    x, _, saved, weight = _layer_norm(x, normalized_shape, weight, None, eps)
    return norm_backward(grad_out, x, saved, weight, tuple(range(x.ndim - len(saved[2]))), bias)


def _group_norm(x: Any, num_groups: int, weight: Any, bias: Any, eps: float) -> tuple:
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ShapeError(f"group norm takes an input of (N, C, *spatial), got shape {x.shape}")
    GroupNormSpec(num_groups, x.shape[1], eps).output_shape(x.shape[1:])
    c = x.shape[1:2]
    weight, bias = checked_vector(weight, "weight", c, x), checked_vector(bias, "bias", c, x)
    same_dtype(x=x, weight=weight, bias=bias)
    # the group size spelled out: -1 cannot be inferred for an empty batch (N = 0)
    grouped = x.reshape(x.shape[0], num_groups, prod(x.shape[1:]) // num_groups)
    xhat, inv = kernel.normalize(grouped, *kernel.moments(grouped, (2,)), eps)
    w, b = (None if v is None else per_channel(v, x.ndim) for v in (weight, bias))
    return x, scale_shift(xhat.reshape(x.shape), w, b), (xhat, inv, (2,), True), w


def group_norm(
    x: Array,
    num_groups: int,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Group normalisation of (N, C, *spatial) inputs, as F.group_norm."""
    return _group_norm(x, num_groups, weight, bias, eps)[1]


def group_norm_backward(
    grad_out: Array,
    x: Array,
    num_groups: int,
    weight: Array | None = None,
    eps: float = 1e-5,
    bias: bool = True,
) -> Grads:
    """The gradients of group_norm w.r.t. the input, the weight and the bias (both None without
    a weight; the bias's None when ``bias`` is false)."""
    x, _, saved, gamma = _group_norm(x, num_groups, weight, None, eps)
    return norm_backward(grad_out, x, saved, gamma, channel_axes(x, False), bias)


# -- modules --------------------------------------------------------------------------------------


class BatchNormNd(ChannelNorm):
    """Batch normalisation with PyTorch's arguments, attribute names and state dict."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
    ) -> None:
        self._setup(BatchNormSpec, num_features, eps, momentum, affine, track_running_stats, bias)


class InstanceNormNd(ChannelNorm):
    """Instance normalisation with PyTorch's arguments, attribute names and state dict."""

    per_image = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        bias: bool = True,
    ) -> None:
        self._setup(
            InstanceNormSpec, num_features, eps, momentum, affine, track_running_stats, bias
        )


class LayerNorm(NormModule):
    """Layer normalisation over the trailing axes, with PyTorch's arguments."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        shape = (normalized_shape,) if is_int(normalized_shape) else tuple(normalized_shape)
        affine = bool(elementwise_affine)
        self.spec = LayerNormSpec(shape, eps, affine, bool(bias and affine))
        self._parameters(shape, affine, affine and bias, 0, False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each row normalised over the trailing axes."""
        x, y, saved, _ = _layer_norm(
            x,
            self.spec.normalized_shape,
            self._data(self.weight),
            self._data(self.bias),
            self.spec.eps,
        )
        self.save_for_backward(x, saved)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds γ's and β's gradients into their ``grad``."""
        x, saved = self.saved()
        gamma_axes = tuple(range(x.ndim - len(self.spec.normalized_shape)))
        return self._gradients(grad_out, x, saved, self._data(self.weight), gamma_axes)


class GroupNorm(NormModule):
    """Group normalisation with PyTorch's arguments."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        bias: bool = True,
    ) -> None:
        self.spec = GroupNormSpec(
            num_groups, num_channels, eps, bool(affine), bool(bias and affine)
        )
        self._parameters((num_channels,), affine, affine and bias, num_channels, False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each image's groups of channels normalised over their values."""
        x, y, saved, gamma = _group_norm(
            x, self.spec.num_groups, self._data(self.weight), self._data(self.bias), self.spec.eps
        )
        self.save_for_backward(x, saved, gamma)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds γ's and β's gradients into their ``grad``."""
        x, saved, gamma = self.saved()
        return self._gradients(grad_out, x, saved, gamma, channel_axes(x, False))


BatchNorm1d, BatchNorm2d, BatchNorm3d = (
    rank_class(BatchNormNd, d, f"BatchNorm{d}d", f"Batch normalisation of {shape} inputs.")
    for d, shape in zip(RANKS, ("(C,) or (C, L)", "(C, H, W)", "(C, D, H, W)"))
)
InstanceNorm1d, InstanceNorm2d, InstanceNorm3d = (
    rank_class(InstanceNormNd, d, f"InstanceNorm{d}d", f"Instance normalisation of {shape} inputs.")
    for d, shape in zip(RANKS, ("(C, L)", "(C, H, W)", "(C, D, H, W)"))
)


# -- registration ---------------------------------------------------------------------------------


def _build_bn(values: dict[str, Any], ctx: Context) -> Module:
    # a chain in layer text is read at inference: running statistics
    return of_rank((BatchNorm1d, BatchNorm2d, BatchNorm3d), ctx.ndim)(ctx.channels).eval()


BATCH_NORM = registry.register_twins(
    "batchnorm",
    BatchNormSpec,
    (BatchNorm1d, BatchNorm2d, BatchNorm3d),
    (batch_norm, batch_norm_backward),
    "num_features",
    functions={
        "torch.nn.functional.batch_norm": channel_norm_call(
            (BatchNorm1d, BatchNorm2d, BatchNorm3d), "training"
        ),
        "torch.batch_norm": channel_norm_call((BatchNorm1d, BatchNorm2d, BatchNorm3d), "training"),
    },
    kinds=(LayerKind("bn", (), _build_bn, help="an eval-mode BatchNorm"),),
)
LAYER_NORM = registry.register_twins(
    "layernorm",
    LayerNormSpec,
    (LayerNorm,),
    (layer_norm, layer_norm_backward),
    functions=dict.fromkeys(
        ("torch.nn.functional.layer_norm", "torch.layer_norm"),
        norm_call("normalized_shape", lambda x, shape, *rest: LayerNormSpec(tuple(shape), *rest)),
    ),
)
GROUP_NORM = registry.register_twins(
    "groupnorm",
    GroupNormSpec,
    (GroupNorm,),
    (group_norm, group_norm_backward),
    "num_channels",
    functions=dict.fromkeys(
        ("torch.nn.functional.group_norm", "torch.group_norm"),
        norm_call("num_groups", lambda x, groups, *rest: GroupNormSpec(groups, x[0], *rest)),
    ),
)
INSTANCE_NORM = registry.register_twins(
    "instancenorm",
    InstanceNormSpec,
    (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d),
    (instance_norm, instance_norm_backward),
    "num_features",
    functions={
        "torch.nn.functional.instance_norm": channel_norm_call(
            (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d), "use_input_stats"
        ),
    },
)
