"""Pool analysis: every number against an independent derivation (dense maps, torch, loops)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convscope import LayerConfigError, ShapeError, nn
from convscope.cli import main
from convscope.errors import ConvScopeError
from convscope.geometry import AdaptiveWindows, Windows
from convscope.ops.adaptive_pooling import AdaptivePoolSpec
from convscope.ops.pooling import PoolSpec
from convscope.pool_analysis import (
    analyze_pool,
    axis_windows,
    distinct_winners,
    hitting_set,
    interval_rank,
    parse_conv,
)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


def torch_pool(spec, x: np.ndarray) -> np.ndarray:
    """The pool computed by PyTorch, the oracle."""
    t = torch.from_numpy(x)
    n = spec.ndim
    if isinstance(spec, AdaptivePoolSpec):
        return getattr(F, f"adaptive_{spec.mode}_pool{n}d")(t, spec.output_size).numpy()
    k, s, p = spec.kernel_size, spec.stride, spec.padding
    if spec.mode == "max":
        return getattr(F, f"max_pool{n}d")(t, k, s, p, spec.dilation, spec.ceil_mode).numpy()
    extra = {} if n == 1 else {"divisor_override": spec.divisor_override}
    fn = getattr(F, f"avg_pool{n}d")
    return fn(t, k, s, p, spec.ceil_mode, spec.count_include_pad, **extra).numpy()


def dense_map(spec, shape) -> np.ndarray:
    """The whole linear map as a matrix: torch applied to every basis vector."""
    n = math.prod(shape)
    basis = np.eye(n).reshape(n, *shape)
    return torch_pool(spec, basis).reshape(n, -1).T


def window_sets(spec, shape) -> list[list[list[int]]]:
    """Per axis, each window's real input positions, by literal loops over taps."""
    out = spec.output_shape(shape)[1:]
    axes = []
    for a, (size, o) in enumerate(zip(shape[1:], out)):
        if isinstance(spec, AdaptivePoolSpec):
            axes.append([list(range(i * size // o, -(-(i + 1) * size // o))) for i in range(o)])
            continue
        k, s, p, d = spec.kernel_size[a], spec.stride[a], spec.padding[a], spec.dilation[a]
        axes.append(
            [[q for t in range(k) if 0 <= (q := i * s - p + t * d) < size] for i in range(o)]
        )
    return axes


@st.composite
def pools(draw, mode: str | None = None, adaptive: bool = True):
    """A valid pooling spec and a small input shape (1-D or 2-D)."""
    ndim = draw(st.sampled_from((1, 2)))
    channels = draw(st.integers(1, 2))
    sizes = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    mode = mode or draw(st.sampled_from(("max", "avg")))
    if adaptive and draw(st.booleans()):
        outs = tuple(draw(st.integers(1, 10)) for _ in range(ndim))
        return AdaptivePoolSpec.create(ndim, mode, outs), (channels, *sizes)
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim)) if mode == "max" else 1
    spec = PoolSpec.create(
        ndim,
        mode,
        kernel,
        stride,
        padding,
        dilation,
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.sampled_from((None, 3))) if mode == "avg" and ndim == 2 else None,
    )
    shape = (channels, *sizes)
    try:
        spec.output_shape(shape)
    except ShapeError:
        assume(False)
    return spec, shape


def quick(spec, shape, **kwargs):
    return analyze_pool(spec, shape, trials=2, shifts=1, **kwargs)


# -- information ---------------------------------------------------------------------------------


@SETTINGS
@given(pools(mode="avg"))
def test_avg_rank_is_the_rank_of_the_dense_map(case):
    spec, shape = case
    result = quick(spec, shape)
    assert result.rank.rank == np.linalg.matrix_rank(dense_map(spec, shape))
    assert result.rank.lost == math.prod(shape) - result.rank.rank


@SETTINGS
@given(
    st.integers(1, 12).flatmap(
        lambda size: st.tuples(
            st.just(size),
            st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)), min_size=1).map(
                lambda ivs: [(min(a, b), max(a, b)) for a, b in ivs]
            ),
        )
    )
)
def test_interval_rank_and_null_vector_on_any_intervals(case):
    size, intervals = case
    matrix = np.zeros((len(intervals), size))
    for row, (a, b) in enumerate(intervals):
        matrix[row, a : b + 1] = 1
    rank, null = interval_rank([a for a, _ in intervals], [b for _, b in intervals], size)
    assert rank == np.linalg.matrix_rank(matrix)
    assert (null is None) == (rank == size)
    if null is not None:
        assert np.any(null) and not np.any(matrix @ null)


