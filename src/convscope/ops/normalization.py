"""Normalisation families: batch normalisation (1-D, 2-D, 3-D), counted in training mode, and
layer normalisation (analysis only), per docs/counting.md. Each family's configuration, rules,
passes, modules and registration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, NotComposableError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_input_rank, is_int, prod
from ..grammar import Context, LayerKind
from ..module import Module, Parameter, constant_init
from .base import RANKS, LinearMap, Op, no_macs, not_linear, pointwise_field, rank_class
from .conv import ConvSpec

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
class BatchNormSpec(Op):
    """Batch normalisation over the channel axis of (C, *spatial) inputs."""

    ndim: int
    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True

    _positional: ClassVar = ("num_features",)
    _hidden: ClassVar = ("ndim",)

    def __post_init__(self) -> None:
        if not is_int(self.num_features) or self.num_features < 1:
            raise LayerConfigError(f"num_features must be an int >= 1, got {self.num_features!r}")

    @property
    def name(self) -> str:
        return f"BatchNorm{self.ndim}d"

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        ranks = (1, 2) if self.ndim == 1 else (self.ndim + 1,)
        shape = check_input_rank(input_shape, ranks, self.name)
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
        forward, backward_input = normalize_cost(w, "C", c, m, a, a, "channel")
        v = {"C": c, "m": m}
        weight = bias = None
        if self.affine:
            w.section("Backward pass: the gradients w.r.t. γ and β")
            weight = OpCount(
                mults=w.let("mults", "C · m", c * m, v),
                adds=w.let("adds", "C · (m − 1)", c * (m - 1), v),
            )
            bias = OpCount(adds=w.let("adds", "C · (m − 1)", c * (m - 1), v))
        return Cost(forward, backward_input, weight, bias)

    _macs = no_macs
    #: At inference a BatchNorm scales and shifts each entry by its channel's running statistics.
    receptive_field = pointwise_field

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
        return LinearMap(
            conv,
            f"(eval mode) is the depthwise {form}: w = γ / √(σ² + ε), b = β − μ·w per channel",
            arrays,
        )


def bn_affine(bn: Module) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BatchNorm as ``y = scale·x + shift`` per channel (float64)."""
    spec: BatchNormSpec = bn.spec  # type: ignore[assignment]
    mean = bn.running_mean.data.astype(np.float64)
    var = bn.running_var.data.astype(np.float64)
    gamma = bn.weight.data.astype(np.float64) if bn.weight is not None else 1.0
    beta = bn.bias.data.astype(np.float64) if bn.bias is not None else 0.0
    scale = gamma / np.sqrt(var + spec.eps)
    return np.broadcast_to(scale, mean.shape).copy(), beta - mean * scale


