"""The pooling engine (max, average, adaptive; 1-D to 3-D): forward and backward.

Gradients are checked against central finite differences in float64 and against PyTorch's
autograd in float64 and float32; max pooling's tie routing against PyTorch's on tied inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convscope import functional as P
from convscope import nn
from convscope.errors import ConvScopeError, LayerConfigError, ShapeError
from convscope.ops.pooling import PoolSpec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- configurations --------------------------------------------------------------------------


def _has_real(size: int, k: int, s: int, p: int, d: int, out: int) -> bool:
    """Every window holds a real element (PyTorch's results are undefined otherwise)."""
    return all(any(0 <= i * s + j * d - p < size for j in range(k)) for i in range(out))


@st.composite
def pool_cases(draw, mode: str, ndim: int | None = None):
    """(ndim, x shape, kwargs) for a valid max or average pool, edge cases included."""
    ndim = ndim or draw(st.integers(1, 3))
    top = {1: 4, 2: 3, 3: 2}[ndim]
    kernel, stride, padding, dilation, sizes = [], [], [], [], []
    for _ in range(ndim):
        k = draw(st.integers(1, top + 1))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, k // 2))
        d = draw(st.integers(1, 2)) if mode == "max" else 1
        low = max(1, d * (k - 1) + 1 - 2 * p, k if mode == "avg" and ndim == 3 else 1)
        sizes.append(draw(st.integers(low, low + {1: 7, 2: 4, 3: 2}[ndim])))
        kernel.append(k), stride.append(s), padding.append(p), dilation.append(d)
    kwargs = dict(
        kernel_size=tuple(kernel),
        stride=tuple(stride),
        padding=tuple(padding),
        ceil_mode=draw(st.booleans()),
    )
    if mode == "max":
        kwargs["dilation"] = tuple(dilation)
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        if ndim > 1:
            kwargs["divisor_override"] = draw(st.none() | st.integers(1, 5))
    spec = PoolSpec.create(
        ndim,
        mode,
        kernel,
        stride,
        padding,
        dilation,
        kwargs["ceil_mode"],
    )
    out = spec.output_shape((1, *sizes))[1:]
    assume(all(_has_real(*a) for a in zip(sizes, kernel, stride, padding, dilation, out)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *sizes)
    return ndim, shape, kwargs


@st.composite
def adaptive_cases(draw, ndim: int | None = None):
    """(ndim, x shape, output_size) with outputs smaller and larger than the input."""
    ndim = ndim or draw(st.integers(1, 3))
    top = {1: 9, 2: 6, 3: 4}[ndim]
    sizes = [draw(st.integers(1, top)) for _ in range(ndim)]
    outs = [draw(st.integers(1, top + 2)) for _ in range(ndim)]
    if ndim > 1:
        outs = [draw(st.sampled_from([o, o, None])) for o in outs]
    output_size = outs[0] if ndim == 1 else tuple(outs)
    return ndim, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *sizes), output_size


def _ours(kind: str, ndim: int):
    forward = getattr(P, f"{kind}_pool{ndim}d")
    return forward, getattr(P, f"{kind}_pool{ndim}d_backward")


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 0.1 apart, so that no finite-difference step changes an arg-max."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.1 - 0.05 * n + rng.uniform(0, 0.01, n)).reshape(shape)


def _finite_differences(f, x: np.ndarray, weights: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """The gradient of sum(f(x) · weights) by central differences."""
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = np.sum(f(x) * weights)
        flat[i] = keep - h
        down = np.sum(f(x) * weights)
        flat[i] = keep
        gflat[i] = (up - down) / (2 * h)
    return grad


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _check_fd(kind: str, ndim: int, x: np.ndarray, *args, **kwargs) -> None:
    forward, backward = _ours(kind, ndim)
    rng = np.random.default_rng(7)
    y = forward(x, *args, **kwargs)
    weights = rng.standard_normal(y.shape)
    grad = backward(weights, x, *args, **kwargs)
    numeric = _finite_differences(lambda v: forward(v, *args, **kwargs), x.copy(), weights)
    assert grad.shape == x.shape
    assert _rel(grad, numeric) < 1e-6


# -- finite differences (float64) --------------------------------------------------------------


@SETTINGS
@given(case=pool_cases("max"), seed=st.integers(0, 2**16))
def test_max_pool_backward_matches_finite_differences(case, seed):
    ndim, shape, kwargs = case
    _check_fd("max", ndim, _distinct(np.random.default_rng(seed), shape), **kwargs)


@SETTINGS
@given(case=pool_cases("avg"), seed=st.integers(0, 2**16))
def test_avg_pool_backward_matches_finite_differences(case, seed):
    ndim, shape, kwargs = case
    _check_fd("avg", ndim, np.random.default_rng(seed).standard_normal(shape), **kwargs)


@SETTINGS
@given(case=adaptive_cases(), kind=st.sampled_from(["adaptive_avg", "adaptive_max"]))
def test_adaptive_pool_backward_matches_finite_differences(case, kind):
    ndim, shape, output_size = case
    x = _distinct(np.random.default_rng(len(shape)), shape)
    _check_fd(kind, ndim, x, output_size)


@pytest.mark.parametrize(
    "kind, ndim, shape, args, kwargs",
    [
        # ceil mode: a last partial window past the padded input, with and without the pad
        ("avg", 1, (2, 3, 4), (3,), dict(stride=2, padding=1, ceil_mode=True)),
        (
            "avg",
            2,
            (1, 2, 5, 6),
            (3,),
            dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        ),
        ("avg", 3, (1, 1, 4, 5, 3), (2,), dict(stride=2, ceil_mode=True, divisor_override=3)),
        ("max", 1, (1, 2, 2), (3,), dict(ceil_mode=True)),  # input shorter than the kernel
        ("max", 2, (1, 2, 7, 6), (3,), dict(stride=2, padding=1, dilation=2, ceil_mode=True)),
        ("max", 3, (1, 1, 5, 4, 6), ((3, 2, 3),), dict(stride=(1, 2, 2), padding=1)),
        ("adaptive_avg", 2, (2, 1, 5, 7), ((3, 11),), {}),
        ("adaptive_max", 3, (1, 2, 4, 5, 3), ((7, 2, None),), {}),
    ],
)
def test_edge_cases_match_finite_differences(kind, ndim, shape, args, kwargs):
    x = _distinct(np.random.default_rng(3), shape)
    _check_fd(kind, ndim, x, *args, **kwargs)


# -- PyTorch cross-checks ------------------------------------------------------------------------


def _torch_pair(kind: str, ndim: int, x: np.ndarray, g_seed: int, *args, **kwargs):
    """PyTorch's output and input gradient for x, and the grad_out used."""
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(F, f"{kind}_pool{ndim}d")(xt, *args, **kwargs)
    g = np.random.default_rng(g_seed).standard_normal(tuple(yt.shape)).astype(x.dtype)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy(), g


def _check_torch(kind: str, ndim: int, x: np.ndarray, *args, **kwargs) -> None:
    forward, backward = _ours(kind, ndim)
    y_ref, grad_ref, g = _torch_pair(kind, ndim, x, 11, *args, **kwargs)
    y, grad = forward(x, *args, **kwargs), backward(g, x, *args, **kwargs)
    tol = 1e-10 if x.dtype == np.float64 else 1e-4
    assert y.dtype == x.dtype and grad.dtype == x.dtype
    assert y.shape == y_ref.shape and grad.shape == x.shape
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol * float(np.abs(y_ref).max()))
    np.testing.assert_allclose(grad, grad_ref, rtol=tol, atol=tol * float(np.abs(grad_ref).max()))


DTYPES = [np.float64, np.float32]


@SETTINGS
@given(case=pool_cases("max"), seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES))
def test_max_pool_matches_torch(case, seed, dtype):
    ndim, shape, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    _check_torch("max", ndim, x, **kwargs)


