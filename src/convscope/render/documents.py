"""The document of each kind of result: one layer's analysis, a network's summary, a
composition, and a pool analysis. The data stays with the results (``to_dict``); what a person
reads is laid out here, once, for every format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..counting import OpCount
from ..explain import Explanation, shape_text
from ..geometry import axis_names, prod
from . import Document, Lines, Pairs, Table

if TYPE_CHECKING:
    from ..compose import Composition, CostComparison
    from ..ops.base import Analysis
    from ..pool_analysis import PoolAnalysis
    from ..summary import Report


def _x(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


# -- one layer -----------------------------------------------------------------------------------

COST_ROWS = (
    ("forward", "forward"),
    ("backward_input", "backward input"),
    ("backward_weight", "backward weight"),
    ("backward_bias", "backward bias"),
)
COUNT_COLUMNS = ("mults", "adds", "compares", "divides", "specials")


def _parts(analysis: Analysis) -> dict[str, OpCount | None]:
    return {key: getattr(analysis.cost, key) for key, _ in COST_ROWS}


def _count_columns(analysis: Analysis) -> list[str]:
    """mults and adds always; the other kinds where the layer performs any."""
    used = {"mults", "adds"}
    for part in _parts(analysis).values():
        if part is not None:
            used.update(k for k in COUNT_COLUMNS if getattr(part, k))
    return [c for c in COUNT_COLUMNS if c in used]


def _with_batch(shape: Any, batch: int | None) -> Any:
    if shape and isinstance(shape[0], tuple):
        return [_with_batch(s, batch) for s in shape]
    return [batch, *shape] if batch is not None else list(shape)


def analysis_data(analysis: Analysis, batch_given: bool = False) -> dict[str, Any]:
    """The JSON object of one layer: shapes channel-first, with the batch axis only when one
    was given; a gradient the layer does not have is None."""
    batch = analysis.batch if batch_given else None
    keys = tuple(_count_columns(analysis))
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
        else:
            out[key] = part.to_dict(keys=("adds",) if key == "backward_bias" else keys)
    return out


def _cell(part: OpCount | None, column: str) -> str:
    if part is None:
        return "-"
    mark = "≤ " if part.upper_bound and column == "adds" else ""
    return f"{mark}{getattr(part, column):,}"


def _shape(shape: Any, batch: int | None, ndim: int | None = None) -> str:
    shapes = _with_batch(shape, batch)
    if shapes and isinstance(shapes[0], list):
        return " + ".join(_x(s) for s in shapes)
    text = _x(shapes)
    if ndim is not None and len(shape) == ndim + 1:
        axes = ("N",) * (batch is not None) + ("C", *axis_names(ndim))
        text += f"  ({'×'.join(axes)})"
    return text


def analysis_document(analysis: Analysis, batch_given: bool = False) -> Document:
    """One layer: its configuration, shapes, parameters and MACs, then a table of each pass's
    operations."""
    batch = analysis.batch if batch_given else None
    ndim = getattr(analysis.layer, "ndim", None)
    p = analysis.params
    params = f"{p.params:,}" + (
        f"  (weights {p.weights:,} + biases {p.biases:,})" if p.params else ""
    )
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
    kinds = _count_columns(analysis)
    costs = Table(
        [["", *kinds]]
        + [
            [label, *(_cell(part, c) for c in kinds)]
            for (key, label), part in zip(COST_ROWS, _parts(analysis).values())
            if not (part is None and key != "backward_input")
        ]
    )
    notes: list[Any] = []
    if any(part is not None and part.upper_bound for part in _parts(analysis).values()):
        notes = [Lines(["≤: depends on the data; the worst case over all inputs is shown."])]
    return Document(
        [[Pairs(rows)], [costs, *notes]],
        analysis_data(analysis, batch_given),
        analysis.explanation,
    )


# -- a network -------------------------------------------------------------------------------------

GRID_HEAD = [
    "layer",
    "type",
    "output",
    "params",
    "MACs",
    "fwd mults",
    "fwd adds",
    "bwd mults",
    "bwd adds",
    "act bytes",
    "RF",
    "RF stride",
    "RF pad",
]


def _extra(count: OpCount) -> str:
    parts = [
        f"{getattr(count, k):,} {k}"
        for k in ("compares", "divides", "specials")
        if getattr(count, k)
    ]
    return (", " + ", ".join(parts)) if parts else ""


def summary_document(report: Report, depth: int | None = None) -> Document:
    """A network: one row per layer and container (nested ones indented), then the totals."""
    grid = [list(GRID_HEAD)]
    for r in report.shown(depth):
        back = r.cost.backward_input + r.backward_weight
        rf = r.field.text() if r.field is not None else ("-", "-", "-")
        grid.append(
            [
                "  " * r.depth + r.name,
                r.kind,
                (f"{r.repeat}×" if r.repeat != 1 else "") + _x(r.output_shape),
                f"{r.params:,}",
                f"{r.macs:,}",
                f"{r.cost.forward.mults:,}",
                f"{r.cost.forward.adds:,}",
                f"{back.mults:,}",
                f"{back.adds:,}",
                f"{r.activation_bytes:,}",
                *rf,
            ]
        )
    f, b, t = report.forward, report.backward, report.training_step
    totals = [
        ("input", f"{report.batch}×" + _x(report.input_shape)),
        ("total params", f"{report.total_params:,}"),
        ("trainable params", f"{report.trainable_params:,}"),
        ("buffers", f"{report.total_buffers:,}"),
        ("total MACs", f"{report.total_macs:,}"),
        ("forward", f"{f.mults:,} mults, {f.adds:,} adds" + _extra(f)),
        ("backward", f"{b.mults:,} mults, {b.adds:,} adds" + _extra(b)),
        ("training step", f"{t.total:,} operations ({report.count} count)"),
        ("parameter memory", f"{report.param_bytes:,} bytes"),
        ("activation memory", f"{report.activation_bytes:,} bytes"),
    ]
    if report.unsupported:
        totals.append(
            (
                "NOT COUNTED",
                "the operations of "
                + ", ".join(report.unsupported)
                + " (their parameters are in the totals)",
            )
        )
    if report.method:
        totals.append(("read by", report.method))
    table = Table(grid, left=3, rule=True)
    extra = [(row.name, row.explanation) for row in report.shown(depth) if row.explanation]
    return Document(
        [[table], [Pairs(totals, header=("total", ""))]], report.to_dict(depth), extra=extra
    )


# -- a composition ---------------------------------------------------------------------------------


def composition_lines(result: Composition) -> list[str]:
    """The single layer and the exactness verdict, in a few lines."""
    spec = result.spec
    pads = tuple(p[0] if p[0] == p[1] else p for p in spec.padding)
    lines = [
        f"Single layer: {spec.name}({spec.describe()})",
        f"  kernel {shape_text(spec.kernel_size)}, stride {shape_text(spec.stride)}, "
        f"dilation {shape_text(spec.dilation)}, padding {pads}, groups {spec.groups}, "
        f"bias {spec.bias}",
        f"  effective kernel (span) {shape_text(result.span)}",
    ]
    verdict = "Exact: equals the chain at every output position."
    lines.append("  " + (verdict if result.exact else "Not exact: " + result.inexact_reason()))
    return lines


def cost_table(costs: CostComparison) -> Table:
    """The chain's cost beside the single layer's, with the cheaper side."""
    rows = [["", "chain", "single", "cheaper"]]
    verdict = costs.cheaper()
    for what, a, b in costs.rows():
        label = "params" if what == "params" else f"{what.replace('_', ' ')} ops"
        rows.append([label.replace("macs ops", "MACs"), f"{a:,}", f"{b:,}", verdict[what]])
    return Table(rows)


def composition_document(
    result: Composition, costs: CostComparison, explanation: Explanation | None = None
) -> Document:
    """A chain composed to one convolution, and the cost of each."""
    layers = len(result.links)
    shape = "" if result.input_shape is None else f" for input {shape_text(result.input_shape)}"
    title = f"Chain of {layers} layer{'s' if layers != 1 else ''}{shape}"
    table: list[Any] = [cost_table(costs)]
    if result.input_shape is None:
        table.append(Lines(["(give --input C×H×W for the operation counts)"]))
    data = {**result.to_dict(), "cost": costs.to_dict()}
    return Document([[Lines(composition_lines(result))], table], data, explanation, title, fence="")


# -- a pool analysis -------------------------------------------------------------------------------


def pool_analysis_document(result: PoolAnalysis) -> Document:
    """What a pool keeps and loses, what it buys, and how it moves under shifts."""
    n_in = prod(result.input_shape)
    ipo, zg, pair, mem = (
        result.inputs_per_output,
        result.zero_grad,
        result.identical_pair,
        result.memory,
    )
    names = "×".join(("C", *axis_names(len(result.input_shape) - 1)))
    head = Pairs(
        [
            ("layer", result.layer),
            ("input → output", f"{_x(result.input_shape)} → {_x(result.output_shape)}  ({names})"),
        ]
    )
    window = f" (window {ipo.window})" if ipo.window else ""
    keeps = [
        ("inputs per output", f"min {ipo.min}, max {ipo.max}, mean {ipo.mean_exact}{window}"),
        ("inputs in no window", f"{result.unread_inputs:,} of {n_in:,}"),
    ]
    if result.rank is not None:
        keeps.append(
            (
                "rank of the map",
                f"{result.rank.rank:,} of {n_in:,} inputs: "
                f"{result.rank.lost:,} dimensions lost (the null space)",
            )
        )
    if result.kind == "max":
        best = f"{zg.best:.1%}" if zg.best_exact else f"({zg.best_bound:.1%} to {zg.best:.1%})"
        keeps.append(
            (
                "zero-gradient inputs",
                f"{zg.measured_mean:.1%} measured (min {zg.measured_min:.1%}, max "
                f"{zg.measured_max:.1%}; {zg.trials} normal inputs, seed {zg.seed}); "
                f"over all inputs {best} … {zg.worst:.1%}",
            )
        )
    else:
        keeps.append(("zero-gradient inputs", f"{zg.exact:.1%} (the inputs in no window)"))
    keeps.append(("identical outputs", pair.description))
    buys = [
        (
            "activation memory",
            f"{mem.input_values:,} → {mem.output_values:,} values "
            f"({mem.input_bytes:,} → {mem.output_bytes:,} bytes float32): {mem.ratio:.2f}× smaller",
        ),
        ("pool's own cost", ", ".join(f"{v:,} {k}" for k, v in result.pool_cost.items() if v)),
    ]
    sections: list[list[Any]] = [
        [head],
        [Lines(["What it keeps and loses (per image)"]), Pairs(keeps, indent=2)],
        [Lines(["Why it is still used"]), Pairs(buys, indent=2)],
    ]
    fc = result.following_conv
    if fc is not None:
        grid = [["", "on the input", "on the pooled", "ratio"]]
        for label, key in (("MACs", "macs"), ("ops fwd + bwd", "total_ops")):
            a, b = getattr(fc.unpooled, key), getattr(fc.pooled, key)
            grid.append([label, f"{a:,}", f"{b:,}", f"{a / b:.2f}×" if b else "-"])
        sections.append(
            [Lines([f"  following {fc.layer} ({fc.count} count)"]), Table(grid, indent=4)]
        )
    tr = result.translation
    keys = ("pool", "pool_aligned", "conv", "conv_aligned", "identity", "identity_aligned")
    shifts = Table(
        [["δ", "pool", "aligned", "strided conv", "aligned", "no pooling", "aligned"]]
        + [
            [
                str(row.shift),
                *("-" if getattr(row, k) is None else f"{getattr(row, k):.3f}" for k in keys),
            ]
            for row in tr.rows
        ],
        indent=2,
    )
    sections.append(
        [
            Lines(
                [
                    f"Translation robustness: relative output change after a circular shift of δ "
                    f"pixels along {tr.axis} ({tr.trials} smooth inputs, σ = {tr.sigma} px, seed "
                    f"{tr.seed}); 'aligned' compares with the output shifted by the nearest whole "
                    "step"
                ]
            ),
            shifts,
            Lines([f"  strided conv: {tr.conv}"]),
        ]
    )
    return Document(sections, result.to_dict(), result.explanation, fence="text", csv=shifts)
