"""The analysis is symbolic: every shape and count rule is a closed form in the sizes.

Each check runs a family's rules at sizes near 10^12, where a loop over positions, windows or
taps would never finish (so a finishing test proves there is none; no timed assertion), and
compares the exact integers with an independent derivation: either a closed form written out
here, or the polynomial in T that the same rules give at small T (a layer whose sizes grow
linearly in T has counts that are polynomials in T, of degree 2 at most here). The small-T
values are themselves checked against the instrumented reference by the contract tests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest

from convscope import nn
from convscope.cli import main
from convscope.counting import Cost
from convscope.geometry import AdaptiveWindows, Windows
from convscope.summary import summary

BIG = 10**12


def numbers(spec: Any, shape: tuple[int, ...], batch: int = 1) -> list[int]:
    """Every integer the rules give for ``shape``: output shape, MACs and both count modes."""
    values = list(spec.output_shape(shape)) + [spec.macs(shape, batch)]
    for count in ("exact", "dense"):
        cost: Cost = spec.cost(shape, batch, count)
        for op in dataclasses.astuple(cost):
            if op is not None:
                values.extend(int(v) for v in op)
    return values


def lagrange(points: list[tuple[int, list[int]]], t: int) -> list[int]:
    """The polynomial through ``points`` (T, values), evaluated at T = t, exactly."""
    out = []
    for k in range(len(points[0][1])):
        total = Fraction(0)
        for i, (ti, vi) in enumerate(points):
            term = Fraction(vi[k])
            for j, (tj, _) in enumerate(points):
                if j != i:
                    term *= Fraction(t - tj, ti - tj)
            total += term
        assert total.denominator == 1
        out.append(int(total))
    return out


#: T steps by a multiple of every stride, dilation and size factor used below, so that the
#: floors of the shape rules divide exactly and the counts are polynomials in the step.
STEP = 420


def assert_polynomial(f: Callable[[int], list[int]], t0: int, degree: int = 2) -> None:
    """``f`` is a polynomial of at most ``degree`` in T = t0 + STEP·i: fitted on small i,
    checked on two more small i, then at T near 10^12."""

    def at(i: int) -> list[int]:
        return f(t0 + STEP * i)

    points = [(i, at(i)) for i in range(degree + 1)]
    for i in (degree + 1, degree + 5):
        assert at(i) == lagrange(points, i), f"not a polynomial in T at T = {t0 + STEP * i}"
    big = BIG // STEP
    assert at(big) == lagrange(points, big)


Build = Callable[[int], tuple[Any, tuple[int, ...]]]


def assert_polynomial_in_size(build: Build, batch: int = 1) -> None:
    """Every number the rules give for ``build(t)``, a spec and its input shape, is a
    polynomial in t (``assert_polynomial``)."""
    assert_polynomial(lambda t: numbers(*build(t), batch=batch), STEP)


# -- convolution ----------------------------------------------------------------------------------


def test_conv_huge_kernel_closed_form() -> None:
    """Kernel k = 10^12 over L = 3·10^12: every tap of every window is on values."""
    k, size = BIG, 3 * BIG
    spec = nn.Conv1d(1, 1, k, bias=False).spec
    out = size - k + 1
    assert spec.output_shape((1, size)) == (1, out)
    assert spec.macs((1, size)) == k * out
    cost = spec.cost((1, size))
    assert cost.forward.mults == k * out and cost.forward.adds == (k - 1) * out
    assert cost.backward_input.adds == k * out - size  # every input entry is reached
    assert cost.backward_weight.adds == k * out - k


def test_conv_zero_padding_closed_form() -> None:
    """'Same' zero padding p = 10^12 with k = 2p + 1: each border loses 1 + 2 + … + p taps."""
    p, size = BIG, 5 * BIG
    k = 2 * p + 1
    spec = nn.Conv1d(1, 1, k, padding=p, bias=False).spec
    assert spec.output_shape((1, size)) == (1, size)
    products = k * size - p * (p + 1)
    cost = spec.cost((1, size))
    assert cost.forward.mults == products
    assert spec.cost((1, size), count="dense").forward.mults == k * size


@pytest.mark.parametrize("mode", ["replicate", "reflect", "circular"])
def test_conv_value_padding_closed_form(mode: str) -> None:
    """Pads of real values (10^11 on 10^12): every tap is performed, and every input entry
    receives a gradient."""
    p, size, k = BIG // 10, BIG, 3
    spec = nn.Conv1d(1, 1, k, padding=p, padding_mode=mode, bias=False).spec
    out = size + 2 * p - k + 1
    cost = spec.cost((1, size))
    assert cost.forward.mults == k * out
    assert cost.backward_input.adds == k * out - size


@pytest.mark.parametrize(
    "build",
    [
        lambda t: (nn.Conv1d(2, 3, 5, stride=3, padding=2, dilation=2).spec, (2, 7 * t + 4)),
        lambda t: (nn.Conv1d(1, 2, t, stride=2, padding=3).spec, (1, 4 * t + 1)),
        lambda t: (nn.Conv1d(1, 1, 3, dilation=t, padding=t).spec, (1, 6 * t + 1)),
        lambda t: (nn.Conv1d(1, 1, 4, stride=t, dilation=t + 1, padding=2).spec, (1, 9 * t)),
        lambda t: (
            nn.Conv1d(1, 1, 5, stride=2, padding=2 * t, padding_mode="replicate").spec,
            (1, 3 * t),
        ),
        lambda t: (
            nn.Conv1d(1, 1, 3, stride=2, padding=t, padding_mode="reflect").spec,
            (1, 8 * t + 4),
        ),
        lambda t: (
            nn.Conv1d(1, 1, 2, stride=2, padding=t, padding_mode="circular").spec,
            (1, 6 * t),
        ),
        lambda t: (nn.Conv2d(2, 2, (3, 4), stride=(2, 1), padding=(1, 0)).spec, (2, 8 * t, 2 * t)),
    ],
)
def test_conv_polynomial_in_size(build: Build) -> None:
    assert_polynomial_in_size(build, batch=2)


@pytest.mark.parametrize(
    "build",
    [
        lambda t: (nn.ConvTranspose1d(2, 3, 4, stride=3, padding=1).spec, (2, 5 * t)),
        lambda t: (nn.ConvTranspose1d(1, 1, t, stride=2, padding=1).spec, (1, 3 * t)),
        lambda t: (nn.ConvTranspose1d(1, 1, 3, stride=t, dilation=t, padding=t).spec, (1, 4 * t)),
    ],
)
def test_conv_transpose_polynomial_in_size(build: Build) -> None:
    assert_polynomial_in_size(build)


# -- pools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda t: (nn.MaxPool1d(2, dilation=t).spec, (1, 10 * t)),
        lambda t: (nn.MaxPool1d(3, stride=2, dilation=2 * t + 1).spec, (1, 12 * t)),
        lambda t: (nn.MaxPool1d(5, stride=3, padding=2, ceil_mode=True).spec, (2, 6 * t + 1)),
        lambda t: (nn.MaxPool1d(t, stride=2).spec, (1, 5 * t)),
        lambda t: (nn.AvgPool1d(2 * t, stride=3, padding=t).spec, (1, 6 * t)),
        lambda t: (nn.AvgPool2d(3, stride=2, padding=1).spec, (2, 4 * t, 2 * t + 1)),
    ],
)
def test_pool_polynomial_in_size(build: Build) -> None:
    assert_polynomial_in_size(build)


@pytest.mark.parametrize(
    ("size", "out"),
    [
        (lambda t: 3 * t, lambda t: 2 * t),
        (lambda t: 2 * t, lambda t: 3 * t),
        (lambda t: t, lambda t: t),
    ],
)
def test_adaptive_pool_linear_in_size(
    size: Callable[[int], int], out: Callable[[int], int]
) -> None:
    def f(t: int) -> list[int]:
        spec = nn.AdaptiveMaxPool1d(out(t)).spec
        avg = nn.AdaptiveAvgPool1d(out(t)).spec
        return numbers(spec, (1, size(t))) + numbers(avg, (1, size(t)))

    assert_polynomial(f, STEP, degree=1)


def test_adaptive_windows_closed_forms() -> None:
    """τ of PyTorch's adaptive windows: gcd(L, O) chains of ⌈O'/2⌉ for L >= O, L for O >= 2L."""
    assert AdaptiveWindows(3 * BIG, 2 * BIG).min_hitting() == BIG
    assert AdaptiveWindows(BIG + 1, BIG).min_hitting() == BIG // 2
    assert AdaptiveWindows(BIG, 3 * BIG).min_hitting() == BIG
    assert AdaptiveWindows(BIG, 3 * BIG).pairs == 3 * BIG + BIG - BIG


def test_windows_closed_forms() -> None:
    """Windows' statistics with a huge kernel, dilation and padding, against direct sums."""
    k = BIG
    w = Windows(size=2 * k, start=-(k // 2), kernel=k, stride=1, dilation=1, count=2 * k + 1)
    # window o covers o − k/2 … o + k/2 − 1: it loses max(0, k/2 − o) on the left and as many
    # on the right, symmetric: 2 · (1 + 2 + … + k/2) taps lost in all
    half = k // 2
    assert w.pairs == (2 * k + 1) * k - 2 * (half * (half + 1) // 2)
    assert w.taps_used == k and w.windows_used == 2 * k + 1
    assert w.positions_used() == 2 * k
    dd = BIG // 3
    d = Windows(size=3 * dd, start=0, kernel=2, stride=1, dilation=dd, count=2 * dd)
    assert d.pairs == 4 * dd and d.positions_used() == 3 * dd
    assert d.min_hitting() == dd  # windows {o, o + D} and {o + D, o + 2D} share o + D


# -- the other families with sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda t: (nn.ReflectionPad1d((t, 2 * t)).spec, (2, 3 * t + 1)),
        lambda t: (nn.ReplicationPad2d((t, 0, 3, 2 * t)).spec, (2, 4 * t, 5 * t)),
        lambda t: (nn.CircularPad1d((t, t)).spec, (1, 2 * t)),
        lambda t: (nn.ConstantPad1d((t, -t), 1.5).spec, (1, 3 * t)),
        lambda t: (nn.Upsample(scale_factor=3, mode="nearest").spec, (2, 4 * t)),
        lambda t: (nn.Upsample(size=5 * t, mode="linear").spec, (2, 2 * t)),
        lambda t: (nn.Upsample(size=(2 * t, 3 * t), mode="bilinear").spec, (1, 4 * t, 6 * t)),
        lambda t: (nn.PixelShuffle(2).spec, (4, 2 * t, 3 * t)),
        lambda t: (nn.Softmax(1).spec, (3, 5 * t)),
        lambda t: (nn.LogSoftmax(1).spec, (3 * t, 2)),
    ],
)
def test_other_families_polynomial_in_size(build: Build) -> None:
    assert_polynomial_in_size(build)


def test_receptive_field_of_a_huge_kernel() -> None:
    report = summary(
        nn.Sequential(nn.Conv1d(1, 1, BIG), nn.MaxPool1d(2, dilation=BIG)), (1, 4 * BIG)
    )
    fields = [row["receptive_field"] for row in report.to_dict()["layers"][1:]]
    assert fields[0]["size"] == [BIG]
    assert fields[1]["size"] == [BIG + BIG]


# -- the commands the analysis must answer at once -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (
            ["conv", "--input", "1x100000000", "--out-channels", "1", "--kernel", "10000000"],
            lambda d: d["macs"] == 10_000_000 * 90_000_001,
        ),
        (
            ["conv", "--input", "1x100", "--out-channels", "1", "--kernel", "3"]
            + ["--padding", "10000000", "--padding-mode", "replicate"],
            lambda d: d["forward"]["mults"] == 3 * (100 + 20_000_000 - 2),
        ),
        (
            ["pool", "--kind", "adaptive-max", "--input", "1x1000000000"]
            + ["--output-size", "1000000000"],
            lambda d: d["forward"].get("compares", 0) == 0,
        ),
        (
            ["pool", "--kind", "adaptive-max", "--input", "1x1000000000000"]
            + ["--output-size", "7"],
            lambda d: d["output_shape"] == [1, 7],
        ),
        (  # L < O < 2L, coprime: τ once looped over L / gcd windows
            ["pool", "--kind", "adaptive-max", "--input", "1x1000000007"]
            + ["--output-size", "1500000000"],
            lambda d: d["forward"]["compares"] == 1_000_000_006,  # L + O − gcd − O
        ),
        (  # stride D, dilation and kernel D + 1 (D = 10^6): D + 1 chains of 3 windows whose
            # neighbours share one position, τ = 2(D + 1); worst-case adds = windows − τ
            ["pool", "--input", "1x4000003000001", "--kernel", "1000001"]
            + ["--stride", "1000000", "--dilation", "1000001"],
            lambda d: (
                d["output_shape"] == [1, 3_000_003]
                and d["backward_input"]["adds"] == 3_000_003 - 2 * 1_000_001
            ),
        ),
        (
            ["pool", "--input", "1x1000000000", "--kernel", "2", "--dilation", "10000000"],
            lambda d: d["forward"]["compares"] == d["output_shape"][1],
        ),
    ],
)
def test_cli_answers_huge_sizes(argv: list[str], check: Callable[[dict], bool], capsys) -> None:
    assert main([*argv, "--json"]) == 0
    assert check(json.loads(capsys.readouterr().out))


