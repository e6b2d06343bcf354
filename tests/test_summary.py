"""Whole-network summaries: totals are the layers' own answers added up, receptive fields match
hand derivations and a measured field, and nothing is allocated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convscope import nn, summary
from convscope.cli import main
from convscope.containers import Graph, Node
from convscope.ops.conv import ConvSpec


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())),
        nn.MaxPool2d(2),
        nn.Concat(nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3, padding=1)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_totals_are_the_layers_answers_added_up():
    model = small_net()
    report = summary(model, (3, 16, 16), batch=4)
    leaves = [row for row in report.layers if not row.container]
    assert report.total_params == model.params().params == sum(r.params for r in leaves)
    assert report.total_buffers == 8 * 2 + 1
    assert report.total_macs == model.macs((3, 16, 16), 4)
    cost = model.cost((3, 16, 16), 4)
    assert report.forward == cost.forward
    assert report.backward == cost.backward
    assert report.training_step.total == cost.forward.total + cost.backward.total
    assert report.layers[0].output_shape == (5,)
    # activation memory: every leaf output, float32, for the batch
    expected = sum(4 * 4 * int(np.prod(r.output_shape)) for r in leaves)
    assert report.activation_bytes == expected
    assert report.param_bytes == 4 * (report.total_params + report.total_buffers)
    names = [r.name for r in report.layers]
    assert "3.branch.0" in names and "3.add" in names and "5.concat" in names


def test_summary_allocates_no_parameters():
    model = small_net()
    summary(model, (3, 32, 32), batch=64)
    assert all(not p.allocated for _, p in model._named(""))


def test_receptive_fields_of_a_chain_by_hand():
    # conv3 p1 → pool2 s2 → conv3 (d=2) p2 → conv5 s2 p2, per Araujo et al.'s recurrences:
    # r = 1 + 2·1 = 3 (j 1, p 1); r = 3 + 1·1 = 4 (j 2, p 1); r = 4 + 2·2·2 = 12 (j 2,
    # p 1 + 2·2 = 5); r = 12 + 4·2 = 20 (j 4, p 5 + 2·2 = 9).
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=2, dilation=2),
        nn.Conv2d(1, 1, 5, stride=2, padding=2),
    )  # fmt: skip
    rows = [r for r in summary(model, (1, 32, 32)).layers if not r.container]
    got = [(r.field.size[0], r.field.stride[0], r.field.padding[0]) for r in rows]
    assert got == [(3, 1, 1), (4, 2, 1), (12, 2, 5), (20, 4, 9)]


def measured_field(model, shape, out_index):
    """Input positions whose gradient is non-zero for one output position (ones weights)."""
    for _, p in model._named(""):
        if p.trainable:
            p.data = np.ones(p.shape)
    model.astype(np.float64)
    x = np.random.default_rng(0).uniform(0.5, 1.5, (1, *shape))
    y = model(x)
    g = np.zeros_like(y)
    g[(0, 0, *out_index)] = 1.0
    gx = model.backward(g)
    hit = np.nonzero(np.abs(gx[0, 0]) > 0)
    return [(int(a.min()), int(a.max())) for a in hit]


@pytest.mark.parametrize(
    ("out_index", "interior"), [((3, 3), True), ((2, 4), True), ((0, 0), False), ((5, 7), False)]
)
def test_receptive_field_equals_the_measured_one(out_index, interior):
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(1, 1, 3, stride=2, padding=1),
        nn.Conv2d(1, 1, (3, 5), padding=(1, 2), dilation=(2, 1)),
    )  # fmt: skip
    field = summary(model, (1, 32, 32)).layers[0].field
    measured = measured_field(model, (1, 32, 32), out_index)
    for axis, (lo, hi) in enumerate(measured):
        start = out_index[axis] * field.stride[axis] - field.padding[axis]
        end = start + field.size[axis] - 1
        if interior:  # no path through an inner layer's padding: exactly the formula's field
            assert (lo, hi) == (start, end)
        else:  # near a border some paths end in padding: within the formula's field
            assert start <= lo <= hi <= end


def test_residual_paths_that_do_not_line_up_are_flagged():
    aligned = nn.Residual(nn.Conv2d(2, 2, 3, padding=1))
    shifted = nn.Residual(nn.Conv2d(2, 2, 3, padding=((2, 0), (1, 1))))
    assert not summary(aligned, (2, 8, 8)).layers[0].field.misaligned
    report = summary(shifted, (2, 8, 8))
    assert report.layers[0].field.misaligned
    assert "misaligned" in report.table()


def test_graph_fork_gradient_and_fields():
    g = Graph(
        {
            "a": Node(ConvSpec.create(2, 2, 2, 3, padding=1), ["input"]),
            "b": Node(ConvSpec.create(2, 2, 2, 3, padding=1), ["a"]),
            "c": Node(ConvSpec.create(2, 2, 2, 1), ["a"]),
            "sum": Node(_add(), ["b", "c"]),
        },
        "sum",
    )
    report = summary(g, (2, 8, 8))
    a = next(r for r in report.layers if r.name == "a")
    alone = ConvSpec.create(2, 2, 2, 3, padding=1).cost((2, 8, 8))
    # "a" feeds two steps: its input gradient also pays for adding their two gradients
    assert a.cost.backward_input.adds == alone.backward_input.adds + 2 * 8 * 8
    assert report.layers[0].field.size == (5, 5)


def _add():
    from convscope.ops.arithmetic import AddSpec

    return AddSpec()


@pytest.mark.parametrize("fmt", ["--json", "--markdown", "--csv", None])
def test_cli_summary_formats(tmp_path, capsys, fmt):
    spec = tmp_path / "net.py"
    spec.write_text(
        "from convscope import nn\n"
        "def net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))\n"
    )
    argv = ["summary", f"{spec}:net", "--input", "3x8x8", "--depth", "1"]
    assert main(argv + ([fmt] if fmt else [])) == 0
    out = capsys.readouterr().out
    if fmt == "--json":
        data = json.loads(out)
        assert data["total_params"] == 4 * 27 + 4 + 144 * 2 + 2
        assert {"layers", "total_macs", "trainable_params", "forward", "backward"} <= set(data)
        assert data["layers"][1]["receptive_field"]["size"] == [3, 3]
    elif fmt == "--csv":
        assert out.splitlines()[0].startswith("layer,type,output")
    else:
        assert "Conv2d" in out and "total params" in out


def test_cli_summary_needs_an_input_for_a_file_model(tmp_path, capsys):
    spec = tmp_path / "net.py"
    spec.write_text("from convscope import nn\nnet = nn.ReLU()\n")
    assert main(["summary", f"{spec}:net"]) == 2
    assert "--input" in capsys.readouterr().err