@SETTINGS
@given(pools())
def test_inputs_per_output_and_unread_inputs_by_loops(case):
    spec, shape = case
    result = quick(spec, shape)
    sets = window_sets(spec, shape)
    per_output = [math.prod(len(w) for w in combo) for combo in _product(sets)]
    assert result.inputs_per_output.min == min(per_output)
    assert result.inputs_per_output.max == max(per_output)
    assert result.inputs_per_output.mean == pytest.approx(np.mean(per_output))
    reached = [len({q for w in axis for q in w}) for axis in sets]
    assert result.unread_inputs == shape[0] * (math.prod(shape[1:]) - math.prod(reached))


def _product(sets):
    if not sets:
        yield ()
        return
    for w in sets[0]:
        for rest in _product(sets[1:]):
            yield (w, *rest)


@SETTINGS
@given(pools())
def test_identical_output_pair_holds_under_torch(case):
    spec, shape = case
    result = quick(spec, shape)
    pair = result.identical_pair
    if not pair.exists:
        # claimed one-to-one: changing any single input must change the output
        x = np.random.default_rng(1).permutation(math.prod(shape)).reshape(1, *shape) * 1.0
        y = torch_pool(spec, x)
        for i in range(x.size):
            moved = x.copy()
            moved.flat[i] = -1.0 if spec.mode == "max" else moved.flat[i] + 1
            assert not np.array_equal(torch_pool(spec, moved), y)
        if spec.mode == "avg":
            assert result.rank.lost == 0
        return
    x, x2 = result.pair
    assert pair.outputs_identical and pair.inputs_differ_at > 0
    assert not np.array_equal(x, x2)
    assert np.array_equal(torch_pool(spec, x[None]), torch_pool(spec, x2[None]))


def _max_matching(windows: list[list[int]]) -> int:
    """Kuhn's augmenting paths: most windows with distinct positions."""
    owner: dict[int, int] = {}

    def augment(w: int, seen: set[int]) -> bool:
        for q in windows[w]:
            if q not in seen:
                seen.add(q)
                if q not in owner or augment(owner[q], seen):
                    owner[q] = w
                    return True
        return False

    return sum(augment(w, set()) for w in range(len(windows)))


@SETTINGS
@given(pools(mode="max"))
def test_per_axis_extremes_against_geometry_and_matching(case):
    spec, shape = case
    out = spec.output_shape(shape)[1:]
    for a, (axis, sets) in enumerate(zip(axis_windows(spec, shape), window_sets(spec, shape))):
        hits = hitting_set(axis)
        assert all(set(w) & set(hits) for w in sets if w)  # meets every non-empty window
        if isinstance(spec, AdaptivePoolSpec):
            tau = AdaptiveWindows(shape[a + 1], out[a]).min_hitting()
        else:
            windows = Windows(
                shape[a + 1],
                -spec.padding[a],
                spec.kernel_size[a],
                spec.stride[a],
                spec.dilation[a],
                out[a],
            )
            tau = windows.min_hitting()
        assert len(hits) == tau
        assert distinct_winners(axis) == _max_matching(sets)


@SETTINGS
@given(pools(mode="max"), st.integers(0, 3))
def test_zero_gradient_share_against_torch_on_the_same_inputs(case, seed):
    spec, shape = case
    result = analyze_pool(spec, shape, seed=seed, trials=3, shifts=1)
    # a window wholly in the padding outputs −inf; torch then routes its gradient to a real
    # input and the engine to none, so the two differ there by construction
    assume(result.inputs_per_output.min > 0)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((3, *shape)))
    x.requires_grad_(True)
    y = torch.from_numpy(torch_pool(spec, x.detach().numpy()))
    # torch's own backward through its max pool
    yt = (
        getattr(F, f"adaptive_max_pool{spec.ndim}d")(x, spec.output_size)
        if isinstance(spec, AdaptivePoolSpec)
        else getattr(F, f"max_pool{spec.ndim}d")(
            x, spec.kernel_size, spec.stride, spec.padding, spec.dilation, spec.ceil_mode
        )
    )
    assert torch.equal(yt.detach(), y)
    yt.sum().backward()
    shares = (x.grad == 0).reshape(3, -1).double().mean(dim=1).numpy()
    zg = result.zero_grad
    assert zg.measured_mean == pytest.approx(shares.mean())
    assert zg.measured_min == pytest.approx(shares.min())
    assert zg.measured_max == pytest.approx(shares.max())
    # the extremes bound every measurement
    assert zg.best_bound - 1e-12 <= shares.min() and shares.max() <= zg.worst + 1e-12
    assert zg.best_bound <= zg.best and zg.best_exact == (zg.best_bound == zg.best)


