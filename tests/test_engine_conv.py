"""The convolution engine: finite differences, PyTorch autograd, dtypes, errors, modules.

Every gradient is checked twice: against central finite differences of the forward in float64,
and against PyTorch's autograd (float64 to 1e-10 relative, float32 to 1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope import ShapeError, nn
from convscope.errors import ConvScopeError
from convscope.kernels import im2col
from convscope.ops import conv as conv_ops
from convscope.ops.conv import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
)
from convscope.ops.conv_transpose import (
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
)

CONV = {1: (conv1d, conv1d_backward), 2: (conv2d, conv2d_backward), 3: (conv3d, conv3d_backward)}
TRANSPOSE = {
    1: (conv_transpose1d, conv_transpose1d_backward),
    2: (conv_transpose2d, conv_transpose2d_backward),
    3: (conv_transpose3d, conv_transpose3d_backward),
}
TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def numeric_grad(f, array: np.ndarray, g: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``sum(f() * g)`` with respect to every entry of ``array``."""
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = float(np.sum(f() * g))
        flat[i] = keep - eps
        down = float(np.sum(f() * g))
        flat[i] = keep
        out[i] = (up - down) / (2 * eps)
    return grad


def check_fd(forward, backward, x, w, b, rng) -> None:
    """Finite differences of forward against backward for x, w and b (float64)."""
    y = forward(x, w, b)
    g = rng.standard_normal(y.shape)
    gx, gw, gb = backward(g, x, w)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    for analytic, array in ((gx, x), (gw, w), (gb, b)):
        numeric = numeric_grad(lambda: forward(x, w, b), array, g)
        assert rel_err(analytic, numeric) < 1e-6


# (ndim, N, C_in, C_out, spatial, kernel, stride, padding, dilation, groups, padding_mode)
CONV_CASES = [
    (2, 2, 2, 3, (7, 8), (3, 3), 2, 0, 1, 1, "zeros"),  # (7 − 3) % 2 == 0, (8 − 3) % 2 != 0
    (2, 1, 2, 2, (9, 7), (3, 2), (3, 2), ((1, 2), (0, 1)), 1, 1, "zeros"),  # per-side padding
    (2, 2, 2, 2, (6, 7), (4, 2), 1, "same", 1, 1, "zeros"),  # 'same' with even kernels
    (2, 1, 2, 4, (8, 8), (3, 2), (2, 1), (1, 2), (2, 3), 2, "zeros"),  # dilation, groups
    (2, 2, 3, 3, (6, 5), (3, 3), 1, 1, 1, 3, "zeros"),  # depthwise
    (2, 1, 2, 6, (6, 5), (2, 3), (1, 2), 2, 1, 2, "reflect"),
    (2, 1, 2, 2, (6, 5), (3, 3), 2, (2, 1), 1, 1, "replicate"),
    (2, 1, 2, 2, (5, 6), (3, 2), 1, (2, 3), (1, 2), 1, "circular"),
    (2, 1, 2, 2, (7, 7), (2, 2), 1, -1, 1, 1, "reflect"),  # a negative pad crops
    (2, 1, 2, 2, (7, 6), (3, 3), 1, "same", 2, 1, "replicate"),
    (1, 2, 2, 4, (11,), (4,), 3, 2, 2, 2, "zeros"),
    (1, 1, 2, 2, (9,), (4,), 1, "same", 1, 2, "circular"),
    (1, 2, 2, 2, (8,), (3,), 2, 2, 1, 1, "reflect"),
    (3, 1, 2, 2, (4, 5, 4), (2, 3, 2), (2, 1, 1), (1, 0, (0, 1)), 1, 1, "zeros"),
    (3, 1, 2, 2, (4, 4, 5), (2, 2, 3), 1, (1, 2, 1), (1, 1, 2), 2, "replicate"),
]


