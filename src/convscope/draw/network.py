"""A network's receptive field, costs and activation memory per layer, as one picture.

Drawn with matplotlib's object API (a ``Figure`` on its own Agg canvas), never pyplot's global
state, so pictures can be made from several threads of a web server at once. The numbers
plotted are the summary report's own; nothing is recomputed here.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..errors import ConvScopeError
from ..grammar import shown
from ..receptive import Field
from ..summary import LayerRow, Report

PICTURE_FORMATS = {".png": "png", ".svg": "svg"}

# svg.fonttype can only be set through the global rcParams: SVG renders take this lock and put
# the old value back, so that concurrent renders never see each other's setting half-way.
_SVG_LOCK = threading.Lock()

# how a receptive field that has no size is shown: marker, colour and legend text
_FIELD_STATES = {
    "global": ("^", "tab:red", "global: sees the whole input"),
    "unknown": ("X", "tab:gray", "unknown: a step on the path has no rule"),
    "varies": ("D", "tab:purple", "varies: windows of unequal size"),
    "none": ("s", "tab:olive", "none: no spatial axes"),
}


# -- shared by the network and the curves pictures ----------------------------------------------


def picture_format(out: Path) -> str:
    """``png`` or ``svg`` from the output file's suffix; a ConvScopeError for any other."""
    fmt = PICTURE_FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise ConvScopeError(
            f"{shown(str(out))}: the picture's format comes from its suffix: "
            f"{' or '.join(PICTURE_FORMATS)}"
        )
    return fmt


def check_format(fmt: Any) -> str:
    """``fmt`` when it is ``png`` or ``svg``; a ConvScopeError otherwise."""
    if fmt not in PICTURE_FORMATS.values():
        raise ConvScopeError(f"the picture format must be png or svg, got {fmt!r:.40}")
    return fmt


