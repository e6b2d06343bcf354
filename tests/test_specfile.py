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


# ---- hostile specs: bounded, typed, one clear message ------------------------------------

LAUGHS = """input: [3, 8, 8]
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
layers:
  - conv2d: {out_channels: 4, kernel_size: *h}
"""


@pytest.mark.parametrize(
    "text",
    [
        LAUGHS,
        "input: [3, 8, 8]\nlayers: &l [{sequential: {layers: *l}}]\n",
        "input: [3, 8, 8]\nlayers: [&r relu, *r]\n",
    ],
)
def test_yaml_aliases_are_refused(text):
    with pytest.raises(ConvScopeError, match=r"may not use YAML aliases.*\*\w+ at line \d+"):
        load_spec(text)


def nested(depth: int) -> dict:
    layers: list = ["relu"]
    for _ in range(depth):
        layers = [{"sequential": {"layers": layers}}]
    return {"input": [3, 8, 8], "layers": layers}


@pytest.mark.parametrize("form", ["dict", "json", "yaml"])
def test_nesting_deeper_than_the_limit_is_refused(form):
    from convscope.specfile import MAX_DEPTH

    spec = nested(300)
    source = {"dict": spec, "json": json.dumps(spec), "yaml": json.dumps(spec) + "\n"}[form]
    if form == "yaml":  # JSON is YAML flow style; a newline makes it text, not a path
        source = "# yaml\n" + source.replace("{", "{ ").replace("[", "[ ")
    with pytest.raises(ConvScopeError, match=rf"deeper? .*{MAX_DEPTH}|{MAX_DEPTH} \(MAX_DEPTH\)"):
        load_spec(source)
    # 20 nested blocks are 61 deep: within the limit
    assert load_spec(nested(20)).output_shape((3, 8, 8)) == (3, 8, 8)


def test_a_json_file_nested_50000_deep_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"input": [3, 8, 8], "layers": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(ConvScopeError, match="MAX_DEPTH"):
        load_spec(path)


def test_a_cyclic_dict_is_refused():
    layers: list = []
    layers.append({"sequential": {"layers": layers}})
    with pytest.raises(ConvScopeError, match="MAX_DEPTH"):
        load_spec({"input": [3, 8, 8], "layers": layers})


def test_size_values_and_layers_are_bounded(tmp_path, monkeypatch):
    from convscope import specfile

    path = tmp_path / "big.yaml"
    path.write_text("input: [3, 8, 8]\nlayers:\n" + "- relu\n" * 1_500_000)
    with pytest.raises(ConvScopeError, match=r"10,500,025 bytes .*limit is 10,000,000"):
        load_spec(path)
    many = "input: [3, 8, 8]\nlayers:\n" + "- relu\n" * 120_000
    with pytest.raises(ConvScopeError, match=r"more than 100,000 values \(MAX_VALUES\)"):
        load_spec(many)
    json_many = json.dumps({"input": [3, 8, 8], "layers": [[]] * 120_000})
    with pytest.raises(ConvScopeError, match=r"more than 100,000 values .*about 240,00\d"):
        load_spec(json_many)
    with pytest.raises(ConvScopeError, match=r"layers\[5000\]: .*at most 5,000 layers"):
        load_spec({"input": [3, 8, 8], "layers": ["relu"] * 6000})
    monkeypatch.setattr(specfile, "MAX_BYTES", 100)
    with pytest.raises(ConvScopeError, match=r"spec text has 568 characters; the limit is 100"):
        load_spec(YAML)


def test_echoed_values_are_cut_short():
    name = "x" * 10**6
    with pytest.raises(ConvScopeError) as error:
        load_spec({"input": [3, 8, 8], "layers": [name]})
    message = str(error.value)
    assert "unknown layer" in message and "x..." in message and len(message) < 1500
    with pytest.raises(ConvScopeError, match=r"got an integer of \d+ bits"):
        load_spec({"input": [3, 8, 8], "layers": [{"linear": {"out_features": 10**100}}]})
    with pytest.raises(ConvScopeError, match=r"spec.input\[2\]: integers .* 67 bits"):
        load_spec({"input": [3, 8, 10**20], "layers": ["relu"]})


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"conv2d": {"out_channels": 4, "kernel_size": 3, "bias": "no"}}, r"bias must be true"),
        ({"batchnorm2d": {"affine": "false"}}, r"affine must be true or false, got 'false'"),
        ({"relu": {"inplace": 1}}, r"inplace must be true or false, got 1"),
        ({"batchnorm2d": {"eps": -1}}, r"eps must be > 0 .*got -1"),
        ({"layernorm": {"normalized_shape": 8, "eps": 0}}, r"eps must be > 0"),
        ({"batchnorm2d": {"momentum": 5}}, r"momentum must be null or between 0 and 1"),
        ({"leakyrelu": {"negative_slope": float("inf")}}, r"numbers must be finite, got inf"),
        ({"groupnorm": {"num_groups": 1, "eps": float("nan")}}, r"finite, got nan"),
        ({"conv2d": {"out_channels": 4, "kernel_size": 3.0}}, r"kernel_size must be an integer"),
        ({"conv2d": {"out_channels": True, "kernel_size": 3}}, r"out_channels must be an integer"),
        ({"linear": {"out_features": 2.5}}, r"out_features must be an integer, got 2.5"),
        ({"flatten": {"start_dim": 1.5}}, r"start_dim must be an integer"),
        ({"conv2d": {"out_channels": 4, "kernel_size": [3, "3"]}}, r"list of integers"),
        ({"maxpool2d": {"kernel_size": 2, "ceil_mode": "yes"}}, r"ceil_mode must be true"),
        ({"relu": {"inplace": {1, 2}}}, r"got a set"),
        ({"conv2d": {"out_channels": 4, "kernel_size": 3, 1: 2}}, r"keys must be strings"),
    ],
)
def test_arguments_are_checked_against_their_types(layer, message):
    with pytest.raises(ConvScopeError, match=message):
        load_spec({"input": [3, 8, 8], "layers": [layer]})


