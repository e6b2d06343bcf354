"""``convscope draw summary`` and ``draw train``, and the curves ``convscope train`` writes: the
pictures hold the report's and the run's own numbers, and bad input is one line, exit 2."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope import nn, summary
from convscope.cli import main
from convscope.containers import Sequential
from convscope.draw.curves import curve_series, curves_figure, curves_plot
from convscope.draw.network import field_state, layer_label, network_figure, network_plot
from convscope.errors import ConvScopeError
from convscope.module import CheckpointError
from convscope.specfile import load_spec
from convscope.train import TrainConfig, train

SVG = "{http://www.w3.org/2000/svg}"
QUIET = {"echo": lambda s: None, "log": None}

SPEC = {
    "input": [3, 16, 16],
    "layers": [
        {"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
        "relu",
        {"maxpool2d": {"kernel_size": 2}},
        {
            "residual": {
                "branch": [
                    {"conv2d": {"out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}},
                    "relu",
                ],
                "shortcut": [
                    {"conv2d": {"out_channels": 16, "kernel_size": 1, "stride": 2, "bias": False}}
                ],
            }
        },
        {"adaptiveavgpool2d": {"output_size": 1}},
        "flatten",
        {"linear": {"out_features": 10}},
    ],
}


def svg_texts(path) -> list[str]:
    """Every text element of an SVG file (parsing it proves it is well-formed XML)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(node.itertext()).strip() for node in root.iter(f"{SVG}text")]


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("convscope draw: error: ")
    return err


# -- draw summary ------------------------------------------------------------------------------


