"""Pointwise activations and dropout, counted branch-free per element (docs/counting.md): the
configuration, rules, passes, modules and registration of the activation family."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import random as _random
from .. import registry
from ..arrays import expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, NotComposableError
from ..explain import Working
from ..geometry import Shape, check_sizes, prod
from ..grammar import Context, LayerKind
from ..kernels.blockwise import blockwise
from ..module import Module
from .base import LinearMap, Op, no_macs, no_params, pointwise_field, same_shape

# name: (forward per element, backward per element, formula shown)
ACTIVATIONS: dict[str, tuple[OpCount, OpCount, str]] = {
    "ReLU": (OpCount(compares=1), OpCount(compares=1), "max(x, 0)"),
    "ReLU6": (OpCount(compares=2), OpCount(compares=2), "min(max(x, 0), 6)"),
    "LeakyReLU": (
        OpCount(mults=1, compares=1),
        OpCount(mults=1, compares=1),
        "x if x > 0 else a·x",
    ),
    "Sigmoid": (
        OpCount(adds=1, divides=1, specials=1),
        OpCount(mults=2, adds=1),
        "1 / (1 + exp(−x))",
    ),
    "Tanh": (OpCount(specials=1), OpCount(mults=2, adds=1), "tanh(x)"),
    "SiLU": (
        OpCount(adds=1, divides=1, specials=1),
        OpCount(mults=3, adds=3, divides=1, specials=1),
        "x / (1 + exp(−x))",
    ),
    "GELU": (
        OpCount(mults=3, adds=1, specials=1),
        OpCount(mults=7, adds=2, specials=2),
        "0.5·x·(1 + erf(x/√2))",
    ),
    "Hardsigmoid": (
        OpCount(adds=1, compares=2, divides=1),
        OpCount(compares=2, divides=1),
        "min(max(x + 3, 0), 6) / 6",
    ),
    "Hardswish": (
        OpCount(mults=1, adds=1, compares=2, divides=1),
        OpCount(mults=2, adds=1, compares=2, divides=1),
        "x · min(max(x + 3, 0), 6) / 6",
    ),
    "Dropout": (OpCount(mults=1), OpCount(mults=1), "x · mask, mask ∈ {0, 1/(1 − p)}"),
}


def _scaled(per_element: OpCount, m: int) -> OpCount:
    return OpCount(
        per_element.mults * m,
        per_element.adds * m,
        per_element.compares * m,
        per_element.divides * m,
        per_element.specials * m,
    )


@dataclass(frozen=True)
class ElementwiseSpec(Op):
    """A pointwise op (activation or dropout): shape unchanged, a fixed cost per element."""

    op: str
    negative_slope: float = 0.01
    p: float = 0.5
    inplace: bool = False

    _hidden: ClassVar = ("op",)

    def __post_init__(self) -> None:
        if self.op not in ACTIVATIONS:
            raise LayerConfigError(
                f"unknown activation {self.op!r}; known: {', '.join(ACTIVATIONS)}"
            )
        if not 0.0 <= self.p <= 1.0:
            raise LayerConfigError(f"dropout probability must be between 0 and 1, got p={self.p}")

    @property
    def name(self) -> str:
        return self.op

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        return check_sizes(input_shape, self.op)

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        forward, backward, formula = ACTIVATIONS[self.op]
        w.section(f"Cost: y = {formula}, counted per element")
        size = prod(input_shape)
        m = w.let("m", "N · E", batch * size, {"N": batch, "E": size}, why="E: elements per image")
        w.note(f"forward per element: {_per_element(forward)}; backward: {_per_element(backward)}")
        return Cost(_scaled(forward, m), _scaled(backward, m))

    _shape = same_shape
    _params = no_params
    _macs = no_macs
    receptive_field = pointwise_field

    def linear_map(self, channels: int | None, module: Module | None = None) -> LinearMap:
        """None: an activation is not linear, and dropout is random in training."""
        if self.op == "Dropout":
            raise NotComposableError(
                "multiplies by a random mask in training and is the identity in eval: not one "
                "fixed convolution; remove it from the chain"
            )
        formula = "x if x > 0 else a·x" if self.op == "LeakyReLU" else ACTIVATIONS[self.op][2]
        raise NotComposableError(
            f"is not linear ({self.op}(x) = {formula}): f(a + b) ≠ f(a) + f(b), so the layers "
            "around it are not one convolution"
        )


def _per_element(count: OpCount) -> str:
    parts = count.to_dict(keys=())
    return ", ".join(f"{v} {k}" for k, v in parts.items()) or "nothing"


# -- running: functional forward and backward --------------------------------------------------


def _input(x: np.ndarray) -> np.ndarray:
    return float_array(x, "x")


def _grad(grad_out: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checks a backward's arguments: float arrays of one dtype and one shape."""
    x = float_array(x, "x")
    grad_out = float_array(grad_out, "grad_out")
    same_dtype(grad_out=grad_out, x=x)
    expect_shape(grad_out, x.shape, "grad_out", "(the shape of x)")
    return grad_out, x


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    x = _input(x)
    return np.maximum(x, 0)


