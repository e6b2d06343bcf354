"""The web API answers exactly what the CLI prints with --json, and refuses what it must."""

from __future__ import annotations

import asyncio
import io
import json
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient

from convscope.cli import execute
from convscope.web import create_app
from convscope.web.commands import MAX_UPLOAD_BYTES

from .web_server import live_server

SEED = {
    "input": "64x64x10",
    "layout": "hwc",
    "out_channels": "10",
    "kernel": "6",
    "stride": "2",
    "padding": "1",
}
SPEC = {
    "input": [3, 32, 32],
    "layers": [
        {"conv2d": {"out_channels": 8, "kernel_size": 3, "padding": 1}},
        "relu",
        {"maxpool2d": {"kernel_size": 2}},
        "flatten",
        {"linear": {"out_features": 10}},
    ],
}
SPEC_YAML = """input: [3, 32, 32]
layers:
  - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
  - relu
  - maxpool2d: {kernel_size: 2}
  - flatten
  - linear: {out_features: 10}
"""


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def cli(argv: list[str]) -> tuple[int, str, str | None]:
    """``convscope ARGV``: exit code, printed text, error line."""
    out = io.StringIO()
    code, message = execute(argv, out.write)
    return code, out.getvalue(), message


def argv_of(command: str, query: dict[str, str]) -> list[str]:
    """The command line a query stands for, written as a person would."""
    argv = [command]
    for key, value in query.items():
        if key == "model":  # summary's positional
            argv.append(value)
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value == "1" and key in SWITCHES else [flag, value]
    return argv


SWITCHES = {"no_bias", "ceil_mode", "no_count_include_pad", "explain", "analyze"}

CALCULATIONS = [
    ("conv", SEED),
    ("conv", {**SEED, "no_bias": "1", "count": "dense", "batch": "4"}),
    ("conv", {"input": "3x32x32", "out_channels": "8", "kernel": "4", "padding": "same"}),
    ("pool", {"input": "64x112x112", "kind": "max", "kernel": "3", "stride": "2", "padding": "1"}),
    (
        "pool",
        {
            "input": "3x7x7",
            "kind": "avg",
            "kernel": "3",
            "stride": "2",
            "ceil_mode": "1",
            "no_count_include_pad": "1",
        },
    ),
    ("pool", {"input": "8x16x16", "kind": "max", "kernel": "2", "analyze": "1"}),
    (
        "conv-transpose",
        {
            "input": "8x7x7",
            "out_channels": "4",
            "kernel": "3",
            "stride": "2",
            "padding": "1",
            "output_padding": "1",
        },
    ),
    ("linear", {"input": "512", "out_features": "1000", "batch": "32"}),
    ("conv", {**SEED, "explain": "1"}),
]


@pytest.mark.parametrize("command, query", CALCULATIONS)
def test_calculators_answer_what_the_cli_prints(client, command, query):
    code, text, message = cli([*argv_of(command, query), "--json"])
    assert code == 0 and message is None
    response = client.get(f"/api/{command}", params=query)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == text.removesuffix("\n")


def test_the_seed_answer(client):
    answer = client.get("/api/conv", params=SEED).json()
    assert answer["output_shape"] == [10, 31, 31] and answer["params"] == 3610


def test_a_switch_set_to_false_is_left_out(client):
    with_zero = client.get("/api/conv", params={**SEED, "no_bias": "false"}).json()
    assert with_zero == client.get("/api/conv", params=SEED).json()
    assert with_zero["biases"] == 10


def test_compose_answers_what_the_cli_prints(client):
    code, text, _ = cli(["compose", "conv k=5", "conv k=5", "--input", "1x32x32", "--json"])
    assert code == 0
    query = [("layers", "conv k=5"), ("layers", "conv k=5"), ("input", "1x32x32")]
    response = client.get("/api/compose", params=query)
    assert response.status_code == 200 and response.text == text.removesuffix("\n")
    assert response.json()["kernel"] == [9, 9]


