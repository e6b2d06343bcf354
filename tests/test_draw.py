"""``convscope draw conv|conv-transpose|pool``: the frames walk the pass, their last counter is
the cost rule's count, and the pictures (SVG, PNG, GIF) carry what they claim."""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from convscope import nn
from convscope.cli import main
from convscope.draw.layer import draw_layer, layer_scene, layer_svg
from convscope.errors import ConvScopeError

SVG = "{http://www.w3.org/2000/svg}"
CONV = [
    "--input",
    "1x5x5",
    "--out-channels",
    "1",
    "--kernel",
    "3",
    "--stride",
    "2",
    "--padding",
    "1",
]


def cli_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_acceptance_gif_has_one_frame_per_output_and_the_cli_counts(tmp_path, capsys):
    out = tmp_path / "a.gif"
    assert main(["draw", "conv", *CONV, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    expected = cli_json(capsys, ["conv", *CONV])["forward"]
    with Image.open(out) as gif:
        assert gif.n_frames == 9
        final = json.loads(gif.info["comment"])["final"]
    assert final == {k: expected[k] for k in final} == {"mults": 49, "adds": 49}


LAYERS = [
    (nn.Conv1d(2, 3, 3, stride=2, padding=2, dilation=2, bias=False), (2, 11)),
    (nn.Conv2d(4, 6, 3, padding=((1, 2), (0, 1)), groups=2, bias=False), (4, 6, 7)),
    (nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=4), (4, 7, 7)),
    (nn.Conv2d(2, 2, 3, padding=2, padding_mode="reflect", bias=False), (2, 5, 6)),
    (nn.Conv3d(2, 2, 3, padding=1, stride=(1, 2, 2)), (2, 3, 5, 5)),
    (nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 3, 3)),
    (nn.ConvTranspose1d(1, 1, 4, stride=3, dilation=2, output_padding=2, bias=False), (1, 4)),
    (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 6, 6)),
    (nn.MaxPool2d(2, stride=1, dilation=2), (1, 6, 6)),
    (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 6, 6)),
    (nn.AdaptiveMaxPool2d((3, 4)), (2, 7, 5)),
    (nn.AdaptiveAvgPool1d(3), (1, 7)),
    (nn.MaxPool3d(2, ceil_mode=True), (1, 3, 5, 5)),
]


def units(layer, shape, pass_, count):
    """What a frame stands for, counted independently of the drawing code."""
    spec, out = layer.spec, layer.output_shape(shape)
    if pass_ == "backward-weight":
        return math.prod(spec.kernel_size)
    transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d))
    if pass_ == "forward":
        return math.prod(shape[1:] if transposed else out[1:])
    if transposed or count == "exact" or not hasattr(spec, "padding"):
        return math.prod(shape[1:])
    pads = [p if isinstance(p, tuple) else (p, p) for p in spec.padding]  # dense: padded g_z
    return math.prod(n + b + a for n, (b, a) in zip(shape[1:], pads))


@pytest.mark.parametrize(
    "layer, shape", LAYERS, ids=lambda v: getattr(v, "spec", v).__class__.__name__
)
@pytest.mark.parametrize("count", ["exact", "dense"])
@pytest.mark.parametrize("pass_", ["forward", "backward-input", "backward-weight"])
def test_frames_walk_the_pass_and_end_at_the_cost_rule(layer, shape, count, pass_):
    pooling = not hasattr(layer.spec, "weight_shape")
    if pooling and pass_ == "backward-weight":
        with pytest.raises(ConvScopeError, match="no weight"):
            layer_scene(layer, shape, pass_=pass_)
        return
    scene = layer_scene(layer, shape, batch=3, count=count, pass_=pass_)
    assert len(scene.frames) == units(layer, shape, pass_, count)
    cost = layer.cost(shape, 3, count)
    rule = {"forward": cost.forward, "backward-input": cost.backward_input}.get(
        pass_, cost.backward_weight
    )
    last = scene.frames[-1].total
    for key in ("mults", "adds", "compares", "divides"):
        assert last.get(key, 0) == getattr(rule, key), key
    # running counters never go down, and each frame's step is what it adds
    for before, after in zip(scene.frames, scene.frames[1:]):
        assert all(after.total[k] == before.total[k] + after.step[k] for k in after.step)


def test_frames_cap_groups_rows_and_says_so():
    layer = nn.Conv2d(1, 1, 3, padding=1)
    scene = layer_scene(layer, (1, 5, 5), frames=5)
    assert len(scene.frames) == 5 and scene.units == 25
    assert scene.frame_note == "25 output positions shown as 5 frames, one per row of 5"
    assert scene.frames[-1].total == {"mults": 169, "adds": 169}
    runs = layer_scene(nn.Conv1d(1, 1, 3), (1, 40), frames=7)
    assert len(runs.frames) == 7 and "run of up to 6" in runs.frame_note
    big = layer_scene(nn.Conv2d(1, 1, 3, padding=1), (1, 30, 30))  # 900 positions: 30 rows
    assert len(big.frames) == 30


