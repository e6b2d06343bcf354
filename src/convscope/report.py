"""Renders an Analysis as a dict (the JSON schema), a terminal table or Markdown."""

from __future__ import annotations

from typing import Any

from .counting import OpCount
from .geometry import axis_names
from .ops.base import Analysis
from .text import columns, pairs

ROWS = (
    ("forward", "forward"),
    ("backward_input", "backward input"),
    ("backward_weight", "backward weight"),
    ("backward_bias", "backward bias"),
)
COLUMNS = ("mults", "adds", "compares", "divides", "specials")


def _parts(analysis: Analysis) -> dict[str, OpCount | None]:
    cost = analysis.cost
    return {key: getattr(cost, key) for key, _ in ROWS}


def _columns(analysis: Analysis) -> list[str]:
    """mults and adds always; the other kinds where the layer performs any."""
    used = {"mults", "adds"}
    for part in _parts(analysis).values():
        if part is not None:
            used.update(k for k in COLUMNS if getattr(part, k))
    return [c for c in COLUMNS if c in used]


def _with_batch(shape: Any, batch: int | None) -> Any:
    if shape and isinstance(shape[0], tuple):
        return [_with_batch(s, batch) for s in shape]
    return [batch, *shape] if batch is not None else list(shape)


def to_dict(analysis: Analysis, batch_given: bool = False) -> dict[str, Any]:
    """The JSON object: shapes channel-first, with the batch axis only when one was given."""
    batch = analysis.batch if batch_given else None
    keys = tuple(_columns(analysis))
    out: dict[str, Any] = {
        "layer": analysis.layer.name,
        "input_shape": _with_batch(analysis.input_shape, batch),
        "output_shape": _with_batch(analysis.output_shape, batch),
        "params": analysis.params.params,
        "weights": analysis.params.weights,
        "biases": analysis.params.biases,
        "buffers": analysis.params.buffers,
        "macs": analysis.macs,
        "count": analysis.count,
        "batch": analysis.batch,
    }
    for key, part in _parts(analysis).items():
        if part is None:
            out[key] = None
        elif key == "backward_bias":
            out[key] = part.to_dict(keys=("adds",))
        else:
            out[key] = part.to_dict(keys=keys)
    return out


def _cell(part: OpCount | None, column: str) -> str:
    if part is None:
        return "-"
    value = getattr(part, column)
    mark = "≤ " if part.upper_bound and column == "adds" else ""
    return f"{mark}{value:,}"


def _shape(shape: Any, batch: int | None, ndim: int | None = None) -> str:
    shapes = _with_batch(shape, batch)
    if shapes and isinstance(shapes[0], list):
        return " + ".join("×".join(map(str, s)) for s in shapes)
    text = "×".join(map(str, shapes))
    if ndim is not None and len(shape) == ndim + 1:
        axes = ("N",) * (batch is not None) + ("C", *axis_names(ndim))
        text += f"  ({'×'.join(axes)})"
    return text


def _summary_rows(analysis: Analysis, batch_given: bool) -> list[tuple[str, str]]:
    batch = analysis.batch if batch_given else None
    ndim = getattr(analysis.layer, "ndim", None)
    p = analysis.params
    params = f"{p.params:,}"
    if p.params:
        params += f"  (weights {p.weights:,} + biases {p.biases:,})"
    rows = [
        ("layer", f"{analysis.layer.name}({analysis.layer.describe()})"),
        ("input shape", _shape(analysis.input_shape, batch, ndim)),
        ("output shape", _shape(analysis.output_shape, batch, ndim)),
        ("parameters", params),
    ]
    if p.buffers:
        rows.append(("buffers", f"{p.buffers:,}"))
    rows += [("MACs", f"{analysis.macs:,}"), ("count", analysis.count)]
    if batch_given:
        rows.append(("batch", str(analysis.batch)))
    return rows


def _cost_rows(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    columns = _columns(analysis)
    rows = [
        [label, *(_cell(part, c) for c in columns)]
        for (key, label), part in zip(ROWS, _parts(analysis).values())
        if not (part is None and key != "backward_input")
    ]
    return columns, rows


def _note(analysis: Analysis) -> list[str]:
    if any(p is not None and p.upper_bound for p in _parts(analysis).values()):
        return ["≤: depends on the data; the worst case over all inputs is shown."]
    return []


def table(analysis: Analysis, batch_given: bool = False) -> str:
    """A plain-text table for the terminal."""
    lines = pairs(_summary_rows(analysis, batch_given))
    kinds, rows = _cost_rows(analysis)
    lines += ["", *columns([["", *kinds], *rows])]
    lines += _note(analysis)
    return "\n".join(lines) + "\n"


def markdown(analysis: Analysis, batch_given: bool = False) -> str:
    """A Markdown summary and cost table."""
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _summary_rows(analysis, batch_given)]
    columns, rows = _cost_rows(analysis)
    lines += ["", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *_note(analysis)] if _note(analysis) else []
    return "\n".join(lines) + "\n"