def test_summary_of_a_zoo_model(client):
    code, text, _ = cli(["summary", "lenet5", "--json"])
    assert code == 0
    response = client.get("/api/summary", params={"model": "lenet5"})
    assert response.status_code == 200 and response.text == text.removesuffix("\n")
    code, text, _ = cli(["summary", "resnet50", "--input", "3x224x224", "--json"])
    response = client.get("/api/summary", params={"model": "resnet50", "input": "3x224x224"})
    assert response.text == text.removesuffix("\n")


@pytest.mark.parametrize("form", ["json-multipart", "yaml-multipart", "json-body", "yaml-body"])
def test_summary_of_an_uploaded_spec(client, tmp_path, form):
    kind, how = form.split("-")
    data = json.dumps(SPEC) if kind == "json" else SPEC_YAML
    local = tmp_path / f"net.{kind}"
    local.write_text(data)
    expected = json.loads(cli(["summary", str(local), "--json"])[1])
    if how == "multipart":
        response = client.post("/api/summary", files={"spec": (local.name, data)})
    else:
        response = client.post("/api/summary", content=data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {k: v for k, v in answer.items() if k != "model"} == {
        k: v for k, v in expected.items() if k != "model"
    }
    assert "convscope-upload" not in response.text  # the private folder is not shown


def test_upload_errors_name_the_file_not_the_server_folder(client):
    bad = {"input": [3, 8, 8], "layers": [{"conv2d": {"kernal_size": 3}}]}
    response = client.post("/api/summary", files={"spec": ("mine.json", json.dumps(bad))})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("convscope summary: error: ") and "kernal_size" in error
    assert "convscope-upload" not in error and "/tmp" not in error


def test_oversize_upload_is_refused(client):
    big = b" " * (MAX_UPLOAD_BYTES + 1) + b"{}"
    for response in (
        client.post("/api/summary", content=big),
        client.post("/api/summary", files={"spec": ("big.json", big)}),
    ):
        assert response.status_code == 413
        assert "limit" in response.json()["error"]


@pytest.mark.parametrize(
    "model", ["evil.py:Net", "torchvision:resnet18", "/etc/passwd.json", "../x.yaml", "a b"]
)
def test_only_zoo_names_are_taken_by_name(client, model):
    for path in ("/api/summary", "/api/draw/summary"):
        response = client.get(path, params={"model": model})
        assert response.status_code == 400
        assert "zoo model name" in response.json()["error"]


def test_an_uploaded_python_file_is_refused(client):
    response = client.post("/api/summary", files={"spec": ("net.py", "import os\n")})
    assert response.status_code == 400 and ".json, .yaml or .yml" in response.json()["error"]


# Bad input to every endpoint: the CLI's own line, or the web's for what only the web refuses.
BAD_INPUTS = [
    ("conv", {**SEED, "kernel": "0"}),
    ("conv", {**SEED, "stride": "x"}),
    ("conv", {"input": "64x64x10"}),  # --out-channels missing
    ("conv", {**SEED, "padding_mode": "mirror"}),
    ("conv-transpose", {"input": "8x7x7", "out_channels": "4", "kernel": "3", "padding": "-1"}),
    ("pool", {"input": "3x7x7", "kind": "max", "kernel": "9"}),
    ("pool", {"input": "3x7x7", "kind": "max", "kernel": "2", "seed": "1"}),  # needs --analyze
    ("linear", {"input": "512"}),
    ("linear", {"input": "512", "out_features": "1.5"}),
    ("summary", {"model": "nosuchmodel"}),
    ("summary", {"model": "lenet5", "input": "3x0x8"}),
]


@pytest.mark.parametrize("command, query", BAD_INPUTS)
def test_bad_input_gets_the_clis_line(client, command, query):
    code, _, message = cli([*argv_of(command, query), "--json"])
    assert code == 2 and message
    response = client.get(f"/api/{command}", params=query)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_bad_compose_gets_the_clis_line(client):
    code, _, message = cli(["compose", "conv k=5", "conv q=1", "--json"])
    assert code == 2
    response = client.get("/api/compose", params=[("layers", "conv k=5"), ("layers", "conv q=1")])
    assert response.status_code == 400 and response.json() == {"error": message}
    code, _, message = cli(["compose", "--json"])
    response = client.get("/api/compose")
    assert response.status_code == 400 and response.json() == {"error": message}


@pytest.mark.parametrize(
    "path, query, expected",
    [
        ("/api/conv", {**SEED, "colour": "red"}, "unknown query key 'colour'"),
        ("/api/conv", {**SEED, "json": "1"}, "unknown query key 'json'"),
        ("/api/conv", {**SEED, "no_bias": "maybe"}, "no_bias takes 1 or 0"),
        ("/api/pool", {"input": "3x8x8", "kernel": "2", "format": "svg"}, "unknown query key"),
        ("/api/compose", {"layers": "conv k=5", "kernel": "3"}, "unknown query key 'kernel'"),
        ("/api/summary", {"model": "lenet5", "out": "x.png"}, "unknown query key 'out'"),
        ("/api/draw/conv", {**SEED, "format": "bmp"}, "format must be svg or png or gif"),
        ("/api/draw/summary", {"model": "lenet5", "format": "gif"}, "format must be svg or png"),
        ("/api/draw/pool", {"input": "3x8x8", "explain": "1"}, "unknown query key 'explain'"),
    ],
)
def test_the_web_refuses_keys_the_cli_does_not_take(client, path, query, expected):
    response = client.get(path, params=query)
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_a_repeated_key_is_refused(client):
    response = client.get("/api/conv", params=[*SEED.items(), ("kernel", "3")])
    assert response.status_code == 400
    assert response.json()["error"] == "convscope conv: error: query key 'kernel' is given twice"


def test_a_value_that_looks_like_an_option_stays_a_value(client):
    code, _, message = cli(["conv", *argv_of("conv", SEED)[1:], "--groups=--help", "--json"])
    response = client.get("/api/conv", params={**SEED, "groups": "--help"})
    assert response.status_code == 400 and response.json() == {"error": message}


@pytest.mark.parametrize(
    "kind, query",
    [
        ("conv", {**SEED, "kernel": "0"}),
        ("conv", {"input": "1x6x6"}),
        ("pool", {"input": "3x7x7", "kernel": "9"}),
        ("conv-transpose", {"input": "2x5x5", "out_channels": "1", "kernel": "3", "stride": "x"}),
    ],
)
def test_bad_drawings_get_the_clis_line(client, tmp_path, kind, query):
    out = tmp_path / "picture.svg"
    code, _, message = cli(["draw", *argv_of(kind, query), "--out", str(out)])
    assert code == 2 and message
    response = client.get(f"/api/draw/{kind}", params=query)
    assert response.status_code == 400 and response.json() == {"error": message}


@pytest.mark.parametrize("fmt, media, magic", [("svg", "image/svg+xml", b"<svg"),
                                               ("png", "image/png", b"\x89PNG"),
                                               ("gif", "image/gif", b"GIF8")])  # fmt: skip
def test_layer_pictures(client, fmt, media, magic):
    query = {"input": "1x6x6", "out_channels": "1", "kernel": "3", "format": fmt}
    response = client.get("/api/draw/conv", params=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media)
    assert response.content.lstrip().startswith(magic)
    if fmt == "svg":
        assert b'class="frame"' in response.content and b'data-frames="' in response.content


def test_an_enormous_drawing_is_refused_with_the_draw_codes_message(client):
    huge = {**SEED, "input": "500x500x10"}  # 502×502 with its padding
    response = client.get("/api/draw/conv", params=huge)
    assert response.status_code == 400
    assert "too large to draw" in response.json()["error"]


def test_network_pictures(client):
    response = client.get("/api/draw/summary", params={"model": "lenet5", "format": "svg"})
    assert response.status_code == 200 and b"<svg" in response.content[:2000]
    response = client.post("/api/draw/summary?format=png", files={"spec": ("net.yaml", SPEC_YAML)})
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_a_huge_layer_answers_at_once(client):
    query = {"input": "512x100000x100000", "out_channels": "512", "kernel": "3", "padding": "1"}
    response = client.get("/api/conv", params=query)
    assert response.status_code == 200
    assert response.json()["output_shape"] == [512, 100000, 100000]


def test_unknown_routes_and_methods_answer_json(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.json()
    response = client.post("/api/conv", params=SEED)
    assert response.status_code == 405 and "error" in response.json()


def test_pages_open_answered(client):
    page = client.get("/?" + urlencode({"layer": "conv", **SEED}))
    assert page.status_code == 200
    assert "10×31×31" in page.text and "3,610" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing from elsewhere
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path, expected in [
        ("/?layer=linear", "513,000"),
        ("/compose", "9×9"),
        ("/pool", "MaxPool2d"),
        ("/network?model=lenet5", "61,706"),
    ]:
        response = client.get(path)
        assert response.status_code == 200 and expected in response.text, path
    bad = client.get("/?" + urlencode({"layer": "conv", **SEED, "kernel": "0"}))
    assert bad.status_code == 200 and "kernel_size must be &gt;= 1" in bad.text


def test_static_files_are_served(client):
    for name in ("common.js", "diagram.js", "calculator.js", "network.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_fifty_concurrent_requests_on_a_live_server():
    queries = (
        [("/api/conv", {**SEED, "out_channels": str(1 + i % 7)}) for i in range(30)]
        + [("/api/pool", {"input": "3x7x7", "kind": "avg", "kernel": "3"})] * 10
        + [("/api/compose", [("layers", "conv k=5"), ("layers", "conv k=3")])] * 5
        + [("/api/summary", {"model": "lenet5"})] * 5
    )

    async def run_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return await asyncio.gather(*(http.get(path, params=q) for path, q in queries))

    with live_server() as url:
        responses = asyncio.run(run_all(url))
    assert len(responses) == 50
    assert [r.status_code for r in responses] == [200] * 50
    assert all("error" not in r.json() for r in responses)


def test_the_worked_explanation_is_mathml_of_the_clis_latex(client):
    """/api/explain/conv: the sections of ``conv ... --markdown --explain``, each formula its
    LaTeX converted to MathML, with the substituted numbers and the result in it."""
    response = client.get("/api/explain/conv", params=SEED)
    assert response.status_code == 200
    sections = response.json()["sections"]
    code, markdown, _ = cli([*argv_of("conv", SEED), "--markdown", "--explain"])
    assert code == 0
    titles = [line[4:] for line in markdown.splitlines() if line.startswith("### ")]
    assert [s["title"] for s in sections] == titles
    formulas = [i["math"] for s in sections for i in s["items"] if "math" in i]
    assert len(formulas) == markdown.count("$$") // 2
    assert all(f.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML"') for f in formulas)
    assert "<mn>3</mn><mrow><mo>,</mo></mrow><mn>610</mn>" in "".join(formulas)
    bad = client.get("/api/explain/conv", params={**SEED, "kernel": "0"})
    assert bad.status_code == 400 and "kernel" in bad.json()["error"]


def test_only_mathml_reaches_the_page():
    """latex2mathml copies \\text{} verbatim: markup that is not MathML alone is refused (the
    formula is then shown as text), so nothing a page inserts can run."""
    from latex2mathml.converter import convert

    from convscope.web.commands import safe_mathml

    assert safe_mathml(convert(r"\text{<img src=x onerror=alert(1)>}")) is None
    assert safe_mathml('<math xmlns="http://www.w3.org/1998/Math/MathML" onclick="x"/>') is None
    assert safe_mathml(convert(r"n = 3{,}610")).startswith('<math xmlns="http://www.w3.org/')


def test_a_bug_is_a_500_with_a_json_message(client, monkeypatch):
    """An internal error is logged and answered 500 with one JSON line, never a traceback;
    bad input stays 400."""
    import convscope.web.app as app

    def broken(argv, hide=None):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(app, "run_json", broken)
    response = client.get("/api/conv", params=SEED)
    assert response.status_code == 500
    assert response.json() == {
        "error": "convscope conv: error: internal error (a bug: see the server log)"
    }
