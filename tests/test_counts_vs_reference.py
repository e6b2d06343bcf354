"""The closed-form counts equal what the instrumented reference counts, on random small layers.

The reference (tests/reference/instrumented.py) performs every operation on counting scalars
in literal loops; nothing there is a formula. Both count modes, every backward output.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convscope import ConvScopeError, nn
from convscope.counting import OpCount
from convscope.ops.arithmetic import AddSpec
from tests.reference import instrumented as ref

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
MODES = st.sampled_from(["exact", "dense"])


def assert_counts(ours: OpCount | None, theirs: dict | None, keys: tuple[str, ...]) -> None:
    assert (ours is None) == (theirs is None), (ours, theirs)
    if ours is None:
        return
    for key in keys:
        assert getattr(ours, key) == theirs.get(key, 0), (key, ours, theirs)


@st.composite
def conv_configs(draw, transposed=False):
    ndim = draw(st.sampled_from([1, 1, 2, 2, 3]))
    size_max = {1: 9, 2: 6, 3: 4}[ndim]
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, size_max)) for _ in range(ndim))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, 2))
    mode = draw(MODES)
    if transposed:
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
        output_padding = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)
        )
        return ndim, c_in, c_out, spatial, kernel, stride, padding, output_padding, dilation, \
            groups, bias, batch, mode  # fmt: skip
    padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim))
    padding_mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    return ndim, c_in, c_out, spatial, kernel, stride, padding, dilation, groups, bias, \
        padding_mode, batch, mode  # fmt: skip


@SETTINGS
@given(conv_configs())
def test_conv_counts(config):
    ndim, c_in, c_out, spatial, kernel, stride, padding, dilation, groups, bias, padding_mode, \
        batch, mode = config  # fmt: skip
    layer_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1]
    try:
        layer = layer_cls(
            c_in, c_out, kernel, stride, padding, dilation, groups, bias, padding_mode
        )
        cost = layer.cost((c_in, *spatial), batch, mode)
        shape = layer.output_shape((c_in, *spatial))
    except ConvScopeError:
        assume(False)
    theirs = ref.conv_counts(
        (c_in, *spatial), c_out, kernel, stride, padding, dilation, groups, bias, padding_mode,
        batch, mode,
    )  # fmt: skip
    assert shape == tuple(theirs["output_shape"])
    keys = ("mults", "adds")
    assert_counts(cost.forward, theirs["forward"], keys)
    assert_counts(cost.backward_input, theirs["backward_input"], keys)
    assert_counts(cost.backward_weight, theirs["backward_weight"], keys)
    assert_counts(cost.backward_bias, theirs["backward_bias"], ("adds",))


@SETTINGS
@given(conv_configs(transposed=True))
def test_conv_transpose_counts(config):
    ndim, c_in, c_out, spatial, kernel, stride, padding, output_padding, dilation, groups, bias, \
        batch, mode = config  # fmt: skip
    layer_cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[ndim - 1]
    try:
        layer = layer_cls(c_in, c_out, kernel, stride, padding, output_padding, groups, bias,
                          dilation)  # fmt: skip
        cost = layer.cost((c_in, *spatial), batch, mode)
        shape = layer.output_shape((c_in, *spatial))
    except ConvScopeError:
        assume(False)
    theirs = ref.conv_transpose_counts(
        (c_in, *spatial), c_out, kernel, stride, padding, output_padding, dilation, groups, bias,
        batch, mode,
    )  # fmt: skip
    assert shape == tuple(theirs["output_shape"])
    keys = ("mults", "adds")
    assert_counts(cost.forward, theirs["forward"], keys)
    assert_counts(cost.backward_input, theirs["backward_input"], keys)
    assert_counts(cost.backward_weight, theirs["backward_weight"], keys)
    assert_counts(cost.backward_bias, theirs["backward_bias"], ("adds",))


@st.composite
def pool_configs(draw, max_size=7):
    ndim = draw(st.sampled_from([1, 1, 2, 2, 3]))
    size_max = {1: max_size + 3, 2: max_size, 3: 4}[ndim]
    channels = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, size_max)) for _ in range(ndim))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    ceil_mode = draw(st.booleans())
    return ndim, channels, spatial, kernel, stride, padding, dilation, ceil_mode, \
        draw(st.integers(1, 2)), draw(MODES)  # fmt: skip


def _max_pool(ndim, kernel, stride, padding, dilation, ceil_mode):
    return (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[ndim - 1](
        kernel, stride, padding, dilation, ceil_mode
    )


@SETTINGS
@given(pool_configs(), st.sampled_from(["random", "ties"]))
def test_max_pool_counts(config, data):
    ndim, channels, spatial, kernel, stride, padding, dilation, ceil_mode, batch, mode = config
    try:
        layer = _max_pool(ndim, kernel, stride, padding, dilation, ceil_mode)
        cost = layer.cost((channels, *spatial), batch, mode)
    except ConvScopeError:
        assume(False)
    theirs = ref.max_pool_counts(
        (channels, *spatial), kernel, stride, padding, dilation, ceil_mode, batch, mode, data=data
    )
    assert layer.output_shape((channels, *spatial)) == tuple(theirs["output_shape"])
    assert cost.forward == OpCount(compares=theirs["forward"]["compares"])
    # The backward's additions depend on the data: ours is the worst case over all inputs.
    assert theirs["backward_input"]["adds"] <= cost.backward_input.adds
    assert cost.backward_input.upper_bound == (cost.backward_input.adds > 0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pool_configs(max_size=5))
def test_max_pool_worst_case_is_attained(config):
    ndim, _, spatial, kernel, stride, padding, dilation, ceil_mode, batch, mode = config
    try:
        layer = _max_pool(ndim, kernel, stride, padding, dilation, ceil_mode)
        cost = layer.cost((1, *spatial), batch, mode)
    except ConvScopeError:
        assume(False)
    positions = 1
    for size, p in zip(spatial, padding):
        positions *= size + 2 * p if mode == "dense" else size
    assume(positions <= 14)
    worst = ref.max_pool_worst_backward_adds(
        (1, *spatial), kernel, stride, padding, dilation, ceil_mode, batch, mode
    )
    assert cost.backward_input.adds == worst


@SETTINGS
@given(pool_configs(), st.booleans(), st.sampled_from([None, None, 1, 3, -2]))
def test_avg_pool_counts(config, count_include_pad, divisor_override):
    ndim, channels, spatial, kernel, stride, padding, _, ceil_mode, batch, mode = config
    if ndim == 1:
        divisor_override = None
    try:
        if ndim == 1:
            layer = nn.AvgPool1d(kernel, stride, padding, ceil_mode, count_include_pad)
        else:
            layer = (nn.AvgPool2d, nn.AvgPool3d)[ndim - 2](
                kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
            )
        cost = layer.cost((channels, *spatial), batch, mode)
    except ConvScopeError:
        assume(False)
    theirs = ref.avg_pool_counts(
        (channels, *spatial), kernel, stride, padding, ceil_mode, count_include_pad,
        divisor_override, batch, mode,
    )  # fmt: skip
    assert layer.output_shape((channels, *spatial)) == tuple(theirs["output_shape"])
    keys = ("mults", "adds", "compares", "divides")
    assert_counts(cost.forward, theirs["forward"], keys)
    assert_counts(cost.backward_input, theirs["backward_input"], keys)


@SETTINGS
@given(
    st.sampled_from([1, 2, 3]),
    st.sampled_from(["max", "avg"]),
    st.data(),
)
def test_adaptive_pool_counts(ndim, kind, data):
    size_max = {1: 12, 2: 7, 3: 4}[ndim]
    spatial = tuple(data.draw(st.integers(1, size_max)) for _ in range(ndim))
    out = tuple(data.draw(st.integers(1, size_max)) for _ in range(ndim))
    batch = data.draw(st.integers(1, 2))
    cls = {
        "max": (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
        "avg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
    }[kind][ndim - 1]
    layer = cls(out)
    cost = layer.cost((2, *spatial), batch)
    theirs = ref.adaptive_pool_counts(kind, (2, *spatial), out, batch)
    assert layer.output_shape((2, *spatial)) == tuple(theirs["output_shape"])
    if kind == "avg":
        assert_counts(cost.forward, theirs["forward"], ("adds", "divides"))
        assert_counts(cost.backward_input, theirs["backward_input"], ("adds", "divides"))
        return
    assert cost.forward.compares == theirs["forward"]["compares"]
    assert theirs["backward_input"]["adds"] <= cost.backward_input.adds
    positions = 1
    for size in spatial:
        positions *= size
    if positions <= 14:
        worst = ref.adaptive_max_worst_backward_adds((1, *spatial), out, batch)
        assert cost.backward_input.adds == 2 * worst


@SETTINGS
@given(
    st.lists(st.integers(1, 3), min_size=0, max_size=2),
    st.integers(1, 5),
    st.integers(1, 4),
    st.booleans(),
    st.integers(1, 3),
)
def test_linear_counts(lead, in_features, out_features, bias, batch):
    shape = (*lead, in_features)
    cost = nn.Linear(in_features, out_features, bias).cost(shape, batch)
    theirs = ref.linear_counts(shape, out_features, bias, batch)
    keys = ("mults", "adds")
    assert_counts(cost.forward, theirs["forward"], keys)
    assert_counts(cost.backward_input, theirs["backward_input"], keys)
    assert_counts(cost.backward_weight, theirs["backward_weight"], keys)
    assert_counts(cost.backward_bias, theirs["backward_bias"], ("adds",))


ALL_KEYS = ("mults", "adds", "compares", "divides", "specials")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.booleans(), st.integers(1, 3), st.data())
def test_batchnorm_counts(ndim, affine, batch, data):
    spatial = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
    shape = (2, *spatial)
    layer = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 1](2, affine=affine)
    cost = layer.cost(shape, batch)
    theirs = ref.batchnorm_counts(shape, affine, batch)
    assert_counts(cost.forward, theirs["forward"], ALL_KEYS)
    assert_counts(cost.backward_input, theirs["backward_input"], ALL_KEYS)
    assert_counts(cost.backward_weight, theirs.get("backward_weight"), ALL_KEYS)
    assert_counts(cost.backward_bias, theirs.get("backward_bias"), ALL_KEYS)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize(("shape", "batch"), [((3,), 1), ((2, 3, 2), 2)])
def test_activation_counts(name, shape, batch):
    cost = ACTIVATIONS[name]().cost(shape, batch)
    theirs = ref.activation_counts(name, shape, batch)
    assert_counts(cost.forward, theirs["forward"], ALL_KEYS)
    assert_counts(cost.backward_input, theirs["backward_input"], ALL_KEYS)


@pytest.mark.parametrize(("shape", "batch"), [((3,), 1), ((2, 3, 2), 2)])
def test_dropout_and_add_counts(shape, batch):
    cost = nn.Dropout(0.3).cost(shape, batch)
    theirs = ref.dropout_counts(shape, batch, 0.3)
    assert_counts(cost.forward, theirs["forward"], ALL_KEYS)
    assert_counts(cost.backward_input, theirs["backward_input"], ALL_KEYS)
    for k in (2, 3):
        cost = AddSpec().cost([shape] * k, batch)
        theirs = ref.add_counts(shape, k, batch)
        assert_counts(cost.forward, theirs["forward"], ALL_KEYS)
        assert_counts(cost.backward_input, theirs["backward_input"], ALL_KEYS)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["reflect", "replicate", "circular"]),
    st.integers(1, 2),
    st.integers(4, 9),
    st.integers(1, 3),
    st.integers(1, 2),
    MODES,
)
def test_negative_padding_crops_like_pytorch(padding_mode, crop, size, kernel, stride, mode):
    # PyTorch's non-zeros padding modes pad with F.pad, where a negative pad crops: the layer
    # then counts as the unpadded layer on the cropped input.
    assume(size - 2 * crop >= kernel)
    cropped = nn.Conv1d(2, 3, kernel, stride, -crop, padding_mode=padding_mode)
    plain = nn.Conv1d(2, 3, kernel, stride, 0)
    assert cropped.output_shape((2, size)) == plain.output_shape((2, size - 2 * crop))
    assert cropped.cost((2, size), 2, mode) == plain.cost((2, size - 2 * crop), 2, mode)