def test_draw_summary_png_of_a_zoo_model(tmp_path, capsys):
    out = tmp_path / "n.png"
    assert main(["draw", "summary", "lenet5", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    with Image.open(out) as image:
        assert image.format == "PNG"
        # 8 × 9.5 inches at 100 dpi: the figure's own size, not a thumbnail or a blank
        assert image.size == (800, 950)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # bars, lines and text, not one colour
    assert [p.name for p in tmp_path.iterdir()] == ["n.png"]  # no temporary file left


def test_draw_summary_svg_names_every_layer_and_the_report_totals(tmp_path):
    out = tmp_path / "n.svg"
    assert main(["draw", "summary", "resnet18", "--out", str(out)]) == 0
    texts = svg_texts(out)
    report = summary("resnet18", (3, 224, 224))
    title = next(t for t in texts if t.startswith("resnet18, input 1×3×224×224"))
    assert report.total_params == 11_689_512  # torchvision's figure
    assert f"{report.total_params:,} parameters" in title
    assert f"{report.total_macs:,} MACs" in title
    leaves = [layer_label(row) for row in report.layers if not row.container]
    assert len(leaves) == 69 and set(leaves) <= set(texts)  # every one labelled, none skipped
    assert {"conv1", "layer1.0.0.branch.conv1", "layer1.0.1 ReLU", "fc"} <= set(texts)
    legend = " ".join(texts)
    assert "global: sees the whole input (3 layers)" in legend  # avgpool, flatten, fc


def test_draw_summary_of_a_spec_file(tmp_path):
    spec = tmp_path / "net.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "spec.svg"
    assert main(["draw", "summary", str(spec), "--out", str(out)]) == 0
    texts = svg_texts(out)
    model = load_spec(str(spec))
    report = summary(model, model.input_shape)
    assert report.total_params == 1690
    assert any(f"{report.total_params:,} parameters" in t for t in texts)
    # a positional name gets its kind, so the axis reads "3.branch.0 Conv2d", not "3.branch.0"
    assert {"0 Conv2d", "3.branch.0 Conv2d", "3.add", "6 Linear"} <= set(texts)


def test_the_network_picture_plots_the_reports_own_numbers():
    report = summary("resnet18", (3, 224, 224))
    rows = [row for row in report.layers if not row.container]
    figure = network_plot(report)
    field_ax, cost_ax, memory_ax = figure.axes[:3]
    macs, params = (container.datavalues for container in cost_ax.containers)
    assert macs.tolist() == [row.macs for row in rows]
    assert params.tolist() == [row.params for row in rows]
    assert memory_ax.containers[0].datavalues.tolist() == [row.activation_bytes for row in rows]
    lines = {line.get_label(): line for line in field_ax.get_lines()}
    for label, attribute in (("size", "size"), ("stride", "stride")):
        plotted = lines[label].get_ydata()
        for value, row in zip(plotted, rows):
            if field_state(row.field) == "size":
                assert value == float(getattr(row.field, attribute)[0])
            else:
                assert math.isnan(value)  # a global field is a marker, never a 0
    global_marks = [line for label, line in lines.items() if label.startswith("global")]
    assert list(global_marks[0].get_xdata()) == [66, 67, 68]


def test_non_square_fields_get_a_line_per_axis():
    spec = {
        "input": [1, 12, 20],
        "layers": [
            {"conv2d": {"out_channels": 2, "kernel_size": [3, 5]}},
            {"maxpool2d": {"kernel_size": [1, 2]}},
        ],
    }
    model = load_spec(spec)
    figure = network_plot(summary(model, model.input_shape))
    lines = {line.get_label(): line.get_ydata().tolist() for line in figure.axes[0].get_lines()}
    # 3×5 then 1×2: sizes 3, 3 and 5, 6; strides 1, 1 and 1, 2
    assert lines == {
        "size (axis 1)": [3.0, 3.0],
        "size (axis 2)": [5.0, 6.0],
        "stride (axis 1)": [1.0, 1.0],
        "stride (axis 2)": [1.0, 2.0],
    }


def test_names_are_drawn_as_written_never_as_mathematics(tmp_path):
    report = summary(Sequential(nn.Conv2d(1, 2, 3)), (1, 8, 8))
    report.layers[1].name = "cost$_{a}$"  # matplotlib would typeset this; "$x^$" would raise
    report.model = "net$^$"
    out = tmp_path / "n.svg"
    out.write_bytes(network_figure(report, "svg"))
    texts = svg_texts(out)
    assert "cost$_{a}$" in texts and any(t.startswith("net$^$, input") for t in texts)


def test_figures_are_refused_in_other_formats():
    report = summary("lenet5", (1, 32, 32))
    with pytest.raises(ConvScopeError, match="png or svg"):
        network_figure(report, "pdf")
    with pytest.raises(ConvScopeError, match="png or svg"):
        curves_figure({"history": []}, "gif")


def test_pictures_render_the_same_from_several_threads():
    """A web server draws from several threads: no shared pyplot state, same bytes."""
    history = [
        {"epoch": e, "loss": 1 / e, "train_accuracy": 0.5, "test_accuracy": 0.4} for e in (1, 2)
    ]
    alone = curves_figure(history, "png")
    results: dict[int, bytes] = {}

    def draw(index: int) -> None:
        results[index] = curves_figure(history, "svg" if index % 2 else "png")

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] == results[2] == alone
    assert b"<text" in results[1] and b"<text" in results[3]  # SVG text stayed text


# -- training curves ------------------------------------------------------------------------------


def test_train_writes_curves_and_draw_train_plots_the_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert main(["train", "--epochs", "2", "--limit", "64", "--out", str(run)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    curves = run / "curves.png"
    with Image.open(curves) as image:
        assert image.format == "PNG" and image.size == (700, 300)
    assert curves.stat().st_mode & 0o777 == 0o640  # the umask's mode, as metrics.json's
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.npz", "curves.png", "metrics.json"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["curves"] == str(curves)
    history = metrics["history"]

    out = tmp_path / "c.svg"
    assert main(["draw", "train", str(run / "metrics.json"), "--out", str(out)]) == 0
    texts = svg_texts(out)
    last = history[-1]
    title = (
        f"epochs 1–2: loss {last['loss']:.4f}, training {100 * last['train_accuracy']:.1f}%, "
        f"held-out {100 * last['test_accuracy']:.1f}%"
    )
    assert title in texts
    assert {"1", "2", "epoch", "training", "held-out"} <= set(texts)

    series = curve_series(metrics)
    assert series.epochs == (1, 2)
    assert list(series.loss) == [h["loss"] for h in history]
    figure = curves_plot(series)
    loss_ax, acc_ax = figure.axes
    assert loss_ax.get_lines()[0].get_ydata().tolist() == [h["loss"] for h in history]
    plotted = {line.get_label(): line.get_ydata().tolist() for line in acc_ax.get_lines()}
    assert plotted["training"] == [100 * h["train_accuracy"] for h in history]
    assert plotted["held-out"] == [100 * h["test_accuracy"] for h in history]


def test_a_resumed_checkpoint_with_a_damaged_history_is_refused_before_training(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(epochs=1, limit=16, out=run), **QUIET)
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta"][()]))
    meta["history"][0]["loss"] = "low"
    arrays["meta"] = np.array(json.dumps(meta))
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **arrays)
    with pytest.raises(CheckpointError, match=r"history\[0\]: 'loss' must be a finite number"):
        train(TrainConfig(epochs=2, limit=16, out=tmp_path / "again", resume=damaged), **QUIET)


# -- bad input: one line on stderr, exit 2, nothing written ---------------------------------------

GOOD_HISTORY = [{"epoch": 1, "loss": 0.5, "train_accuracy": 0.8, "test_accuracy": 0.7}]
NAN_LOSS = b'{"history": [{"epoch": 1, "loss": NaN, "train_accuracy": 0.8, "test_accuracy": 0.7}]}'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not JSON"),
        (b"\xff\xfe garbage", "is not JSON"),
        (b"[1, 2]", "not a run's metrics"),
        (b'{"history": {}}', "'history' list"),
        (b'{"history": []}', "no epochs"),
        (b'{"history": [3]}', r"history\[0\] must be an object"),
        (json.dumps({"history": [{**GOOD_HISTORY[0], "loss": "x"}]}).encode(), "'loss' must be"),
        (NAN_LOSS, "'loss' must be a finite number"),
        (
            json.dumps({"history": [{**GOOD_HISTORY[0], "test_accuracy": 7}]}).encode(),
            "'test_accuracy' must be a number from 0 to 1",
        ),  # fmt: skip
        (json.dumps({"history": [{**GOOD_HISTORY[0], "epoch": True}]}).encode(), "'epoch'"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
    ids=lambda value: repr(value)[:30] if isinstance(value, bytes) else None,
)
def test_bad_metrics_are_one_line(tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)  # short paths: a message shows at most 60 characters of one
    Path("metrics.json").write_bytes(content)
    out = tmp_path / "c.png"
    assert main(["draw", "train", "metrics.json", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "metrics.json" in err
    assert re.search(message, err), err
    assert not out.exists()


def test_missing_huge_and_folder_metrics_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "c.png")
    assert main(["draw", "train", str(tmp_path / "none.json"), "--out", out]) == 2
    assert "no metrics file at" in one_line_error(capsys)
    assert main(["draw", "train", str(tmp_path), "--out", out]) == 2
    assert "is a folder" in one_line_error(capsys)
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(5 << 20)  # sparse: 5 MiB of zeros, never read past the limit
    assert main(["draw", "train", str(huge), "--out", out]) == 2
    assert "larger than 4 MiB" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("command", "name", "message"),
    [
        (["draw", "summary", "lenet5"], "n.pdf", "suffix: .png or .svg"),
        (["draw", "summary", "lenet5"], "n", "suffix: .png or .svg"),
        (["draw", "summary", "lenet5"], "folder.png", "is a folder"),
        (["draw", "summary", "lenet5"], "missing/n.png", "is missing"),
        (["draw", "summary", "lenet5"], "file.txt/n.png", "is missing"),
        (["draw", "train", "metrics.json"], "c.gif", "suffix: .png or .svg"),
    ],
)
def test_bad_outputs_are_one_line(tmp_path, capsys, monkeypatch, command, name, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "metrics.json").write_text(json.dumps({"history": GOOD_HISTORY}))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*command, "--out", name]) == 2
    assert message in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_deep_network_draws_its_bars_as_collections() -> None:
    """Past MANY_BARS layers the bars are one collection each (ax.bar would take seconds per
    thousand), and their heights are still the report's own numbers."""
    from convscope.draw.network import MANY_BARS

    depth = MANY_BARS + 50
    model = Sequential(nn.Conv2d(3, 4, 3, padding=1), *[nn.ReLU() for _ in range(depth - 1)])
    report = summary(model, (3, 8, 8))
    figure = network_plot(report)
    memory_ax = figure.axes[2]
    (bars,) = memory_ax.collections
    tops = [max(y for _, y in path.vertices) for path in bars.get_paths()]
    rows = [row for row in report.layers if not row.container]
    assert len(rows) == depth
    assert tops == [row.activation_bytes for row in rows]
    assert network_figure(report, "png").startswith(b"\x89PNG")
