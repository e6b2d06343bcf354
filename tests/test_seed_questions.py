"""The seed's questions (shared/seed-questions.md), answered by the CLI.

Each expected number is derived here from first principles, then checked against the
instrumented reference, which counts the operations it performs.
"""

from __future__ import annotations

import json

from convscope.cli import main
from tests.reference import instrumented as ref


def cli_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_q1_ten_6x6_filters_stride_2_padding_1_on_64x64x10(capsys):
    # Output side: (64 + 2·1 − 6) // 2 + 1; 10 filters, each 6·6·10 weights plus a bias.
    side = (64 + 2 * 1 - 6) // 2 + 1
    assert side == 31
    answer = cli_json(
        capsys, "conv", "--input", "64x64x10", "--layout", "hwc", "--out-channels", "10",
        "--kernel", "6", "--stride", "2", "--padding", "1",
    )  # fmt: skip
    assert answer["input_shape"] == [10, 64, 64]
    assert answer["output_shape"] == [10, side, side]
    assert answer["weights"] == 10 * 6 * 6 * 10 and answer["biases"] == 10
    assert answer["params"] == 3610
    # Dense MACs: every output of every filter takes 6·6·10 products.
    assert answer["macs"] == 10 * side * side * 6 * 6 * 10

    # Counts scale with C_out · C_in (each output channel sums over every input channel);
    # the channel pair's own counts come from the instrumented reference on the full 64×64 plane.
    one = ref.conv_counts((1, 64, 64), 1, (6, 6), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, True,
                          "zeros", 1, "exact")  # fmt: skip
    # Padding 1 on a 6-tap window with stride 2: only the first and last output rows touch
    # the padding, one tap each, so 31·6 − 2 valid taps per axis.
    assert one["forward"]["mults"] == (31 * 6 - 2) ** 2
    assert answer["forward"]["mults"] == 100 * one["forward"]["mults"]
    # With a bias every output costs as many additions as products.
    assert answer["forward"]["adds"] == answer["forward"]["mults"]
    assert answer["backward_weight"]["mults"] == answer["forward"]["mults"]
    # g_w: one sum per weight entry, 3,600 sums in all; g_b: 31² terms per channel.
    assert answer["backward_weight"]["adds"] == answer["forward"]["mults"] - 3600
    assert one["backward_weight"]["adds"] == one["forward"]["mults"] - 36
    assert answer["backward_bias"]["adds"] == 10 * (31 * 31 - 1)
    # g_z: one sum per input entry that some window reaches; stride 2 < 6 reaches all 64·64.
    assert one["backward_input"]["adds"] == one["forward"]["mults"] - 64 * 64
    assert answer["backward_input"]["adds"] == answer["forward"]["mults"] - 10 * 64 * 64


def test_q2_3x3_kernel_on_128x128_image_shapes_and_counts(capsys):
    answer = cli_json(
        capsys, "conv", "--input", "1x128x128", "--out-channels", "1", "--kernel", "3",
        "--no-bias",
    )  # fmt: skip
    # x and ε: (128 − 3 + 1)²; g_z: the input's shape; g_w: the kernel's.
    assert answer["output_shape"] == [1, 126, 126]
    assert answer["input_shape"] == [1, 128, 128]
    assert answer["weights"] == 9 and answer["biases"] == 0 and answer["backward_bias"] is None
    outputs = 126 * 126
    expected = {
        # forward: each output sums 9 products: 9 mults, 8 adds
        "forward": {"mults": 9 * outputs, "adds": 8 * outputs},
        # g_w: each of the 9 weights sums 126² products
        "backward_weight": {"mults": 9 * outputs, "adds": 9 * (outputs - 1)},
        # g_z: the same 9·126² products, summed into 128² entries
        "backward_input": {"mults": 9 * outputs, "adds": 9 * outputs - 128 * 128},
    }
    for key, counts in expected.items():
        assert answer[key] == counts, key
    counted = ref.conv_counts((1, 128, 128), 1, (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1,
                              False, "zeros", 1, "exact")  # fmt: skip
    assert tuple(counted["output_shape"]) == (1, 126, 126)
    for key, counts in expected.items():
        assert counted[key] == counts, key
    values = counted["values"]
    assert values["gx"].shape == (1, 1, 128, 128) and values["gw"].shape == (1, 1, 3, 3)


def test_q2_explain_reads_like_an_answer(capsys):
    argv = ["conv", "--input", "1x128x128", "--out-channels", "1", "--kernel", "3", "--no-bias"]
    assert main([*argv, "--explain"]) == 0
    text = capsys.readouterr().out
    for phrase in (
        "H_out = ⌊(H + 2·p_H − (k_H − 1) − 1) / s_H⌋ + 1 = "
        "⌊(128 + 2·0 − (3 − 1) − 1) / 1⌋ + 1 = 126",
        "ε = ∂L/∂x has the output's shape (1, 126, 126); g_z has the input's shape (1, 128, 128)",
        "g_w has the weight's shape (1, 1, 3, 3)",
        "adds = mults − N · C_out · H_out · W_out = 142884 − 1 · 1 · 126 · 126 = 127,008",
    ):
        assert phrase in text
