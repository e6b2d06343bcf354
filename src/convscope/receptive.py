"""Receptive fields (Araujo, Norris & Sim, "Computing receptive fields of convolutional neural
networks", Distill 2019): size r, effective stride j and effective padding p per axis, in
input pixels. Output position o sees input positions ``o·j − p … o·j − p + r − 1``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from .geometry import Shape


@dataclass(frozen=True)
class Field:
    """A receptive field per spatial axis.

    ``global_``: an output sees the whole input. ``undefined``: the windows vary in size and
    step (adaptive pools of unequal windows). ``unknown``: an operation on the path has no rule
    (one that is not counted). ``statistics``: besides its window, an output depends on every
    input through normalisation statistics (GroupNorm, InstanceNorm, LayerNorm over space).
    """

    size: tuple[Fraction, ...]
    stride: tuple[Fraction, ...]
    padding: tuple[Fraction, ...]
    global_: bool = False
    misaligned: bool = False
    undefined: bool = False
    unknown: bool = False
    statistics: bool = False
    #: where the spatial axes are in the per-sample shape: None for channel-first (C, *spatial);
    #: ``layout_lost`` once a reshape has merged or split them.
    axes: tuple[int, ...] | None = None
    layout_lost: bool = False

    @classmethod
    def identity(cls, ndim: int) -> Field:
        one, zero = (Fraction(1),) * ndim, (Fraction(0),) * ndim
        return cls(one, one, zero)

    @property
    def centre(self) -> tuple[Fraction, ...]:
        """Centre of output 0's field, in input coordinates."""
        return tuple((r - 1) / 2 - p for r, p in zip(self.size, self.padding))

    def window(self, kernel: Shape, stride: Shape, dilation: Shape, pad_before: Shape) -> Field:
        """After a sliding window (conv or pool)."""
        if self.global_ or self.undefined or self.unknown:
            return self
        size = tuple(
            r + d * (k - 1) * j for r, k, d, j in zip(self.size, kernel, dilation, self.stride)
        )
        padding = tuple(p + pb * j for p, pb, j in zip(self.padding, pad_before, self.stride))
        jump = tuple(j * s for j, s in zip(self.stride, stride))
        return replace(self, size=size, stride=jump, padding=padding)

    def transposed(self, kernel: Shape, stride: Shape, dilation: Shape, pad: Shape) -> Field:
        """After a transposed convolution: output o reads inputs (o + p − t·d)/s."""
        if self.global_ or self.undefined or self.unknown:
            return self
        jump = tuple(j / s for j, s in zip(self.stride, stride))
        size = tuple(
            r + Fraction(d * (k - 1)) * jn for r, k, d, jn in zip(self.size, kernel, dilation, jump)
        )
        padding = tuple(
            p + (d * (k - 1) - pb) * jn
            for p, k, d, pb, jn in zip(self.padding, kernel, dilation, pad, jump)
        )
        return replace(self, size=size, stride=jump, padding=padding)

    def spatial_axes(self, rank: int) -> tuple[int, ...] | None:
        """The positions of the spatial axes in a per-sample shape of ``rank`` axes, or None
        where a reshape has lost them."""
        if self.layout_lost:
            return None
        if self.axes is not None:
            return self.axes if all(a < rank for a in self.axes) else None
        return tuple(range(1, rank)) if rank == len(self.size) + 1 else None

    def spatial_index(self, rank: int, axis: int) -> int | None:
        """Which of the field's spatial axes the per-sample ``axis`` of a ``rank``-axis shape
        is: None for a channel (not a spatial) axis, -1 where a reshape has lost the layout."""
        places = self.spatial_axes(rank)
        if places is None:
            return -1
        return places.index(axis) if axis in places else None

    def permuted(self, dims: Shape) -> Field:
        """After reordering the axes (``dims`` in PyTorch numbering, batch = 0)."""
        axes = self.spatial_axes(len(dims) - 1)
        if axes is None:
            return self
        return replace(self, axes=tuple(list(dims).index(a + 1) - 1 for a in axes))

    def relaid(self, before: Shape, after: Shape) -> Field:
        """After a reshape: the spatial axes are kept where the shapes agree around them (a
        run of equal leading or trailing axes covers them), else their layout is lost."""
        axes = self.spatial_axes(len(before))
        if axes is None or tuple(before) == tuple(after):
            return self
        lead = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), 0)
        if all(a < lead for a in axes):
            return replace(self, axes=axes)
        tail = next(
            (i for i, (a, b) in enumerate(zip(reversed(before), reversed(after))) if a != b), 0
        )
        if all(a >= len(before) - tail for a in axes):
            shift = len(after) - len(before)
            return replace(self, axes=tuple(a + shift for a in axes))
        return replace(self, layout_lost=True)

    def spread(self, axis: int, length: int) -> Field:
        """Every output sees all ``length`` positions of spatial axis ``axis`` (the field's
        own numbering), wherever it is: a window of the whole axis that does not move (stride
        0), which later layers neither widen nor shift."""
        size, stride = list(self.size), list(self.stride)
        size[axis] = (length - 1) * stride[axis] + size[axis]
        stride[axis] = stride[axis] * 0
        return replace(self, size=tuple(size), stride=tuple(stride))

    def as_global(self) -> Field:
        """Every output sees the whole input."""
        return replace(self, global_=True)

    def as_varying(self) -> Field:
        """The windows vary in size and step: no one field describes every output."""
        return replace(self, undefined=True)

    def as_unknown(self) -> Field:
        """An operation without a rule: the field is not known from here on."""
        return replace(self, unknown=True)

    def with_statistics(self) -> Field:
        """Besides the window, every input reaches an output through normalisation statistics."""
        return replace(self, statistics=True)

    def merge(self, other: Field) -> Field:
        """Two paths added or concatenated: the larger field; flagged when the paths' strides
        or centres differ (their outputs then do not look at the same place)."""
        statistics = self.statistics or other.statistics
        if (self.axes, self.layout_lost) != (other.axes, other.layout_lost):
            self = replace(self, layout_lost=True)
        if self.unknown or other.unknown:
            return replace(self, unknown=True)
        if self.global_ or other.global_:
            return replace(self, global_=True, misaligned=self.misaligned or other.misaligned)
        if self.undefined or other.undefined:
            return replace(self, undefined=True)
        aligned = self.stride == other.stride and self.centre == other.centre
        size = tuple(max(a, b) for a, b in zip(self.size, other.size))
        wider = self if self.size >= other.size else other
        return replace(
            wider,
            size=size,
            misaligned=self.misaligned or other.misaligned or not aligned,
            statistics=statistics,
        )

    def text(self) -> tuple[str, str, str]:
        """(size, stride, padding) for a table, one value when the axes agree."""
        if self.unknown:
            return ("unknown", "-", "-")
        if self.global_:
            return ("global", "-", "-")
        if self.undefined:
            return ("varies", "-", "-")

        def show(values: tuple[Fraction, ...]) -> str:
            parts = [str(v) for v in values]
            return parts[0] if len(set(parts)) == 1 else "×".join(parts)

        mark = " (misaligned)" if self.misaligned else ""
        mark += " + statistics" if self.statistics else ""
        return show(self.size) + mark, show(self.stride), show(self.padding)