@pytest.mark.parametrize("index", range(len(CONV_CASES)))
def test_conv_gradients_match_finite_differences(index) -> None:
    nd, n, ci, co, spatial, k, s, p, d, gr, mode = CONV_CASES[index]
    rng = np.random.default_rng(index)
    f, fb = CONV[nd]
    x = rng.standard_normal((n, ci, *spatial))
    w = rng.standard_normal((co, ci // gr, *k))
    b = rng.standard_normal(co)
    check_fd(
        lambda x, w, b: f(x, w, b, s, p, d, gr, mode),
        lambda g, x, w: fb(g, x, w, s, p, d, gr, mode),
        x,
        w,
        b,
        rng,
    )


# (ndim, N, C_in, C_out, spatial, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES = [
    (2, 2, 2, 3, (3, 4), (3, 2), 2, 1, 1, 1, 1),
    (2, 1, 4, 2, (3, 3), (2, 3), (3, 2), (1, 0), (2, 1), 2, (1, 2)),
    (2, 1, 2, 2, (3, 4), (2, 2), 1, 0, 1, 2, 2),  # output_padding < dilation
    (1, 2, 2, 2, (5,), (3,), 2, 1, 1, 1, 2),
    (3, 1, 2, 2, (2, 3, 2), (2, 2, 3), (2, 1, 2), (0, 1, 1), (1, 0, 1), 1, 1),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_transpose_gradients_match_finite_differences(case) -> None:
    nd, n, ci, co, spatial, k, s, p, op, gr, d = case
    rng = np.random.default_rng(7)
    f, fb = TRANSPOSE[nd]
    x = rng.standard_normal((n, ci, *spatial))
    w = rng.standard_normal((ci, co // gr, *k))
    b = rng.standard_normal(co)
    check_fd(
        lambda x, w, b: f(x, w, b, s, p, op, gr, d),
        lambda g, x, w: fb(g, x, w, s, p, op, gr, d),
        x,
        w,
        b,
        rng,
    )


def torch_conv(nd, x, w, b, g, s, p, d, gr, mode):
    """PyTorch's output and the three gradients (per-side padding via F.pad)."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    per_side = isinstance(p, tuple) and any(isinstance(v, tuple) for v in p)
    if per_side:
        pairs = [v if isinstance(v, tuple) else (v, v) for v in p]
        flat = [q for pair in reversed(pairs) for q in pair]
        torch_mode = "constant" if mode == "zeros" else mode
        y = getattr(F, f"conv{nd}d")(F.pad(xt, flat, mode=torch_mode), wt, bt, s, 0, d, gr)
    else:
        layer = TORCH_CONV[nd](
            x.shape[1], w.shape[0], w.shape[2:], s, p, d, gr, True, mode, dtype=wt.dtype
        )
        y = layer._conv_forward(xt, wt, bt)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_torch(case, dtype, tol) -> None:
    nd, n, ci, co, spatial, k, s, p, d, gr, mode = case
    rng = np.random.default_rng(3)
    f, fb = CONV[nd]
    x = rng.standard_normal((n + 1, ci, *spatial)).astype(dtype)
    w = rng.standard_normal((co, ci // gr, *k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y = f(x, w, b, s, p, d, gr, mode)
    g = rng.standard_normal(y.shape).astype(dtype)
    grads = fb(g, x, w, s, p, d, gr, mode)
    expected = torch_conv(nd, x, w, b, g, s, p, d, gr, mode)
    for ours, theirs in zip((y, *grads), expected):
        assert ours.dtype == dtype and ours.shape == theirs.shape
        assert rel_err(ours, theirs) < tol


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_transpose_matches_torch(case, dtype, tol) -> None:
    nd, n, ci, co, spatial, k, s, p, op, gr, d = case
    rng = np.random.default_rng(5)
    f, fb = TRANSPOSE[nd]
    x = rng.standard_normal((n, ci, *spatial)).astype(dtype)
    w = rng.standard_normal((ci, co // gr, *k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y = f(x, w, b, s, p, op, gr, d)
    g = rng.standard_normal(y.shape).astype(dtype)
    grads = fb(g, x, w, s, p, op, gr, d)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = TORCH_TRANSPOSE[nd](xt, wt, bt, s, p, op, gr, d)
    yt.backward(torch.tensor(g))
    for ours, theirs in zip((y, *grads), (yt, xt.grad, wt.grad, bt.grad)):
        assert ours.dtype == dtype and ours.shape == tuple(theirs.shape)
        assert rel_err(ours, theirs.detach().numpy()) < tol


@settings(max_examples=40, deadline=None)
@given(
    nd=st.integers(1, 3),
    n=st.integers(1, 3),
    gr=st.integers(1, 3),
    cg=st.integers(1, 2),
    cog=st.integers(1, 2),
    size=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    k=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    s=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    d=st.lists(st.integers(1, 2), min_size=3, max_size=3),
    p=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    mode=st.sampled_from(conv_ops.PADDING_MODES),
    seed=st.integers(0, 2**31),
)
def test_random_convolutions_match_torch(nd, n, gr, cg, cog, size, k, s, d, p, mode, seed):
    size, k, s, d, p = (tuple(v[:nd]) for v in (size, k, s, d, p))
    if any(si + 2 * pi < di * (ki - 1) + 1 for si, pi, di, ki in zip(size, p, d, k)):
        return
    if mode == "reflect" and any(pi >= si for pi, si in zip(p, size)):
        return
    if mode == "circular" and any(pi > si for pi, si in zip(p, size)):
        return
    rng = np.random.default_rng(seed)
    f, fb = CONV[nd]
    x = rng.standard_normal((n, cg * gr, *size))
    w = rng.standard_normal((cog * gr, cg, *k))
    b = rng.standard_normal(cog * gr)
    y = f(x, w, b, s, p, d, gr, mode)
    g = rng.standard_normal(y.shape)
    grads = fb(g, x, w, s, p, d, gr, mode)
    expected = torch_conv(nd, x, w, b, g, s, p, d, gr, mode)
    for ours, theirs in zip((y, *grads), expected):
        assert rel_err(ours, theirs) < 1e-10


def test_seed_f_and_g_on_a_128_image() -> None:
    """The seed's F and G: a 128x128 image, a 3x3 kernel, no padding, no bias."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 1, 128, 128))
    w = rng.standard_normal((1, 1, 3, 3))
    x = conv2d(z, w)
    eps = rng.standard_normal(x.shape)
    g_z, g_w, g_b = conv2d_backward(eps, z, w, bias=False)
    assert x.shape == eps.shape == (1, 1, 126, 126)
    assert g_z.shape == (1, 1, 128, 128) and g_w.shape == (1, 1, 3, 3) and g_b is None
    zt, wt = torch.tensor(z, requires_grad=True), torch.tensor(w, requires_grad=True)
    xt = F.conv2d(zt, wt)
    xt.backward(torch.tensor(eps))
    assert rel_err(x, xt.detach().numpy()) < 1e-12
    assert rel_err(g_z, zt.grad.numpy()) < 1e-12
    assert rel_err(g_w, wt.grad.numpy()) < 1e-12


def test_float32_stays_float32() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    y = conv2d(x, w, b, padding=1, groups=2, padding_mode="reflect")
    assert y.dtype == np.float32
    assert all(a.dtype == np.float32 for a in conv2d_backward(y, x, w, padding=1, groups=2))
    wt = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    yt = conv_transpose2d(x, wt, stride=2)
    assert yt.dtype == np.float32
    grads = conv_transpose2d_backward(yt, x, wt, stride=2)
    assert all(a.dtype == np.float32 for a in grads)


def test_mismatches_name_both_shapes() -> None:
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"\(5, 2, 3, 3\).*\(5, 3, 3, 3\)"):
        conv2d(x, np.zeros((5, 2, 3, 3)))
    with pytest.raises(ShapeError, match=r"\(2, 5, 5, 5\).*\(2, 5, 6, 6\)"):
        conv2d_backward(np.zeros((2, 5, 5, 5)), x, np.zeros((5, 3, 3, 3)))
    with pytest.raises(ShapeError, match="float32.*float64"):
        conv2d(x.astype(np.float32), np.zeros((5, 3, 3, 3)))
    with pytest.raises(ShapeError, match=r"\(4,\).*\(5,\)"):
        conv2d(x, np.zeros((5, 3, 3, 3)), np.zeros(4))
    with pytest.raises(ShapeError, match="int64"):
        conv2d(x.astype(np.int64), np.zeros((5, 3, 3, 3)))
    with pytest.raises(ShapeError, match=r"\(3, 2, 3, 3\).*\(4, 2, 3, 3\)"):
        conv_transpose2d(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)))
    with pytest.raises(ConvScopeError, match="stride"):
        conv2d(x, np.zeros((5, 3, 3, 3)), padding="same", stride=2)
    with pytest.raises(ConvScopeError):
        conv2d(x, np.zeros((5, 3, 9, 9)))  # kernel larger than the input


def test_chunking_gives_the_same_results(monkeypatch) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4, 9, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    wt = rng.standard_normal((4, 3, 2, 2))

    def run():
        y = conv2d(x, w, stride=2, padding=1, groups=2)
        g = conv2d_backward(y, x, w, stride=2, padding=1, groups=2)
        t = conv_transpose2d(x, wt, stride=2, output_padding=1)
        tg = conv_transpose2d_backward(t, x, wt, stride=2, output_padding=1)
        return [y, *g, t, *tg]

    whole = run()
    calls = []
    chunks = im2col.chunks
    monkeypatch.setattr(im2col, "chunks", lambda n, b: calls.append(chunks(n, b)) or calls[-1])
    monkeypatch.setattr(im2col, "CONV_MEMORY_BUDGET", 1)
    chunked = run()
    assert all(len(c) == 5 for c in calls)  # one image per chunk
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_depthwise_does_not_loop_over_groups() -> None:
    """A depthwise layer with many groups runs as one batched matmul, fast."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 512, 8, 8)).astype(np.float32)
    w = rng.standard_normal((512, 1, 3, 3)).astype(np.float32)
    y = conv2d(x, w, padding=1, groups=512)
    expected = F.conv2d(torch.tensor(x), torch.tensor(w), padding=1, groups=512).numpy()
    assert rel_err(y, expected) < 1e-5


# -- modules ----------------------------------------------------------------------------------


def test_conv2d_module_matches_functional_and_accumulates() -> None:
    rng = np.random.default_rng(6)
    layer = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="circular")
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    y = layer(x)
    w, b = layer.state_dict()["weight"], layer.state_dict()["bias"]
    np.testing.assert_array_equal(y, conv2d(x, w, b, 2, 1, 1, 2, "circular"))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(g)
    ex, ew, eb = conv2d_backward(g, x, w, 2, 1, 1, 2, "circular")
    np.testing.assert_array_equal(gx, ex)
    weight, bias = layer.parameters()
    np.testing.assert_array_equal(weight.grad, ew)
    np.testing.assert_array_equal(bias.grad, eb)
    layer.backward(g)
    np.testing.assert_allclose(weight.grad, 2 * ew, rtol=1e-6)
    np.testing.assert_allclose(bias.grad, 2 * eb, rtol=1e-6)
    bound = 1 / np.sqrt(2 * 9)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound


@pytest.mark.parametrize(
    "ours,theirs,shape",
    [
        (nn.Conv2d(3, 8, (3, 2), stride=2, padding=1), torch.nn.Conv2d(3, 8, (3, 2), 2, 1), 9),
        (nn.Conv1d(2, 4, 3, bias=False), torch.nn.Conv1d(2, 4, 3, bias=False), None),
        (nn.Conv3d(2, 4, 2, groups=2), torch.nn.Conv3d(2, 4, 2, groups=2), None),
        (
            nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, groups=2),
            torch.nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, groups=2),
            None,
        ),
        (
            nn.ConvTranspose1d(2, 3, 4, padding=1),
            torch.nn.ConvTranspose1d(2, 3, 4, padding=1),
            None,
        ),
    ],
)
def test_state_dict_fits_torch(ours, theirs, shape) -> None:
    theirs = theirs.double()
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    assert list(ours.state_dict()) == list(state)
    ours.astype(np.float64).load_state_dict(state)
    rng = np.random.default_rng(8)
    ndim = ours.spec.ndim
    x = rng.standard_normal((2, ours.spec.in_channels, *(5,) * ndim))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    assert rel_err(y, yt.detach().numpy()) < 1e-10
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    assert rel_err(ours.backward(g), xt.grad.numpy()) < 1e-10
    assert rel_err(ours.parameters()[0].grad, theirs.weight.grad.numpy()) < 1e-10


def test_conv_transpose_module_matches_functional() -> None:
    rng = np.random.default_rng(9)
    layer = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    x = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    y = layer(x)
    state = layer.state_dict()
    np.testing.assert_array_equal(y, conv_transpose2d(x, state["weight"], state["bias"], 2, 1, 1))
    g = np.ones_like(y)
    gx = layer.backward(g)
    ex, ew, eb = conv_transpose2d_backward(g, x, state["weight"], 2, 1, 1)
    np.testing.assert_array_equal(gx, ex)
    np.testing.assert_array_equal(layer.parameters()[0].grad, ew)
    np.testing.assert_array_equal(layer.parameters()[1].grad, eb)
    bound = 1 / np.sqrt(2 * 9)
    assert np.abs(state["weight"]).max() <= bound


def test_module_backward_before_forward_is_an_error() -> None:
    with pytest.raises(ConvScopeError, match="before forward"):
        nn.Conv2d(1, 1, 3).backward(np.zeros((1, 1, 2, 2), np.float32))
