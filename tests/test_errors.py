"""Bad input gets one clear message naming the rule and the numbers; the CLI exits with 2."""

import json
import os
import subprocess
import sys

import numpy as np
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


# -- hostile input: the command line ------------------------------------------------------------


def _refused(capsys, argv: list[str], *words: str) -> str:
    """``argv`` exits 2 with one short line on stderr naming ``words``; returns the line."""
    try:
        code = main(argv)
    except SystemExit as done:  # argparse's own refusals
        code = done.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(lines) == 1, captured.err
    assert len(lines[0]) <= 600 and "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["conv", "--input", "3x8x8", "--out-channels", "9" * 5000, "--kernel", "3"],
        ["conv", "--input", "3x8x" + "9" * 4400, "--out-channels", "2", "--kernel", "3"],
        [
            "conv",
            "--input",
            "3x8x8",
            "--out-channels",
            "2",
            "--kernel",
            "3",
            "--padding",
            "1:" + "9" * 40,
        ],
        ["linear", "--input", "9" * 3000, "--out-features", "3"],
        ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3", "--batch", "9" * 5000],
    ],  # fmt: skip
    ids=["option", "input", "padding", "linear-input", "batch"],
)
def test_numbers_longer_than_the_limit_are_refused(capsys, argv):
    line = _refused(capsys, argv, "digits", "30")
    assert "9" * 100 not in line  # the value is not echoed whole


def test_numbers_up_to_the_limit_are_exact(capsys):
    big = "9" * 30
    assert main(["linear", "--input", big, "--out-features", big, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == int(big) ** 2


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["summary", "lenet5", "--depth", "-5"], ["--depth", ">= 0"]),
        (["train", "--seed", "-1"], ["--seed", ">= 0"]),
        (["train", "--lr", "nan"], ["--lr", "finite"]),
        (["train", "--epochs", "0"], ["--epochs", ">= 1"]),
        (["pool", "--input", "1x4x4", "--kernel", "2", "--analyze", "--trials", "0"], ["--trials"]),
        (["conv", "--input", "3x8x8", "--kernel", "3"], ["--out-channels", "required"]),
        (
            ["conv", "--input", "3x8x8", "--out-channels", "2", "--kernel", "3", "--bogus"],
            ["--bogus"],
        ),
        (["conv", "--input", "3x²x8", "--out-channels", "2", "--kernel", "3"], ["--input"]),
        (["conv", "--input", "3x٣x8", "--out-channels", "2", "--kernel", "3"], ["--input"]),
        (["pool", "--input", "3x8x8", "--kind", "a" * 10000], ["--kind"]),
    ],  # fmt: skip
)
def test_cli_options_are_checked_where_they_are_read(capsys, argv, words):
    _refused(capsys, argv, *words)