@SETTINGS
@given(case=pool_cases("avg"), seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES))
def test_avg_pool_matches_torch(case, seed, dtype):
    ndim, shape, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    _check_torch("avg", ndim, x, **kwargs)


@SETTINGS
@given(
    case=adaptive_cases(),
    kind=st.sampled_from(["adaptive_avg", "adaptive_max"]),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(DTYPES),
)
def test_adaptive_pool_matches_torch(case, kind, seed, dtype):
    ndim, shape, output_size = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    _check_torch(kind, ndim, x, output_size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("kind", ["max", "avg", "adaptive_avg", "adaptive_max"])
def test_every_kind_and_rank_matches_torch(kind, ndim, dtype):
    rng = np.random.default_rng(ndim)
    shape = (2, 3, *(9, 8, 7)[:ndim])
    x = rng.standard_normal(shape).astype(dtype)
    if kind.startswith("adaptive"):
        _check_torch(kind, ndim, x, (4, 11, 7)[:ndim] if ndim > 1 else 4)
    elif kind == "max":
        _check_torch(kind, ndim, x, 3, stride=2, padding=1, dilation=1, ceil_mode=True)
    else:
        _check_torch(kind, ndim, x, 3, stride=2, padding=1, ceil_mode=True)


# -- ties: PyTorch routes a window's gradient to its first maximum -------------------------------


@SETTINGS
@given(case=pool_cases("max"), seed=st.integers(0, 2**16))
def test_max_pool_ties_route_like_torch(case, seed):
    ndim, shape, kwargs = case
    x = np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64)
    _check_torch("max", ndim, x, **kwargs)


