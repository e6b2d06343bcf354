"""A training run's curves: loss, training accuracy and held-out accuracy per epoch, from the
``history`` that ``convscope train`` writes to metrics.json after every epoch."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import ConvScopeError
from ..grammar import shown
from .network import check_format, new_figure, picture_format, render_figure, write_picture

# a run's metrics.json grows by about 100 bytes an epoch: 4 MiB is some 40,000 epochs
METRICS_MAX_BYTES = 4 << 20
MAX_EPOCHS = 100_000


@dataclass(frozen=True)
class CurveSeries:
    """The values plotted, one per epoch, in the history's order (accuracies as fractions)."""

    epochs: tuple[int, ...]
    loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_accuracy: tuple[float, ...]


def load_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.json, parsed; a one-line ConvScopeError for a missing file, a folder, a
    file too large to be one, or one that is not a JSON object."""
    where = shown(str(path))
    path = Path(path)
    if path.is_dir():
        raise ConvScopeError(f"{where} is a folder; name the run's metrics.json")
    if path.exists() and not path.is_file():
        raise ConvScopeError(f"{where} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(METRICS_MAX_BYTES + 1)  # bounded: the size on disk may lie (/proc)
    except FileNotFoundError:
        raise ConvScopeError(f"no metrics file at {where}") from None
    except OSError as error:
        raise ConvScopeError(f"{where}: cannot read it ({error.strerror or error})") from None
    if len(raw) > METRICS_MAX_BYTES:
        raise ConvScopeError(
            f"{where} is larger than {METRICS_MAX_BYTES >> 20} MiB: not a run's metrics.json"
        )
    try:
        metrics = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ConvScopeError(f"{where} is not JSON ({error})") from None
    if not isinstance(metrics, dict):
        raise ConvScopeError(f"{where} is not a run's metrics (a JSON object with a history)")
    return metrics


def _number(entry: dict, key: str, index: int, low: float, high: float) -> float:
    value = entry.get(key)
    good = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (good and math.isfinite(value) and low <= value <= high):
        rule = "a finite number" if high == math.inf else f"a number from {low:g} to {high:g}"
        raise ConvScopeError(f"history[{index}]: {key!r} must be {rule}, got {value!r:.40}")
    return float(value)


def curve_series(history_or_metrics: dict[str, Any] | list[Any]) -> CurveSeries:
    """The series to plot from a metrics object (its ``history``) or a history list: each
    epoch an object with an integer ``epoch`` and finite ``loss`` (>= 0), ``train_accuracy``
    and ``test_accuracy`` (0 to 1). Anything else is a one-line ConvScopeError."""
    history = history_or_metrics
    if isinstance(history_or_metrics, dict):
        history = history_or_metrics.get("history")
    if not isinstance(history, list):
        raise ConvScopeError("metrics must hold a 'history' list, one object per epoch")
    if not history:
        raise ConvScopeError("the history holds no epochs yet: nothing to draw")
    if len(history) > MAX_EPOCHS:
        raise ConvScopeError(f"the history holds {len(history):,} epochs, more than {MAX_EPOCHS:,}")
    epochs, loss, train_acc, test_acc = [], [], [], []
    for index, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise ConvScopeError(f"history[{index}] must be an object, got {entry!r:.40}")
        epoch = entry.get("epoch")
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch < 2**31):
            raise ConvScopeError(
                f"history[{index}]: 'epoch' must be an integer >= 0, got {epoch!r:.40}"
            )
        epochs.append(epoch)
        loss.append(_number(entry, "loss", index, 0, math.inf))
        train_acc.append(_number(entry, "train_accuracy", index, 0, 1))
        test_acc.append(_number(entry, "test_accuracy", index, 0, 1))
    return CurveSeries(tuple(epochs), tuple(loss), tuple(train_acc), tuple(test_acc))


def curves_plot(series: CurveSeries) -> Figure:
    """Two panels over the epochs: the training loss, and training and held-out accuracy (%).
    Small (7×3 inches) so that ``convscope train`` can redraw it every epoch cheaply."""
    # fixed margins rather than a layout engine: the engine's extra passes would more than
    # double the time training spends on this picture every epoch
    figure = new_figure(7.0, 3.0, layout=None)
    figure.subplots_adjust(left=0.09, right=0.98, bottom=0.16, top=0.88, wspace=0.28)
    loss_ax, acc_ax = figure.subplots(1, 2)
    marker = "o" if len(series.epochs) <= 40 else None
    loss_ax.plot(series.epochs, series.loss, marker=marker, markersize=3, label="loss")
    for accuracy, label in (
        (series.train_accuracy, "training"),
        (series.test_accuracy, "held-out"),
    ):
        acc_ax.plot(
            series.epochs, [100 * a for a in accuracy], marker=marker, markersize=3, label=label
        )
    loss_ax.set_ylabel("training loss (cross-entropy)")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.legend(fontsize=8, loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=1))
        ax.grid(True, alpha=0.3)
    first, last = series.epochs[0], series.epochs[-1]
    for ax in (loss_ax, acc_ax):
        # whole epochs only: the locator alone ticks 0.95, 0.96 ... when one epoch is drawn
        ax.set_xlim(min(series.epochs) - 0.5, max(series.epochs) + 0.5)
    span = f"epoch {last}" if len(series.epochs) == 1 else f"epochs {first}–{last}"
    figure.suptitle(
        f"{span}: loss {series.loss[-1]:.4f}, training {100 * series.train_accuracy[-1]:.1f}%, "
        f"held-out {100 * series.test_accuracy[-1]:.1f}%",
        fontsize=10,
    )
    return figure


def curves_figure(history_or_metrics: dict[str, Any] | list[Any], fmt: str) -> bytes:
    """Training curves as PNG or SVG bytes (``fmt`` "png" or "svg"), from a metrics object as
    metrics.json holds it, or its ``history`` list."""
    check_format(fmt)
    return render_figure(curves_plot(curve_series(history_or_metrics)), fmt)


def draw_curves(metrics: Path, out: Path) -> Path:
    """Training curves from the run's ``metrics`` file to ``out`` (PNG or SVG by its suffix),
    written atomically; returns ``out``. Bad input is a one-line ConvScopeError naming the
    file."""
    metrics = Path(metrics)
    picture_format(out)  # a wrong suffix is refused before the metrics are read
    data = load_metrics(metrics)
    try:
        series = curve_series(data)
    except ConvScopeError as error:
        raise ConvScopeError(f"{shown(str(metrics))}: {error}") from None
    return write_picture(Path(out), lambda fmt: render_figure(curves_plot(series), fmt))
