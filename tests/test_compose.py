"""Composition of stacked layers into one convolution, checked against brute force (impulses
through the chain), the engine and PyTorch; refusals; inner padding; re-parameterisation."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convscope import NotComposableError, compose, nn
from convscope.cli import main
from convscope.compose import (
    compare_cost,
    compose_spec,
    fold_batchnorm,
    merge_branches,
    parse_chain,
)
from convscope.geometry import prod

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TORCH_CONV = (F.conv1d, F.conv2d, F.conv3d)
TORCH_AVG = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)


def f64(*layers):
    for layer in layers:
        layer.astype(np.float64)
    return list(layers)


def run_chain(layers, x):
    for layer in layers:
        x = layer.forward(x)
    return x


def torch_layer(layer, x):
    """One layer in PyTorch from its spec and arrays: the independent oracle."""
    spec = layer.spec
    if spec.name.startswith("AvgPool"):
        return TORCH_AVG[spec.ndim - 1](x, spec.kernel_size, spec.stride, spec.padding)
    pads = [v for pair in reversed(spec.padding) for v in pair]
    x = F.pad(x, pads)
    bias = None if layer.bias is None else torch.from_numpy(layer.bias.data)
    weight = torch.from_numpy(layer.weight.data)
    return TORCH_CONV[spec.ndim - 1](x, weight, bias, spec.stride, 0, spec.dilation, spec.groups)


def torch_chain(layers, x):
    t = torch.from_numpy(x)
    for layer in layers:
        t = torch_layer(layer, t)
    return t.numpy()


def random_chain(rng, ndim, length=None, pad_first=True):
    """A random chain of convolutions (groups, strides, dilations, biases) and a fitting input."""
    while True:
        c = int(rng.choice([1, 2, 4, 6]))
        c0, layers = c, []
        for i in range(length or int(rng.integers(2, 4))):
            g = int(rng.choice([g for g in (1, 2, 3, 4, 6) if c % g == 0]))
            out = g * int(rng.integers(1, 3)) * (1 if g > 1 else int(rng.choice([1, 2, 3])))
            k = tuple(int(v) for v in rng.integers(1, 4, ndim))
            s = tuple(int(v) for v in rng.integers(1, 3, ndim))
            d = tuple(int(v) for v in rng.integers(1, 3, ndim))
            p = 0
            if i == 0 and pad_first:
                p = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2)))
            layers.append(CONVS[ndim - 1](c, out, k, s, p, d, g, bool(rng.integers(0, 2))))
            c = out
        shape = (c0, *([{1: 40, 2: 18, 3: 11}[ndim]] * ndim))
        try:
            nn.Sequential(*layers).output_shape(shape)
        except ValueError:
            continue
        return f64(*layers), shape


# -- spec level ---------------------------------------------------------------------------------


def test_seed_two_5x5_at_stride_1_are_one_9x9():
    result = compose_spec([nn.Conv2d(3, 8, 5), nn.Conv2d(8, 8, 5)])
    assert result.kernel == (9, 9) and result.spec.stride == (1, 1)
    assert result.spec.dilation == (1, 1) and result.exact
    assert (result.spec.in_channels, result.spec.out_channels) == (3, 8)


def footprint(layers, shape, out_index):
    """The input positions that reach one output, found by pushing a one-hot output gradient
    back through the chain with every weight 1 (all paths positive, so none cancel)."""
    for layer in layers:
        layer.weight.data = np.ones(layer.weight.shape)
        if layer.bias is not None:
            layer.bias.data = np.zeros(layer.bias.shape)
    x = np.zeros((1, *shape))
    y = run_chain(layers, x)
    g = np.zeros_like(y)
    g[(0, 0, *out_index)] = 1.0
    for layer in reversed(layers):
        g = layer.backward(g)
    return {tuple(p) for p in np.argwhere(g[0].sum(axis=0) > 0)}


@pytest.mark.parametrize("seed", range(12))
def test_spec_matches_the_impulse_footprint(seed):
    rng = np.random.default_rng(seed)
    ndim = 1 + seed % 2
    layers, shape = random_chain(rng, ndim, pad_first=False)
    spec = compose_spec(layers).spec
    origin = footprint(layers, shape, (0,) * ndim)
    for a in range(ndim):
        offsets = sorted({p[a] for p in origin})
        # the single layer spans exactly the footprint, on its dilation's grid
        assert offsets[0] == 0
        assert offsets[-1] == spec.dilation[a] * (spec.kernel_size[a] - 1)
        assert math.gcd(*offsets) in (0, spec.dilation[a])
        if len(offsets) > 1:
            assert math.gcd(*offsets) == spec.dilation[a]
        # the next output along this axis reads the same footprint shifted by the stride
        if nn.Sequential(*layers).output_shape(shape)[a + 1] > 1:
            step = tuple(int(i == a) for i in range(ndim))
            shifted = footprint(layers, shape, step)
            expect = {tuple(v + spec.stride[a] * (i == a) for i, v in enumerate(p)) for p in origin}
            assert shifted == expect
    # and the composed weight (all ones in) is non-zero exactly on the footprint
    single = compose(layers)
    support = np.argwhere(np.abs(single.weight.data).sum(axis=(0, 1)) > 0) * spec.dilation
    assert {tuple(p) for p in support} == origin


def test_general_formula_and_dilated_storage():
    # K = d1·(k1 − 1) + s1·d2·(k2 − 1) + 1 with a common factor stored as a dilation
    spec = compose_spec([nn.Conv1d(1, 1, 3, dilation=2), nn.Conv1d(1, 1, 3, stride=1, dilation=4)])
    assert spec.span == (2 * 2 + 1 * 4 * 2 + 1,) and spec.spec.dilation == (2,)
    assert spec.kernel == (7,)
    strided = compose_spec([nn.Conv1d(1, 1, 3, stride=2), nn.Conv1d(1, 1, 5, stride=3)])
    assert strided.span == (1 * 2 + 2 * 1 * 4 + 1,) and strided.spec.stride == (6,)
    # a 1-tap first layer leaves only the second layer's grid: dilation s1·d2
    spaced = compose_spec([nn.Conv1d(1, 1, 1, stride=3), nn.Conv1d(1, 1, 2)])
    assert spaced.spec.dilation == (3,) and spaced.kernel == (2,)


# -- weight level --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(18))
def test_weights_equal_the_chain_in_the_engine_and_in_torch(seed):
    rng = np.random.default_rng(100 + seed)
    ndim = 1 + seed % 3
    layers, shape = random_chain(rng, ndim)
    single = compose(layers)
    assert single.weight.data.dtype == np.float64
    x = rng.standard_normal((2, *shape))
    chain = run_chain(layers, x)
    assert chain.shape == single.forward(x).shape
    np.testing.assert_allclose(single.forward(x), chain, rtol=0, atol=1e-12)
    np.testing.assert_allclose(torch_chain([single], x), torch_chain(layers, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(torch_chain(layers, x), chain, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "groups, channels, expected",
    [
        ((4, 4), (4, 4, 4), 4),
        ((4, 2), (4, 8, 4), 2),
        ((2, 3), (6, 6, 6), 1),
        ((1, 4), (4, 8, 4), 1),
    ],
)
def test_groups_compose_within_the_groups_that_line_up(groups, channels, expected):
    rng = np.random.default_rng(7)
    c0, c1, c2 = channels
    layers = f64(nn.Conv2d(c0, c1, 3, groups=groups[0]), nn.Conv2d(c1, c2, 2, groups=groups[1]))
    single = compose(layers)
    assert single.spec.groups == expected
    x = rng.standard_normal((1, c0, 9, 9))
    np.testing.assert_allclose(single.forward(x), run_chain(layers, x), rtol=0, atol=1e-12)


def test_dtype_is_preserved():
    single = compose([nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 3)])
    assert single.weight.data.dtype == np.float32 and single.bias.data.dtype == np.float32


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "middle, words",
    [
        (nn.ReLU(), ["layer 2 (ReLU)", "not linear"]),
        (nn.GELU(), ["layer 2 (GELU)", "not linear"]),
        (nn.MaxPool2d(2), ["layer 2 (MaxPool2d)", "max is not linear"]),
        (nn.BatchNorm2d(4), ["layer 2 (BatchNorm2d)", "training mode", ".eval()"]),
        (nn.Dropout(), ["layer 2 (Dropout)"]),
    ],
)
def test_nonlinear_layers_are_refused_by_name(middle, words):
    with pytest.raises(NotComposableError) as info:
        compose([nn.Conv2d(1, 4, 3), middle, nn.Conv2d(4, 1, 3)])
    assert isinstance(info.value, ValueError)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_mismatched_chains_are_refused():
    with pytest.raises(NotComposableError, match="layer 2 .* takes 3 channels but layer 1 gives 4"):
        compose([nn.Conv2d(1, 4, 3), nn.Conv2d(3, 1, 3)])
    with pytest.raises(NotComposableError, match="2-D but the chain before it is 1-D"):
        compose([nn.Conv1d(1, 1, 3), nn.Conv2d(1, 1, 3)])
    with pytest.raises(NotComposableError, match="at least one layer"):
        compose([])
    with pytest.raises(NotComposableError, match="no channel count"):
        compose([nn.AvgPool2d(2)])


# -- inner padding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        # (ndim, [(k, s, p, d, bias), ...], input spatial)
        (2, [(3, 1, 1, 1, True), (3, 1, 1, 1, True)], 8),
        (2, [(3, 2, 0, 1, False), (3, 1, 2, 1, False), (2, 1, 1, 2, True)], 15),
        (1, [(1, 1, 0, 1, False), (3, 1, 1, 1, False)], 9),  # pads reach only zeros: exact
        (1, [(1, 1, 0, 1, True), (3, 1, 1, 1, False)], 9),  # ... unless a bias feeds them
        (1, [(3, 2, 1, 1, False), (3, 2, ((0, 2),), 1, True)], 17),
        (3, [(2, 1, 0, 1, True), (3, 2, 1, 1, True)], 6),
    ],
)
def test_inner_padding_reports_exactly_the_positions_that_differ(config):
    ndim, layout, size = config
    rng = np.random.default_rng(3)
    layers = f64(*(CONVS[ndim - 1](2, 2, k, s, p, d, bias=b) for k, s, p, d, b in layout))
    for layer in layers:
        if layer.bias is not None:
            layer.bias.data = rng.standard_normal(layer.bias.shape)
    shape = (2, *(size,) * ndim)
    result = compose_spec(layers, shape)
    assert not result.exact and result.inner_padding
    with pytest.raises(NotComposableError, match="move_padding=True"):
        compose(layers, shape)
    single = compose(layers, shape, move_padding=True)
    x = rng.standard_normal((3, *shape))
    diff = np.abs(single.forward(x) - run_chain(layers, x)).max(axis=(0, 1))
    assert {tuple(p) for p in np.argwhere(diff > 1e-9)} == set(result.differing)
    # the exact alternative: the same chain with all the padding on its first layer
    moved = f64(
        *(
            CONVS[ndim - 1](2, 2, k, s, single.spec.padding if i == 0 else 0, d, bias=b)
            for i, (k, s, _, d, b) in enumerate(layout)
        )
    )
    for new, old in zip(moved, layers):
        new.load_state_dict(old.state_dict())
    np.testing.assert_allclose(single.forward(x), run_chain(moved, x), rtol=0, atol=1e-12)


# -- average pooling ------------------------------------------------------------------------------


def test_average_pool_composes_as_a_constant_depthwise_kernel():
    rng = np.random.default_rng(5)
    layers = f64(nn.Conv2d(3, 4, 3, stride=2), nn.AvgPool2d(2), nn.Conv2d(4, 2, 3, dilation=2))
    single = compose(layers)
    # K = 1·2 + 2·1·1 + 1 = 5 at stride 4; then 1·4 + 4·2·2 + 1 = 21 at stride 4
    assert single.spec.kernel_size == (21, 21) and single.spec.stride == (4, 4)
    x = rng.standard_normal((2, 3, 40, 40))
    np.testing.assert_allclose(single.forward(x), run_chain(layers, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(torch_chain([single], x), torch_chain(layers, x), atol=1e-12)
    first = compose([nn.AvgPool1d(3, 2)], input_shape=(2, 9))
    assert first.spec.groups == 2 and np.allclose(first.weight.data, 1 / 3)
    with pytest.raises(NotComposableError, match="count_include_pad=False"):
        compose([nn.Conv2d(1, 1, 3), nn.AvgPool2d(3, 1, 1, count_include_pad=False)])
    with pytest.raises(NotComposableError, match="ceil_mode"):
        compose([nn.Conv2d(1, 1, 3), nn.AvgPool2d(2, ceil_mode=True)])


# -- re-parameterisation -------------------------------------------------------------------------


def random_bn(rng, c, ndim=2):
    bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 1](c).astype(np.float64)
    bn.weight.data = rng.uniform(0.5, 2, c)
    bn.bias.data = rng.standard_normal(c)
    bn.running_mean.data = rng.standard_normal(c)
    bn.running_var.data = rng.uniform(0.5, 2, c)
    return bn.eval()


@pytest.mark.parametrize("ndim, groups, bias", [(2, 1, True), (1, 2, False), (3, 4, True)])
def test_fold_batchnorm(ndim, groups, bias):
    rng = np.random.default_rng(11)
    conv = f64(CONVS[ndim - 1](4, 8, 3, 2, 1, groups=groups, bias=bias))[0]
    bn = random_bn(rng, 8, ndim)
    folded = fold_batchnorm(conv, bn)
    x = rng.standard_normal((2, 4, *(7,) * ndim))
    y = bn.forward(conv.forward(x))
    np.testing.assert_allclose(folded.forward(x), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(compose([conv, bn]).forward(x), y, rtol=0, atol=1e-12)
    with pytest.raises(NotComposableError, match="training mode"):
        fold_batchnorm(conv, bn.train())


def test_merge_repvgg_block():
    rng = np.random.default_rng(13)
    c = 4
    k3, k1 = f64(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 1, bias=False))
    bn3, bn1, bn0 = random_bn(rng, c), random_bn(rng, c), random_bn(rng, c)
    merged = merge_branches([k3, bn3], [k1, bn1], [bn0])
    assert merged.spec.kernel_size == (3, 3) and merged.spec.padding == ((1, 1), (1, 1))
    x = rng.standard_normal((2, c, 9, 9))
    y = bn3.forward(k3.forward(x)) + bn1.forward(k1.forward(x)) + bn0.forward(x)
    np.testing.assert_allclose(merged.forward(x), y, rtol=0, atol=1e-12)
    plain = merge_branches(k3, k1, [])  # without the BNs: the identity adds x itself
    y = k3.forward(x) + k1.forward(x) + x
    np.testing.assert_allclose(plain.forward(x), y, rtol=0, atol=1e-12)


def test_merge_acnet_and_strided_branches():
    rng = np.random.default_rng(17)
    square = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    row = nn.Conv2d(2, 3, (1, 3), stride=2, padding=(0, 1))
    col = nn.Conv2d(2, 3, (3, 1), stride=2, padding=(1, 0), bias=False)
    branches = f64(square, row, col)
    merged = merge_branches(*branches)
    x = rng.standard_normal((2, 2, 10, 11))
    y = sum(b.forward(x) for b in branches)
    np.testing.assert_allclose(merged.forward(x), y, rtol=0, atol=1e-12)
    with pytest.raises(NotComposableError, match="do not line up"):
        merge_branches(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1, padding=1))
    with pytest.raises(NotComposableError, match="stride"):
        merge_branches(nn.Conv2d(2, 2, 3, stride=2, padding=1), [])


# -- cost side by side ---------------------------------------------------------------------------


def test_cost_comparison_is_the_sum_of_the_layers_own_costs():
    layers = [nn.Conv2d(16, 16, 3), nn.AvgPool2d(2), nn.Conv2d(16, 8, 3, padding=1)]
    shape = (16, 20, 20)
    comparison = compare_cost(layers, shape, batch=2)
    shapes = nn.Sequential(*layers).shapes(shape)
    costs = [m.cost(s, 2) for m, s in zip(layers, shapes)]
    assert comparison.chain_cost.forward.mults == sum(c.forward.mults for c in costs)
    assert comparison.chain_cost.forward.divides == sum(c.forward.divides for c in costs)
    assert comparison.chain_cost.backward_input.adds == sum(c.backward_input.adds for c in costs)
    assert comparison.chain_params.params == sum(m.params().params for m in layers)
    single = compose_spec(layers, shape).spec
    assert comparison.single_cost == single.cost(shape, 2)
    assert comparison.single_params == single.params()


def test_vgg_argument_and_its_reverse():
    c = 64
    vgg = compare_cost([nn.Conv2d(c, c, 3), nn.Conv2d(c, c, 3)], (c, 56, 56))
    assert vgg.chain_params.params == 2 * (9 * c * c + c)
    assert vgg.single_params.params == 25 * c * c + c
    assert vgg.cheaper()["params"] == "chain" and vgg.cheaper()["forward"] == "chain"
    # widening in the middle: two 1×1 through 4c channels cost more than the single c→c 1×1
    wide = compare_cost([nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)], (c, 56, 56))
    assert wide.cheaper() == {k: "single" for k in wide.cheaper()}


# -- grammar and CLI ----------------------------------------------------------------------------


def cli_json(capsys, *argv):
    assert main(["compose", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_seed_json(capsys):
    data = cli_json(capsys, "conv k=5", "conv k=5")
    assert data["kernel"] == [9, 9] and data["stride"] == [1, 1]
    assert data["dilation"] == [1, 1] and data["padding"] == [[0, 0], [0, 0]]
    assert data["exact"] is True and data["cost"]["chain"]["params"] == 2 * 26
    assert data["cost"]["single"]["params"] == 82


def test_cli_costs_and_border_positions(capsys):
    data = cli_json(capsys, "conv k=3 p=1 c=8", "conv k=3 p=1", "--input", "3x8x8")
    layers = parse_chain(["conv k=3 p=1 c=8", "conv k=3 p=1"], (3, 8, 8))
    comparison = compare_cost(layers, (3, 8, 8))
    assert data["cost"]["chain"]["forward"]["mults"] == comparison.chain_cost.forward.mults
    assert data["exact"] is False and data["padding"] == [[2, 2], [2, 2]]
    frame = {(i, j) for i, j in itertools.product(range(8), repeat=2) if {i, j} & {0, 7}}
    assert {tuple(p) for p in data["differing"]} == frame


def test_cli_explain_shows_the_substituted_formula(capsys):
    assert main(["compose", "conv k=5", "conv k=5", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "K_H = d_1·(k_1 − 1) + s_1·d_2·(k_2 − 1) + 1 = 1·(5 − 1) + 1·1·(5 − 1) + 1 = 9" in out
    assert "params_chain = params_1 + params_2 = 26 + 26 = 52" in out
    assert main(["compose", "conv k=3 d=2", "conv k=3 s=2", "--markdown", "--explain"]) == 0
    assert r"\gcd" in capsys.readouterr().out


def test_cli_grammar_ranks_and_options():
    layers = parse_chain(["conv k=3,5 s=1,2 p=1:2,0:0 g=2 c=4 bias=0", "avgpool k=2", "bn"],
                         (2, 9, 9))  # fmt: skip
    conv = layers[0].spec
    assert conv.kernel_size == (3, 5) and conv.stride == (1, 2) and conv.groups == 2
    assert conv.padding == ((1, 2), (0, 0)) and conv.bias is False and conv.out_channels == 4
    assert parse_chain(["conv k=3,3,3"])[0].spec.ndim == 3
    assert parse_chain(["conv k=3"], (1, 20))[0].spec.ndim == 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["conv k=3", "relu", "conv k=3"], ["layer 2 (ReLU)", "not linear"]),
        (["conv k=3", "maxpool k=2"], ["layer 2 (MaxPool2d)", "max is not linear"]),
        (["conv k=3", "pool k=2"], ["unknown layer kind 'pool'"]),
        (["conv s=2"], ["conv needs k="]),
        (["conv k=3 x=1"], ["conv takes k, s, d, p, g, c, bias"]),
        (["conv k=a"], ["k must be an int"]),
        (["conv k=3 g=2 c=3"], ["groups must divide"]),
        (["conv k=9", "--input", "1x5x5"], ["larger than the padded input"]),
        (["conv k=3", "--input", "1x2x3x4x5"], ["C×L, C×H×W or C×D×H×W"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_message(capsys, argv, words):
    assert main(["compose", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("convscope compose: error:")
    assert all(word in captured.err for word in words), captured.err


def test_composed_layer_has_the_chain_output_shape():
    layers = parse_chain(["conv k=3 s=2", "avgpool k=3 s=2 p=1", "conv k=2 d=3"], (2, 33, 29))
    result = compose_spec(layers, (2, 33, 29))
    assert result.spec.output_shape((2, 33, 29)) == result.output_shape
    assert result.output_shape == nn.Sequential(*layers).output_shape((2, 33, 29))
    assert prod(result.output_shape) > 0


def test_cli_chain_may_start_with_a_pool(capsys):
    # avgpool k=2 (stride 2) then a 3×3: K = 1·(2 − 1) + 2·1·(3 − 1) + 1 = 6 at stride 2
    data = cli_json(capsys, "avgpool k=2", "conv k=3")
    assert data["kernel"] == [6, 6] and data["stride"] == [2, 2] and data["in_channels"] == 1