@SETTINGS
@given(case=adaptive_cases(), seed=st.integers(0, 2**16))
def test_adaptive_max_pool_ties_route_like_torch(case, seed):
    ndim, shape, output_size = case
    x = np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64)
    _check_torch("adaptive_max", ndim, x, output_size)


def test_tied_window_sends_everything_to_its_first_entry():
    x = np.ones((1, 1, 2, 2))
    grad = P.max_pool2d_backward(np.array([[[[5.0]]]]), x, 2)
    np.testing.assert_array_equal(grad, [[[[5.0, 0.0], [0.0, 0.0]]]])
    grad = P.adaptive_max_pool2d_backward(np.array([[[[5.0]]]]), x, 1)
    np.testing.assert_array_equal(grad, [[[[5.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("kind", ["max", "adaptive_max"])
def test_nan_propagates_and_takes_the_gradient_like_torch(kind):
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[1, 1, 4, 4] = np.nan
    args = (3,) if kind == "max" else (4,)
    kwargs = dict(stride=1, padding=1) if kind == "max" else {}
    forward, backward = _ours(kind, 2)
    y_ref, grad_ref, g = _torch_pair(kind, 2, x, 1, *args, **kwargs)
    np.testing.assert_array_equal(forward(x, *args, **kwargs), y_ref)
    # the same gradients reach the same entries (summed in another order)
    np.testing.assert_allclose(backward(g, x, *args, **kwargs), grad_ref, rtol=1e-12, atol=1e-15)


# -- hand-checked divisors -------------------------------------------------------------------------


def test_avg_pool_divisors_follow_pytorch_at_the_padded_end():
    # L = 4, k = 3, s = 2, p = 1, ceil: windows cover [-1, 1], [1, 3], [3, 5) clipped at L + p = 5
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    kwargs = dict(stride=2, padding=1, ceil_mode=True)
    np.testing.assert_allclose(P.avg_pool1d(x, 3, **kwargs), [[[3 / 3, 9 / 3, 4 / 2]]])
    np.testing.assert_allclose(
        P.avg_pool1d(x, 3, count_include_pad=False, **kwargs), [[[3 / 2, 9 / 3, 4 / 1]]]
    )
    x2 = x[..., None]
    y = P.avg_pool2d(x2, (3, 1), stride=(2, 1), padding=(1, 0), ceil_mode=True, divisor_override=2)
    np.testing.assert_allclose(y[..., 0], [[[3 / 2, 9 / 2, 4 / 2]]])


# -- dtypes, errors, modules -----------------------------------------------------------------------

CASES = [
    ("max", 1, (2, 3, 9), (3,), dict(stride=2, padding=1)),
    ("max", 2, (2, 3, 9, 8), (3,), dict(stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max", 3, (2, 3, 5, 6, 7), (2,), dict(ceil_mode=True)),
    ("avg", 1, (2, 3, 9), (3,), dict(stride=2, padding=1, count_include_pad=False)),
    ("avg", 2, (2, 3, 9, 8), (3,), dict(stride=2, padding=1, ceil_mode=True)),
    ("avg", 3, (2, 3, 5, 6, 7), (2,), dict(ceil_mode=True, divisor_override=3)),
    ("adaptive_avg", 1, (2, 3, 9), (4,), {}),
    ("adaptive_avg", 2, (2, 3, 9, 8), ((None, 11),), {}),
    ("adaptive_avg", 3, (2, 3, 5, 6, 7), ((2, 9, 3),), {}),
    ("adaptive_max", 1, (2, 3, 9), (12,), {}),
    ("adaptive_max", 2, (2, 3, 9, 8), ((4, None),), {}),
    ("adaptive_max", 3, (2, 3, 5, 6, 7), (3,), {}),
]

MODULES = {
    "max": "MaxPool{}d",
    "avg": "AvgPool{}d",
    "adaptive_avg": "AdaptiveAvgPool{}d",
    "adaptive_max": "AdaptiveMaxPool{}d",
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, ndim, shape, args, kwargs", CASES)
def test_dtype_is_preserved(kind, ndim, shape, args, kwargs, dtype):
    forward, backward = _ours(kind, ndim)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y = forward(x, *args, **kwargs)
    assert y.dtype == dtype
    assert backward(np.ones_like(y), x, *args, **kwargs).dtype == dtype


@pytest.mark.parametrize("kind, ndim, shape, args, kwargs", CASES)
def test_grad_out_of_the_wrong_shape_or_dtype_is_refused(kind, ndim, shape, args, kwargs):
    forward, backward = _ours(kind, ndim)
    x = np.zeros(shape)
    y = forward(x, *args, **kwargs)
    wrong = np.zeros((y.shape[0], y.shape[1] + 1, *y.shape[2:]))
    with pytest.raises(ShapeError) as error:
        backward(wrong, x, *args, **kwargs)
    assert str(wrong.shape) in str(error.value) and str(y.shape) in str(error.value)
    with pytest.raises(ShapeError, match="float32"):
        backward(y.astype(np.float32), x, *args, **kwargs)


def test_inputs_of_the_wrong_rank_or_dtype_are_refused():
    with pytest.raises(ShapeError, match=r"\(3, 8, 8\)"):
        P.max_pool2d(np.zeros((3, 8, 8)), 2)
    with pytest.raises(ShapeError, match="int64"):
        P.avg_pool1d(np.zeros((1, 1, 8), dtype=np.int64), 2)
    with pytest.raises(ShapeError, match="output size"):
        P.max_pool1d(np.zeros((1, 1, 2)), 3)


def test_invalid_arguments_raise_the_specs_errors():
    with pytest.raises(LayerConfigError, match="padding"):
        P.max_pool2d(np.zeros((1, 1, 8, 8)), 2, padding=2)
    with pytest.raises(LayerConfigError, match="divisor_override"):
        P.avg_pool2d_backward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 8, 8)), 2, divisor_override=0)
    with pytest.raises(LayerConfigError, match="output_size"):
        P.adaptive_avg_pool1d(np.zeros((1, 1, 8)), None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, ndim, shape, args, kwargs", CASES)
def test_modules_run_like_the_functions(kind, ndim, shape, args, kwargs, dtype):
    forward, backward = _ours(kind, ndim)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, shape).astype(dtype)  # ties, so the kept arg-max matters
    module = getattr(nn, MODULES[kind].format(ndim))(*args, **kwargs)
    assert module.parameters() == [] and module.state_dict() == {}
    y = module(x)
    np.testing.assert_array_equal(y, forward(x, *args, **kwargs))
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(module.backward(g), backward(g, x, *args, **kwargs))
    with pytest.raises(ShapeError):
        module.backward(g[:1, :1])


def test_module_backward_needs_a_forward():
    with pytest.raises(ConvScopeError, match="forward"):
        nn.MaxPool2d(2).backward(np.zeros((1, 1, 2, 2)))
