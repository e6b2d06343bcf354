"""Every step of every explanation is arithmetic that evaluates to the value it states."""

import math
import re

import pytest

from convscope import nn
from convscope.explain import Step

LAYERS = [
    (nn.Conv2d(10, 10, 6, stride=2, padding=1), (10, 64, 64)),
    (nn.Conv2d(1, 1, 3, bias=False), (1, 128, 128)),
    (nn.Conv1d(2, 4, 3, stride=3, padding=((2, 0),), dilation=2, bias=False), (2, 7)),
    (nn.Conv3d(4, 8, (1, 3, 2), padding="same", groups=2), (4, 3, 6, 5)),
    (nn.Conv2d(2, 2, 3, padding=2, padding_mode="reflect"), (2, 5, 5)),
    (nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1), (4, 5, 5)),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), (3, 8, 8)),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 6, 6)),
    (nn.AdaptiveAvgPool2d((2, 3)), (3, 5, 7)),
    (nn.Linear(512, 10), (512,)),
    (nn.BatchNorm2d(3), (3, 4, 4)),
    (nn.GELU(), (3, 4)),
]


def evaluate(expression: str) -> int:
    """Evaluates a substituted plain-text formula (integers, · − / ⌊⌋ ⌈⌉ gcd)."""
    text = expression.replace("·", "*").replace("−", "-").replace(",", "")
    text = re.sub(r"⌊([^⌋]*)⌋", r"((\1)//1)", text)
    text = re.sub(r"⌈([^⌉]*)⌉", r"(-((-(\1))//1))", text)
    text = re.sub(r"gcd\((\d+) (\d+)\)", r"math.gcd(\1, \2)", text)
    text = re.sub(r"(?<![/])/(?!/)", "/", text)
    value = eval(text, {"math": math})  # the text is our own formula with numbers only
    assert float(value) == int(value), expression
    return int(value)


@pytest.mark.parametrize(("layer", "shape"), LAYERS, ids=lambda x: repr(x)[:40])
@pytest.mark.parametrize("count", ["exact", "dense"])
def test_substituted_formulas_evaluate_to_their_values(layer, shape, count):
    explanation = layer.explain(shape, batch=2, count=count)
    steps = [i for s in explanation.sections for i in s.items if isinstance(i, Step)]
    assert steps
    checked = 0
    for step in steps:
        if step.substituted and not re.search(r"[A-Za-z_]", step.substituted.replace("gcd", "")):
            assert evaluate(step.substituted) == step.value, step
            checked += 1
    assert checked >= 1


def test_explanation_results_match_the_numbers_reported():
    layer = nn.Conv2d(1, 1, 3, bias=False)
    analysis = layer.analyze((1, 128, 128), explain=True)
    text = analysis.explanation.text()
    assert "H_out = ⌊(H + 2·p_H − (k_H − 1) − 1) / s_H⌋ + 1" in text
    assert (
        f"mults = N · C_out · (C_in / g) · T_H · T_W = 1 · 1 · (1 / 1) · 378 · 378 = {142884:,}"
        in text
    )
    md = analysis.explanation.markdown()
    assert md.count("$$") >= 20 and r"\left\lfloor" in md and "### Backward pass" in md
