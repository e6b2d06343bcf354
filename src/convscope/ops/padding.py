"""Explicit padding layers and F.pad: constant (zero), reflection, replication and circular
padding of the last axes, negative entries cropping, as PyTorch: the configuration, rules,
passes, modules and registration of the padding family.

Padding moves values: the forward performs no arithmetic. The backward of reflection,
replication and circular padding sums, into each input entry, the gradients of every output
entry that copies it; the additions are counted in closed form from the interval of source
positions each axis reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, _union_length, check_sizes, is_int, prod
from ..module import Module
from .base import Op, no_macs, no_params, not_a_convolution, noted_shape

if TYPE_CHECKING:
    from ..receptive import Field

MODES = ("constant", "reflect", "replicate", "circular")
#: The torch.nn class prefix of each mode (constant: ZeroPad or ConstantPad, by the value).
_CLASS = {"reflect": "ReflectionPad", "replicate": "ReplicationPad", "circular": "CircularPad"}


def pad_pairs_of(padding: Sequence[int]) -> list[tuple[int, int]]:
    """PyTorch's flat padding (last axis first) as (before, after) pairs, last axis first."""
    return [(padding[2 * k], padding[2 * k + 1]) for k in range(len(padding) // 2)]


def _sources(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """The input position each output position copies along one axis (-1: the constant)."""
    i = np.arange(size + before + after) - before
    if mode == "constant":
        return np.where((i >= 0) & (i < size), i, -1)
    if mode == "reflect":
        return np.where(i < 0, -i, np.where(i > size - 1, 2 * (size - 1) - i, i))
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    # circular, as PyTorch: crop first, then wrap around the cropped axis
    start, kept = max(-before, 0), size + min(before, 0) + min(after, 0)
    return start + (np.arange(size + before + after) - max(before, 0)) % kept


def reached(size: int, before: int, after: int, mode: str) -> int:
    """How many input positions of one axis some output position copies (a closed form over
    the interval ``lo … hi`` of unpadded positions ``q − before`` the outputs stand for)."""
    lo, hi = -before, size - 1 + after
    if mode == "constant":
        return max(0, min(hi, size - 1) - max(lo, 0) + 1)
    if mode == "replicate":
        return min(max(hi, 0), size - 1) - min(max(lo, 0), size - 1) + 1
    if mode == "circular":  # every position of the cropped axis
        return size + min(before, 0) + min(after, 0)
    last = size - 1  # reflect: the direct part, and the left and right parts mirrored
    parts = [(max(lo, 0), min(hi, last))]
    if lo <= min(hi, -1):
        parts.append((-min(hi, -1), -lo))
    if hi >= max(lo, size):
        parts.append((2 * last - hi, 2 * last - max(lo, size)))
    return _union_length((a, b) for a, b in parts if a <= b)


@dataclass(frozen=True)
class PadSpec(Op):
    """Padding of the last ``len(padding) // 2`` axes, PyTorch's flat ``padding`` (the last
    axis's (before, after) first; a negative entry crops), in one of ``MODES``."""

    padding: tuple[int, ...]
    mode: str = "constant"
    value: float = 0.0

    _positional: ClassVar = ("padding",)
    _hidden: ClassVar = ("mode",)

    def __post_init__(self) -> None:
        pads = self.padding
        if (
            not isinstance(pads, tuple)
            or not pads
            or len(pads) % 2
            or not all(is_int(v) for v in pads)
        ):
            raise LayerConfigError(
                f"padding is a tuple of ints in (before, after) pairs, last axis first, got "
                f"{pads!r}"
            )
        if self.mode not in MODES:
            raise LayerConfigError(
                f"padding mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.mode != "constant" and self.value != 0:
            raise LayerConfigError(f"padding mode {self.mode!r} takes no value, got {self.value!r}")
        if self.mode != "constant" and len(pads) > 6:
            raise LayerConfigError(
                f"{self.mode} padding pads 1, 2 or 3 axes (2, 4 or 6 entries), got {len(pads)}"
            )

    @property
    def ndim(self) -> int:
        """How many axes are padded (the last ones)."""
        return len(self.padding) // 2

    @property
    def name(self) -> str:
        if self.ndim > 3:
            return "Pad"
        if self.mode == "constant":
            return f"{'Zero' if self.value == 0 else 'Constant'}Pad{self.ndim}d"
        return f"{_CLASS[self.mode]}{self.ndim}d"

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, self.name)
        n, rank = self.ndim, len(shape)
        if rank < n:
            raise ShapeError(
                f"{self.name} pads {n} axes; the input {shape_text(shape)} has {rank} without the "
                "batch (convscope never pads the batch axis)"
            )
        if self.mode != "constant" and rank > n + 1:
            raise ShapeError(
                f"{self.name}: {self.mode} padding of {n} axes takes an input of {n} or {n + 1} "
                f"axes without the batch (as PyTorch), got {shape_text(shape)}"
            )
        for k, (before, after) in enumerate(pad_pairs_of(self.padding)):
            size = shape[rank - 1 - k]
            where = f"axis {rank - k} (size {size}) of the input {shape_text(shape)}"
            if self.mode == "reflect" and (before >= size or after >= size):
                raise ShapeError(
                    f"{self.name}: reflection padding must be smaller than the size it "
                    f"reflects, got padding ({before}, {after}) on {where}"
                )
            kept = size + min(before, 0) + min(after, 0)  # circular wraps the cropped axis
            if self.mode == "constant" and kept < 0:
                raise ShapeError(
                    f"{self.name}: padding ({before}, {after}) crops {-min(before, 0)} + "
                    f"{-min(after, 0)} positions from {where}, more than it holds (as PyTorch)"
                )
            if self.mode == "circular" and (before > kept or after > kept):
                raise ShapeError(
                    f"{self.name}: circular padding may wrap at most once around the axis "
                    f"(each pad <= the size left after cropping, {kept}), got padding "
                    f"({before}, {after}) on {where}"
                )
            if size + before + after < 1:
                raise ShapeError(
                    f"{self.name}: padding ({before}, {after}) crops {where} to "
                    f"{size + before + after} positions"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        out = list(input_shape)
        for k, (before, after) in enumerate(pad_pairs_of(self.padding)):
            out[-1 - k] += before + after
        shape = tuple(out)
        note = f"{shape_text(input_shape)} → {shape_text(shape)}: each padded axis grows by "
        return noted_shape(w, shape, note + "before + after (a negative entry crops)")

    _params = no_params
    _macs = no_macs
    linear_map = not_a_convolution

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        w.section("Forward pass")
        w.note("Each output entry is a copy of an input entry or the fill value: no arithmetic.")
        w.section("Backward pass")
        if self.mode == "constant":
            w.note("The input gradient is the output gradient's real part: no arithmetic.")
            return Cost(OpCount(), OpCount())
        w.note(
            "Each input entry sums the gradients of the output entries that copy it: r terms "
            "cost r − 1 additions, the same in both count modes (the padding holds real values)"
        )
        rank = len(input_shape)
        padded = {rank - 1 - k: pair for k, pair in enumerate(pad_pairs_of(self.padding))}
        reach = [
            reached(size, *padded[a], self.mode) if a in padded else size
            for a, size in enumerate(input_shape)
        ]
        values = {"N": batch, "M": prod(output_shape), "R": prod(reach)}
        adds = w.let(
            "adds",
            "N · (M − R)",
            batch * (prod(output_shape) - prod(reach)),
            values,
            why="M: outputs per image; R: input entries they copy (per axis from its interval)",
        )
        return Cost(OpCount(), OpCount(adds=adds))

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """A shift by the padding before (a crop shifts back): exact for constant padding and
        for a crop. Reflection, replication and wrapping make the edge outputs copy inputs
        elsewhere than the shift says: the windows' steps vary (flagged, never wrong)."""
        if field.global_ or field.undefined or field.unknown:
            return field
        rank = len(input_shape)
        shifts = [0] * len(field.size)
        for k, (before, after) in enumerate(pad_pairs_of(self.padding)):
            a = field.spatial_index(rank, rank - 1 - k)
            if a is None:
                continue  # a padded channel axis moves no spatial position
            if a < 0:
                return field.as_unknown()
            if self.mode != "constant" and (before > 0 or after > 0):
                return field.as_varying()
            shifts[a] = before
        ones = (1,) * len(field.size)
        return field.window(ones, ones, ones, tuple(shifts))


# -- running: functional forward and backward ----------------------------------------------


def _spec(x: np.ndarray, padding: Sequence[int], mode: str, value: float) -> PadSpec:
    spec = PadSpec(tuple(int(v) for v in padding), mode, float(value))
    if x.ndim < 2:
        raise ShapeError(f"x must be batched (N, ...), got shape {x.shape}")
    spec.output_shape(x.shape[1:])
    return spec


def pad(
    x: np.ndarray, padding: Sequence[int], mode: str = "constant", value: float = 0.0
) -> np.ndarray:
    """``x`` padded as F.pad: ``padding`` flat, last axis first, negative entries crop."""
    x = float_array(x, "x")
    _spec(x, padding, mode, value)
    for k, (before, after) in enumerate(pad_pairs_of(tuple(padding))):
        axis = x.ndim - 1 - k
        src = _sources(x.shape[axis], before, after, mode)
        moved = np.take(x, np.maximum(src, 0), axis=axis)
        if mode == "constant":
            fill = (src < 0).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
            moved = np.where(fill, x.dtype.type(value), moved)
        x = moved
    return x


def pad_backward(
    grad_out: np.ndarray, x: np.ndarray, padding: Sequence[int], mode: str = "constant"
) -> np.ndarray:
    """The input gradient: each input entry sums the output gradients of the entries that copy
    it (constant padding: the output gradient's real part)."""
    x = float_array(x, "x")
    grad = float_array(grad_out, "grad_out")
    spec = _spec(x, padding, mode, 0.0)
    expected = (x.shape[0], *spec.output_shape(x.shape[1:]))
    expect_shape(grad, expected, "grad_out", f"(the padding of an input of shape {x.shape})")
    for k, (before, after) in enumerate(pad_pairs_of(tuple(padding))):
        axis = x.ndim - 1 - k
        src = _sources(x.shape[axis], before, after, mode)
        moved = np.moveaxis(grad, axis, 0)
        out = np.zeros((x.shape[axis], *moved.shape[1:]), dtype=grad.dtype)
        keep = src >= 0
        np.add.at(out, src[keep], moved[keep])
        grad = np.moveaxis(out, 0, axis)
    return grad


# -- running: modules -----------------------------------------------------------------------


class PadModule(Module):
    """A padding layer of ``ndim`` axes in one mode; forward keeps the input for backward."""

    ndim: ClassVar[int] = 1
    mode: ClassVar[str] = "constant"
    spec: PadSpec

    def _build(self, padding: int | Sequence[int], value: float = 0.0) -> None:
        size = 2 * self.ndim
        pads = (padding,) * size if is_int(padding) else tuple(padding)  # type: ignore[arg-type]
        if len(pads) != size or not all(is_int(v) for v in pads):
            raise LayerConfigError(
                f"{type(self).__name__} padding is an int or {size} ints (before, after per "
                f"axis, last axis first), got {padding!r}"
            )
        self.spec = PadSpec(pads, self.mode, float(value))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` padded; keeps ``x`` for backward."""
        self.save_for_backward(x)
        return pad(x, self.spec.padding, self.mode, self.spec.value)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the last forward's input."""
        (x,) = self.saved()
        return pad_backward(grad_out, x, self.spec.padding, self.mode)


def _padding_only(self: PadModule, padding: int | Sequence[int]) -> None:
    self._build(padding)


def _with_value(self: PadModule, padding: int | Sequence[int], value: float) -> None:
    self._build(padding, value)


def _module(prefix: str, ndim: int, mode: str) -> type[PadModule]:
    name = f"{prefix}{ndim}d"
    init = _with_value if prefix == "ConstantPad" else _padding_only
    what = {"ZeroPad": "zeros", "ConstantPad": "a constant value"}.get(prefix, f"{mode} padding")
    doc = f"Pads the last {ndim} axes with {what}, as torch.nn.{name}."
    attrs = {"ndim": ndim, "mode": mode, "__init__": init, "__doc__": doc, "__module__": __name__}
    return type(PadModule)(name, (PadModule,), attrs)


_KINDS = {
    "ZeroPad": "constant",
    "ConstantPad": "constant",
    "ReflectionPad": "reflect",
    "ReplicationPad": "replicate",
    "CircularPad": "circular",
}
MODULES: dict[str, type[PadModule]] = {
    f"{prefix}{n}d": _module(prefix, n, mode) for prefix, mode in _KINDS.items() for n in (1, 2, 3)
}
globals().update(MODULES)


# -- registration -------------------------------------------------------------------------------


def _pad_call(call: registry.TorchCall) -> Op:
    """F.pad(x, pad, mode, value): the padded axes must not include the batch."""
    padding, mode, value = call.bind(("pad", None), ("mode", "constant"), ("value", None))
    if not isinstance(padding, (tuple, list)) or not all(is_int(v) for v in padding):
        raise registry.Unsupported(f"a pad that is not a sequence of ints: {padding!r}")
    if len(padding) // 2 >= call.rank:
        raise registry.Unsupported("it pads the batch axis")
    if mode not in MODES:
        raise registry.Unsupported(f"padding mode {mode!r}")
    return PadSpec(tuple(padding), mode, 0.0 if value is None else float(value))


FAMILY = registry.register(
    registry.Family(
        "padding",
        (PadSpec,),
        MODULES,
        registry.by_name(pad, pad_backward),
        {key.lower(): registry.SpecFileLayer(cls) for key, cls in MODULES.items()},
        registry.TorchMapping(
            {key: registry.mirror(cls) for key, cls in MODULES.items()},
            {"torch.nn.functional.pad": _pad_call},
        ),
    )
)
