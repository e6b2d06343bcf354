"""The CLI is a thin layer over the Python API: same numbers, every input form."""

from __future__ import annotations

import json

import pytest

from convscope import nn
from convscope.cli import main, parse_padding, parse_shape

JSON_KEYS = {
    "input_shape", "output_shape", "params", "weights", "biases", "macs", "count", "forward",
    "backward_input", "backward_weight", "backward_bias",
}  # fmt: skip


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_matches_the_python_api(capsys):
    data = run_json(
        capsys, "conv", "--input", "4x9x9", "--out-channels", "6", "--kernel", "3,5",
        "--padding", "1:2,0:3", "--dilation", "2", "--groups", "2", "--stride", "1,2",
    )  # fmt: skip
    layer = nn.Conv2d(4, 6, (3, 5), (1, 2), ((1, 2), (0, 3)), 2, 2)
    cost = layer.cost((4, 9, 9))
    assert set(data) >= JSON_KEYS
    assert data["output_shape"] == list(layer.output_shape((4, 9, 9)))
    assert data["forward"] == {"mults": cost.forward.mults, "adds": cost.forward.adds}
    assert data["backward_weight"]["adds"] == cost.backward_weight.adds
    assert data["backward_bias"] == {"adds": cost.backward_bias.adds}
    assert data["params"] == 6 * 2 * 3 * 5 + 6 and data["count"] == "exact"


def test_batch_adds_the_batch_axis_and_scales_counts(capsys):
    base = ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3"]
    one = run_json(capsys, *base)
    four = run_json(capsys, *base, "--batch", "4")
    assert one["input_shape"] == [3, 8, 8] and four["input_shape"] == [4, 3, 8, 8]
    assert four["output_shape"] == [4, 2, 6, 6]
    assert four["forward"]["mults"] == 4 * one["forward"]["mults"]
    assert four["macs"] == 4 * one["macs"]
    # the weight gradient sums over the batch: 4·products − entries, not 4·(products − entries)
    weights = one["weights"]
    assert four["backward_weight"]["adds"] == 4 * one["forward"]["mults"] - weights
    assert four["backward_weight"]["adds"] != 4 * one["backward_weight"]["adds"]


def test_dense_count_and_same_padding(capsys):
    base = ["conv", "--input", "1x6x6", "--out-channels", "1", "--kernel", "4", "--padding", "same"]
    exact = run_json(capsys, *base)
    dense = run_json(capsys, *base, "--count", "dense")
    assert exact["output_shape"] == dense["output_shape"] == [1, 6, 6]
    assert dense["forward"]["mults"] == 36 * 16 and exact["forward"]["mults"] < 36 * 16
    assert dense["count"] == "dense" and exact["macs"] == dense["macs"] == 36 * 16


def test_pool_keys(capsys):
    mx = run_json(capsys, "pool", "--input", "2x6x6", "--kernel", "3", "--stride", "2")
    assert mx["forward"]["compares"] == 2 * 4 * 8 and mx["backward_weight"] is None
    assert mx["backward_input"]["upper_bound"] is True
    avg = run_json(capsys, "pool", "--input", "2x6x6", "--kind", "avg", "--kernel", "2")
    assert avg["forward"] == {"mults": 0, "adds": 2 * 9 * 3, "divides": 18}
    assert "upper_bound" not in avg["backward_input"] and avg["backward_bias"] is None
    ada = run_json(capsys, "pool", "--input", "2x5x5", "--kind", "adaptive-max", "--output-size",
                   "1x1")  # fmt: skip
    assert ada["output_shape"] == [2, 1, 1] and ada["forward"]["compares"] == 2 * 24


def test_linear_and_transpose(capsys):
    lin = run_json(capsys, "linear", "--input", "512", "--out-features", "10", "--batch", "8")
    assert lin["output_shape"] == [8, 10] and lin["macs"] == 8 * 512 * 10
    tr = run_json(capsys, "conv-transpose", "--input", "4x5x5", "--out-channels", "2", "--kernel",
                  "3", "--stride", "2", "--padding", "1", "--output-padding", "1")  # fmt: skip
    assert tr["output_shape"] == [2, 10, 10] and tr["weights"] == 4 * 2 * 9


@pytest.mark.parametrize("flag", [[], ["--explain"], ["--markdown"], ["--markdown", "--explain"]])
def test_human_outputs(capsys, flag):
    argv = ["conv", "--input", "10x64x64", "--out-channels", "10", "--kernel", "6", "--stride",
            "2", "--padding", "1", *flag]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3,385,600" in out and "3,610" in out
    if "--explain" in flag:
        assert ("H_out" in out) or ("H_{" in out)
    if "--markdown" in flag:
        assert out.startswith("| |")
        assert ("$$" in out) == ("--explain" in flag)


def test_parsers():
    assert parse_shape("10x64x64") == (10, 64, 64)
    assert parse_shape("64x64x10", "hwc") == (10, 64, 64)
    assert parse_shape("7×3") == (7, 3)
    assert parse_padding("same") == "same" and parse_padding("2") == 2
    assert parse_padding("1,2") == (1, 2)
    assert parse_padding("1:2,0") == ((1, 2), 0)


def test_symbolic_cost_does_not_depend_on_size():
    # Analysis is closed-form: a layer over a million-by-million image at batch 1000 is exact.
    layer = nn.Conv2d(512, 512, 3, padding=1)
    cost = layer.cost((512, 10**6, 10**6), batch=1000)
    taps = 3 * 10**6 - 2  # per axis: 3 taps per output, minus the two that land on padding
    assert cost.forward.mults == 1000 * 512 * 512 * taps * taps
    pool = nn.MaxPool2d(3, 2, 1).cost((512, 10**6, 10**6), batch=1000)
    assert pool.backward_input.adds == 1000 * 512 * ((5 * 10**5) ** 2 - (25 * 10**4) ** 2)


def test_adaptive_pool_takes_one_output_size_for_every_axis(capsys) -> None:
    """``--output-size 7`` is PyTorch's ``output_size=7`` (every axis), as ``7x7`` is."""
    outs = []
    for size in ("7", "7x7"):
        argv = ["pool", "--input", "1x96x96", "--kind", "adaptive-max", "--output-size", size]
        assert main([*argv, "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["output_shape"])
    assert outs == [[1, 7, 7], [1, 7, 7]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "668266182"], "must be <= 65535"),
        (["serve", "--port", "-1"], "must be >= 0"),
        (["serve", "--host", "bogus..host..."], "is not a host name or address"),
    ],
)
def test_serve_refuses_a_port_no_socket_takes(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