def render_figure(figure: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes. SVG keeps its text as text (searchable, smaller)."""
    buffer = io.BytesIO()
    if check_format(fmt) == "svg":
        with _SVG_LOCK:
            old = matplotlib.rcParams["svg.fonttype"]
            matplotlib.rcParams["svg.fonttype"] = "none"
            try:
                figure.savefig(buffer, format="svg", metadata={"Date": None})
            finally:
                matplotlib.rcParams["svg.fonttype"] = old
    else:
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_picture(out: Path, picture: Callable[[str], bytes]) -> Path:
    """Renders ``picture(fmt)`` (fmt from ``out``'s suffix) and writes it to ``out`` atomically
    (a temporary file renamed over it). Every refusal is one-line ConvScopeError, given before
    anything is drawn where it can be."""
    from ..train import atomic_write  # the one atomic writer: umask-following file mode

    out = Path(out)
    fmt = picture_format(out)
    if out.is_dir():
        raise ConvScopeError(f"{shown(str(out))} is a folder; name the picture file")
    if not out.parent.is_dir():
        raise ConvScopeError(f"{shown(str(out))}: the folder {shown(str(out.parent))} is missing")
    data = picture(fmt)
    try:
        atomic_write(out, lambda f: f.write(data))
    except OSError as error:
        raise ConvScopeError(
            f"{shown(str(out))}: cannot write the picture ({error.strerror or error})"
        ) from None
    return out


def new_figure(
    width: float, height: float, dpi: int = 100, layout: str | None = "constrained"
) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global figure registry). ``layout=None``
    skips the layout engine's extra drawing passes; the caller then sets the margins."""
    figure = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(figure)
    return figure


# -- the network picture ----------------------------------------------------------------------


def human_bytes(value: float) -> str:
    """1536 -> '1.5 KiB' (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def field_state(f: Field | None) -> str:
    """``size`` when the field has a size to plot, else the state the legend names."""
    if f is None:
        return "none"
    if f.unknown:
        return "unknown"
    if f.global_:
        return "global"
    if f.undefined:
        return "varies"
    return "size"


def _leaves(report: Report) -> list[LayerRow]:
    rows = [row for row in report.layers if not row.container]
    if not rows:
        raise ConvScopeError(f"{report.model}: the report has no layers to draw")
    return rows


def _axis_series(values: Sequence[tuple[float, ...] | None]) -> list[tuple[str, list[float]]]:
    """Per-axis series of a field quantity (NaN where the field has no size); one series when
    every axis agrees, so a square network shows one line and a 3×5 kernel two."""
    ndim = max((len(v) for v in values if v is not None), default=0)
    per_axis = [
        [float(v[axis]) if v is not None and axis < len(v) else math.nan for v in values]
        for axis in range(ndim)
    ]
    if all(series == per_axis[0] or _same_nan(series, per_axis[0]) for series in per_axis):
        return [("", per_axis[0])] if per_axis else []
    return [(f" (axis {axis + 1})", series) for axis, series in enumerate(per_axis)]


def _same_nan(a: list[float], b: list[float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def plain(text: str, limit: int = 48) -> str:
    """``text`` shown as written, cut short: matplotlib reads ``$...$`` as mathematics (and
    refuses bad mathematics with an exception), so a dollar sign is escaped."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def layer_label(row: LayerRow) -> str:
    """The row's name, with its kind where the name is only a position (``3.branch.0``)."""
    if not row.name:
        return plain(row.kind)
    numbered = row.name.rsplit(".", 1)[-1].isdigit()
    return plain(f"{row.name} {row.kind}" if numbered else row.name)


def _label_every(count: int, width_inches: float, fontsize: float) -> int:
    """Label every k-th layer so that the rotated names do not overlap."""
    fits = max(1, int(width_inches * 72 / (fontsize * 1.3)))
    return max(1, math.ceil(count / fits))


def network_plot(report: Report) -> Figure:
    """The three-panel figure of ``report``'s leaf layers (receptive field; MACs and
    parameters; activation memory), their names along the shared layer axis."""
    rows = _leaves(report)
    count = len(rows)
    x = list(range(count))
    width = min(30.0, max(8.0, 5.0 + 0.1 * count))
    many = count > MANY_BARS
    # the layout engine measures every tick label in extra drawing passes: with thousands of
    # layers, fixed margins (room for 48-character names at 5 pt) draw several times faster
    figure = new_figure(width, 9.5, layout=None if many else "constrained")
    field_ax, cost_ax, memory_ax = figure.subplots(3, 1, sharex=True)
    if many:
        figure.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.25, hspace=0.25)

    shape = "×".join(map(str, (report.batch, *report.input_shape)))
    title = (
        f"{plain(report.model, 80)}, input {shape}: {report.total_params:,} parameters, "
        f"{report.total_macs:,} MACs, {human_bytes(report.activation_bytes)} of activations"
    )
    if report.unsupported:
        title += f"\n{len(report.unsupported)} operations not counted: see convscope summary"
    figure.suptitle(title, fontsize=11)

    _field_panel(field_ax, rows, x)
    _cost_panel(cost_ax, rows, x)
    _memory_panel(memory_ax, rows, x)

    fontsize = 7 if count <= 40 else 5
    every = _label_every(count, width, fontsize)
    names = [layer_label(row) for row in rows]
    memory_ax.set_xticks(x[::every], names[::every], rotation=90, fontsize=fontsize)
    memory_ax.set_xlim(-0.6, count - 0.4)
    memory_ax.set_xlabel(
        "layer, in execution order" + (f" (every {every}th named)" if every > 1 else "")
    )
    for ax in (field_ax, cost_ax):
        ax.tick_params(axis="x", which="both", labelbottom=False)
    return figure


def _field_panel(ax: Any, rows: list[LayerRow], x: list[int]) -> None:
    """Size and effective stride (input pixels) where the field has them; the other states
    as markers along the top, named in the legend, never as a 0."""
    states = [field_state(row.field) for row in rows]
    sized = [row.field if state == "size" else None for row, state in zip(rows, states)]
    marker = "o" if len(rows) <= 60 else None
    for suffix, series in _axis_series([f.size if f else None for f in sized]):
        ax.plot(x, series, marker=marker, markersize=3, color="tab:blue", label="size" + suffix)
    for suffix, series in _axis_series([f.stride if f else None for f in sized]):
        ax.plot(x, series, marker=marker, markersize=3, color="tab:orange", label="stride" + suffix)
    misaligned = [i for i, f in zip(x, sized) if f is not None and f.misaligned]
    if misaligned:
        size = _axis_series([f.size if f else None for f in sized])[0][1]
        ax.plot(
            misaligned,
            [size[i] for i in misaligned],
            "o",
            mfc="none",
            mec="tab:red",
            markersize=7,
            label="misaligned paths merged",
        )
    top = ax.get_xaxis_transform()  # x in data, y in axes: markers along the panel's top
    for state, (shape, colour, text) in _FIELD_STATES.items():
        where = [i for i, s in zip(x, states) if s == state]
        if where:
            ax.plot(
                where,
                [0.95] * len(where),
                shape,
                color=colour,
                markersize=5,
                transform=top,
                label=f"{text} ({_layers(len(where))})",
            )
    # symlog: sizes grow by orders of magnitude, and strides can be fractions (transposed
    # convolutions) or 0 (a field spread over a whole axis)
    ax.set_yscale("symlog", base=2, linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_ylim(top=max(ax.get_ylim()[1], 2) * 4)  # room for the state markers
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel("receptive field\n(input pixels)")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    _legend_above(ax)


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _legend_above(ax: Any) -> None:
    """The legend in one row above the panel, where it hides no bar or marker."""
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1), ncols=6, frameon=False)