def relu_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of relu w.r.t. its input (0 at x = 0, as PyTorch)."""
    grad_out, x = _grad(grad_out, x)
    return np.where(x > 0, grad_out, 0)


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6)."""
    x = _input(x)
    return np.clip(x, 0, 6)


def relu6_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of relu6 w.r.t. its input (0 at both kinks, as PyTorch)."""
    grad_out, x = _grad(grad_out, x)
    return np.where((x > 0) & (x < 6), grad_out, 0)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """x for x > 0, else negative_slope · x."""
    x = _input(x)
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(
    grad_out: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """The gradient of leaky_relu w.r.t. its input (the slope at x = 0, as PyTorch)."""
    grad_out, x = _grad(grad_out, x)
    return np.where(x > 0, grad_out, grad_out * negative_slope)


# The smooth activations run block by block on the pool's threads (kernels/blockwise.py): each
# kernel writes ``out`` in place, step by step, so no step allocates an array-sized temporary.
# exp(−x) overflows to inf for very negative x, which the formulas turn into the right limits.


def _sigmoid_into(out: np.ndarray, x: np.ndarray) -> None:
    """out = 1 / (1 + exp(−x)): exact to a few ulp at both ends (1/inf is 0)."""
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.divide(1, out, out=out)  # measured faster than np.reciprocal for float32


def _sigmoid_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    _sigmoid_into(out, inputs[0])


def _sigmoid_grad_into(out: np.ndarray, s: np.ndarray, grad_out: np.ndarray) -> None:
    """out = grad_out·s·(1 − s), from the sigmoid s (a block other than ``out``)."""
    np.subtract(1, s, out=out)
    out *= s
    out *= grad_out


def _sigmoid_backward_kernel(
    out: np.ndarray, inputs: tuple[np.ndarray, ...], scratch: tuple[np.ndarray, ...]
) -> None:
    grad_out, x = inputs
    (s,) = scratch
    _sigmoid_into(s, x)
    _sigmoid_grad_into(out, s, grad_out)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(−x))."""
    x = _input(x)
    return blockwise(_sigmoid_kernel, (x,), x.dtype, ignore=("over",))


def sigmoid_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of sigmoid w.r.t. its input: s·(1 − s)."""
    grad_out, x = _grad(grad_out, x)
    return blockwise(_sigmoid_backward_kernel, (grad_out, x), x.dtype, scratch=1, ignore=("over",))


def _sigmoid_from_output_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    grad_out, y = inputs
    _sigmoid_grad_into(out, y, grad_out)


def sigmoid_backward_from_output(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sigmoid_backward from the forward's output y = s instead of its input: g·y·(1 − y),
    as PyTorch computes it, with no exp."""
    grad_out, y = _grad(grad_out, y)
    return blockwise(_sigmoid_from_output_kernel, (grad_out, y), y.dtype)


def _tanh_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    np.tanh(inputs[0], out=out)


def _tanh_grad_into(out: np.ndarray, t: np.ndarray, grad_out: np.ndarray) -> None:
    """out = grad_out·(1 − t²), from t = tanh(x) (which may be ``out`` itself)."""
    np.multiply(t, t, out=out)
    np.subtract(1, out, out=out)
    out *= grad_out


def _tanh_backward_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    grad_out, x = inputs
    np.tanh(x, out=out)
    _tanh_grad_into(out, out, grad_out)


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x)."""
    x = _input(x)
    return blockwise(_tanh_kernel, (x,), x.dtype)


def tanh_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of tanh w.r.t. its input: 1 − tanh²."""
    grad_out, x = _grad(grad_out, x)
    return blockwise(_tanh_backward_kernel, (grad_out, x), x.dtype)


