"""Self-checks of the instrumented reference (tests/reference/instrumented.py).

The reference is what the closed forms are tested against, so it is itself checked here:
its VALUES against torch.nn.functional in float64, and its COUNTS against hand-derived
numbers and against independent tallies (products counted with all-ones convolutions,
worst cases found by enumerating inputs).  Nothing here imports convscope.
"""

from __future__ import annotations

import itertools
import pathlib
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from tests.reference import instrumented as ref
except ImportError:  # tests/ is not a package: import the reference from beside this file
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from reference import instrumented as ref

RTOL = 1e-9
ATOL = 1e-10


def close(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def torch_pad_arg(padding):
    """(before, after) per axis, first axis first -> F.pad's last-axis-first list."""
    out = []
    for before, after in reversed(padding):
        out += [before, after]
    return out


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAXP = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
ADAPT_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
ADAPT_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


# ---------------------------------------------------------------------------------------
# Convolution values
# ---------------------------------------------------------------------------------------


def check_conv_values(shape, cout, k, s, p, d, g, bias, pmode, n, mode, seed=0):
    r = ref.conv_counts(shape, cout, k, s, p, d, g, bias, pmode, n, mode, seed=seed)
    v = r["values"]
    nd = len(shape) - 1
    x = t(v["x"], grad=True)
    w = t(v["w"], grad=True)
    b = t(v["b"], grad=True) if bias else None
    fmode = "constant" if pmode == "zeros" else pmode
    xp = F.pad(x, torch_pad_arg(p), mode=fmode)
    xp.retain_grad()
    y = CONV[nd](xp, w, b, stride=s, padding=0, dilation=d, groups=g)
    y.backward(t(v["gy"]))
    assert r["output_shape"] == tuple(y.shape[1:])
    close(v["y"], y)
    close(v["gw"], w.grad)
    if bias:
        close(v["gb"], b.grad)
    else:
        assert v["gb"] is None and r["backward_bias"] is None
    if mode == "dense":
        close(v["x_padded"], xp)
        close(v["gx"], xp.grad)  # the padded input's gradient, no fold
    else:
        close(v["gx"], x.grad)  # folded onto the real input
    return r


CONV_CASES = [
    # shape, cout, kernel, stride, padding, dilation, groups, bias, padding_mode, batch
    ((1, 5), 1, (3,), (1,), ((0, 0),), (1,), 1, False, "zeros", 1),
    ((2, 7), 4, (3,), (2,), ((1, 2),), (1,), 2, True, "zeros", 2),
    ((3, 9), 3, (2,), (3,), ((2, 0),), (2,), 3, True, "zeros", 1),
    ((2, 6), 2, (3,), (1,), ((2, 1),), (1,), 1, True, "reflect", 2),
    ((2, 6), 4, (3,), (2,), ((1, 2),), (2,), 2, False, "replicate", 1),
    ((1, 5), 2, (4,), (1,), ((3, 2),), (1,), 1, True, "circular", 2),
    ((2, 5, 6), 4, (3, 2), (1, 2), ((1, 1), (0, 2)), (1, 2), 2, True, "zeros", 2),
    ((1, 6, 5), 2, (3, 3), (2, 1), ((2, 1), (1, 1)), (1, 1), 1, False, "zeros", 1),
    ((2, 5, 5), 2, (3, 3), (1, 1), ((1, 1), (2, 1)), (2, 1), 2, True, "reflect", 1),
    ((1, 4, 5), 3, (2, 3), (1, 2), ((1, 0), (2, 2)), (1, 1), 1, True, "replicate", 2),
    ((2, 4, 4), 2, (3, 3), (2, 1), ((2, 2), (1, 3)), (1, 1), 1, False, "circular", 1),
    (
        (2, 4, 3, 4),
        2,
        (2, 2, 3),
        (2, 1, 1),
        ((1, 0), (0, 1), (1, 1)),
        (1, 1, 1),
        2,
        True,
        "zeros",
        1,
    ),
    (
        (1, 3, 4, 3),
        2,
        (2, 3, 2),
        (1, 1, 2),
        ((1, 1), (1, 0), (1, 1)),
        (2, 1, 1),
        1,
        True,
        "reflect",
        1,
    ),
    (
        (1, 3, 3, 3),
        1,
        (2, 2, 2),
        (1, 2, 1),
        ((1, 1), (1, 1), (0, 2)),
        (1, 1, 1),
        1,
        False,
        "replicate",
        2,
    ),
    (
        (1, 3, 3, 4),
        1,
        (2, 2, 2),
        (1, 1, 2),
        ((1, 2), (2, 0), (1, 1)),
        (1, 1, 1),
        1,
        True,
        "circular",
        1,
    ),
]


@pytest.mark.parametrize("mode", ["exact", "dense"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{len(c[0]) - 1}d-{c[8]}")
def test_conv_values_match_torch(case, mode):
    check_conv_values(*case, mode, seed=len(case[0]) * 7 + case[1])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_conv_values_random_configs(data):
    nd = data.draw(st.integers(1, 2))
    groups = data.draw(st.sampled_from([1, 2]))
    cin = groups * data.draw(st.integers(1, 2))
    cout = groups * data.draw(st.integers(1, 2))
    pmode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    spatial, kernel, stride, dil, pad = [], [], [], [], []
    for _ in range(nd):
        L = data.draw(st.integers(2, 6 if nd == 2 else 9))
        k = data.draw(st.integers(1, 3))
        dd = data.draw(st.integers(1, 2))
        ss = data.draw(st.integers(1, 3))
        limit = L - 1 if pmode == "reflect" else (L if pmode == "circular" else 3)
        pb = data.draw(st.integers(0, min(3, limit)))
        pa = data.draw(st.integers(0, min(3, limit)))
        while dd * (k - 1) + 1 > L + pb + pa:
            k -= 1
        spatial.append(L)
        kernel.append(k)
        stride.append(ss)
        dil.append(dd)
        pad.append((pb, pa))
    bias = data.draw(st.booleans())
    batch = data.draw(st.integers(1, 2))
    mode = data.draw(st.sampled_from(["exact", "dense"]))
    check_conv_values(
        (cin, *spatial),
        cout,
        tuple(kernel),
        tuple(stride),
        tuple(pad),
        tuple(dil),
        groups,
        bias,
        pmode,
        batch,
        mode,
        seed=data.draw(st.integers(0, 100)),
    )


# ---------------------------------------------------------------------------------------
# Convolution counts
# ---------------------------------------------------------------------------------------


def test_conv1d_hand_counts():
    # 5 inputs, kernel 3, no padding: 3 outputs of 3 products.
    r = ref.conv_counts((1, 5), 1, (3,), (1,), ((0, 0),), (1,), 1, False, "zeros", 1, "exact")
    assert r["output_shape"] == (1, 3)
    assert r["forward"] == {"mults": 9, "adds": 6}
    # inputs receive 1, 2, 3, 2, 1 products
    assert r["backward_input"] == {"mults": 9, "adds": 4}
    # each of the 3 weights receives 3 products
    assert r["backward_weight"] == {"mults": 9, "adds": 6}
    assert r["backward_bias"] is None

    r = ref.conv_counts((1, 5), 1, (3,), (1,), ((0, 0),), (1,), 1, True, "zeros", 2, "exact")
    assert r["forward"] == {"mults": 18, "adds": 12 + 6}
    assert r["backward_input"] == {"mults": 18, "adds": 8}
    assert r["backward_weight"] == {"mults": 18, "adds": 3 * 5}  # 6 products per weight
    assert r["backward_bias"] == {"adds": 5}  # 6 outputs


def test_conv1d_padding_hand_counts():
    # 3 inputs, kernel 3, padding 1: outputs get 2, 3, 2 real products.
    args = ((1, 3), 1, (3,), (1,), ((1, 1),), (1,), 1, True, "zeros", 1)
    r = ref.conv_counts(*args, "exact")
    assert r["forward"] == {"mults": 7, "adds": 4 + 3}
    assert r["backward_input"] == {"mults": 7, "adds": 1 + 2 + 1}  # 2, 3, 2 products
    assert r["backward_weight"] == {"mults": 7, "adds": 1 + 2 + 1}  # 2, 3, 2 products
    assert r["backward_bias"] == {"adds": 2}
    r = ref.conv_counts(*args, "dense")
    assert r["forward"] == {"mults": 9, "adds": 6 + 3}
    # padded input of 5 receives 1, 2, 3, 2, 1
    assert r["backward_input"] == {"mults": 9, "adds": 4}
    assert r["backward_weight"] == {"mults": 9, "adds": 6}
    # reflect padding: every tap performed; the real entries receive
    # x0: 2 (o0 t1, o1 t0), x1: 3 + 2 mirrored (o0 t0, o2 t2) = 5, x2: 2 -> 1 + 4 + 1 adds
    r = ref.conv_counts(*args[:8], "reflect", 1, "exact")
    assert r["forward"] == {"mults": 9, "adds": 9}
    assert r["backward_input"] == {"mults": 9, "adds": 6}
    assert r["backward_weight"] == {"mults": 9, "adds": 6}


def test_conv_bias_only_outputs_cost_nothing():
    # kernel 1, padding 2 each side: 4 of the 9 outputs receive no product.
    args = ((1, 5), 1, (1,), (1,), ((2, 2),), (1,), 1, True, "zeros", 1)
    r = ref.conv_counts(*args, "exact")
    assert r["forward"] == {"mults": 5, "adds": 5}
    assert r["backward_bias"] == {"adds": 8}
    np.testing.assert_allclose(r["values"]["y"][0, 0, :2], r["values"]["b"][0])
    r = ref.conv_counts(*args, "dense")
    assert r["forward"] == {"mults": 9, "adds": 9}


def ones_product_counts(shape, cout, k, s, p, d, g, n):
    """Independent tally, with all-ones torch convolutions (exact mode, zeros padding)."""
    nd = len(shape) - 1
    x = torch.ones((1,) + tuple(shape), dtype=torch.float64, requires_grad=True)
    w = torch.ones((cout, shape[0] // g) + tuple(k), dtype=torch.float64, requires_grad=True)
    xp = F.pad(x, torch_pad_arg(p))
    # per output: number of real products; zero padding contributes zeros
    y = CONV[nd](xp, w, None, stride=s, dilation=d, groups=g)
    y.sum().backward()
    per_out = y.detach().numpy()
    per_in = x.grad.numpy()  # products reaching each real input entry
    per_w = w.grad.numpy()  # products reaching each weight entry, per image
    fwd_adds = n * (np.maximum(per_out - 1, 0).sum())
    return {
        "forward": {"mults": int(n * per_out.sum()), "adds": int(fwd_adds)},
        "backward_input": {
            "mults": int(n * per_in.sum()),
            "adds": int(n * np.maximum(per_in - 1, 0).sum()),
        },
        "backward_weight": {
            "mults": int(n * per_w.sum()),
            "adds": int(np.maximum(n * per_w - 1, 0).sum()),
        },
        "reached_outputs": int(n * (per_out > 0).sum()),
    }


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[8] == "zeros"])
def test_conv_counts_match_ones_tally(case):
    shape, cout, k, s, p, d, g, bias, _, n = case
    r = ref.conv_counts(shape, cout, k, s, p, d, g, bias, "zeros", n, "exact")
    want = ones_product_counts(shape, cout, k, s, p, d, g, n)
    fwd = dict(want["forward"])
    if bias:
        fwd["adds"] += want["reached_outputs"]
    assert r["forward"] == fwd
    assert r["backward_input"] == want["backward_input"]
    assert r["backward_weight"] == want["backward_weight"]
    # dense mode = exact mode on the explicitly padded input
    padded = (shape[0],) + tuple(L + a + b for L, (a, b) in zip(shape[1:], p))
    nopad = tuple((0, 0) for _ in p)
    r_dense = ref.conv_counts(shape, cout, k, s, p, d, g, bias, "zeros", n, "dense")
    r_flat = ref.conv_counts(padded, cout, k, s, nopad, d, g, bias, "zeros", n, "exact")
    for key in ("forward", "backward_input", "backward_weight", "backward_bias"):
        assert r_dense[key] == r_flat[key]


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[8] != "zeros"])
def test_conv_nonzero_padding_mode_counts(case):
    shape, cout, k, s, p, d, g, bias, pmode, n = case
    exact = ref.conv_counts(shape, cout, k, s, p, d, g, bias, pmode, n, "exact")
    dense = ref.conv_counts(shape, cout, k, s, p, d, g, bias, pmode, n, "dense")
    zeros_dense = ref.conv_counts(shape, cout, k, s, p, d, g, bias, "zeros", n, "dense")
    assert exact["forward"] == dense["forward"] == zeros_dense["forward"]
    assert exact["backward_weight"] == dense["backward_weight"]
    assert dense["backward_input"] == zeros_dense["backward_input"]
    # the same products reach the (fewer) real entries: same mults, more adds
    assert exact["backward_input"]["mults"] == dense["backward_input"]["mults"]
    # adds = products - entries reached (a reached entry has a nonzero random gradient)
    reached = int(np.count_nonzero(exact["values"]["gx"]))
    assert exact["backward_input"]["adds"] == exact["backward_input"]["mults"] - reached


def test_conv_counts_are_ints_and_keys():
    r = ref.conv_counts(
        (2, 4, 4), 2, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, "zeros", 1, "exact"
    )
    for key in ("forward", "backward_input", "backward_weight"):
        assert set(r[key]) == {"mults", "adds"}
        assert all(type(v) is int for v in r[key].values())
    assert set(r["backward_bias"]) == {"adds"}


# ---------------------------------------------------------------------------------------
# Transposed convolution
# ---------------------------------------------------------------------------------------

CONV_T_CASES = [
    # shape, cout, kernel, stride, padding, output_padding, dilation, groups, bias, batch
    ((1, 2), 1, (3,), (2,), (0,), (0,), (1,), 1, True, 1),
    ((1, 2), 1, (3,), (2,), (1,), (0,), (1,), 1, True, 1),
    ((2, 4), 4, (3,), (2,), (1,), (1,), (1,), 2, True, 2),
    ((2, 3), 2, (2,), (3,), (0,), (2,), (1,), 1, False, 1),
    ((2, 4), 2, (3,), (2,), (2,), (1,), (2,), 1, True, 1),
    ((1, 3), 1, (1,), (3,), (1,), (2,), (1,), 1, True, 2),
    ((2, 3, 3), 4, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2), 2, True, 1),
    ((1, 3, 2), 2, (2, 3), (2, 3), (0, 1), (1, 2), (1, 1), 1, False, 2),
    ((2, 2, 2, 3), 2, (2, 2, 2), (2, 1, 2), (1, 0, 1), (1, 0, 0), (1, 1, 1), 2, True, 1),
]