def test_well_typed_arguments_still_load():
    model = load_spec(
        {
            "input": [3, 8, 8],
            "layers": [
                {"conv2d": {"out_channels": 4, "kernel_size": [3, 3], "padding": "same"}},
                {"batchnorm2d": {"eps": 1, "momentum": None, "affine": False}},
                {"leakyrelu": {"negative_slope": 0}},
                {"conv2d": {"out_channels": 4, "kernel_size": 1, "padding": [[0, 0], [0, 0]]}},
            ],
        }
    )
    assert model.output_shape((3, 8, 8)) == (4, 8, 8)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "dup.json",
            '{"input": [3, 8, 8], "layers": [{"linear": {"out_features": 2, "bias": false, '
            '"bias": true}}]}',
            r"duplicate key 'bias' in the object with keys 'out_features', 'bias', 'bias'",
        ),
        (
            "dup.yaml",
            "input: [3, 8, 8]\nlayers:\n  - linear: {out_features: 2, bias: false, bias: true}\n",
            r"duplicate key 'bias' at line 3, column 44",
        ),
        ("top.yaml", "input: [3, 8, 8]\nlayers: [relu]\ninput: [3, 4, 4]\n", r"'input' at line 3"),
        ("nan.json", '{"input": [3, 8, 8], "layers": [{"dropout": {"p": NaN}}]}', r"finite"),
        ("date.yaml", "input: [3, 8, 8]\nlayers: [{relu: {inplace: 2020-13-45}}]\n", r"month"),
    ],
)
def test_duplicate_keys_and_odd_values_are_refused(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConvScopeError, match=message):
        load_spec(path)


def test_unreadable_files_get_one_message(tmp_path, monkeypatch):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("input: [3, 8, 8]\nlayers: [relu]  # café\n".encode("latin-1"))
    with pytest.raises(ConvScopeError, match=r"not UTF-8 text: byte 0xe9 at offset 38"):
        load_spec(latin)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConvScopeError, match=r"is a directory, not a file"):
        load_spec(tmp_path / "dir.yaml")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(SPEC).encode())
    assert load_spec(bom).input_shape == (3, 16, 16)
    locked = tmp_path / "locked.yaml"
    locked.write_text(YAML)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(locked), "open", refuse)
    with pytest.raises(ConvScopeError, match=r"cannot read spec file .*Permission denied"):
        load_spec(locked)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("laughs.yaml", LAUGHS.encode()),
        ("latin.yaml", "input: [3, 8, 8]\nlayers: [café]\n".encode("latin-1")),
        ("dup.json", b'{"input": [3, 8, 8], "input": [3, 8, 8], "layers": ["relu"]}'),
        ("bool.yaml", b"input: [3, 8, 8]\nlayers: [{linear: {out_features: 2, bias: 'no'}}]\n"),
        ("dir.json", None),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys, name, content):
    from convscope.cli import main

    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert main(["summary", str(path), "--input", "3x8x8"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "error:" in captured.err


def test_a_yaml_exponent_read_as_text_gets_a_hint(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e3`` as the string '1e3': the refusal says how to write the
    number, and the written form loads."""
    pytest.importorskip("yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [3, 8, 8]\nlayers:\n  - upsample: {scale_factor: 1e3}\n")
    with pytest.raises(ConvScopeError, match=r"got '1e3' \(YAML reads .* write 1\.0e\+3\)"):
        load_spec(bad)
    unsigned = tmp_path / "unsigned.yaml"
    unsigned.write_text("input: [3, 8, 8]\nlayers:\n  - upsample: {scale_factor: 1.0e3}\n")
    with pytest.raises(ConvScopeError, match=r"got '1\.0e3' \(YAML .* write 1\.0e\+3\)"):
        load_spec(unsigned)
    good = tmp_path / "good.yaml"
    good.write_text("input: [3, 8, 8]\nlayers:\n  - upsample: {scale_factor: 1.0e+3}\n")
    model = load_spec(good)
    assert model.output_shape((3, 8, 8)) == (3, 8000, 8000)