def test_max_pool_2x2_numbers_by_hand():
    # 2×2 windows tiling 4×4: each window passes one gradient, so 3 of 4 inputs get none,
    # whatever the data; a 2-D 2×2 pool reads 4 inputs per output
    result = analyze_pool(nn.MaxPool2d(2), (3, 4, 4))
    zg = result.zero_grad
    assert zg.worst == zg.best == zg.measured_mean == 0.75 and zg.best_exact
    assert result.inputs_per_output.to_dict() == {
        "min": 4, "max": 4, "mean": 4.0, "mean_exact": "4", "window": 4
    }  # fmt: skip
    assert result.rank is None and result.kind == "max"


def test_avg_pool_rank_by_hand():
    # 2×2 averages of 4×4: 4 independent window sums per channel
    assert analyze_pool(nn.AvgPool2d(2), (3, 4, 4)).rank.rank == 3 * 4
    # 3-wide windows, stride 1, padding 1 on L = 5: [0,1] [0,2] [1,3] [2,4] [3,4] all sum
    # v = (1, −1, 0, 1, −1) to 0, so one dimension is lost
    result = analyze_pool(nn.AvgPool1d(3, 1, 1), (1, 5))
    assert result.rank.rank == 4
    x, x2 = result.pair
    assert np.array_equal(np.abs(x2 - x)[0], [1, 1, 0, 1, 1])
    # on L = 6 the last window [4, 5] breaks that pattern: nothing is lost
    for size in (3, 6):
        result = analyze_pool(nn.AvgPool1d(3, 1, 1), (1, size))
        assert result.rank.lost == 0 and result.identical_pair.exists is False


def test_a_window_wholly_in_the_padding():
    # taps −1 and 1 of a dilated window on a 1-wide input are both padding: PyTorch gives −inf
    spec = PoolSpec.create(2, "max", 2, 1, 1, 2)
    assert np.isneginf(torch_pool(spec, np.zeros((1, 1, 1, 1)))).all()
    result = analyze_pool(spec, (1, 1, 1))
    assert result.inputs_per_output.min == 0 and result.unread_inputs == 1
    assert result.zero_grad.worst == result.zero_grad.best == 1.0
    assert all(
        math.isfinite(v) for row in result.translation.rows for v in row.to_dict().values() if v
    )
    json.dumps(result.to_dict(), allow_nan=False)


# -- why it is still used ------------------------------------------------------------------------


def test_memory_and_following_conv_use_the_layers_own_rules():
    pool, shape = nn.MaxPool2d(2), (16, 32, 32)
    following = nn.Conv2d(16, 64, 3, padding=1)
    result = analyze_pool(pool, shape, following_conv=following, batch=2)
    pooled = pool.output_shape(shape)
    assert result.memory.input_values == 2 * 16 * 32 * 32
    assert result.memory.output_values == 2 * math.prod(pooled) == 2 * 16 * 16 * 16
    assert result.memory.output_bytes == 4 * result.memory.output_values
    fc = result.following_conv
    for side, where in ((fc.pooled, pooled), (fc.unpooled, shape)):
        cost = following.cost(where, batch=2)
        assert side.macs == following.macs(where, batch=2)
        assert side.total_ops == cost.forward.total + cost.backward.total
        assert side.output_shape == list(following.output_shape(where))
    # MACs = outputs · (C_in · 3 · 3): 64·16·16 outputs on the pooled input, 4× that unpooled
    assert fc.pooled.macs == 2 * 64 * 16 * 16 * 16 * 9
    assert fc.macs_ratio == 4.0
    assert result.pool_cost["compares"] == pool.cost(shape, batch=2).forward.compares
    text = analyze_pool(pool, shape, following_conv="c=64 k=3 p=1", batch=2).following_conv
    assert text == fc


def test_parse_conv():
    assert parse_conv("c=8 k=3,5 s=2 p=same bias=0") == {
        "out_channels": 8, "kernel_size": (3, 5), "stride": 2, "padding": "same", "bias": False
    }  # fmt: skip


def test_translation_table_properties():
    shape = (16, 32, 32)
    tiling = analyze_pool(nn.AvgPool2d(2), shape, shifts=4).translation
    for row in tiling.rows:
        # the identity shifted back is exact
        assert row.identity_aligned == 0.0
        # windows that tile the input move by one output step for every 2 pixels
        if row.shift % 2 == 0:
            assert row.pool_aligned < 1e-12 and row.conv_aligned < 1e-12
        # on low-passed inputs an average changes less than the raw input: the change
        # (shift − 1)x has its power at high frequencies, which the box filter damps
        assert row.pool < row.identity
    mean = analyze_pool(nn.AdaptiveAvgPool2d(1), shape).translation
    assert all(row.pool < 1e-12 for row in mean.rows)  # a mean ignores circular shifts
    assert tiling.shift == "circular" and tiling.axis == "W"