def _tanh_from_output_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    grad_out, y = inputs
    _tanh_grad_into(out, y, grad_out)


def tanh_backward_from_output(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """tanh_backward from the forward's output y = tanh(x) instead of its input: g·(1 − y²),
    as PyTorch computes it, with no tanh."""
    grad_out, y = _grad(grad_out, y)
    return blockwise(_tanh_from_output_kernel, (grad_out, y), y.dtype)


def _silu_kernel(out: np.ndarray, inputs: tuple[np.ndarray, ...], _: tuple) -> None:
    (x,) = inputs
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.divide(x, out, out=out)  # x / (1 + exp(−x))


def _silu_backward_kernel(
    out: np.ndarray, inputs: tuple[np.ndarray, ...], scratch: tuple[np.ndarray, ...]
) -> None:
    grad_out, x = inputs
    (s,) = scratch
    _sigmoid_into(s, x)
    np.subtract(1, s, out=out)  # s·(1 + x·(1 − s))
    out *= x
    out += 1
    out *= s
    out *= grad_out


def silu(x: np.ndarray) -> np.ndarray:
    """x · sigmoid(x)."""
    x = _input(x)
    return blockwise(_silu_kernel, (x,), x.dtype, ignore=("over", "invalid"))


def silu_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of silu w.r.t. its input: s·(1 + x·(1 − s))."""
    grad_out, x = _grad(grad_out, x)
    return blockwise(
        _silu_backward_kernel, (grad_out, x), x.dtype, scratch=1, ignore=("over", "invalid")
    )


# W. J. Cody's rational approximations of erf and erfc (netlib specfun CALERF): relative error
# below 1e-15 in float64 on every range.
_ERF_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_ERF_B = (
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
)
_ERFC_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_ERFC_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
_ERFC_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_ERFC_Q = (
    2.56852019228982242e00,
    1.87295284992346725e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_ERF_SPLIT = 0.46875  # Cody's switch from the erf series to the erfc fits


def _erf_small(x: np.ndarray) -> np.ndarray:
    """erf(x) for |x| <= 0.46875."""
    a, b = _ERF_A, _ERF_B
    z = x * x
    num, den = a[4] * z, z
    for i in range(3):
        num = (num + a[i]) * z
        den = (den + b[i]) * z
    return x * (num + a[3]) / (den + b[3])


def _erfc_mid(y: np.ndarray) -> np.ndarray:
    """erfc(y)·exp(y²) for 0.46875 < y <= 4."""
    c, d = _ERFC_C, _ERFC_D
    num, den = c[8] * y, y
    for i in range(7):
        num = (num + c[i]) * y
        den = (den + d[i]) * y
    return (num + c[7]) / (den + d[7])


def _erfc_big(y: np.ndarray) -> np.ndarray:
    """erfc(y)·exp(y²) for y > 4."""
    p, q = _ERFC_P, _ERFC_Q
    z = 1.0 / (y * y)
    num, den = p[5] * z, z
    for i in range(4):
        num = (num + p[i]) * z
        den = (den + q[i]) * z
    return (1 / math.sqrt(math.pi) - z * (num + p[4]) / (den + q[4])) / y


def _erfc_large(y: np.ndarray) -> np.ndarray:
    """erfc(y) for y > 0.46875 (a 1-D array)."""
    scaled = np.empty_like(y)
    mid = y <= 4.0
    scaled[mid] = _erfc_mid(y[mid])
    big = ~mid
    scaled[big] = _erfc_big(y[big])
    # exp(−y²) as exp(−t²)·exp(−(y − t)(y + t)) with t = y rounded to 1/16: less rounding error
    t = np.trunc(y * 16.0) / 16.0
    with np.errstate(under="ignore"):
        return np.exp(-t * t) * np.exp(-(y - t) * (y + t)) * scaled


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Φ(x) = (1 + erf(x/√2)) / 2 in float64, through erfc where 1 + erf would cancel."""
    u = (np.asarray(x, dtype=np.float64) / math.sqrt(2)).reshape(-1)
    cdf = np.empty_like(u)
    small = np.abs(u) <= _ERF_SPLIT
    cdf[small] = 0.5 + 0.5 * _erf_small(u[small])
    rest = ~small
    ur = u[rest]
    half_tail = 0.5 * _erfc_large(np.abs(ur))
    cdf[rest] = np.where(ur > 0, 1 - half_tail, half_tail)
    return cdf.reshape(np.shape(x))


# float32 GELU: Eigen's (and XLA's) float32 erf, erf(u) = u·P(u²)/Q(u²) for |u| <= 4 (erf(4)
# rounds to 1 in float32), absolute error about 4e-7. Cody's float64 rational is far more
# accurate than float32 needs and costs float64 temporaries with branches.
_ERF32_P = (  # odd coefficients: u, u³, ..., u¹³
    -1.60960333262415e-02,
    -2.95459980854025e-03,
    -7.34990630326855e-04,
    -5.69250639462346e-05,
    -2.10102402082508e-06,
    2.77068142495902e-08,
    -2.72614225801306e-10,
)
_ERF32_Q = (  # even coefficients: 1, u², ..., u⁸
    -1.42647390514189e-02,
    -7.37332916720468e-03,
    -1.68282697438203e-03,
    -2.13374055278905e-04,
    -1.45660718464996e-05,
)


def _cdf32_constants() -> tuple[np.float32, tuple, tuple, np.float32]:
    """Φ(x) = 1/2 + K·c·P̃(c²)/Q̃(c²), c = x clipped to ±4√2: P and Q rewritten in c² = 2u²
    and made monic (leading coefficient 1, one Horner step fewer each), their leading
    coefficients and the 1/(2√2) folded into K. Computed in float64, rounded once."""
    p = [a / 2**i for i, a in enumerate(_ERF32_P)]
    q = [b / 2**i for i, b in enumerate(_ERF32_Q)]
    k = 0.5 / math.sqrt(2) * p[-1] / q[-1]
    p_monic = tuple(np.float32(a / p[-1]) for a in p[:-1])
    q_monic = tuple(np.float32(b / q[-1]) for b in q[:-1])
    return np.float32(4 * math.sqrt(2)), p_monic, q_monic, np.float32(k)


_CDF32_CLIP, _CDF32_P, _CDF32_Q, _CDF32_K = _cdf32_constants()
_INV_SQRT_2PI32 = np.float32(1 / math.sqrt(2 * math.pi))


def _normal_cdf32_into(
    cdf: np.ndarray, x: np.ndarray, c: np.ndarray, c2: np.ndarray, q: np.ndarray
) -> None:
    """cdf = Φ(x) for a float32 block, with the scratch blocks c, c2 and q."""
    np.clip(x, -_CDF32_CLIP, _CDF32_CLIP, out=c)
    np.multiply(c, c, out=c2)
    np.add(c2, _CDF32_P[-1], out=cdf)  # Horner on the monic numerator
    for a in reversed(_CDF32_P[:-1]):
        cdf *= c2
        cdf += a
    np.add(c2, _CDF32_Q[-1], out=q)
    for b in reversed(_CDF32_Q[:-1]):
        q *= c2
        q += b
    cdf *= c
    cdf /= q
    cdf *= _CDF32_K
    cdf += np.float32(0.5)
    # the fit dips below −1 near u = −4; Φ(−inf)·(−inf) is nan. (np.clip with both bounds
    # measured 3× faster than np.maximum.)
    np.clip(cdf, np.float32(0), np.float32(1), out=cdf)


def _gelu32_kernel(
    out: np.ndarray, inputs: tuple[np.ndarray, ...], scratch: tuple[np.ndarray, ...]
) -> None:
    (x,) = inputs
    _normal_cdf32_into(out, x, *scratch)
    out *= x


def _gelu32_backward_kernel(
    out: np.ndarray, inputs: tuple[np.ndarray, ...], scratch: tuple[np.ndarray, ...]
) -> None:
    grad_out, x = inputs
    _normal_cdf32_into(out, x, *scratch)
    pdf = scratch[1]
    np.multiply(x, x, out=pdf)  # x·φ(x) = x·exp(−x²/2)/√(2π)
    pdf *= np.float32(-0.5)
    np.exp(pdf, out=pdf)
    pdf *= x
    pdf *= _INV_SQRT_2PI32
    out += pdf
    out *= grad_out


def gelu(x: np.ndarray) -> np.ndarray:
    """0.5 · x · (1 + erf(x / √2)), the exact (erf) form: in float64 through Cody's erf
    (relative error near 1e-15), in float32 through a float32 erf (error about 2e-7·(1 + |x|))."""
    x = _input(x)
    if x.dtype == np.float32:
        return blockwise(_gelu32_kernel, (x,), x.dtype, scratch=3, ignore=("invalid",))
    return (x * _normal_cdf(x)).astype(x.dtype, copy=False)


def gelu_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of gelu w.r.t. its input: Φ(x) + x·φ(x)."""
    grad_out, x = _grad(grad_out, x)
    if x.dtype == np.float32:
        return blockwise(
            _gelu32_backward_kernel,
            (grad_out, x),
            x.dtype,
            scratch=3,
            ignore=("under", "invalid"),
        )
    x64 = x.astype(np.float64, copy=False)
    pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    return grad_out * (_normal_cdf(x64) + x64 * pdf).astype(x.dtype, copy=False)


def hardsigmoid(x: np.ndarray) -> np.ndarray:
    """min(max(x + 3, 0), 6) / 6."""
    x = _input(x)
    return np.clip(x + 3, 0, 6) / 6


def hardsigmoid_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of hardsigmoid w.r.t. its input: 1/6 on −3 < x < 3, else 0 (as PyTorch)."""
    grad_out, x = _grad(grad_out, x)
    return np.where((x > -3) & (x < 3), grad_out / 6, 0).astype(x.dtype, copy=False)


def hardswish(x: np.ndarray) -> np.ndarray:
    """x · min(max(x + 3, 0), 6) / 6."""
    x = _input(x)
    return x * np.clip(x + 3, 0, 6) / 6


def hardswish_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of hardswish w.r.t. its input: 0 below −3, 1 above 3, (2x + 3)/6 between
    (both ends included, as PyTorch)."""
    grad_out, x = _grad(grad_out, x)
    slope = np.where(x < -3, 0, np.where(x <= 3, (2 * x + 3) / 6, 1))
    return (grad_out * slope).astype(x.dtype, copy=False)


def dropout(
    x: np.ndarray,
    p: float = 0.5,
    training: bool = True,
    generator: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zeroes each element with probability p and scales the rest by 1/(1 − p), with the mask.

    The mask is already scaled (0 or 1/(1 − p)); in eval mode ``y`` is ``x`` and the mask None.
    """
    ElementwiseSpec("Dropout", p=p)  # validates p
    x = _input(x)
    if not training:
        return x, None
    rng = generator if generator is not None else _random.generator()
    if p == 1:
        mask = np.zeros_like(x)
    else:
        keep = rng.random(x.shape, dtype=x.dtype) >= p
        mask = keep.astype(x.dtype) * x.dtype.type(1 / (1 - p))
    return x * mask, mask


def dropout_backward(grad_out: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The gradient of dropout w.r.t. its input, given the forward's mask (None: eval)."""
    grad_out = float_array(grad_out, "grad_out")
    if mask is None:
        return grad_out
    grad_out, mask = _grad(grad_out, mask)
    return grad_out * mask


# -- running: modules -----------------------------------------------------------------------

#: The engine of each activation: (forward, backward).
ENGINE: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "ReLU": (relu, relu_backward),
    "ReLU6": (relu6, relu6_backward),
    "LeakyReLU": (leaky_relu, leaky_relu_backward),
    "Sigmoid": (sigmoid, sigmoid_backward),
    "Tanh": (tanh, tanh_backward),
    "SiLU": (silu, silu_backward),
    "GELU": (gelu, gelu_backward),
    "Hardsigmoid": (hardsigmoid, hardsigmoid_backward),
    "Hardswish": (hardswish, hardswish_backward),
}

#: Activations whose gradient is a function of their output: the module keeps y instead of x,
#: as PyTorch's autograd does, and its backward skips the exp or tanh. The recomputing
#: ``*_backward(grad_out, x)`` stays the plain twin (tests/test_engine_fast_paths.py).
FROM_OUTPUT: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Sigmoid": sigmoid_backward_from_output,
    "Tanh": tanh_backward_from_output,
}


