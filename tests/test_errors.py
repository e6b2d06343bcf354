"""Bad input gets one clear message naming the rule and the numbers; the CLI exits with 2."""

import subprocess
import sys

import pytest

from convscope import ConvScopeError, LayerConfigError, ShapeError, nn
from convscope.cli import main
from convscope.ops.arithmetic import AddSpec
from convscope.ops.structural import ConcatSpec

API_CASES = [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), LayerConfigError, ["groups", "3", "2"]),
    (lambda: nn.Conv2d(3, 4, 0), LayerConfigError, ["kernel_size", ">= 1"]),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), LayerConfigError, ["same", "stride"]),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), LayerConfigError, ["padding", ">= 0"]),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), LayerConfigError, ["padding_mode"]),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), LayerConfigError, ["kernel_size", "2"]),
    (lambda: nn.Conv2d(3, 4, 5).output_shape((3, 4, 4)), ShapeError, ["5", "4 + 0 + 0 = 4"]),
    (lambda: nn.Conv2d(3, 4, 3).output_shape((2, 8, 8)), ShapeError, ["3 input channels", "2"]),
    (lambda: nn.Conv2d(3, 4, 3).output_shape((3, 8)), ShapeError, ["(C, H, W)", "(3, 8)"]),
    (lambda: nn.Conv2d(3, 4, 3).output_shape((3, 0, 8)), ShapeError, [">= 1", "(3, 0, 8)"]),
    (
        lambda: nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect").output_shape((1, 4, 4)),
        ShapeError,
        ["reflect", "(4, 4)", "size 4"],
    ),
    (lambda: nn.MaxPool2d(3, padding=2), LayerConfigError, ["half the kernel", "(2, 2)"]),
    (lambda: nn.MaxPool2d(5).output_shape((1, 3, 3)), ShapeError, ["would be 0"]),
    (lambda: nn.AvgPool2d(2, divisor_override=0), LayerConfigError, ["divisor_override"]),
    (
        lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
        LayerConfigError,
        ["output_padding", "stride", "dilation"],
    ),
    (lambda: nn.Linear(8, 4).output_shape((7,)), ShapeError, ["in_features=8", "(7)"]),
    (lambda: AddSpec().output_shape([(3, 4), (3, 5)]), ShapeError, ["one shape", "(3, 5)"]),
    (lambda: ConcatSpec().output_shape([(3, 4), (2, 5)]), ShapeError, ["other axes equal"]),
    (lambda: nn.Dropout(1.5), LayerConfigError, ["between 0 and 1", "1.5"]),
    (lambda: nn.Conv2d(3, 4, 3).cost((3, 8, 8), count="sparse"), ConvScopeError, ["sparse"]),
    (lambda: nn.Conv2d(3, 4, 3).cost((3, 8, 8), batch=0), ShapeError, ["batch", "0"]),
]


@pytest.mark.parametrize(("call", "error", "words"), API_CASES)
def test_api_errors_name_the_rule_and_numbers(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


CLI_CASES = [
    ["conv", "--input", "3x4x4", "--out-channels", "2", "--kernel", "5"],
    ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3", "--groups", "2"],
    ["conv", "--input", "3xfoo", "--out-channels", "2", "--kernel", "3"],
    ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3", "--padding", "1:x"],
    ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3,3,3"],
    [
        "conv",
        "--input",
        "3x8x8",
        "--out-channels",
        "2",
        "--kernel",
        "3",
        "--stride",
        "2",
        "--padding",
        "same",
    ],  # fmt: skip
    ["conv", "--input", "8", "--out-channels", "2", "--kernel", "3"],
    ["pool", "--input", "3x8x8", "--kernel", "3", "--padding", "2"],
    ["pool", "--input", "3x8x8", "--kind", "adaptive-avg"],
    [
        "conv-transpose",
        "--input",
        "2x4x4",
        "--out-channels",
        "2",
        "--kernel",
        "3",
        "--output-padding",
        "1",
    ],  # fmt: skip
    ["linear", "--input", "0", "--out-features", "3"],
    ["pool", "--input", "3x8", "--kind", "avg", "--kernel", "2", "--divisor-override", "3"],
]


@pytest.mark.parametrize("argv", CLI_CASES, ids=lambda a: " ".join(a[:4]))
def test_cli_exits_2_with_one_message(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convscope {argv[0]}: error: ")


def test_cli_process_prints_no_traceback():
    argv = ["conv", "--input", "3x4x4", "--out-channels", "2", "--kernel", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "convscope.cli", *argv], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "kernel" in done.stderr