def test_svg_contract_shapes_and_asymmetric_padding():
    layer = nn.Conv2d(1, 2, 3, padding=((1, 2), (0, 1)))
    text = layer_svg(layer, (1, 4, 4), count="exact")
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg" and root.get("data-frames") == "15"
    frames = root.findall(f"{SVG}g[@class='frame']")
    assert [f.get("data-frame") for f in frames] == [str(i) for i in range(15)]
    assert frames[0].get("style") is None and all(
        f.get("style") == "display:none" for f in frames[1:]
    )
    assert all(f.find(f"{SVG}text[@class='counter']") is not None for f in frames)
    assert "mults 176 · adds 176" in frames[-1].find(f"{SVG}text[@class='counter']").text
    desc = json.loads(root.find(f"{SVG}desc").text)
    assert desc["input"] == [1, 4, 4] and desc["weight"] == [2, 1, 3, 3]
    assert (
        desc["final"] == {"mults": 176, "adds": 176} and "Conv2d" in root.find(f"{SVG}title").text
    )
    words = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "input 1×4×4" in words and "output 2×5×3" in words
    cells = root.findall(f".//{SVG}rect[@class='cell']")
    grids = {c.get("data-grid") for c in cells}
    assert grids == {"input", "weight", "output", "padding"}
    padding = [c for c in cells if c.get("data-grid") == "padding"]
    side = {
        s: sum(s in c.get("data-side").split() for c in padding)
        for s in ("top", "bottom", "left", "right")
    }
    # padded input 7×5: 1 row on top, 2 below, 0 columns left, 1 right
    assert side == {"top": 5, "bottom": 10, "left": 0, "right": 7}
    corner = [c for c in padding if c.get("data-index") == "0,-1,4"]
    assert corner and corner[0].get("data-side") == "top right"
    # output cell (c0, 0, 0) takes part in frame 0 only; input (0, 0) in the windows around it
    first_out = next(
        c for c in cells if c.get("data-grid") == "output" and c.get("data-index") == "0,0,0"
    )
    assert first_out.get("data-frames") == "0"
    corner_in = next(
        c for c in cells if c.get("data-grid") == "input" and c.get("data-index") == "0,0,0"
    )
    assert corner_in.get("data-frames").split() == ["0", "3"]


def test_same_padding_and_transposed_cropping_are_drawn():
    same = ET.fromstring(layer_svg(nn.Conv1d(1, 1, 4, padding="same"), (1, 6)))
    padding = [c for c in same.iter(f"{SVG}rect") if c.get("data-grid") == "padding"]
    assert sorted(c.get("data-side") for c in padding) == ["left", "right", "right"]
    t = ET.fromstring(layer_svg(nn.ConvTranspose1d(1, 1, 3, stride=2, padding=1), (1, 3)))
    crop = [c for c in t.iter(f"{SVG}rect") if c.get("data-kind") == "crop"]
    assert [c.get("data-index") for c in crop] == ["0,-1", "0,5"]
    assert t.get("data-frames") == "3"  # one frame per input position


def test_png_and_gif_carry_the_final_counts(tmp_path):
    layer = nn.AvgPool2d(2, ceil_mode=True)
    png = draw_layer(layer, (1, 5, 5), tmp_path / "p.png")
    gif = draw_layer(layer, (1, 5, 5), tmp_path / "p.gif", pass_="backward-input")
    with Image.open(png) as image:
        assert json.loads(image.text["convscope"])["final"] == {"adds": 16, "divides": 9}
        assert image.width > 300
    with Image.open(gif) as image:
        assert image.n_frames == 25
        assert json.loads(image.info["comment"])["final"] == {"adds": 0, "divides": 9}


def test_huge_layer_is_refused_at_once(capsys, tmp_path):
    start = time.monotonic()
    argv = ["draw", "conv", "--input", "3x100000x100000", "--out-channels", "8", "--kernel", "3"]
    assert main([*argv, "--out", str(tmp_path / "x.gif")]) == 2
    assert time.monotonic() - start < 1.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too large to draw" in err and "lower --input" in err
    assert not (tmp_path / "x.gif").exists()


def test_bad_suffix_folder_and_pool_weight_gradient(capsys, tmp_path):
    assert main(["draw", "conv", *CONV, "--out", str(tmp_path / "a.jpg")]) == 2
    assert ".svg, .png, .gif" in capsys.readouterr().err
    assert main(["draw", "conv", *CONV, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["draw", "conv", *CONV, "--out", str(tmp_path / "no" / "a.svg")]) == 2
    assert "does not exist" in capsys.readouterr().err
    pool = ["draw", "pool", "--input", "1x4x4", "--kernel", "2", "--pass", "backward-weight"]
    assert main([*pool, "--out", str(tmp_path / "p.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no weight" in err