@pytest.mark.parametrize("mode", ["exact", "dense"])
@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose_values_match_torch(case, mode):
    shape, cout, k, s, p, op, d, g, bias, n = case
    r = ref.conv_transpose_counts(shape, cout, k, s, p, op, d, g, bias, n, mode, seed=3)
    v = r["values"]
    nd = len(shape) - 1
    x = t(v["x"], grad=True)
    w = t(v["w"], grad=True)
    b = t(v["b"], grad=True) if bias else None
    y = CONV_T[nd](x, w, b, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
    y.backward(t(v["gy"]))
    assert r["output_shape"] == tuple(y.shape[1:])
    close(v["y"], y)
    close(v["gx"], x.grad)
    close(v["gw"], w.grad)
    if bias:
        close(v["gb"], b.grad)


def test_conv_transpose_hand_counts():
    # L=2, k=3, s=2, p=0: outputs 0..4 get 1, 1, 2, 1, 1 products.
    r = ref.conv_transpose_counts((1, 2), 1, (3,), (2,), (0,), (0,), (1,), 1, True, 1, "exact")
    assert r["output_shape"] == (1, 5)
    assert r["forward"] == {"mults": 6, "adds": 1 + 5}
    assert r["backward_input"] == {"mults": 6, "adds": 4}
    assert r["backward_weight"] == {"mults": 6, "adds": 3}
    assert r["backward_bias"] == {"adds": 4}
    # p=1 crops the first and last uncropped positions: outputs get 1, 2, 1.
    args = ((1, 2), 1, (3,), (2,), (1,), (0,), (1,), 1, True, 1)
    r = ref.conv_transpose_counts(*args, "exact")
    assert r["output_shape"] == (1, 3)
    assert r["forward"] == {"mults": 4, "adds": 1 + 3}
    assert r["backward_input"] == {"mults": 4, "adds": 2}
    assert r["backward_weight"] == {"mults": 4, "adds": 1}
    assert r["backward_bias"] == {"adds": 2}
    r = ref.conv_transpose_counts(*args, "dense")
    assert r["forward"] == {"mults": 6, "adds": 1 + 5}  # bias on the 5 buffer entries
    assert r["backward_input"] == {"mults": 6, "adds": 4}
    assert r["backward_weight"] == {"mults": 6, "adds": 3}
    assert r["backward_bias"] == {"adds": 2}


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose_is_conv_with_roles_swapped(case):
    """Forward of the transposed conv = input gradient of the matching conv, and
    its input gradient = that conv's forward (exact mode, counts)."""
    shape, cout, k, s, p, op, d, g, bias, n = case
    rt = ref.conv_transpose_counts(shape, cout, k, s, p, op, d, g, False, n, "exact")
    conv_in = (cout,) + rt["output_shape"][1:]
    pads = tuple((pp, pp) for pp in p)
    rc = ref.conv_counts(conv_in, shape[0], k, s, pads, d, g, False, "zeros", n, "exact")
    assert rc["output_shape"] == tuple(shape)
    assert rt["forward"] == rc["backward_input"]
    assert rt["backward_input"] == rc["forward"]
    assert rt["backward_weight"] == rc["backward_weight"]


# ---------------------------------------------------------------------------------------
# Max pool
# ---------------------------------------------------------------------------------------

MAX_CASES = [
    # shape, kernel, stride, padding, dilation, ceil_mode, batch
    ((1, 5), (2,), (2,), (0,), (1,), True, 1),
    ((1, 5), (2,), (2,), (1,), (1,), True, 1),  # ceil_mode drops the last window
    ((2, 7), (3,), (2,), (1,), (1,), True, 2),
    ((1, 8), (3,), (3,), (1,), (2,), False, 1),
    ((2, 9), (2,), (3,), (1,), (3,), True, 1),
    ((2, 5, 6), (3, 2), (2, 2), (1, 1), (1, 1), True, 1),
    ((1, 6, 7), (3, 3), (2, 3), (1, 1), (2, 1), True, 2),
    ((1, 5, 5), (2, 3), (1, 2), (0, 1), (1, 2), False, 1),
    ((1, 4, 5, 4), (2, 3, 2), (2, 2, 1), (1, 1, 0), (1, 1, 2), True, 1),
]


@pytest.mark.parametrize("data", ["random", "ties"])
@pytest.mark.parametrize("mode", ["exact", "dense"])
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_values_match_torch(case, mode, data):
    shape, k, s, p, d, ceil, n = case
    r = ref.max_pool_counts(shape, k, s, p, d, ceil, n, mode, seed=5, data=data)
    v = r["values"]
    if data == "ties":
        assert set(np.unique(v["x"])) <= {0.0, 1.0, 2.0}
    nd = len(shape) - 1
    x = t(v["x"], grad=True)
    y = MAXP[nd](x, k, s, p, d, ceil_mode=ceil)
    y.backward(t(v["gy"]))
    assert r["output_shape"] == tuple(y.shape[1:])
    close(v["y"], y)
    gx = v["gx"]
    if mode == "dense":
        inner = (slice(None), slice(None)) + tuple(slice(pp, pp + L) for pp, L in zip(p, shape[1:]))
        outer = gx.copy()
        outer[inner] = 0.0
        assert not outer.any()  # nothing routed to the -inf padding
        gx = gx[inner]
    close(gx, x.grad)


def test_max_pool_hand_counts():
    r = ref.max_pool_counts((1, 5), (2,), (2,), (0,), (1,), True, 1, "exact")
    assert r["output_shape"] == (1, 3)  # windows [0,1], [2,3], [4]
    assert r["forward"] == {"compares": 2}
    assert r["backward_input"] == {"adds": 0}
    # L=5, k=2, s=2, p=1, ceil: a 4th window would start at padded 6 = L + p: dropped
    r = ref.max_pool_counts((1, 5), (2,), (2,), (1,), (1,), True, 1, "exact")
    assert r["output_shape"] == (1, 3)
    assert r["forward"] == {"compares": 0 + 1 + 1}
    # L=4, k=3, s=2, p=1, ceil: padded windows [0..2], [2..4], [4..5] (6 beyond)
    r = ref.max_pool_counts((1, 4), (3,), (2,), (1,), (1,), True, 1, "exact")
    assert r["output_shape"] == (1, 3)
    assert r["forward"] == {"compares": 1 + 2 + 0}
    r = ref.max_pool_counts((1, 4), (3,), (2,), (1,), (1,), True, 1, "dense")
    assert r["forward"] == {"compares": 2 + 2 + 1}
    # windows overlapping on one position: data [0, 1, 9, 1, 0], k=3, s=2
    x = np.array([[[0.0, 1.0, 9.0, 1.0, 0.0]]])
    r = ref.max_pool_counts((1, 5), (3,), (2,), (0,), (1,), False, 1, "exact", data=x)
    assert r["backward_input"] == {"adds": 1}
    assert ref.max_pool_worst_backward_adds((1, 5), (3,), (2,), (0,), (1,), False, 1, "exact") == 1
    # ties: the first maximum in scan order takes the gradient
    x = np.array([[[2.0, 2.0, 2.0]]])
    r = ref.max_pool_counts((1, 3), (2,), (1,), (0,), (1,), False, 1, "exact", data=x)
    gy, gx = r["values"]["gy"][0, 0], r["values"]["gx"][0, 0]
    np.testing.assert_allclose(gx, [gy[0], gy[1], 0.0])
    assert r["backward_input"] == {"adds": 0}


def _enumerate_worst(shape, kernel, stride, padding, dilation, ceil, mode):
    """Largest backward adds over every ordering of distinct input values."""
    size = int(np.prod(shape[1:]))
    best = 0
    for perm in itertools.permutations(range(size)):
        x = np.array(perm, dtype=np.float64).reshape((1, 1) + tuple(shape[1:]))
        r = ref.max_pool_counts(
            (1,) + tuple(shape[1:]), kernel, stride, padding, dilation, ceil, 1, mode, data=x
        )
        best = max(best, r["backward_input"]["adds"])
    return best


@pytest.mark.parametrize(
    "case",
    [
        ((1, 6), (3,), (1,), (0,), (1,), False),
        ((1, 5), (3,), (2,), (1,), (1,), True),
        ((1, 6), (2,), (1,), (1,), (2,), True),
        ((1, 2, 3), (2, 2), (1, 1), (0, 0), (1, 1), False),
        ((1, 2, 3), (2, 2), (1, 2), (1, 1), (1, 1), True),
    ],
)
def test_max_pool_worst_case_matches_enumeration(case):
    shape, k, s, p, d, ceil = case
    worst = ref.max_pool_worst_backward_adds(shape, k, s, p, d, ceil, 1, "exact")
    assert worst == _enumerate_worst(shape, k, s, p, d, ceil, "exact")
    assert (
        ref.max_pool_worst_backward_adds((3,) + shape[1:], k, s, p, d, ceil, 2, "exact")
        == 6 * worst
    )


def test_max_pool_worst_case_examples():
    # 3x3, k=2, s=1: 4 windows all hit by the centre -> 3
    assert (
        ref.max_pool_worst_backward_adds(
            (1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1), False, 1, "exact"
        )
        == 3
    )
    # non-overlapping windows -> 0
    assert (
        ref.max_pool_worst_backward_adds(
            (2, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False, 3, "exact"
        )
        == 0
    )
    # the centre value being the maximum realises it
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0
    r = ref.max_pool_counts((1, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1), False, 1, "exact", data=x)
    assert r["backward_input"] == {"adds": 3}
    # L=6, k=3, s=1: 4 windows, hit by {2, 3} -> 2
    assert ref.max_pool_worst_backward_adds((1, 6), (3,), (1,), (0,), (1,), False, 1, "exact") == 2


# ---------------------------------------------------------------------------------------
# Average pool
# ---------------------------------------------------------------------------------------

AVG_CASES = [
    # shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, batch
    ((1, 4), (3,), (2,), (1,), True, True, None, 1),
    ((1, 5), (2,), (2,), (1,), True, True, None, 1),  # ceil_mode drops the last window
    ((2, 5, 3), (2, 2), (2, 2), (1, 1), True, False, None, 1),
    ((2, 7), (3,), (2,), (1,), True, False, None, 2),
    ((1, 8), (4,), (3,), (2,), False, True, None, 1),
    ((2, 5, 6), (3, 2), (2, 2), (1, 1), True, True, None, 1),
    ((1, 6, 7), (3, 3), (2, 3), (1, 1), True, False, None, 2),
    ((1, 5, 5), (2, 3), (1, 2), (0, 1), False, True, 5, 1),
    ((1, 5, 5), (3, 3), (2, 2), (1, 1), True, False, 4, 1),
    ((1, 4, 5, 4), (2, 3, 2), (2, 2, 1), (1, 1, 0), True, True, None, 1),
    ((1, 4, 3, 5), (2, 2, 3), (2, 1, 2), (1, 0, 1), True, False, 7, 1),
]


@pytest.mark.parametrize("mode", ["exact", "dense"])
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool_values_match_torch(case, mode):
    shape, k, s, p, ceil, cip, div, n = case
    r = ref.avg_pool_counts(shape, k, s, p, ceil, cip, div, n, mode, seed=11)
    v = r["values"]
    nd = len(shape) - 1
    x = t(v["x"], grad=True)
    if nd == 1:  # avg_pool1d has no divisor_override: run it as a 1 x L 2-D pool
        y = F.avg_pool2d(x.unsqueeze(2), (1,) + k, (1,) + s, (0,) + p, ceil, cip, div).squeeze(2)
    elif nd == 2:
        y = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    else:
        y = F.avg_pool3d(x, k, s, p, ceil, cip, div)
    y.backward(t(v["gy"]))
    assert r["output_shape"] == tuple(y.shape[1:])
    close(v["y"], y)
    gx = v["gx"]
    if mode == "dense":
        inner = (slice(None), slice(None)) + tuple(slice(pp, pp + L) for pp, L in zip(p, shape[1:]))
        gx = gx[inner]
    close(gx, x.grad)


def test_avg_pool_hand_counts():
    # L=4, k=3, s=2, p=1, ceil: real windows [0,1], [1,2,3], [3]
    args = ((1, 4), (3,), (2,), (1,), True, True, None, 1)
    r = ref.avg_pool_counts(*args, "exact")
    assert r["output_shape"] == (1, 3)
    assert r["forward"] == {"adds": 1 + 2 + 0, "divides": 3}
    assert r["backward_input"] == {"adds": 2, "divides": 3}  # entries 1 and 3 get 2 terms
    # divisors 3, 3, 2 (window 3 stops at the padded input's end)
    x, y = r["values"]["x"][0, 0], r["values"]["y"][0, 0]
    np.testing.assert_allclose(y, [(x[0] + x[1]) / 3, (x[1] + x[2] + x[3]) / 3, x[3] / 2])
    # dense: padded windows {0,1,2}, {2,3,4}, {4,5}
    r = ref.avg_pool_counts(*args, "dense")
    assert r["forward"] == {"adds": 2 + 2 + 1, "divides": 3}
    assert r["backward_input"] == {"adds": 2, "divides": 3}


# ---------------------------------------------------------------------------------------
# Adaptive pools
# ---------------------------------------------------------------------------------------

ADAPT_CASES = [
    ((2, 7), (3,)),
    ((1, 5), (5,)),
    ((1, 3), (5,)),
    ((2, 5, 7), (3, 4)),
    ((1, 4, 3), (6, 2)),
    ((1, 3, 4, 5), (2, 3, 2)),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", ADAPT_CASES)
def test_adaptive_values_match_torch(case, kind):
    shape, out = case
    r = ref.adaptive_pool_counts(kind, shape, out, 2, seed=13)
    v = r["values"]
    nd = len(shape) - 1
    x = t(v["x"], grad=True)
    fn = (ADAPT_MAX if kind == "max" else ADAPT_AVG)[nd]
    y = fn(x, out)
    y.backward(t(v["gy"]))
    assert r["output_shape"] == tuple(y.shape[1:])
    close(v["y"], y)
    close(v["gx"], x.grad)


def test_adaptive_hand_counts():
    # L=5, O=3: windows [0,2), [1,4), [3,5)
    r = ref.adaptive_pool_counts("avg", (1, 5), (3,), 1)
    assert r["forward"] == {"adds": 1 + 2 + 1, "divides": 3}
    assert r["backward_input"] == {"adds": 2, "divides": 3}
    r = ref.adaptive_pool_counts("max", (1, 5), (3,), 1)
    assert r["forward"] == {"compares": 4}
    assert ref.adaptive_max_worst_backward_adds((1, 5), (3,), 1) == 1
    # O > L: windows repeat; L=2, O=4: [0,1), [0,1), [1,2), [1,2) -> 4 - 2 per channel
    assert ref.adaptive_max_worst_backward_adds((1, 2), (4,), 2) == 2 * (4 - 2)


def test_adaptive_max_worst_matches_enumeration():
    for shape, out in [((1, 5), (3,)), ((1, 6), (4,)), ((1, 2, 3), (2, 2))]:
        size = int(np.prod(shape[1:]))
        best = 0
        for perm in itertools.permutations(range(size)):
            x = np.array(perm, dtype=np.float64).reshape((1,) + shape)
            r = ref.adaptive_pool_counts("max", shape, out, 1, data=x)
            best = max(best, r["backward_input"]["adds"])
        assert ref.adaptive_max_worst_backward_adds(shape, out, 1) == best


# ---------------------------------------------------------------------------------------
# Linear, BatchNorm, activations, dropout, add
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, fout, bias, n", [((4,), 3, True, 2), ((2, 3, 5), 2, False, 1), ((1,), 1, True, 3)]
)
def test_linear_values_and_counts(shape, fout, bias, n):
    r = ref.linear_counts(shape, fout, bias, n, seed=2)
    v = r["values"]
    x, w = t(v["x"], grad=True), t(v["w"], grad=True)
    b = t(v["b"], grad=True) if bias else None
    y = F.linear(x, w, b)
    y.backward(t(v["gy"]))
    close(v["y"], y)
    close(v["gx"], x.grad)
    close(v["gw"], w.grad)
    if bias:
        close(v["gb"], b.grad)
    fin = shape[-1]
    rows = n * int(np.prod(shape[:-1]))
    # hand rule from docs/counting.md, instantiated
    assert r["forward"] == {"mults": rows * fin * fout, "adds": rows * fout * (fin - 1 + bias)}
    assert r["backward_input"] == {"mults": rows * fin * fout, "adds": rows * fin * (fout - 1)}
    assert r["backward_weight"] == {"mults": rows * fin * fout, "adds": fin * fout * (rows - 1)}
    assert r["backward_bias"] == ({"adds": fout * (rows - 1)} if bias else None)


def test_linear_hand_counts():
    r = ref.linear_counts((3,), 2, True, 1)
    assert r["forward"] == {"mults": 6, "adds": 2 * 2 + 2}
    assert r["backward_input"] == {"mults": 6, "adds": 3}
    assert r["backward_weight"] == {"mults": 6, "adds": 0}
    assert r["backward_bias"] == {"adds": 0}


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, n", [((3, 4), 2), ((2, 2, 3), 3), ((2, 2, 1, 2), 1)])
def test_batchnorm_values(shape, n, affine):
    r = ref.batchnorm_counts(shape, affine, n, seed=4)
    v = r["values"]
    x = t(v["x"], grad=True)
    g = t(v["gamma"], grad=True) if affine else None
    b = t(v["beta"], grad=True) if affine else None
    y = F.batch_norm(x, None, None, g, b, training=True, eps=1e-5)
    y.backward(t(v["gy"]))
    np.testing.assert_allclose(v["y"], y.detach().numpy(), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(v["gx"], x.grad.numpy(), rtol=1e-7, atol=1e-8)
    if affine:
        np.testing.assert_allclose(v["gw"], g.grad.numpy(), rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(v["gb"], b.grad.numpy(), rtol=1e-8, atol=1e-9)
    else:
        assert r["backward_weight"] is None and r["backward_bias"] is None


def test_batchnorm_hand_counts():
    # m = N * spatial = 2 * 2 = 4 values per channel, 2 channels
    r = ref.batchnorm_counts((2, 2), True, 2)
    per = {
        "mults": 4 + 4 + 4,
        "adds": 3 + 4 + 3 + 1 + 4,
        "compares": 0,
        "divides": 3,
        "specials": 1,
    }
    assert r["forward"] == {k: 2 * v for k, v in per.items()}
    per = {"mults": 4 + 4 + 12, "adds": 3 + 3 + 8, "compares": 0, "divides": 1, "specials": 0}
    assert r["backward_input"] == {k: 2 * v for k, v in per.items()}
    assert r["backward_weight"] == {
        "mults": 8,
        "adds": 6,
        "compares": 0,
        "divides": 0,
        "specials": 0,
    }
    assert r["backward_bias"] == {"mults": 0, "adds": 6, "compares": 0, "divides": 0, "specials": 0}
    r = ref.batchnorm_counts((2, 2), False, 2)
    assert r["forward"]["mults"] == 2 * 8 and r["forward"]["adds"] == 2 * 11
    assert r["backward_input"] == {
        "mults": 32,
        "adds": 28,
        "compares": 0,
        "divides": 2,
        "specials": 0,
    }


TORCH_ACT = {
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
}

# per element: (forward, backward) as {key: count}, from docs/counting.md
ACT_PER_ELEMENT = {
    "relu": ({"compares": 1}, {"compares": 1}),
    "relu6": ({"compares": 2}, {"compares": 2}),
    "leaky_relu": ({"compares": 1, "mults": 1}, {"compares": 1, "mults": 1}),
    "sigmoid": ({"specials": 1, "adds": 1, "divides": 1}, {"adds": 1, "mults": 2}),
    "tanh": ({"specials": 1}, {"mults": 2, "adds": 1}),
    "silu": (
        {"specials": 1, "adds": 1, "divides": 1},
        {"specials": 1, "divides": 1, "adds": 3, "mults": 3},
    ),
    "gelu": ({"specials": 1, "adds": 1, "mults": 3}, {"specials": 2, "mults": 7, "adds": 2}),
}


@pytest.mark.parametrize("name", sorted(TORCH_ACT))
def test_activation_values_and_counts(name):
    shape, n = (2, 3, 4), 2
    r = ref.activation_counts(name, shape, n, negative_slope=0.2, seed=6)
    v = r["values"]
    x = t(v["x"], grad=True)
    y = TORCH_ACT[name](x)
    y.backward(t(v["gy"]))
    close(v["y"], y)
    close(v["gx"], x.grad)
    elems = n * int(np.prod(shape))
    for got, per in zip((r["forward"], r["backward_input"]), ACT_PER_ELEMENT[name]):
        assert set(got) == set(ref.COUNT_KEYS)
        assert got == {k: elems * per.get(k, 0) for k in ref.COUNT_KEYS}
    if name == "relu6":
        assert (v["x"] > 6).any()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout(p):
    r = ref.dropout_counts((3, 4), 2, p, seed=1)
    v = r["values"]
    np.testing.assert_allclose(v["y"], v["x"] * v["mask"])
    np.testing.assert_allclose(v["gx"], v["gy"] * v["mask"])
    zero = {k: 0 for k in ref.COUNT_KEYS}
    assert r["forward"] == {**zero, "mults": 24}
    assert r["backward_input"] == {**zero, "mults": 24}
    r = ref.dropout_counts((3, 4), 2, p, training=False)
    assert r["forward"] == zero and r["backward_input"] == zero


@pytest.mark.parametrize("k", [1, 2, 4])
def test_add(k):
    r = ref.add_counts((2, 3), k, 2, seed=8)
    v = r["values"]
    np.testing.assert_allclose(v["y"], np.sum(v["xs"], axis=0))
    for g in v["gxs"]:
        np.testing.assert_array_equal(g, v["gy"])
    zero = {kk: 0 for kk in ref.COUNT_KEYS}
    assert r["forward"] == {**zero, "adds": 12 * (k - 1)}
    assert r["backward_input"] == zero


def test_counted_scalar_rules():
    with ref.counting() as c:
        a, b = ref.Counted(2.0), ref.Counted(3.0)
        _ = a * b + 1.0 - b / a
        _ = -a
        _ = a > b
        _ = 2.0 * a
    assert c.as_dict() == {"mults": 2, "adds": 2, "compares": 1, "divides": 1, "specials": 0}


@pytest.mark.parametrize("case", CONV_T_CASES)
def test_conv_transpose_dense_mults_are_torchvision_macs(case):
    shape, cout, k, s, p, op, d, g, bias, n = case
    r = ref.conv_transpose_counts(shape, cout, k, s, p, op, d, g, bias, n, "dense")
    macs = n * shape[0] * (cout // g) * int(np.prod(k)) * int(np.prod(shape[1:]))
    assert r["forward"]["mults"] == macs


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_dense_mults_are_torchvision_macs(case):
    shape, cout, k, s, p, d, g, bias, pmode, n = case
    r = ref.conv_counts(shape, cout, k, s, p, d, g, bias, pmode, n, "dense")
    out = r["output_shape"]
    macs = n * int(np.prod(out)) * (shape[0] // g) * int(np.prod(k))
    assert r["forward"]["mults"] == macs
