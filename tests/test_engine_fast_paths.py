"""The engine's fast paths against their plain twins and PyTorch: the direct depthwise
convolution (vs im2col), the blockwise float32 activations (vs float64 formulas) and the
threaded BatchNorm passes (vs the generic normalisation gradient)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

from convscope import nn
from convscope.functional import (
    batch_norm,
    batch_norm_backward,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
)
from convscope.kernels import blockwise, normalize
from convscope.kernels.depthwise import depthwise_core
from convscope.kernels.im2col import conv_core, pad
from convscope.ops import activation as act
from convscope.ops.conv import ConvSpec, is_depthwise

RANK = {1: (conv1d, conv1d_backward, tF.conv1d), 2: (conv2d, conv2d_backward, tF.conv2d)}
RANK[3] = (conv3d, conv3d_backward, tF.conv3d)

# (rank, N, C, multiplier, size, kernel, stride, padding, dilation, padding_mode)
DEPTHWISE = [
    (2, 2, 3, 1, 9, 3, 1, 1, 1, "zeros"),
    (2, 2, 4, 1, 10, 3, 2, 1, 1, "zeros"),
    (2, 1, 3, 2, 9, 3, 1, ((1, 2), (0, 1)), 1, "zeros"),  # asymmetric padding
    (2, 2, 2, 3, 11, 3, 2, 2, 2, "zeros"),  # dilation, channel multiplier 3
    (2, 2, 3, 1, 8, (3, 5), (1, 2), (1, 2), 1, "reflect"),
    (2, 1, 2, 2, 7, 3, 1, 1, 1, "replicate"),
    (2, 2, 2, 1, 7, 3, 2, 1, 1, "circular"),
    (2, 3, 5, 1, 6, 1, 1, 0, 1, "zeros"),  # 1×1 kernel
    (1, 2, 4, 2, 13, 5, 2, 2, 1, "zeros"),
    (3, 1, 2, 1, 6, 3, 1, 1, 1, "zeros"),
]


@pytest.mark.parametrize("case", DEPTHWISE, ids=str)
def test_depthwise_matches_im2col_and_torch(case):
    rank, n, c, m, size, kernel, stride, padding, dilation, mode = case
    rng = np.random.default_rng(0)
    ks = kernel if isinstance(kernel, tuple) else (kernel,) * rank
    x = rng.standard_normal((n, c, *(size,) * rank))
    w = rng.standard_normal((c * m, 1, *ks))
    b = rng.standard_normal(c * m)
    forward, backward, theirs = RANK[rank]
    spec = ConvSpec.create(rank, c, c * m, ks, stride, padding, dilation, c, True, mode)
    assert is_depthwise(spec)

    # the fast path against its plain twin, im2col, on the same padded input
    xp = pad(x, spec.padding, mode)
    out = spec.output_shape(x.shape[1:])[1:]
    y_fast, _, _ = depthwise_core(xp, w, spec.stride, spec.dilation, out, want_y=True)
    y_plain, _, _ = conv_core(xp, w, spec.stride, spec.dilation, out, c, want_y=True)
    np.testing.assert_allclose(y_fast, y_plain, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y_plain.shape)
    _, gw_fast, gxp_fast = depthwise_core(
        xp, w, spec.stride, spec.dilation, out, dy=dy, want_grads=True
    )
    _, gw_plain, gxp_plain = conv_core(
        xp, w, spec.stride, spec.dilation, out, c, dy=dy, want_gw=True, input_sizes=xp.shape[2:]
    )
    np.testing.assert_allclose(gw_fast, gw_plain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gxp_fast, gxp_plain, rtol=1e-12, atol=1e-12)

    # and the functional forms (which dispatch to it) against torch
    y = forward(x, w, b, stride, padding, dilation, c, mode)
    gx, gw, gb = backward(dy, x, w, stride, padding, dilation, c, mode)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    pairs = spec.padding
    if mode == "zeros" and all(p == q for p, q in pairs):
        yt = theirs(xt, wt, bt, stride, tuple(p for p, _ in pairs), dilation, c)
    else:
        widths = [v for p in reversed(pairs) for v in p]
        torch_mode = {"zeros": "constant"}.get(mode, mode)
        yt = theirs(tF.pad(xt, widths, mode=torch_mode), wt, bt, stride, 0, dilation, c)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_depthwise_float32_over_several_chunks_matches_torch():
    # large enough for several batch chunks and both threads
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 64, 40, 40), dtype=np.float32)
    w = rng.standard_normal((64, 1, 3, 3), dtype=np.float32)
    y = conv2d(x, w, None, 2, 1, 1, 64)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    gx, gw, _ = conv2d_backward(dy, x, w, 2, 1, 1, 64, bias=False)
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
    yt = tF.conv2d(xt, wt, None, 2, 1, 1, 64)
    yt.backward(torch.tensor(dy))
    assert y.dtype == gx.dtype == gw.dtype == np.float32
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-3)


ZERO_PAD_CASES = [
    # (sizes, kernel, stride, dilation, pads, groups): pads wider than the kernel reaches,
    # asymmetric pads, strides that skip the last positions, taps that read only padding
    ((9,), (3,), (2,), (1,), ((4, 1),), 1),
    ((7, 6), (3, 2), (1, 2), (2, 1), ((1, 2), (0, 3)), 2),
    ((5, 8), (5, 3), (2, 3), (1, 1), ((6, 6), (1, 0)), 1),
    ((4, 5, 6), (2, 3, 2), (1, 2, 3), (2, 1, 1), ((1, 1), (2, 0), (0, 2)), 3),
    ((3, 3), (3, 3), (1, 1), (1, 1), ((0, 0), (0, 0)), 1),
]


@pytest.mark.parametrize("case", ZERO_PAD_CASES)
def test_conv_core_reads_zero_padding_as_the_padded_copy_does(case):
    # the clipped taps (no padded copy) against their plain twin, im2col on np.pad's copy
    sizes, kernel, stride, dilation, pads, groups = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 3 * groups, *sizes))
    w = rng.standard_normal((2 * groups, 3, *kernel))
    xp = pad(x, pads, "zeros")
    out = tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(xp.shape[2:], kernel, stride, dilation)
    )
    dy = rng.standard_normal((3, 2 * groups, *out))
    plain = conv_core(xp, w, stride, dilation, out, groups, dy, True, True, xp.shape[2:])
    clipped = conv_core(x, w, stride, dilation, out, groups, dy, True, True, sizes, pads)
    crop = (..., *(slice(b, b + n) for n, (b, _) in zip(sizes, pads)))
    np.testing.assert_allclose(clipped[0], plain[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(clipped[1], plain[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(clipped[2], plain[2][crop], rtol=1e-12, atol=1e-12)
    # every tap that reads only padding contributes exact zeros, even against an inf weight
    w[(0, 0, *(0,) * len(sizes))] = np.inf
    with np.errstate(invalid="ignore"):  # 0 · inf, in both
        assert np.array_equal(
            np.isnan(conv_core(x, w, stride, dilation, out, groups, want_y=True, pads=pads)[0]),
            np.isnan(conv_core(xp, w, stride, dilation, out, groups, want_y=True)[0]),
        )


@pytest.mark.parametrize("case", ZERO_PAD_CASES)
def test_depthwise_reads_zero_padding_as_im2col_on_the_padded_copy(case):
    sizes, kernel, stride, dilation, pads, _ = case
    rng = np.random.default_rng(8)
    c, m = 3, 2
    x = rng.standard_normal((2, c, *sizes))
    w = rng.standard_normal((c * m, 1, *kernel))
    xp = pad(x, pads, "zeros")
    out = tuple(
        (p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(xp.shape[2:], kernel, stride, dilation)
    )
    dy = rng.standard_normal((2, c * m, *out))
    plain = conv_core(xp, w, stride, dilation, out, c, dy, True, True, xp.shape[2:])
    y, _, _ = depthwise_core(x, w, stride, dilation, out, want_y=True, pads=pads)
    _, gw, gx = depthwise_core(x, w, stride, dilation, out, dy=dy, want_grads=True, pads=pads)
    crop = (..., *(slice(b, b + n) for n, (b, _) in zip(sizes, pads)))
    np.testing.assert_allclose(y, plain[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, plain[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, plain[2][crop], rtol=1e-12, atol=1e-12)


def test_plain_grouped_conv_is_not_depthwise():
    assert not is_depthwise(ConvSpec.create(2, 4, 4, 3, groups=2))
    assert not is_depthwise(ConvSpec.create(2, 1, 8, 3, groups=1))
    assert is_depthwise(ConvSpec.create(2, 4, 8, 3, groups=4))


# -- activations --------------------------------------------------------------------------------

SPECIALS = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-30, -1e-30], dtype=np.float32)
GRID = np.concatenate([np.linspace(-10, 10, 400_001, dtype=np.float32), SPECIALS])
ACTIVATIONS = {
    "gelu": (act.gelu, act.gelu_backward, tF.gelu),
    "silu": (act.silu, act.silu_backward, tF.silu),
    "sigmoid": (act.sigmoid, act.sigmoid_backward, torch.sigmoid),
    "tanh": (act.tanh, act.tanh_backward, torch.tanh),
}
# max |ours − torch| / (1 + |x|) in float32 over GRID; measured: GELU 2.5e-7 (forward) and
# 2.4e-7 (backward), SiLU 2.0e-7, sigmoid 1.1e-7, tanh 7.7e-8
FLOAT32_BOUND = 3e-7


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_activation_matches_torch_on_dense_grid(name):
    forward, backward, theirs = ACTIVATIONS[name]
    g = np.ones_like(GRID)  # the derivative itself, which the bound is for
    xt = torch.tensor(GRID, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    y, gx = forward(GRID), backward(g, GRID)
    assert y.dtype == gx.dtype == np.float32
    for ours, ref in ((y, yt.detach().numpy()), (gx, xt.grad.numpy())):
        assert np.array_equal(np.isnan(ours), np.isnan(ref)), name
        finite = np.isfinite(GRID)
        error = np.abs(ours[finite].astype(np.float64) - ref[finite]) / (1 + np.abs(GRID[finite]))
        assert error.max() <= FLOAT32_BOUND, (name, error.max())
        special = ~finite & ~np.isnan(ref)
        assert np.array_equal(ours[special], ref[special])


@pytest.mark.parametrize("name", sorted(act.FROM_OUTPUT))
def test_activation_backward_from_output_matches_recomputing_twin_and_torch(name):
    # the module keeps y and differentiates through it; the functional backward recomputes
    # from x: both agree with each other and with torch (which also keeps y) on the grid
    forward, backward, theirs = ACTIVATIONS[name.lower()]
    g = np.random.default_rng(5).standard_normal(GRID.shape).astype(np.float32)
    module = {"Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}[name]()
    y = module.forward(GRID)
    from_output = module.backward(g)
    np.testing.assert_array_equal(y, forward(GRID))
    assert from_output.dtype == np.float32
    xt = torch.tensor(GRID, requires_grad=True)
    theirs(xt).backward(torch.tensor(g))
    for ours in (from_output, backward(g, GRID)):
        assert np.array_equal(np.isnan(ours), np.isnan(xt.grad.numpy()))
        finite = np.isfinite(GRID)
        error = np.abs(ours[finite] - xt.grad.numpy()[finite]) / (1 + np.abs(g[finite]))
        assert error.max() <= FLOAT32_BOUND, name
    x64 = np.random.default_rng(6).standard_normal((3, 5, 7)) * 4
    g64 = np.ones_like(x64)
    np.testing.assert_allclose(
        act.FROM_OUTPUT[name](g64, forward(x64)), backward(g64, x64), rtol=1e-12, atol=1e-15
    )


def test_float32_gelu_against_exact_erf():
    x = np.linspace(-10, 10, 20_001, dtype=np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    error = np.abs(act.gelu(x) - exact) / (1 + np.abs(x))
    assert error.max() <= FLOAT32_BOUND


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_blockwise_activation_is_its_float64_formula(name, monkeypatch):
    # several blocks over the pool's threads give what one float64 evaluation gives
    monkeypatch.setattr(blockwise, "BLOCK", 1000)
    monkeypatch.setattr(blockwise, "PARALLEL_BYTES", 0)
    forward, backward, _ = ACTIVATIONS[name]
    x = np.random.default_rng(3).standard_normal((7, 3, 501)) * 4
    g = np.random.default_rng(4).standard_normal(x.shape)
    s = 1 / (1 + np.exp(-x))
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x.ravel()]).reshape(x.shape)
    pdf = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    plain = {
        "gelu": (x * cdf, g * (cdf + x * pdf)),
        "silu": (x * s, g * s * (1 + x * (1 - s))),
        "sigmoid": (s, g * s * (1 - s)),
        "tanh": (np.tanh(x), g * (1 - np.tanh(x) ** 2)),
    }[name]
    np.testing.assert_allclose(forward(x), plain[0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(backward(g, x), plain[1], rtol=1e-12, atol=1e-15)
    x32, g32 = x.astype(np.float32), g.astype(np.float32)
    np.testing.assert_allclose(forward(x32), plain[0], rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(backward(g32, x32), plain[1], rtol=2e-6, atol=2e-6)


# -- BatchNorm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (16, 32, 24, 24), (5, 4, 7)])
def test_batchnorm_fast_passes_match_generic_and_torch(shape, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y = batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5)
    gx, gw, gb = batch_norm_backward(g, x, gamma, True, eps=1e-5)

    # the plain twin: moments, normalize and the generic input gradient
    axes = (0, *range(2, x.ndim))
    xhat, inv = normalize.normalize(x, *normalize.moments(x, axes), 1e-5)
    gamma_b = normalize.per_channel(gamma, x.ndim)
    plain_y = xhat * gamma_b + normalize.per_channel(beta, x.ndim)
    plain_gx = normalize.input_gradient(g * gamma_b, xhat, inv, axes, True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, plain_y, **tol)
    np.testing.assert_allclose(gx, plain_gx, **tol)
    np.testing.assert_allclose(gw, (g * xhat).sum(axis=axes), **tol)

    xt = torch.tensor(x, requires_grad=True)
    wt, bt = (torch.tensor(v, requires_grad=True) for v in (gamma, beta))
    rmt, rvt = torch.zeros(c, dtype=xt.dtype), torch.ones(c, dtype=xt.dtype)
    yt = tF.batch_norm(xt, rmt, rvt, wt, bt, True, 0.1, 1e-5)
    yt.backward(torch.tensor(g))
    for ours, ref in ((y, yt), (gx, xt.grad), (rm, rmt), (rv, rvt)):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, ref.detach().numpy(), **tol)
    # γ's and β's gradients are sums of m terms: both engines' rounding errors grow with the
    # sum of the terms' magnitudes, so that bounds their difference (one eps of it; measured
    # 5.6e-9 of it for ours against float64, 9.8e-9 for torch's, on (16, 32, 24, 24))
    for ours, ref, terms in ((gw, wt.grad, g * xhat), (gb, bt.grad, g)):
        assert ours.dtype == dtype
        bound = np.finfo(dtype).eps * np.abs(terms.astype(np.float64)).sum(axis=axes)
        assert np.all(np.abs(ours - ref.numpy()) <= bound)