class Activation(Module):
    """A pointwise activation: forward keeps its input for backward (its output, for the
    activations in FROM_OUTPUT)."""

    op: ClassVar[str] = "ReLU"
    spec: ElementwiseSpec

    def __init__(self) -> None:
        self.spec = ElementwiseSpec(self.op)

    def _arguments(self) -> dict[str, Any]:
        return {"negative_slope": self.spec.negative_slope} if self.op == "LeakyReLU" else {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The activation of ``x`` (any shape)."""
        y = ENGINE[self.op][0](x, **self._arguments())
        self.save_for_backward(y if self.op in FROM_OUTPUT else x)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input."""
        (kept,) = self.saved()
        if self.op in FROM_OUTPUT:
            return FROM_OUTPUT[self.op](grad_out, kept)
        return ENGINE[self.op][1](grad_out, kept, **self._arguments())


class InplaceActivation(Activation):
    """An activation PyTorch lets compute in place; the engine computes out of place, with the
    same values."""

    def __init__(self, inplace: bool = False) -> None:
        self.spec = ElementwiseSpec(self.op, inplace=bool(inplace))


def _activation(op: str, inplace: bool) -> type[Activation]:
    base = InplaceActivation if inplace else Activation
    doc = f"{ACTIVATIONS[op][2]}, with PyTorch's arguments."
    return type(base)(op, (base,), {"op": op, "__doc__": doc, "__module__": __name__})


ReLU, ReLU6, SiLU, Hardsigmoid, Hardswish = (
    _activation(op, True) for op in ("ReLU", "ReLU6", "SiLU", "Hardsigmoid", "Hardswish")
)
Sigmoid, Tanh, GELU = (_activation(op, False) for op in ("Sigmoid", "Tanh", "GELU"))


class LeakyReLU(InplaceActivation):
    """x for x > 0, else negative_slope · x."""

    op = "LeakyReLU"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        self.spec = ElementwiseSpec("LeakyReLU", negative_slope=negative_slope, inplace=inplace)


class Dropout(Module):
    """Zeroes each element with probability p in training and scales the rest by 1 / (1 − p)."""

    spec: ElementwiseSpec

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        self.spec = ElementwiseSpec("Dropout", p=p, inplace=bool(inplace))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """In training draws a mask from ``convscope.random.generator()``; in eval the identity."""
        y, mask = dropout(x, self.spec.p, self.training, _random.generator())
        self.save_for_backward(mask)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (mask,) = self.saved()
        return dropout_backward(grad_out, mask)


# -- registration -------------------------------------------------------------------------------

_MODULES = registry.by_name(
    ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, SiLU, GELU, Hardsigmoid, Hardswish, Dropout
)


def _call(op: str, *names_defaults: tuple[str, Any]) -> registry.CallRule:
    """relu(x), x.relu(), F.leaky_relu(x, slope), F.gelu(x, approximate=...), F.dropout(x, p)."""

    def rule(call: registry.TorchCall) -> Op:
        extra = dict(zip((k for k, _ in names_defaults), call.bind(*names_defaults)))
        if extra.pop("approximate", "none") != "none":
            raise registry.Unsupported("approximate='tanh'; only the erf form is counted")
        extra.pop("training", None)
        extra.pop("inplace", None)
        return ElementwiseSpec(op, **extra)

    return rule


_CALLS = {
    "ReLU": ("torch.nn.functional.relu", "torch.relu", "Tensor.relu", "Tensor.relu_"),
    "ReLU6": ("torch.nn.functional.relu6", "Tensor.relu6"),
    "Sigmoid": (
        "torch.nn.functional.sigmoid",
        "torch.sigmoid",
        "Tensor.sigmoid",
        "Tensor.sigmoid_",
    ),
    "Tanh": ("torch.nn.functional.tanh", "torch.tanh", "Tensor.tanh", "Tensor.tanh_"),
    "SiLU": ("torch.nn.functional.silu",),
    "Hardswish": ("torch.nn.functional.hardswish",),
    "Hardsigmoid": ("torch.nn.functional.hardsigmoid",),
}


def _build(op: str) -> Callable[[dict[str, Any], Context], Module]:
    return lambda values, ctx: _MODULES[op]()


FAMILY = registry.register_twins(
    "activation",
    ElementwiseSpec,
    tuple(_MODULES.values()),
    [f for pair in (*ENGINE.values(), (dropout, dropout_backward)) for f in pair],
    functions={
        **{path: _call(op) for op, paths in _CALLS.items() for path in paths},
        "torch.nn.functional.leaky_relu": _call("LeakyReLU", ("negative_slope", 0.01)),
        "torch.nn.functional.gelu": _call("GELU", ("approximate", "none")),
        "torch.nn.functional.dropout": _call("Dropout", ("p", 0.5), ("training", True)),
    },
    kinds=tuple(
        LayerKind(name.lower(), (), _build(name), help=ACTIVATIONS[name][2])
        for name in _MODULES
        if name != "Dropout"
    ),
)
