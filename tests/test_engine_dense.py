"""The dense part of the engine: linear, activations, dropout, batch norm and losses.

Every backward is checked against central finite differences in float64 and, with every forward,
against PyTorch's autograd in float64 and float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope import nn
from convscope.errors import LayerConfigError, ShapeError
from convscope.ops import activation as act
from convscope.ops.linear import linear, linear_backward
from convscope.ops.loss import (
    CrossEntropyLoss,
    MSELoss,
    mse_loss,
    mse_loss_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
from convscope.ops.normalization import batch_norm, batch_norm_backward
from convscope.random import manual_seed

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. every entry of x (changed in place)."""
    grad = np.empty_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f()
        flat[i] = keep - h
        down = f()
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return grad


def assert_close_fd(analytic: np.ndarray, numeric: np.ndarray) -> None:
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-12)
    err = np.linalg.norm(analytic - numeric) / scale
    assert err < 1e-6, f"relative error {err:.3g}"


def t(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


def close(ours: np.ndarray, theirs: torch.Tensor | np.ndarray, dtype) -> None:
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    ours = np.asarray(ours)
    assert ours.dtype == np.dtype(dtype), (ours.dtype, dtype)
    np.testing.assert_allclose(ours, theirs, **TOL[dtype])


# -- linear -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(), (3,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_finite_differences(lead, with_bias):
    r = rng(len(lead) + 10 * with_bias)
    x, w = r.standard_normal((*lead, 4)), r.standard_normal((3, 4))
    b = r.standard_normal(3) if with_bias else None
    g = r.standard_normal((*lead, 3))

    def loss():
        return float((linear(x, w, b) * g).sum())

    gx, gw, gb = linear_backward(g, x, w, bias=with_bias)
    assert_close_fd(gx, numeric_grad(loss, x))
    assert_close_fd(gw, numeric_grad(loss, w))
    if with_bias:
        assert_close_fd(gb, numeric_grad(loss, b))
    else:
        assert gb is None


@settings(max_examples=25, deadline=None)
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    sizes=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    with_bias=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_linear_matches_torch(lead, sizes, with_bias, dtype):
    in_f, out_f = sizes
    r = rng(sum(lead) + in_f * out_f)
    x = r.standard_normal((*lead, in_f)).astype(dtype)
    w = r.standard_normal((out_f, in_f)).astype(dtype)
    b = r.standard_normal(out_f).astype(dtype) if with_bias else None
    g = r.standard_normal((*lead, out_f)).astype(dtype)
    tx, tw = t(x), t(w)
    tb = t(b) if with_bias else None
    ty = tF.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    close(linear(x, w, b), ty, dtype)
    gx, gw, gb = linear_backward(g, x, w, bias=with_bias)
    close(gx, tx.grad, dtype)
    close(gw, tw.grad, dtype)
    if with_bias:
        close(gb, tb.grad, dtype)


def test_linear_errors_name_both_shapes():
    x, w = np.zeros((2, 5)), np.zeros((3, 4))
    with pytest.raises(ShapeError, match=r"\(2, 5\).*\(3, 4\)"):
        linear(x, w)
    with pytest.raises(ShapeError, match=r"bias has shape \(4,\), expected \(3,\)"):
        linear(np.zeros((2, 4)), w, np.zeros(4))
    with pytest.raises(ShapeError, match=r"grad_out has shape \(2, 4\), expected \(2, 3\)"):
        linear_backward(np.zeros((2, 4)), np.zeros((2, 4)), w)
    with pytest.raises(ShapeError, match="dtypes differ"):
        linear(np.zeros((2, 4), np.float32), w)
    with pytest.raises(ShapeError, match="dtypes differ"):
        linear_backward(np.zeros((2, 3), np.float32), np.zeros((2, 4)), w)
    with pytest.raises(ShapeError, match=r"weight must be .* got shape \(3,\)"):
        linear(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ShapeError, match="float32 or float64"):
        linear(np.zeros((2, 4), np.int64), w)


def test_linear_module_init_state_dict_and_torch_weights():
    manual_seed(1)
    layer = nn.Linear(6, 4)
    assert not layer.weight.allocated  # lazily allocated
    bound = 1 / math.sqrt(6)
    assert np.all(np.abs(layer.weight.data) <= bound) and np.all(np.abs(layer.bias.data) <= bound)
    assert layer.weight.data.std() > bound / 4  # really spread over the range
    assert layer.weight.data.dtype == np.float32
    manual_seed(1)
    assert np.array_equal(nn.Linear(6, 4).weight.data, layer.weight.data)

    torch.manual_seed(0)
    ref = torch.nn.Linear(6, 4)
    ours = {k: v.shape for k, v in layer.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert list(ours) == list(ref.state_dict())
    layer.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})

    x = rng(2).standard_normal((2, 3, 6)).astype(np.float32)
    g = rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    tx = t(x)
    ty = ref(tx)
    ty.backward(torch.tensor(g))
    close(layer(x), ty, np.float32)
    close(layer.backward(g), tx.grad, np.float32)
    close(layer.weight.grad, ref.weight.grad, np.float32)
    close(layer.bias.grad, ref.bias.grad, np.float32)

    # the module is the functional ops, and gradients accumulate
    w, b = layer.weight.data, layer.bias.data
    assert np.array_equal(layer(x), linear(x, w, b))
    gx, gw, gb = linear_backward(g, x, w)
    assert np.array_equal(layer.backward(g), gx)
    np.testing.assert_allclose(layer.weight.grad, 2 * gw, rtol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, 2 * gb, rtol=1e-6)

    plain = nn.Linear(6, 4, bias=False)
    assert list(plain.state_dict()) == ["weight"]
    plain.forward(x)
    plain.backward(g)
    assert plain.weight.grad is not None