def _wide_span(values: Sequence[int]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) > 100 * min(positive)


def _count_text(value: float, _: Any = None) -> str:
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{unit}"
    return f"{value:g}"


#: Above this many bars a panel draws them as one collection: matplotlib places each bar of
#: ``ax.bar`` on its own (about 1.5 ms each), which would take a 5,000-layer spec 30 s.
MANY_BARS = 400


def _bars(
    ax: Any,
    x: list[float],
    heights: list[int],
    width: float,
    color: str,
    label: str | None = None,
    log: bool = False,
) -> None:
    """Bars from 0 (on a log axis, from the axis bottom), as ``ax.bar`` draws them, or as one
    PolyCollection of the same rectangles when there are many."""
    if len(x) <= MANY_BARS:
        ax.bar(x, heights, width=width, color=color, label=label, log=log)
        return
    from matplotlib.collections import PolyCollection

    if log:
        ax.set_yscale("log")
    shown = [(i, h) for i, h in zip(x, heights) if h > 0]  # a 0 has no bar, as with ax.bar
    base = min((h for _, h in shown), default=1) / 2 if log else 0
    half = width / 2
    boxes = [[(i - half, base), (i - half, h), (i + half, h), (i + half, base)] for i, h in shown]
    ax.add_collection(PolyCollection(boxes, facecolors=color, edgecolors="none", label=label))
    ax.autoscale_view()


def _cost_panel(ax: Any, rows: list[LayerRow], x: list[int]) -> None:
    """MACs and parameters side by side; log scale when they span orders of magnitude (a
    layer at 0 then has no bar, as the legend says)."""
    macs = [row.macs for row in rows]
    params = [row.params for row in rows]
    log = _wide_span(macs + params)
    # bar(log=True) sets the scale before the bars are placed, so their 0 base is clipped to
    # the axis bottom instead of hiding every bar
    _bars(ax, [i - 0.2 for i in x], macs, 0.4, "tab:green", "MACs", log)
    _bars(ax, [i + 0.2 for i in x], params, 0.4, "tab:brown", "parameters", log)
    if log:
        zeros = sum(1 for m, p in zip(macs, params) if m == 0 and p == 0)
        if zeros:
            ax.plot([], [], " ", label=f"no bar: 0 ({_layers(zeros)} with neither)")
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(_count_text))
    ax.set_ylabel("MACs, parameters")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    _legend_above(ax)


def _memory_panel(ax: Any, rows: list[LayerRow], x: list[int]) -> None:
    """Each layer's output activations, in bytes, ticked at round numbers of one binary unit
    (0, 4, 8 MiB rather than 3.81 MiB steps)."""
    values = [row.activation_bytes for row in rows]
    _bars(ax, x, values, 0.8, "tab:cyan")
    top = max(values)
    unit = 1024 ** min(4, int(math.log(top, 1024))) if top >= 1 else 1
    ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 4, 5, 10]).tick_values(0, top / unit)
    ax.set_yticks([t * unit for t in ticks if t >= 0])
    ax.set_ylim(0, max(top, 1) * 1.05)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    ax.set_ylabel("activation memory\n(output, whole batch)")
    ax.grid(True, which="major", axis="y", alpha=0.3)


def network_figure(report: Report, fmt: str) -> bytes:
    """``report`` drawn as PNG or SVG bytes (``fmt`` "png" or "svg"): receptive field size and
    effective stride, MACs and parameters, and activation memory per leaf layer."""
    check_format(fmt)
    return render_figure(network_plot(report), fmt)


def draw_network(report: Report, out: Path) -> Path:
    """Writes ``report``'s picture to ``out`` atomically, PNG or SVG by its suffix; returns
    ``out``. Every refusal (suffix, folder, unwritable path) is a one-line ConvScopeError."""
    return write_picture(Path(out), lambda fmt: network_figure(report, fmt))
