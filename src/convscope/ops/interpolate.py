"""Interpolation (nn.Upsample, F.interpolate): nearest, nearest-exact, linear, bilinear and
trilinear resampling of 1-D to 3-D inputs. The configuration, shape rule, exact counts,
working, receptive field, the forward and backward passes, the module and the registration;
the per-axis geometry is in ``ops/interpolating.py``.

Counting (docs/counting.md's general rule). Nearest copies: no arithmetic forward; backward
each input entry sums the r upstream gradients that copied it (r − 1 additions). The linear
modes are counted as the direct weighted sum PyTorch's CPU kernel computes,
``y[o] = Σ_t W_t(o)·x[i_t(o)]`` over the 2^d corner taps t, ``W_t = Π_axes w`` (w = 1 − λ or
λ). The weights depend on the sizes only: like index arithmetic they are the layer's
constants, computed once per shape and shared by every image and channel, and not counted.

* exact: along an axis where the two neighbours coincide (i1 = i0: the clamped upper border,
  L = 1, or O = L) one tap of weight 1 is read. An output of P distinct taps costs P mults and
  P − 1 adds, except P = 1, a copy (0 ops). Per image and channel the taps sum to
  Π_a T_a (T_a = 2·O_a − m_a, m_a the outputs whose neighbours coincide), the copies number
  Π_a m_a: forward N·C·(Π T − Π m) mults and N·C·(Π T − Π O) adds.
* dense: every output runs all 2^d taps (PyTorch's stencil): N·C·2^d·Π O mults and
  N·C·(2^d − 1)·Π O adds; T_a = 2·O_a, m_a = 0.
* backward (the adjoint, same taps and weights): each tap scatters g·W_t (a copy's g is not
  multiplied); an input entry reached by c contributions costs c − 1 additions. Per axis the
  contributions sum to T_a and reach R_a entries, so the adds are N·C·(Π T − Π R).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import registry
from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, axis_names, check_sizes, is_int, prod
from ..grammar import Context, LayerKind, Option, parse_word
from ..module import Module
from .base import Op, no_macs, no_params, not_linear
from .interpolating import (
    LINEAR_MODES,
    NEAREST_MODES,
    Axis,
    axis_count,
    axis_matrix,
    axis_window,
    out_size,
)

if TYPE_CHECKING:
    from ..receptive import Field

MODES = (*NEAREST_MODES, *LINEAR_MODES)
#: PyTorch's modes that are not counted, and why.
NOT_COUNTED = {
    "bicubic": "mode='bicubic' is not counted (a 4-tap cubic convolution with clamped reads)",
    "area": "mode='area' is adaptive average pooling: use AdaptiveAvgPool",
}
Size = int | Sequence[int] | None
Factor = float | Sequence[float] | None


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _factor(value: Any) -> Any:
    """A scale factor as PyTorch's Upsample keeps it: floats (a bool stays, to be refused)."""
    if isinstance(value, list | tuple):
        return tuple(_factor(v) for v in value)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class InterpolateSpec(Op):
    """Resampling to ``size`` or by ``scale_factor``, with PyTorch's arguments (nn.Upsample)."""

    size: int | tuple[int, ...] | None = None
    scale_factor: float | tuple[float, ...] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None
    recompute_scale_factor: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _tuple(self.size))
        object.__setattr__(self, "scale_factor", _factor(self.scale_factor))
        if self.mode in NOT_COUNTED:
            raise LayerConfigError(f"Upsample: {NOT_COUNTED[self.mode]}")
        if self.mode not in MODES:
            raise LayerConfigError(
                f"Upsample: mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if (self.size is None) == (self.scale_factor is None):
            raise LayerConfigError(
                "Upsample takes exactly one of size and scale_factor, got "
                f"size={self.size!r}, scale_factor={self.scale_factor!r}"
            )
        sizes = self.size if isinstance(self.size, tuple) else (self.size,)
        if self.size is not None and not all(is_int(v) and v >= 1 for v in sizes):
            raise LayerConfigError(f"Upsample: size must be ints >= 1, got {self.size!r}")
        factors = (
            self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor,)
        )
        if self.scale_factor is not None and not all(
            isinstance(f, int | float) and not isinstance(f, bool) and f > 0 for f in factors
        ):
            raise LayerConfigError(f"Upsample: scale_factor must be > 0, got {self.scale_factor!r}")
        if self.mode in NEAREST_MODES and self.align_corners is not None:
            raise LayerConfigError(
                f"Upsample: align_corners applies to the linear modes only (linear, bilinear, "
                f"trilinear), got align_corners={self.align_corners!r} with mode={self.mode!r}"
            )
        if self.recompute_scale_factor and self.size is not None:
            raise LayerConfigError(
                "Upsample: recompute_scale_factor=True is not meaningful with an explicit size"
            )

    @property
    def name(self) -> str:
        return "Upsample"

    def axes(self, input_shape: Shape) -> list[Axis]:
        """The spatial axes of a checked input: sizes, output sizes, the kernel's factors."""
        spatial = input_shape[1:]
        ndim = len(spatial)
        align = bool(self.align_corners)
        if self.size is not None:
            outs = self.size if isinstance(self.size, tuple) else (self.size,) * ndim
            factors: tuple[float | None, ...] = (None,) * ndim
        else:
            given = self.scale_factor
            scales = given if isinstance(given, tuple) else (given,) * ndim
            outs = tuple(out_size(n, float(f)) for n, f in zip(spatial, scales))
            factors = (None,) * ndim if self.recompute_scale_factor else tuple(map(float, scales))
        return [Axis(n, o, f, self.mode, align) for n, o, f in zip(spatial, outs, factors)]

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, "Upsample", "a (C, *spatial) input")
        ndim = len(shape) - 1
        if not 1 <= ndim <= 3:
            raise ShapeError(
                f"Upsample takes (C, L), (C, H, W) or (C, D, H, W) without the batch, got {shape}"
            )
        if self.mode in LINEAR_MODES and LINEAR_MODES[self.mode] != ndim:
            need = LINEAR_MODES[self.mode]
            raise ShapeError(
                f"Upsample: mode={self.mode!r} takes {need} spatial axes, got {ndim} in {shape}"
            )
        for name, value in (("size", self.size), ("scale_factor", self.scale_factor)):
            if isinstance(value, tuple) and len(value) != ndim:
                raise ShapeError(
                    f"Upsample: {name}={value!r} has {len(value)} entries for {ndim} spatial "
                    f"axes of {shape}"
                )
        for axis in self.axes(shape):
            if axis.out < 1:
                raise ShapeError(
                    f"Upsample: output size ⌊{axis.size}·{axis.factor}⌋ = {axis.out} along an "
                    f"axis of {shape}; sizes must be >= 1"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        names = axis_names(len(input_shape) - 1)
        w.section("Output shape")
        for ax, axis in zip(names, self.axes(input_shape)):
            if self.size is not None:
                w.let(f"{ax}_out", "size", axis.out, why="given")
            else:
                scale = axis.factor if axis.factor is not None else "s"
                w.let(
                    f"{ax}_out",
                    f"⌊{ax} · s⌋",
                    axis.out,
                    {ax: axis.size},
                    why=f"s = scale_factor{'' if scale == 's' else ' = ' + str(scale)}",
                )
        shape = (input_shape[0], *(a.out for a in self.axes(input_shape)))
        w.note(f"Output shape (C, {', '.join(f'{a}_out' for a in names)}) = {shape_text(shape)}")
        return shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        names = axis_names(len(input_shape) - 1)
        axes = self.axes(input_shape)
        counts = [axis_count(a, count == "dense") for a in axes]
        nearest = self.mode in NEAREST_MODES
        what = "copies one input per output" if nearest else "sums 2^d weighted corner taps"
        w.section(f"Cost: {self.mode} {what} ({count} count)")
        nc = w.let(
            "M",
            "N · C",
            batch * input_shape[0],
            {"N": batch, "C": input_shape[0]},
            why="images × channels, each resampled alike",
        )
        outs = {f"{ax}_out": a.out for ax, a in zip(names, axes)}
        outputs = w.let("O", " · ".join(outs), prod(outs.values()), outs, why="outputs per channel")
        for ax, c, a in zip(names, counts, axes):
            w.let(f"R_{ax}", "", c.reached, why=f"inputs read along {ax}, of {a.size}")
        reached = w.let("R", " · ".join(f"R_{ax}" for ax in names), prod(c.reached for c in counts))
        if nearest:
            w.note("Forward: copies only, no arithmetic.")
            adds = w.let(
                "adds_back",
                "M · (O − R)",
                nc * (outputs - reached),
                {"M": nc, "O": outputs, "R": reached},
                why="an input copied r times sums r gradients: r − 1 adds",
            )
            return Cost(OpCount(), OpCount(adds=adds))
        w.note(
            "The weights (1 − λ, λ per axis, and their products) depend on the sizes only and "
            "are not counted. "
            + (
                "Dense: every output runs all its 2^d taps."
                if count == "dense"
                else "Exact: where both neighbours along an axis coincide (i1 = i0) one tap of "
                "weight 1 is read; an output of one tap is a copy."
            )
        )
        for ax, c, a in zip(names, counts, axes):
            m = w.let(f"m_{ax}", "", c.single, why=f"outputs along {ax} read as one tap")
            w.let(
                f"T_{ax}",
                f"2 · {ax}_out − m_{ax}",
                c.taps,
                {f"{ax}_out": a.out, f"m_{ax}": m},
                why=f"taps along {ax}",
            )
        taps = w.let("P", " · ".join(f"T_{ax}" for ax in names), prod(c.taps for c in counts))
        copies = w.let(
            "Q",
            " · ".join(f"m_{ax}" for ax in names),
            prod(c.single for c in counts),
            why="outputs that are copies",
        )
        values = {"M": nc, "P": taps, "Q": copies, "O": outputs, "R": reached}
        mults = w.let("mults", "M · (P − Q)", nc * (taps - copies), values)
        adds = w.let("adds", "M · (P − O)", nc * (taps - outputs), values)
        back = w.let(
            "adds_back",
            "M · (P − R)",
            nc * (taps - reached),
            values,
            why="an input reached by c contributions sums them: c − 1 adds",
        )
        return Cost(OpCount(mults, adds), OpCount(mults, back))

    _params = no_params
    _macs = no_macs

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Nearest by an integer factor k: one input, stride 1/k (up) or k (down). Linear: two
        neighbours (the field grows by one input) by an even upsampling factor or an even
        downsampling step, one input by an odd step or with align_corners at an integer step.
        Elsewhere the inputs an output reads vary in number or step: ``varies``."""
        windows = [axis_window(a) for a in self.axes(input_shape)]
        if any(win is None for win in windows):
            return field.as_varying()
        sizes, strides, pads = zip(*windows)  # type: ignore[misc]
        return field.window(sizes, strides, (1,) * len(sizes), pads)

    linear_map = not_linear(
        "is linear but no convolution: it reads its input at a fractional step with clamped "
        "borders (at best a transposed convolution), which compose does not take"
    )


# -- functional forward and backward ---------------------------------------------------------


def _resample(array: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """``array`` (N, C, *spatial) with each spatial axis multiplied by its matrix."""
    for a, matrix in enumerate(matrices):
        array = np.moveaxis(np.tensordot(array, matrix, axes=([2 + a], [1])), -1, 2 + a)
    return array


def _checked(spec: InterpolateSpec, x: Any) -> tuple[np.ndarray, list[Axis], Shape]:
    x = float_array(x, "x")
    if not 3 <= x.ndim <= 5:
        expect_rank(x, 4, "x", "(N, C, *spatial) with 1 to 3 spatial axes")
    shape = spec._check_input(x.shape[1:])
    return x, spec.axes(shape), (x.shape[0], *spec.output_shape(shape))


def _spec(
    size: Size,
    scale_factor: Factor,
    mode: str,
    align_corners: bool | None,
    recompute_scale_factor: bool | None,
) -> InterpolateSpec:
    return InterpolateSpec(size, scale_factor, mode, align_corners, recompute_scale_factor)


def interpolate(
    x: np.ndarray,
    size: Size = None,
    scale_factor: Factor = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> np.ndarray:
    """Resamples an (N, C, *spatial) array as F.interpolate (PyTorch's CPU index rules)."""
    spec = _spec(size, scale_factor, mode, align_corners, recompute_scale_factor)
    x, axes, _ = _checked(spec, x)
    return _resample(x, [axis_matrix(a, x.dtype) for a in axes])


def interpolate_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    size: Size = None,
    scale_factor: Factor = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> np.ndarray:
    """The gradient of interpolate w.r.t. x: each output's gradient scattered back to the
    inputs it read, with the same weights (the adjoint)."""
    spec = _spec(size, scale_factor, mode, align_corners, recompute_scale_factor)
    x, axes, out = _checked(spec, x)
    return _gradient(spec, grad_out, x, axes, out)


def _gradient(
    spec: InterpolateSpec, grad_out: Any, x: np.ndarray, axes: list[Axis], out: Shape
) -> np.ndarray:
    g = float_array(grad_out, "grad_out")
    expect_shape(g, out, "grad_out", f"(the {spec.name} output for x {tuple(x.shape)})")
    same_dtype(x=x, grad_out=g)
    return _resample(g, [axis_matrix(a, x.dtype).T for a in axes])


# -- module ---------------------------------------------------------------------------------------


class Upsample(Module):
    """Resampling to ``size`` or by ``scale_factor``, with PyTorch's arguments."""

    spec: InterpolateSpec

    def __init__(
        self,
        size: Size = None,
        scale_factor: Factor = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        self.spec = _spec(size, scale_factor, mode, align_corners, recompute_scale_factor)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Resamples ``x`` (N, C, *spatial) and keeps it for backward."""
        x, axes, out = _checked(self.spec, x)
        self.save_for_backward(x, axes, out)
        return _resample(x, [axis_matrix(a, x.dtype) for a in axes])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input (no parameters)."""
        x, axes, out = self.saved()
        return _gradient(self.spec, grad_out, x, axes, out)


# -- registration -----------------------------------------------------------------------------


def _module_rule(module: Any) -> Op:
    """nn.Upsample and its subclasses UpsamplingNearest2d and UpsamplingBilinear2d."""
    if module.mode in NOT_COUNTED:
        raise registry.Unsupported(NOT_COUNTED[module.mode])
    return _MIRROR(module)


def _call_rule(with_recompute: bool) -> registry.CallRule:
    """F.interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor,
    antialias) and the deprecated F.upsample (no recompute_scale_factor)."""

    def rule(call: registry.TorchCall) -> Op:
        names: list[tuple[str, Any]] = [
            ("size", None),
            ("scale_factor", None),
            ("mode", "nearest"),
            ("align_corners", None),
        ]
        if with_recompute:
            names += [("recompute_scale_factor", None), ("antialias", False)]
        values = dict(zip((n for n, _ in names), call.bind(*names)))
        if values.pop("antialias", False):
            raise registry.Unsupported("antialias=True (a wider, scale-dependent filter)")
        if values["mode"] in NOT_COUNTED:
            raise registry.Unsupported(NOT_COUNTED[values["mode"]])
        return InterpolateSpec(**values)

    return rule


_MIRROR = registry.mirror(Upsample)


def _build(values: dict[str, Any], ctx: Context) -> Module:
    scale = values.pop("scale_factor", None)
    if isinstance(scale, tuple | list):
        scale = tuple(float(s) for s in scale)
    elif scale is not None:
        scale = float(scale)
    return Upsample(scale_factor=scale, **values)


def _parse_floats(text: str, label: str) -> float | tuple[float, ...]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise LayerConfigError(f"{label} takes a number or numbers a,b,c, got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


_OPTIONS = (
    Option("size", "size", None),
    Option("scale_factor", "s", None, _parse_floats),
    Option("mode", "mode", None, parse_word(*MODES)),
    Option("align_corners", "ac", None, switch=True),
)

INTERPOLATE = registry.register(
    registry.Family(
        "interpolate",
        (InterpolateSpec,),
        {"Upsample": Upsample},
        {"interpolate": interpolate, "interpolate_backward": interpolate_backward},
        {"upsample": registry.SpecFileLayer(Upsample)},
        registry.TorchMapping(
            dict.fromkeys(
                ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"), _module_rule
            ),
            {
                "torch.nn.functional.interpolate": _call_rule(True),
                "torch.nn.functional.upsample": _call_rule(False),
            },
        ),
        (LayerKind("upsample", _OPTIONS, _build, help="nearest or (bi/tri)linear resampling"),),
    )
)