def test_analysis_is_seeded_and_fast():
    import time

    start = time.perf_counter()
    a = analyze_pool(nn.MaxPool2d(3, 2, 1), (16, 32, 32), following_conv="c=32 k=3 p=1")
    elapsed = time.perf_counter() - start
    b = analyze_pool(nn.MaxPool2d(3, 2, 1), (16, 32, 32), following_conv="c=32 k=3 p=1")
    assert a.to_dict() == b.to_dict()
    assert elapsed < 3.0  # about 0.5 s on the 2-core development machine


def test_explanation_names_the_derivations():
    text = analyze_pool(nn.AvgPool2d(2), (2, 6, 6), explain=True).explanation.text()
    for words in ("rank_H", "connected groups", "null space", "np.roll", "values_out"):
        assert words in text


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: analyze_pool(nn.Conv2d(3, 3, 3), (3, 8, 8)), LayerConfigError, ["pooling"]),
        (lambda: analyze_pool(nn.MaxPool2d(2), (3, 8)), ShapeError, ["(C, H, W)"]),
        (lambda: analyze_pool(nn.MaxPool2d(2), (3, 8, 8), trials=0), LayerConfigError, ["trials"]),
        (
            lambda: analyze_pool(nn.MaxPool2d(2), (3, 8, 8), following_conv=nn.Conv2d(4, 2, 3)),
            ShapeError,
            ["pooled input (3, 4, 4)", "4 input channels"],
        ),
        (
            lambda: analyze_pool(nn.MaxPool2d(2), (3, 8, 8), following_conv="c=2 k=5"),
            ShapeError,
            ["pooled", "5", "4 + 0 + 0"],
        ),
        (lambda: parse_conv("c=2"), LayerConfigError, ["needs k"]),
        (lambda: parse_conv("c=2 k=3 x=1"), LayerConfigError, ["'x=1'"]),
        (lambda: parse_conv("c=2,3 k=3"), LayerConfigError, ["one int"]),
    ],
)
def test_bad_input_names_the_rule(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)


# -- the CLI -------------------------------------------------------------------------------------

BASE = ["pool", "--input", "8x16x16", "--kind", "avg", "--kernel", "2", "--analyze"]


def test_cli_json_matches_the_api(capsys):
    assert main([*BASE, "--next-conv", "c=16 k=3 p=1", "--seed", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    api = analyze_pool(nn.AvgPool2d(2), (8, 16, 16), following_conv="c=16 k=3 p=1", seed=2)
    assert data == json.loads(json.dumps(api.to_dict()))
    assert data["rank"]["rank"] == 8 * 8 * 8 and "explanation" not in data


def test_cli_text_explain_and_markdown(capsys):
    assert main([*BASE, "--explain"]) == 0
    out = capsys.readouterr().out
    assert "rank of the map" in out and "Average pooling as a linear map" in out
    assert main([*BASE, "--json", "--explain"]) == 0
    assert "null space" in json.loads(capsys.readouterr().out)["explanation"]
    assert main([*BASE, "--markdown", "--explain"]) == 0
    assert "```text" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["pool", "--input", "8x16x16", "--kernel", "2", "--next-conv", "c=4 k=3"],
        ["pool", "--input", "8x16x16", "--kernel", "2", "--seed", "1"],
        [*BASE, "--next-conv", "c=4"],
        [*BASE, "--next-conv", "c=4 k=20"],
        [*BASE, "--trials", "0"],
        [*BASE, "--shifts", "-1"],
        ["pool", "--input", "8x16x16", "--kind", "adaptive-max", "--analyze"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope pool: error: ")


def test_errors_are_convscope_errors():
    with pytest.raises(ConvScopeError):
        analyze_pool(nn.MaxPool2d(2), (3, 8, 8), seed=-1)


@pytest.mark.parametrize(
    ("shape", "options", "message"),
    [
        ((512, 224, 224), {}, "over its 256 MiB budget: lower the input size"),
        ((8, 32, 32), {"trials": 100_000}, r"lower --trials \(at most 512 here\)"),
        ((8, 32, 32), {"shifts": 100_000}, "over its budget of 64,000,000: lower --shifts"),
        ((4, 200, 200), {"shifts": 100}, "over its budget of 64,000,000: lower --shifts"),
    ],
)
def test_analysis_refuses_what_is_over_its_budget_before_allocating(shape, options, message):
    with pytest.raises(ConvScopeError, match=message):
        analyze_pool(nn.MaxPool2d(2), shape, **options)