def test_out_must_be_a_writable_folder(capsys, tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    _refused(capsys, ["train", "--out", str(file)], "--out", "not a folder")
    _refused(capsys, ["train", "--out", "/dev/null"], "--out", "not a folder")
    _refused(capsys, ["train", "--out", str(file / "below")], "--out", "cannot make")
    if os.geteuid() != 0:  # root writes anywhere
        _refused(capsys, ["train", "--out", str(readonly)], "--out", "not writable")


def test_missing_files_are_one_line(capsys, tmp_path):
    _refused(capsys, ["predict", str(tmp_path / "none.npz"), str(tmp_path / "none.npy")], "none")


def test_linear_reads_the_features_from_the_last_axis_in_either_layout(capsys):
    for layout, given in (("hwc", "3x4x512"), ("chw", "3x4x512")):
        assert main(["linear", "--input", given, "--layout", layout, "--out-features", "10",
                     "--json"]) == 0  # fmt: skip
        data = json.loads(capsys.readouterr().out)
        assert data["input_shape"] == [3, 4, 512] and data["output_shape"] == [3, 4, 10]
        assert data["weights"] == 512 * 10
    # a spatial layer still moves the channels to the front
    assert main(["conv", "--input", "8x8x3", "--layout", "hwc", "--out-channels", "2",
                 "--kernel", "3", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["input_shape"] == [3, 8, 8]


# -- hostile input: models named by a Python file ------------------------------------------------


def test_a_model_file_that_raises_is_one_message_with_its_line(capsys, tmp_path):
    model = tmp_path / "model.py"
    model.write_text("import os\n\ndef helper():\n    raise RuntimeError('boom')\n\n"
                     "def build():\n    return helper()\n")  # fmt: skip
    line = _refused(capsys, ["summary", f"{model}:build", "--input", "1x8x8"], "RuntimeError",
                    "boom", f"{model}:4")  # fmt: skip
    assert "convscope/" not in line
    top = tmp_path / "top.py"
    top.write_text("x = 1\nraise KeyError('top')\n")
    _refused(capsys, ["summary", f"{top}:x", "--input", "1x8x8"], "KeyError", f"{top}:2")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("x = (\n")
    _refused(capsys, ["summary", f"{syntax}:x", "--input", "1x8x8"], "SyntaxError", str(syntax))


def test_a_missing_attribute_lists_what_the_file_defines(capsys, tmp_path):
    model = tmp_path / "model.py"
    model.write_text("import os\nfrom convscope import nn\n\nclass Net(nn.Sequential):\n"
                     "    pass\n\ndef build():\n    return Net()\n")  # fmt: skip
    line = _refused(capsys, ["summary", f"{model}:nope", "--input", "1x8x8"], "'nope'", "build",
                    "Net")  # fmt: skip
    assert "os" not in line.split("defines:")[1]  # imported modules are not offered


def test_a_forward_that_raises_names_the_users_line(capsys, tmp_path):
    pytest.importorskip("torch")
    model = tmp_path / "net.py"
    model.write_text("import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                     "        raise ValueError('bad forward')\n")  # fmt: skip
    _refused(capsys, ["summary", f"{model}:Net", "--input", "1x8x8"], "bad forward", f"{model}:5")


# -- hostile input: the Python API's arguments ---------------------------------------------------


def test_numpy_integers_are_sizes_and_bools_are_not():
    from convscope.geometry import check_batch, check_sizes, int_tuple, pad_pairs, positive_int

    assert check_sizes((np.int64(3), np.int32(8), 8), "t") == (3, 8, 8)
    assert all(type(v) is int for v in check_sizes(np.array([3, 8]), "t"))
    assert type(positive_int(np.int64(4), "n")) is int and type(check_batch(np.int16(2))) is int
    assert int_tuple(np.int64(3), 2, "k") == (3, 3)
    assert pad_pairs((np.int64(1), (np.int8(0), 2)), 2, (3, 3), (1, 1), (1, 1)) == ((1, 1), (0, 2))
    layer = nn.Conv2d(3, 4, np.int64(3), stride=np.int64(2), padding=np.int64(1))
    torch_like = nn.Conv2d(3, 4, 3, 2, 1)
    assert layer.cost((np.int64(3), 9, 9)) == torch_like.cost((3, 9, 9))
    assert nn.Conv2d(np.int64(3), np.int64(4), 3).output_shape((3, 8, 8)) == (4, 6, 6)
    for bad in (True, np.bool_(True)):
        for make, args in (
            (nn.Conv2d, (bad, 4, 3)),
            (nn.Conv2d, (3, bad, 3)),
            (nn.Conv2d, (3, 4, bad)),
            (nn.Linear, (bad, 3)),
        ):
            with pytest.raises(LayerConfigError):
                make(*args)
        with pytest.raises(ShapeError):
            nn.Conv2d(3, 4, 3).output_shape((3, bad, 8))
    with pytest.raises(LayerConfigError, match="kernel_size"):
        nn.Conv2d(3, 4, 3.0)  # a float is not a size, and the message says which argument


def test_api_entry_points_name_a_wrong_argument():
    from convscope import compose, summary
    from convscope.compose import compare_cost, compose_spec, parse_chain

    conv = nn.Conv2d(1, 1, 3)
    cases = [
        (lambda: compose(None), "layers"),
        (lambda: compose_spec(42), "layers"),
        (lambda: compare_cost([conv], input_shape=5), "input_shape"),
        (lambda: compose([conv], input_shape="1x8x8"), "input_shape"),
        (lambda: parse_chain("conv k=3"), "texts"),
        (lambda: summary("resnet50", None), "input_shape"),
        (lambda: summary("lenet5", (1, 32, 32), batch=True), "batch"),
        (lambda: summary("lenet5", (1, 32, 32), count=None), "count"),
        (lambda: summary("lenet5", (1, 32, 32), dtype="bogus"), "dtype"),
        (lambda: summary("lenet5", (1, 32, 32)).shown(-1), "depth"),
        (lambda: summary("lenet5", (1, 32, 32)).to_dict(depth=1.5), "depth"),
    ]
    for call, word in cases:
        with pytest.raises(ConvScopeError, match=word):
            call()
    report = summary("lenet5", (np.int64(1), 32, 32), batch=np.int64(2))
    assert report.total_macs == summary("lenet5", (1, 32, 32), batch=2).total_macs


def test_norm_numbers_and_huge_sizes_in_the_python_api():
    """eps must be a finite number > 0 and momentum in [0, 1]; sizes past float range still
    build (the initialiser's bound is taken through the log); NumPy ints are stored as ints."""
    import numpy as np

    from convscope import nn as cnn

    for make in (
        lambda: cnn.BatchNorm2d(4, eps=-1),
        lambda: cnn.LayerNorm(4, eps=0),
        lambda: cnn.GroupNorm(2, 4, eps=float("nan")),
        lambda: cnn.BatchNorm2d(4, momentum=2),
    ):
        with pytest.raises(ConvScopeError, match="eps must be|momentum must be"):
            make()
    assert cnn.Linear(10**400, 3).spec.in_features == 10**400
    spec = cnn.Conv2d(np.int64(4), np.int64(8), 3).spec
    assert type(spec.in_channels) is int and type(spec.out_channels) is int
    assert type(cnn.Linear(np.int64(4), 3).spec.in_features) is int
    with pytest.raises(ConvScopeError, match="dim 99"):
        cnn.Concat(cnn.ReLU(), dim=99).output_shape((3, 4, 4))