# -- activations ------------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": (act.relu, act.relu_backward, torch.relu, nn.ReLU),
    "relu6": (act.relu6, act.relu6_backward, tF.relu6, nn.ReLU6),
    "leaky_relu": (act.leaky_relu, act.leaky_relu_backward, tF.leaky_relu, nn.LeakyReLU),
    "sigmoid": (act.sigmoid, act.sigmoid_backward, torch.sigmoid, nn.Sigmoid),
    "tanh": (act.tanh, act.tanh_backward, torch.tanh, nn.Tanh),
    "silu": (act.silu, act.silu_backward, tF.silu, nn.SiLU),
    "gelu": (act.gelu, act.gelu_backward, tF.gelu, nn.GELU),
}


def away_from_kinks(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values in (−4, 9) at least 0.05 from 0 and 6, the kinks of the ReLU family."""
    x = rng(seed).uniform(-4, 9, size=shape)
    for kink in (0.0, 6.0):
        near = np.abs(x - kink) < 0.05
        x[near] = kink + np.where(x[near] >= kink, 0.05, -0.05) + 0.01 * np.sign(x[near] - kink)
    return x


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_finite_differences(name):
    f, f_back, _, _ = ACTIVATIONS[name]
    x = away_from_kinks((3, 4, 5), seed=1)
    g = rng(2).standard_normal(x.shape)
    assert_close_fd(f_back(g, x), numeric_grad(lambda: float((f(x) * g).sum()), x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(name, dtype):
    f, f_back, tf, _ = ACTIVATIONS[name]
    x = np.concatenate([away_from_kinks((200,), seed=3), rng(4).standard_normal(200)]).astype(dtype)
    g = rng(5).standard_normal(x.shape).astype(dtype)
    tx = t(x)
    ty = tf(tx)
    ty.backward(torch.tensor(g))
    close(f(x), ty, dtype)
    close(f_back(g, x), tx.grad, dtype)


def test_leaky_relu_slope_matches_torch():
    x = away_from_kinks((50,), seed=6)
    g = rng(7).standard_normal(x.shape)
    tx = t(x)
    tF.leaky_relu(tx, 0.2).backward(torch.tensor(g))
    close(act.leaky_relu(x, 0.2), tF.leaky_relu(torch.tensor(x), 0.2), np.float64)
    close(act.leaky_relu_backward(g, x, 0.2), tx.grad, np.float64)
    layer = nn.LeakyReLU(0.2)
    assert np.array_equal(layer(x), act.leaky_relu(x, 0.2))
    assert np.array_equal(layer.backward(g), act.leaky_relu_backward(g, x, 0.2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_at_extremes_match_torch(dtype):
    # the exponentials must not overflow; the kinks take PyTorch's one-sided gradients
    x = np.array([-1000.0, -100.0, -30.0, -8.0, 0.0, 6.0, 8.0, 30.0, 100.0, 1000.0], dtype=dtype)
    g = np.ones_like(x)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        for f, f_back, tf, _ in ACTIVATIONS.values():
            tx = t(x)
            tf(tx).backward(torch.tensor(g))
            close(f(x), tf(torch.tensor(x)), dtype)
            close(f_back(g, x), tx.grad, dtype)


def test_gelu_is_exact_erf_form():
    # against math.erf / math.erfc, far into both tails, to near float64 precision
    x = np.concatenate([np.linspace(-40, 40, 4001), rng(8).standard_normal(1000) * 3])
    ref = np.array(
        [
            0.5 * v * (1 + math.erf(v / math.sqrt(2)))
            if v > -1
            else 0.5 * v * math.erfc(-v / math.sqrt(2))
            for v in x
        ]
    )
    np.testing.assert_allclose(act.gelu(x), ref, rtol=1e-14, atol=1e-300)
    tiny = np.array([1e-300, -1e-300, 1e-20, 0.0])
    np.testing.assert_allclose(act.gelu(tiny), tiny / 2, rtol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_modules_are_the_functions(name):
    f, f_back, _, module = ACTIVATIONS[name]
    x = rng(9).standard_normal((2, 3, 4)).astype(np.float32)
    g = rng(10).standard_normal(x.shape).astype(np.float32)
    layer = module()
    y = layer(x)
    assert y.dtype == np.float32 and np.array_equal(y, f(x))
    gx = layer.backward(g)
    assert gx.dtype == np.float32 and np.array_equal(gx, f_back(g, x))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_checks_grad_out(name):
    _, f_back, _, _ = ACTIVATIONS[name]
    with pytest.raises(ShapeError, match=r"grad_out has shape \(2, 3\), expected \(3, 2\)"):
        f_back(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="dtypes differ"):
        f_back(np.zeros((3, 2), np.float32), np.zeros((3, 2)))


# -- dropout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_dropout(p, dtype):
    x = rng(11).standard_normal((40, 50)).astype(dtype)
    y, mask = act.dropout(x, p, generator=rng(12))
    assert y.dtype == mask.dtype == np.dtype(dtype)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    assert set(np.unique(mask)) <= {0.0, dtype(scale)}
    assert abs((mask != 0).mean() - (1 - p)) < 0.05
    np.testing.assert_array_equal(y, x * mask)
    g = rng(13).standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(act.dropout_backward(g, mask), g * mask)
    # the backward is the adjoint of the forward for a fixed mask
    assert_close_fd(
        act.dropout_backward(g.astype(np.float64), mask.astype(np.float64)),
        g * mask,
    )
    same, none = act.dropout(x, p, training=False)
    assert same is x and none is None
    assert act.dropout_backward(g, None) is g


def test_dropout_module_and_seed():
    layer = nn.Dropout(0.3)
    x = np.ones((20, 30), np.float32)
    manual_seed(5)
    y1 = layer(x)
    g = rng(14).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g * y1)  # x is ones: y is the mask
    manual_seed(5)
    np.testing.assert_array_equal(layer(x), y1)
    assert np.all(np.isin(y1, [0, np.float32(1 / 0.7)]))
    layer.eval()
    assert layer(x) is x and layer.backward(g) is g
    with pytest.raises(LayerConfigError, match="p=1.5"):
        act.dropout(x, 1.5)
    with pytest.raises(ShapeError, match=r"grad_out has shape \(3,\), expected \(20, 30\)"):
        act.dropout_backward(np.zeros(3, np.float32), act.dropout(x, 0.5)[1])


# -- batch norm -------------------------------------------------------------------------------

BN_SHAPES = [(5, 3), (4, 3, 5), (3, 2, 4, 3), (2, 2, 3, 2, 3)]
TORCH_BN = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}
TORCH_BN[5] = torch.nn.BatchNorm3d
OUR_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_finite_differences(shape, affine, training):
    r = rng(len(shape) + 2 * affine + training)
    c = shape[1]
    x = r.standard_normal(shape) * 2 + 1
    w = r.uniform(0.5, 2, c) if affine else None
    b = r.standard_normal(c) if affine else None
    rm, rv = r.standard_normal(c), r.uniform(0.5, 2, c)
    g = r.standard_normal(shape)

    def loss():
        stats = (None, None) if training else (rm.copy(), rv.copy())
        return float((batch_norm(x, *stats, w, b, training=training) * g).sum())

    gx, gw, gb = batch_norm_backward(
        g, x, w, training=training, running_var=rv, affine=affine, running_mean=rm
    )
    assert_close_fd(gx, numeric_grad(loss, x))
    if affine:
        assert_close_fd(gw, numeric_grad(loss, w))
        assert_close_fd(gb, numeric_grad(loss, b))
    else:
        assert gw is None and gb is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_matches_torch(shape, training, dtype):
    r = rng(len(shape) + 7 * training)
    c = shape[1]
    x = (r.standard_normal(shape) * 3 + 2).astype(dtype)
    w = r.uniform(0.5, 2, c).astype(dtype)
    b = r.standard_normal(c).astype(dtype)
    rm, rv = r.standard_normal(c).astype(dtype), r.uniform(0.5, 2, c).astype(dtype)
    g = r.standard_normal(shape).astype(dtype)

    trm, trv = torch.tensor(rm), torch.tensor(rv)
    tx, tw, tb = t(x), t(w), t(b)
    ty = tF.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.3, eps=1e-4)
    ty.backward(torch.tensor(g))

    our_rm, our_rv = rm.copy(), rv.copy()
    y = batch_norm(x, our_rm, our_rv, w, b, training=training, momentum=0.3, eps=1e-4)
    close(y, ty, dtype)
    close(our_rm, trm, dtype)  # updated in place in training, untouched in eval
    close(our_rv, trv, dtype)
    gx, gw, gb = batch_norm_backward(
        g, x, w, training=training, running_var=rv, eps=1e-4, running_mean=rm
    )
    close(gx, tx.grad, dtype)
    close(gw, tw.grad, dtype)
    close(gb, tb.grad, dtype)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_modules_match_torch(shape, momentum):
    c = shape[1]
    ref = TORCH_BN[len(shape)](c, eps=1e-3, momentum=momentum).double()
    layer = OUR_BN[len(shape)](c, eps=1e-3, momentum=momentum).astype(np.float64)
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref.state_dict().items()
    ]
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.normal_()
    layer.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for step in range(3):  # training steps, then eval
        training = step < 2
        ref.train(training)
        layer.train(training)
        r = rng(20 + step)
        x = r.standard_normal(shape) * 2 + step
        g = r.standard_normal(shape)
        tx = t(x)
        ref.zero_grad()
        layer.zero_grad()
        ty = ref(tx)
        ty.backward(torch.tensor(g))
        close(layer(x), ty, np.float64)
        close(layer.backward(g), tx.grad, np.float64)
        close(layer.weight.grad, ref.weight.grad, np.float64)
        close(layer.bias.grad, ref.bias.grad, np.float64)
        for name, value in ref.state_dict().items():
            ours = layer.state_dict()[name]
            assert ours.dtype == value.numpy().dtype
            np.testing.assert_allclose(ours, value.numpy(), rtol=1e-12)
    assert layer.num_batches_tracked.data == 2


def test_batch_norm2d_state_dict_and_torch_weights_float32():
    torch.manual_seed(3)
    ref = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2)
        ref.num_batches_tracked.fill_(7)
    layer = nn.BatchNorm2d(4)
    assert not any(p.allocated for _, p in layer._named(""))
    fresh = layer.state_dict()
    assert {k: (v.shape, v.dtype) for k, v in fresh.items()} == {
        k: (tuple(v.shape), v.numpy().dtype)
        for k, v in torch.nn.BatchNorm2d(4).state_dict().items()
    }
    for k, v in torch.nn.BatchNorm2d(4).state_dict().items():
        np.testing.assert_array_equal(fresh[k], v.numpy())
    layer.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    x = rng(30).standard_normal((3, 4, 5, 5)).astype(np.float32)
    g = rng(31).standard_normal(x.shape).astype(np.float32)
    for mode in (False, True):  # eval with the loaded statistics, then a training step
        ref.train(mode)
        layer.train(mode)
        tx = t(x)
        ty = ref(tx)
        ty.backward(torch.tensor(g))
        close(layer(x), ty, np.float32)
        close(layer.backward(g), tx.grad, np.float32)
    assert layer.num_batches_tracked.data == 8
    for name, value in ref.state_dict().items():
        np.testing.assert_allclose(layer.state_dict()[name], value.numpy(), rtol=1e-5)


def test_batch_norm_modules_are_the_functions():
    x = rng(40).standard_normal((4, 3, 5)).astype(np.float32)
    g = rng(41).standard_normal(x.shape).astype(np.float32)
    layer = nn.BatchNorm1d(3)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    assert np.array_equal(layer(x), batch_norm(x, rm, rv, w, b))
    assert np.array_equal(layer.running_mean.data, rm)
    assert np.array_equal(layer.running_var.data, rv)
    gx, gw, gb = batch_norm_backward(g, x, w)
    assert np.array_equal(layer.backward(g), gx)
    assert np.array_equal(layer.weight.grad, gw) and np.array_equal(layer.bias.grad, gb)
    layer.eval()
    assert np.array_equal(layer(x), batch_norm(x, rm, rv, w, b, training=False))
    assert np.array_equal(layer.running_mean.data, rm)  # eval leaves the statistics alone
    gx, gw, gb = batch_norm_backward(g, x, w, False, rv, running_mean=rm)
    assert np.array_equal(layer.backward(g), gx)
    assert layer.num_batches_tracked.data == 1


def test_batch_norm_without_running_stats_or_affine_matches_torch():
    x = rng(42).standard_normal((4, 3, 3, 3))
    g = rng(43).standard_normal(x.shape)
    ref = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False).double().eval()
    layer = nn.BatchNorm2d(3, affine=False, track_running_stats=False).astype(np.float64).eval()
    assert layer.state_dict() == {} and list(ref.state_dict()) == []
    tx = t(x)
    ty = ref(tx)  # eval without running statistics uses the batch's
    ty.backward(torch.tensor(g))
    close(layer(x), ty, np.float64)
    close(layer.backward(g), tx.grad, np.float64)


def test_batch_norm_errors():
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel when training"):
        batch_norm(np.zeros((1, 3)), None, None)
    layer = nn.BatchNorm2d(3)
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        layer(np.zeros((1, 3, 1, 1), np.float32))
    assert layer.num_batches_tracked.data == 0
    layer.eval()
    assert layer(np.ones((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)  # fine in eval
    with pytest.raises(ShapeError, match="expects 3 channels"):
        layer(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="BatchNorm2d takes an input of 3 axes"):
        layer(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ShapeError, match=r"weight has shape \(4,\), expected \(3,\)"):
        batch_norm(np.zeros((2, 3)), None, None, np.ones(4))
    with pytest.raises(ShapeError, match="dtypes differ"):
        batch_norm(np.zeros((2, 3), np.float32), None, None, np.ones(3))
    with pytest.raises(ShapeError, match=r"grad_out has shape \(2, 4\), expected \(2, 3\)"):
        batch_norm_backward(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="2 to 5 axes"):
        batch_norm(np.zeros(3), None, None)
    with pytest.raises(ShapeError, match="eval mode"):
        batch_norm(np.zeros((2, 3)), None, None, training=False)


# -- losses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_cross_entropy_matches_torch(scale, dtype):
    r = rng(50)
    logits = (r.standard_normal((6, 5)) * scale).astype(dtype)
    target = r.integers(0, 5, 6)
    tl = t(logits)
    loss = tF.cross_entropy(tl, torch.tensor(target))
    loss.backward()
    ours = softmax_cross_entropy(logits, target)
    assert type(ours) is float and np.isfinite(ours)
    np.testing.assert_allclose(ours, loss.item(), **TOL[dtype])
    close(softmax_cross_entropy_backward(logits, target), tl.grad, dtype)


def test_cross_entropy_finite_differences():
    r = rng(51)
    logits, target = r.standard_normal((4, 7)), np.array([0, 6, 3, 3])
    assert_close_fd(
        softmax_cross_entropy_backward(logits, target),
        numeric_grad(lambda: float(softmax_cross_entropy(logits, target)), logits),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_matches_torch_and_finite_differences(dtype):
    r = rng(52)
    pred, target = r.standard_normal((3, 4, 2)).astype(dtype), r.standard_normal((3, 4, 2))
    target = target.astype(dtype)
    tp = t(pred)
    loss = tF.mse_loss(tp, torch.tensor(target))
    loss.backward()
    np.testing.assert_allclose(mse_loss(pred, target), loss.item(), **TOL[dtype])
    close(mse_loss_backward(pred, target), tp.grad, dtype)
    if dtype == np.float64:
        assert_close_fd(
            mse_loss_backward(pred, target),
            numeric_grad(lambda: float(mse_loss(pred, target)), pred),
        )


def test_loss_objects_are_the_functions():
    r = rng(53)
    logits, target = r.standard_normal((4, 3)).astype(np.float32), np.array([2, 0, 1, 1])
    ce = CrossEntropyLoss()
    assert ce(logits, target) == softmax_cross_entropy(logits, target)
    assert np.array_equal(ce.backward(), softmax_cross_entropy_backward(logits, target))
    mse = MSELoss()
    y = r.standard_normal((4, 3)).astype(np.float32)
    assert mse(logits, y) == mse_loss(logits, y)
    assert np.array_equal(mse.backward(), mse_loss_backward(logits, y))
    assert mse.backward().dtype == np.float32


def test_loss_errors_name_shapes():
    logits = np.zeros((4, 3))
    with pytest.raises(ShapeError, match=r"target has shape \(3,\), expected \(4,\)"):
        softmax_cross_entropy(logits, np.zeros(3, np.int64))
    with pytest.raises(ShapeError, match=r"outside \[0, 3\).*\(4, 3\)"):
        softmax_cross_entropy(logits, np.array([0, 1, 3, 0]))
    with pytest.raises(ShapeError, match=r"from -1"):
        softmax_cross_entropy_backward(logits, np.array([0, -1, 2, 0]))
    with pytest.raises(ShapeError, match="integer class indices"):
        softmax_cross_entropy(logits, np.zeros(4))
    with pytest.raises(ShapeError, match=r"logits must be \(N, classes\)"):
        softmax_cross_entropy(np.zeros(3), np.zeros((), np.int64))
    with pytest.raises(ShapeError, match=r"target has shape \(4, 2\), expected \(4, 3\)"):
        mse_loss(logits, np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="dtypes differ"):
        mse_loss_backward(logits, np.zeros((4, 3), np.float32))


# -- dtype preservation -----------------------------------------------------------------------


def test_float32_stays_float32_everywhere():
    f32 = np.float32
    r = rng(60)
    x = r.standard_normal((3, 4)).astype(f32)
    w = r.standard_normal((2, 4)).astype(f32)
    g = r.standard_normal((3, 2)).astype(f32)
    outputs = [linear(x, w, np.zeros(2, f32)), *linear_backward(g, x, w)]
    for f, f_back, _, _ in ACTIVATIONS.values():
        outputs += [f(x), f_back(x, x)]
    xb = r.standard_normal((3, 4, 2)).astype(f32)
    c = np.ones(4, f32)
    outputs += [batch_norm(xb, c * 0, c.copy(), c, c), *batch_norm_backward(xb, xb, c)]
    outputs += [batch_norm_backward(xb, xb, c, False, c, running_mean=c)[0]]
    outputs += [softmax_cross_entropy_backward(x, np.array([0, 1, 2])), mse_loss_backward(x, x)]
    assert all(o.dtype == f32 for o in outputs), [o.dtype for o in outputs]
    # the loss values are Python floats (computed in float32)
    assert type(softmax_cross_entropy(x, np.array([0, 1, 2]))) is float
    assert type(mse_loss(x + 1, x)) is float
