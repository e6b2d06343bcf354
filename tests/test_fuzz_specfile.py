"""Hostile spec files through the command line: Hypothesis writes JSON and YAML documents that
mix valid layers with hostile values (YAML aliases and cycles, deep nesting, wrong types,
duplicate keys, huge strings and integers, NaN and Infinity, bytes that are not UTF-8), and
each batch runs through ``convscope summary FILE --input 3x8x8`` in a subprocess under a memory
cap (``RLIMIT_AS``, 1 GiB) and a time limit. Every document must end with exit status 0 or 2,
no traceback, and output of a few KB at most.

The CI profile runs a few batches (about 15 s). For a longer run by hand::

    CONVSCOPE_FUZZ_PROFILE=thorough python -m pytest -q tests/test_fuzz_specfile.py

(``thorough``: 400 batches; any profile name registered below works.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

yaml = pytest.importorskip("yaml")

settings.register_profile(
    "fuzz-ci",
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", settings.get_profile("fuzz-ci"), max_examples=400)
PROFILE = settings.get_profile(os.environ.get("CONVSCOPE_FUZZ_PROFILE", "fuzz-ci"))

MEMORY = 1 << 30  # bytes of address space for one subprocess
TIME = 30  # seconds for one subprocess (a batch of up to 4 documents, ~1 s to start)
OUTPUT = 8_000  # characters of output per document

# Runs the command's entry point on each file, as `convscope summary FILE --input 3x8x8`
# does, and reports each exit status and output length; an exception escapes as a traceback.
DRIVER = """
import contextlib, io, sys
from convscope.cli import main
for path in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(["summary", path, "--input", "3x8x8"])
        except SystemExit as exit:
            rc = exit.code
    sys.__stdout__.write(f"{rc}\\t{len(out.getvalue())}\\n")
    sys.__stdout__.flush()
"""

GOOD = [
    "relu",
    "flatten",
    {"conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1}},
    {"batchnorm2d": {}},
    {"maxpool2d": {"kernel_size": 2}},
    {"linear": {"out_features": 10}},
    {"leakyrelu": {"negative_slope": 0.1}},
    {"dropout": {"p": 0.5}},
    {"groupnorm": {"num_groups": 1}},
    {"adaptiveavgpool2d": {"output_size": 1}},
]
NAMES = ["conv2d", "linear", "batchnorm2d", "layernorm", "maxpool2d", "leakyrelu", "upsample"]
KEYS = ["out_channels", "kernel_size", "bias", "eps", "momentum", "affine", "padding", "stride"]
KEYS += ["negative_slope", "out_features", "scale_factor", "normalized_shape", "p", "dim"]

hostile = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**63, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["no", "false", "same"]),
    st.just(200_000).map(lambda n: "x" * n),  # made on use: a long repr would slow Hypothesis
    st.lists(st.integers(-3, 5), max_size=4),
)
layer = st.one_of(
    st.sampled_from(GOOD),
    st.builds(
        lambda name, args: {name: args},
        st.sampled_from(NAMES),
        st.dictionaries(st.sampled_from(KEYS), hostile, max_size=3),
    ),
)
layers = st.recursive(
    st.lists(layer, min_size=1, max_size=5),
    lambda inner: st.lists(
        st.one_of(
            layer,
            st.builds(lambda x: {"sequential": {"layers": x}}, inner),
            st.builds(lambda x: {"residual": {"branch": x}}, inner),
            st.builds(lambda x: {"concat": {"branches": [x, x]}}, inner),
        ),
        min_size=1,
        max_size=4,
    ),
    max_leaves=12,
)
document = st.fixed_dictionaries(
    {"input": st.one_of(st.just([3, 8, 8]), hostile), "layers": layers}
)

RAW = {
    "laughs": "input: [3, 8, 8]\na: &a [relu, relu, relu, relu, relu, relu, relu, relu]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 8)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    + "layers: *h\n",
    "cycle": "input: [3, 8, 8]\nlayers: &l [{sequential: {layers: *l}}]\n",
    "deep": None,  # filled in by depth
}


@st.composite
def spec_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """A spec file's suffix and bytes: a generated document, maybe made hostile."""
    doc = draw(document)
    form = draw(st.sampled_from(["json", "yaml"]))
    text = json.dumps(doc) if form == "json" else yaml.safe_dump(doc, width=10**9)
    twist = draw(st.sampled_from(["none", "none", "dup", "alias", "raw", "deep", "bytes", "big"]))
    if twist == "dup":
        text = text.replace('"layers"', '"input": [3, 8, 8], "layers"', 1).replace(
            "layers:", "input: [3, 8, 8]\nlayers:", 1
        )
    elif twist == "alias" and form == "yaml":
        text = "x: &x [relu, relu]\n" + text.replace("layers:", "y: [*x, *x]\nlayers:", 1)
    elif twist == "raw":
        form, text = "yaml", draw(st.sampled_from([RAW["laughs"], RAW["cycle"]]))
    elif twist == "deep":
        depth = draw(st.integers(1, 2_000))
        text = '{"input": [3, 8, 8], "layers": ' + '[{"sequential": {"layers": ' * depth
        text += '["relu"]' + "}}]" * depth + "}"
    elif twist == "big":
        text = text + "\n" * draw(st.sampled_from([1, 11_000_000]))
    data = text.encode()
    if twist == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return form, data


def _limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


@settings(PROFILE)
@given(st.lists(spec_file(), min_size=1, max_size=4))
def test_hostile_spec_files_exit_0_or_2_without_a_traceback(tmp_path_factory, files):
    folder: Path = tmp_path_factory.mktemp("fuzz")
    paths = []
    for i, (form, data) in enumerate(files):
        path = folder / f"spec{i}.{form}"
        path.write_bytes(data)
        paths.append(str(path))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, *paths],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIME,
        preexec_fn=_limit,
        env=env,
    )
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 0, run.stderr[-3000:]
    results = [line.split("\t") for line in run.stdout.splitlines()]
    assert len(results) == len(paths)
    for rc, length in results:
        assert rc in ("0", "2") and int(length) <= OUTPUT, (rc, length)
    assert len(run.stderr) <= 600 * len(paths)
