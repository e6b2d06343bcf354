"""Spec files: JSON and YAML networks build the expected modules, shapes and totals; bad specs
get a message naming the layer and the key; a spec cannot execute code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convscope import ConvScopeError, nn, summary
from convscope.specfile import load_spec

SPEC = {
    "input": [3, 16, 16],
    "layers": [
        {"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"batchnorm2d": {}},
        "relu",
        {"maxpool2d": {"kernel_size": 2}},
        {
            "residual": {
                "branch": [{"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}}, "relu"],
                "shortcut": [{"conv2d": {"out_channels": 8, "kernel_size": 1, "bias": False}}],
            }
        },
        {
            "concat": {
                "branches": [
                    [{"conv2d": {"out_channels": 4, "kernel_size": 1}}],
                    [{"avgpool2d": {"kernel_size": 3, "stride": 1, "padding": 1}}],
                ]
            }
        },
        {"adaptiveavgpool2d": {"output_size": [2, 2]}},
        "flatten",
        {"linear": {"out_features": 10}},
    ],
}

YAML = """
input: [3, 16, 16]
layers:
  - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
  - batchnorm2d: {}
  - relu
  - maxpool2d: {kernel_size: 2}
  - residual:
      branch:
        - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
        - relu
      shortcut:
        - conv2d: {out_channels: 8, kernel_size: 1, bias: false}
  - concat:
      branches:
        - [conv2d: {out_channels: 4, kernel_size: 1}]
        - [avgpool2d: {kernel_size: 3, stride: 1, padding: 1}]
  - adaptiveavgpool2d: {output_size: [2, 2]}
  - flatten
  - linear: {out_features: 10}
"""


def expected() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Residual(
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 1, bias=False)),
        ),
        nn.Concat(
            nn.Sequential(nn.Conv2d(8, 4, 1)), nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1))
        ),
        nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(),
        nn.Linear(12 * 4, 10),
    )


def report_totals(model) -> tuple:
    r = summary(model, (3, 16, 16), batch=2)
    return r.total_params, r.total_buffers, r.total_macs, r.cost, r.layers[0].output_shape


@pytest.mark.parametrize("form", ["dict", "json_text", "json_file", "yaml_text", "yaml_file"])
def test_spec_builds_the_expected_network(form, tmp_path):
    source = {
        "dict": SPEC,
        "json_text": json.dumps(SPEC),
        "yaml_text": YAML,
    }.get(form)
    if form == "json_file":
        source = tmp_path / "net.json"
        source.write_text(json.dumps(SPEC))
    elif form == "yaml_file":
        source = tmp_path / "net.yaml"
        source.write_text(YAML)
    model = load_spec(source if form != "json_file" else str(source))
    assert model.input_shape == (3, 16, 16)
    assert repr(model) == repr(expected())
    assert model.output_shape((3, 16, 16)) == (10,)
    assert report_totals(model) == report_totals(expected())
    # the modules are real: they run
    y = model(np.zeros((2, 3, 16, 16), dtype=np.float32))
    assert y.shape == (2, 10)


def test_cli_summary_of_a_spec_file(tmp_path, capsys):
    from convscope.cli import main

    path = tmp_path / "net.yaml"
    path.write_text(YAML)
    main(["summary", str(path), "--input", "3x16x16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] == summary(expected(), (3, 16, 16)).total_params


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [{"conv2d": {"out_channels": 4, "kernal_size": 3}}],
            r"layers\[0\] \(conv2d\): unknown key 'kernal_size'",
        ),
        (["relu", "softmaxx"], r"layers\[1\] \(softmaxx\): unknown layer 'softmaxx'"),
        (
            [{"conv2d": {"in_channels": 4, "out_channels": 4, "kernel_size": 1}}],
            r"in_channels=4 but",
        ),
        (
            [{"conv2d": {"out_channels": 4, "kernel_size": 30}}],
            r"layers\[0\] \(conv2d\): Conv2d: the effective kernel",
        ),
        (
            ["relu", {"residual": {"branch": [{"maxpool2d": {"kernel_size": 2}}]}}],
            r"layers\[1\] \(residual\).*Add needs inputs of one shape",
        ),
        ([{"residual": {"branch": ["relu"], "skip": []}}], r"unknown key 'skip'"),
        ([{"concat": {"branches": []}}], r"branches: expected a list"),
        ([{"conv2d": {"out_channels": 4, "kernel_size": 3}, "relu": {}}], r"one key"),
        ([], r"non-empty list"),
    ],
)
def test_bad_specs_name_the_layer_and_the_key(layers, message):
    with pytest.raises(ConvScopeError, match=message):
        load_spec({"input": [3, 8, 8], "layers": layers})


def test_bad_top_level():
    with pytest.raises(ConvScopeError, match="'input' is missing"):
        load_spec({"layers": ["relu"]})
    with pytest.raises(ConvScopeError, match="unknown key 'model'"):
        load_spec({"input": [3, 8, 8], "layers": ["relu"], "model": "x"})
    with pytest.raises(ConvScopeError, match="input shape"):
        load_spec({"input": [3, 0, 8], "layers": ["relu"]})
    with pytest.raises(ConvScopeError, match="not valid JSON"):
        load_spec('{"input": [3, 8, 8], "layers": ["relu",]}')
    with pytest.raises(ConvScopeError, match="no such spec file"):
        load_spec("missing.json")


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "input: [3, 8, 8]\nlayers:\n  - !!python/object/apply:os.system ['touch {marker}']\n",
        "input: !!python/name:os.system\nlayers: [relu]\n",
    ],
)
def test_a_spec_cannot_execute_code(text, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ConvScopeError, match="YAML"):
        load_spec(text.format(marker=marker))
    assert not marker.exists()


def test_layer_names_are_data_not_code():
    # a layer name is looked up in a fixed table: a dotted path or a dunder is just unknown
    for name in ("os.system", "__import__", "eval"):
        with pytest.raises(ConvScopeError, match="unknown layer"):
            load_spec({"input": [3, 8, 8], "layers": [{name: {}}]})