def test_windows_closed_forms_match_enumeration() -> None:
    """The closed forms against direct enumeration of every (window, tap) on small sizes."""
    import random

    from convscope.geometry import reached_sources

    rng = random.Random(7)
    for _ in range(3000):
        size, k, s, d = rng.randint(1, 40), rng.randint(1, 9), rng.randint(1, 11), rng.randint(1, 9)
        start, count = rng.randint(-20, 4), rng.randint(1, 16)
        w = Windows(size, start, k, s, d, count)
        hits = [
            [o * s + t * d + start for t in range(k) if 0 <= o * s + t * d + start < size]
            for o in range(count)
        ]
        taps = {t for o in range(count) for t in range(k) if 0 <= o * s + t * d + start < size}
        assert w.pairs == sum(map(len, hits))
        assert w.windows_used == sum(1 for h in hits if h)
        assert w.taps_used == len(taps)
        assert w.positions_used() == len({p for h in hits for p in h})
        lo, hi = rng.randint(-2, size), rng.randint(0, size + 2)
        assert w.positions_used(lo, hi) == len({p for h in hits for p in h if lo <= p < hi})
    for _ in range(2000):  # a padded axis of real values: the sources every reached pad copies
        size, mode = rng.randint(1, 20), rng.choice(["reflect", "replicate", "circular"])
        limit = {"reflect": size - 1, "circular": size, "replicate": 30}[mode]
        before, after = rng.randint(0, limit), rng.randint(0, limit)
        k, s, d = rng.randint(1, 5), rng.randint(1, 6), rng.randint(1, 4)
        padded = size + before + after
        if d * (k - 1) + 1 > padded:
            continue
        w = Windows(padded, 0, k, s, d, (padded - d * (k - 1) - 1) // s + 1)
        reached = {o * s + t * d for o in range(w.count) for t in range(k)}
        sources = set()
        for q in reached:
            i = q - before
            if mode == "reflect":
                i = -i if i < 0 else (2 * (size - 1) - i if i >= size else i)
            elif mode == "replicate":
                i = min(max(i, 0), size - 1)
            else:
                i %= size
            sources.add(i)
        assert reached_sources(w, before, size, mode) == len(sources)


def _min_hitting(intervals: list[tuple[int, int]]) -> int:
    """The reference: fewest points that lie in every closed interval, by the greedy by right
    end (optimal for intervals), run on the enumerated windows."""
    count, last = 0, None
    for lo, hi in sorted(intervals, key=lambda iv: iv[1]):
        if last is None or lo > last:
            count += 1
            last = hi
    return count


def test_adaptive_min_hitting_matches_greedy() -> None:
    """τ of adaptive windows against the greedy by right end over the enumerated windows."""
    for size in range(1, 40):
        for out in range(1, 90):
            w = AdaptiveWindows(size, out)
            windows = [(lo, hi - 1) for lo, hi in (w.bounds(i) for i in range(out))]
            assert w.min_hitting() == _min_hitting(windows), (size, out)


def test_adaptive_min_hitting_between_l_and_2l_at_1e12() -> None:
    """τ for L < O < 2L at sizes near 10^12, where a loop over the windows would not finish.
    O = 2L − 1: the O − (L − 1) = L one-position windows sit on L distinct positions, so τ = L.
    O = L + 1: the two end windows are single positions and the L − 2 positions between
    form a path of two-position windows, covered by ⌊(L − 2)/2⌋ more."""
    size = BIG + 1
    assert AdaptiveWindows(size, 2 * size - 1).min_hitting() == size
    assert AdaptiveWindows(size, size + 1).min_hitting() == 2 + (size - 2) // 2
    assert AdaptiveWindows(3 * size, 3 * (size + 1)).min_hitting() == 3 * (2 + (size - 2) // 2)


def test_windows_min_hitting_matches_greedy_per_lattice() -> None:
    """τ of dilated, strided, padded windows against the greedy by right end run on each
    lattice of the enumerated windows (windows on different lattices share no position)."""
    import random
    from collections import defaultdict

    rng = random.Random(5)
    for _ in range(4000):
        size, k = rng.randint(1, 40), rng.randint(1, 7)
        s, d = rng.randint(1, 9), rng.randint(1, 9)
        start, count = rng.randint(-3 * k * d, 3), rng.randint(0, 30)
        lattices = defaultdict(list)
        for o in range(count):
            taps = [p for p in range(start + o * s, start + o * s + k * d, d) if 0 <= p < size]
            if taps:
                lattices[taps[0] % d].append((taps[0] // d, taps[-1] // d))
        want = sum(_min_hitting(v) for v in lattices.values())
        w = Windows(size, start, k, s, d, count)
        assert w.min_hitting() == want, (size, start, k, s, d, count)


def test_windows_min_hitting_with_huge_stride_and_dilation() -> None:
    """Stride D, dilation D + 1, kernel D + 1: D + 1 families, each a chain of c windows where
    neighbours share exactly one position, so τ = (D + 1)·⌈c/2⌉ (no loop over D)."""
    big, chain = 10**6, 3
    k, s, d = big + 1, big, big + 1
    count = (big + 1) * chain
    size = (count - 1) * s + (k - 1) * d + 1
    w = Windows(size, 0, k, s, d, count)
    assert w.min_hitting() == (big + 1) * ((chain + 1) // 2)


def test_copied_sources_of_reflect_and_circular_pads_match_enumeration() -> None:
    """The sources a reached padding position copies, counted per residue of the stride (no
    loop over the pad), against the set of copied positions enumerated."""
    import random

    from convscope.geometry import _copied_sources, padded_source

    rng = random.Random(3)
    for _ in range(3000):
        size, mode = rng.randint(1, 25), rng.choice(["reflect", "circular"])
        limit = size - 1 if mode == "reflect" else size
        before, after = rng.randint(0, limit), rng.randint(0, limit)
        k, s, d = rng.randint(1, 6), rng.randint(1, 9), rng.randint(1, 5)
        padded, start = size + before + after, rng.choice([0, rng.randint(0, 3)])
        if d * (k - 1) + 1 + start > padded:
            continue
        count = (padded - start - d * (k - 1) - 1) // s + 1
        w = Windows(padded, start, k, s, d, count)
        reached = {start + o * s + t * d for o in range(count) for t in range(k)}
        real = {q - before for q in reached if before <= q < before + size}
        pads = {q for q in reached if not before <= q < before + size}
        copied = {padded_source(q, before, size, mode) for q in pads} - real
        assert _copied_sources(w, before, size, mode) == len(copied)


def test_a_reflect_pad_of_ten_million_with_gaps_is_answered() -> None:
    """A strided conv whose windows skip positions, over a reflect pad of 10^8: counted per
    residue of the stride, it finishes (a loop over the pad would take minutes)."""
    from convscope import nn as cnn

    spec = cnn.Conv1d(1, 1, 1, stride=3, padding=10**8, padding_mode="reflect").spec
    cost = spec.cost((1, 10**9), 1)
    assert cost.forward.mults == (10**9 + 2 * 10**8 - 1) // 3 + 1