@dataclass(frozen=True)
class LayerNormSpec(Op):
    """Layer normalisation over the last axes (``normalized_shape``) of each row."""

    normalized_shape: Shape
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    name = "LayerNorm"
    _positional: ClassVar = ("normalized_shape",)

    def __post_init__(self) -> None:
        shape = self.normalized_shape
        if (
            not isinstance(shape, tuple)
            or not shape
            or not all(is_int(v) and v >= 1 for v in shape)
        ):
            raise LayerConfigError(
                f"normalized_shape must be sizes >= 1, got {self.normalized_shape!r}"
            )

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        k = len(self.normalized_shape)
        shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
        if not all(is_int(v) and v >= 1 for v in shape) or shape[-k:] != tuple(
            self.normalized_shape
        ):
            raise ShapeError(
                f"LayerNorm expects the last axes to be {tuple(self.normalized_shape)}, got an "
                f"input of shape {shape_text(shape) if shape else '()'}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        w.section("Output shape")
        w.note(f"Unchanged: {shape_text(input_shape)}")
        return input_shape

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        m = prod(self.normalized_shape)
        affine = self.elementwise_affine
        weights = w.let("weights", "m", m, {"m": m}, why="γ") if affine else 0
        biases = w.let("biases", "m", m, {"m": m}, why="β") if affine and self.bias else 0
        return ParamCount(weights, biases)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        m = prod(self.normalized_shape)
        lead = prod(input_shape[: len(input_shape) - len(self.normalized_shape)])
        w.section("Forward pass, per row of m values")
        rows = w.let("R", "N · L", batch * lead, {"N": batch, "L": lead}, why="L: rows per image")
        a, b = int(self.elementwise_affine), int(self.elementwise_affine and self.bias)
        forward, backward_input = normalize_cost(w, "R", rows, m, a, b, "row")
        v = {"R": rows, "m": m}
        weight = bias = None
        if a:
            w.section("Backward pass: the gradients w.r.t. γ and β, summed over the rows")
            weight = OpCount(
                mults=w.let("mults", "R · m", rows * m, v),
                adds=w.let("adds", "m · (R − 1)", m * (rows - 1), v),
            )
        if b:
            bias = OpCount(adds=w.let("adds", "m · (R − 1)", m * (rows - 1), v))
        return Cost(forward, backward_input, weight, bias)

    _macs = no_macs

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """The normalised axes are the last ones: with a spatial axis among them (any input of
        more than one axis), the statistics reach every position along it."""
        return field.with_statistics() if len(input_shape) > 1 else field

    linear_map = not_linear(
        "normalises with each row's own statistics, which is not a fixed linear map"
    )


# -- running: functional forward and backward --------------------------------------------------

_NDIM_OF_RANK = {2: 1, 3: 1, 4: 2, 5: 3}


def _spec_for(x: np.ndarray, eps: float, momentum: float | None, affine: bool) -> BatchNormSpec:
    """The spec of the batch norm that fits x: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W)."""
    if x.ndim not in _NDIM_OF_RANK:
        raise ShapeError(
            f"batch norm takes an input of 2 to 5 axes (N, C, *spatial), got shape {x.shape}"
        )
    return BatchNormSpec(_NDIM_OF_RANK[x.ndim], int(x.shape[1]), eps, momentum, affine)


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast against (N, C, *spatial)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _check_channel(v: np.ndarray | None, name: str, x: np.ndarray) -> np.ndarray | None:
    if v is None:
        return None
    v = float_array(v, name)
    expect_shape(v, (x.shape[1],), name, f"(one per channel) for an input of shape {x.shape}")
    return v


def _check_batch_size(x: np.ndarray, spec: BatchNormSpec) -> int:
    """The number of values per channel, which training needs to be more than 1."""
    m = x.size // x.shape[1]
    if m == 1:
        raise ShapeError(
            "Expected more than 1 value per channel when training, got an input of shape "
            f"{x.shape} ({spec.name})"
        )
    return m


def _batch_stats(x: np.ndarray, spec: BatchNormSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel mean and biased variance over the batch and spatial axes, and their count."""
    axes = (0, *range(2, x.ndim))
    m = _check_batch_size(x, spec)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    return mean, var, m


def _forward(
    spec: BatchNormSpec,
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    training: bool,
    momentum: float | None,
) -> np.ndarray:
    spec.output_shape(x.shape[1:])  # rank, sizes and channels
    running_mean = _check_channel(running_mean, "running_mean", x)
    running_var = _check_channel(running_var, "running_var", x)
    weight = _check_channel(weight, "weight", x)
    bias = _check_channel(bias, "bias", x)
    same_dtype(x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if (running_mean is None) != (running_var is None):
        raise ShapeError("batch norm takes both running_mean and running_var, or neither")
    if training:
        mean, var, m = _batch_stats(x, spec)
        if running_mean is not None and running_var is not None:
            if momentum is None:
                raise LayerConfigError(
                    "batch_norm needs a float momentum; the cumulative average (momentum=None) "
                    "is the module's, which counts the batches"
                )
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * m / (m - 1)) * var  # the unbiased estimate
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch norm in eval mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    inv = 1 / np.sqrt(var + spec.eps)
    scale = inv if weight is None else inv * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return x * _channel(scale, x.ndim) + _channel(shift, x.ndim)


def batch_norm(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalisation over the channel axis of (N, C, *spatial) inputs.

    In training mode it normalises with the batch's statistics and updates ``running_mean`` and
    ``running_var`` in place (the variance unbiased), as PyTorch; in eval it uses them.
    """
    x = float_array(x, "x")
    spec = _spec_for(x, eps, momentum, weight is not None)
    return _forward(spec, x, running_mean, running_var, weight, bias, training, momentum)


def _backward(
    spec: BatchNormSpec,
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    training: bool,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    spec.output_shape(x.shape[1:])
    grad_out = float_array(grad_out, "grad_out")
    expect_shape(grad_out, x.shape, "grad_out", "(the shape of x)")
    weight = _check_channel(weight, "weight", x)
    running_mean = _check_channel(running_mean, "running_mean", x)
    running_var = _check_channel(running_var, "running_var", x)
    same_dtype(
        grad_out=grad_out,
        x=x,
        weight=weight,
        running_mean=running_mean,
        running_var=running_var,
    )
    axes = (0, *range(2, x.ndim))
    if training:
        mean, var, m = _batch_stats(x, spec)
    else:
        if running_var is None or (spec.affine and running_mean is None):
            raise ShapeError(
                "batch_norm_backward in eval mode needs running_var (and running_mean for the "
                "weight gradient)"
            )
        mean, var, m = running_mean, running_var, 0
    inv = 1 / np.sqrt(var + spec.eps)
    g_xhat = grad_out if weight is None else grad_out * _channel(weight, x.ndim)
    xhat = None
    if training or spec.affine:
        assert mean is not None
        xhat = (x - _channel(mean, x.ndim)) * _channel(inv, x.ndim)
    if training:
        assert xhat is not None
        s1 = g_xhat.sum(axis=axes)
        s2 = (g_xhat * xhat).sum(axis=axes)
        grad_input = _channel(inv / m, x.ndim) * (
            m * g_xhat - _channel(s1, x.ndim) - xhat * _channel(s2, x.ndim)
        )
    else:
        grad_input = g_xhat * _channel(inv, x.ndim)
    if not spec.affine:
        return grad_input, None, None
    assert xhat is not None
    return grad_input, (grad_out * xhat).sum(axis=axes), grad_out.sum(axis=axes)


def batch_norm_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None = None,
    training: bool = True,
    running_var: np.ndarray | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    running_mean: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The gradients of batch_norm w.r.t. the input, the weight and the bias (None unless affine).

    In training mode the batch statistics are recomputed from ``x``; in eval mode the running
    statistics are constants (``running_mean`` is needed only for the weight gradient).
    """
    x = float_array(x, "x")
    spec = _spec_for(x, eps, 0.1, affine)
    return _backward(spec, grad_out, x, weight, training, running_mean, running_var)


# -- running: modules ---------------------------------------------------------------------------


class BatchNormNd(Module):
    """Batch normalisation with PyTorch's arguments, attribute names and state dict."""

    ndim = 2
    spec: BatchNormSpec

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
        c = num_features
        self.weight = self.bias = None
        if affine:
            self.weight = self.register("weight", Parameter((c,), constant_init(1.0)))
            self.bias = self.register("bias", Parameter((c,), constant_init(0.0)))
        self.running_mean = self.running_var = self.num_batches_tracked = None
        if track_running_stats:
            buffer = {"trainable": False}
            self.running_mean = self.register(
                "running_mean", Parameter((c,), constant_init(0.0), **buffer)
            )
            self.running_var = self.register(
                "running_var", Parameter((c,), constant_init(1.0), **buffer)
            )
            self.num_batches_tracked = self.register(
                "num_batches_tracked",
                Parameter((), constant_init(0), dtype=np.int64, trainable=False),
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Batch statistics in training (updating the running ones); running ones in eval."""
        x = float_array(x, "x")
        spec = self.spec
        momentum = spec.momentum
        tracked = self.running_mean is not None and self.running_var is not None
        if self.training and tracked:
            # check first, so that a failing batch is not counted
            spec.output_shape(x.shape[1:])
            _check_batch_size(x, spec)
            same_dtype(x=x, running_mean=self.running_mean.data)
            assert self.num_batches_tracked is not None
            count = self.num_batches_tracked.data
            count += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(count)
        # without running statistics eval mode normalises with the batch's too (as PyTorch)
        training = self.training or not tracked
        self.save_for_backward(x, training)
        return _forward(
            spec,
            x,
            self.running_mean.data if self.running_mean is not None else None,
            self.running_var.data if self.running_var is not None else None,
            self.weight.data if self.weight is not None else None,
            self.bias.data if self.bias is not None else None,
            training,
            momentum,
        )

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds γ's and β's gradients into their ``grad``."""
        x, training = self.saved()
        grad_input, grad_weight, grad_bias = _backward(
            self.spec,
            grad_out,
            x,
            self.weight.data if self.weight is not None else None,
            training,
            self.running_mean.data if self.running_mean is not None else None,
            self.running_var.data if self.running_var is not None else None,
        )
        if self.weight is not None and grad_weight is not None:
            self.weight.accumulate(grad_weight)
        if self.bias is not None and grad_bias is not None:
            self.bias.accumulate(grad_bias)
        return grad_input


BatchNorm1d, BatchNorm2d, BatchNorm3d = (
    rank_class(BatchNormNd, d, f"BatchNorm{d}d", doc)
    for d, doc in zip(
        RANKS,
        (
            "Batch normalisation of (C,) or (C, L) inputs.",
            "Batch normalisation of (C, H, W) inputs.",
            "Batch normalisation of (C, D, H, W) inputs.",
        ),
    )
)


# -- registration -------------------------------------------------------------------------------


def _build_bn(values: dict[str, Any], ctx: Context) -> Module:
    # a chain in layer text is read at inference: running statistics
    return (BatchNorm1d, BatchNorm2d, BatchNorm3d)[ctx.ndim - 1](ctx.channels).eval()


_BATCH_NORMS = {cls.__name__: cls for cls in (BatchNorm1d, BatchNorm2d, BatchNorm3d)}

BATCH_NORM = registry.register(
    registry.Family(
        name="batchnorm",
        specs=(BatchNormSpec,),
        modules=_BATCH_NORMS,
        functional={"batch_norm": batch_norm, "batch_norm_backward": batch_norm_backward},
        spec_file={
            name.lower(): registry.SpecFileLayer(cls, "num_features")
            for name, cls in _BATCH_NORMS.items()
        },
        torch=registry.TorchMapping(
            modules={name: registry.mirror(cls) for name, cls in _BATCH_NORMS.items()}
        ),
        kinds=(LayerKind("bn", (), _build_bn, help="an eval-mode BatchNorm"),),
    )
)

LAYER_NORM = registry.register(
    registry.Family(
        name="layernorm",
        specs=(LayerNormSpec,),
        modules=registry.NotSupported("analysis only: no engine yet"),
        functional=registry.NotSupported("analysis only: no engine yet"),
        spec_file=registry.NotSupported("analysis only: no engine yet"),
        torch=registry.TorchMapping(
            modules={
                "LayerNorm": lambda m: LayerNormSpec(
                    tuple(m.normalized_shape),
                    m.eps,
                    m.elementwise_affine,
                    getattr(m, "bias", None) is not None,
                )
            }
        ),
    )
)
