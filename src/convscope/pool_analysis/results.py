"""The typed results of a pool analysis; ``to_dict`` gives each one's JSON object, and
``convscope.render`` its text."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from ..explain import Explanation
from ..geometry import Shape


class Record:
    """A typed result; ``to_dict`` is its JSON object (``_omit_none``: without empty fields)."""

    _omit_none: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.repr and not (value is None and self._omit_none):
                out[f.name] = _data(value)
        return out


def _data(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_data(v) for v in value]
    return value


@dataclass(frozen=True)
class InputsPerOutput(Record):
    """Inputs each output reads: fewest, most, mean (and exactly, as a fraction), the window."""

    min: int
    max: int
    mean: float
    mean_exact: str
    window: int | None


@dataclass(frozen=True)
class Rank(Record):
    """An average pool's map: its rank, per axis, of how many inputs, and the dimensions lost."""

    rank: int
    per_axis: list[int]
    inputs: int
    lost: int


@dataclass(frozen=True)
class AvgZeroGradient(Record):
    """An average pool: the share of inputs in no window, which get no gradient."""

    exact: float


@dataclass(frozen=True)
class MaxZeroGradient(Record):
    """A max pool: the share of inputs that get no gradient, measured on random inputs and at
    its extremes over all inputs (``best`` exact when ``best_exact``, else within
    ``best_bound`` … ``best``)."""

    measured_mean: float
    measured_min: float
    measured_max: float
    trials: int
    seed: int
    worst: float
    best: float
    best_bound: float
    best_exact: bool


@dataclass(frozen=True)
class IdenticalPair(Record):
    """Two different inputs with identical outputs, when the pool loses anything."""

    exists: bool
    description: str
    construction: str | None = None
    inputs_differ_at: int | None = None
    max_abs_difference: float | None = None
    outputs_identical: bool | None = None

    _omit_none: ClassVar[bool] = True


@dataclass(frozen=True)
class Memory(Record):
    """Activation values and bytes (float32) before and after the pool, for the batch."""

    input_values: int
    output_values: int
    input_bytes: int
    output_bytes: int
    ratio: float


@dataclass(frozen=True)
class ConvSide(Record):
    """The following convolution on one input: its shapes, MACs and exact counts."""

    input_shape: list[int]
    output_shape: list[int]
    macs: int
    forward: dict[str, Any]
    backward: dict[str, int]
    total_ops: int


@dataclass(frozen=True)
class FollowingConv(Record):
    """The following convolution's cost on the unpooled and on the pooled input."""

    layer: str
    count: str
    unpooled: ConvSide
    pooled: ConvSide
    macs_ratio: float | None
    ops_ratio: float | None


@dataclass(frozen=True)
class ShiftRow(Record):
    """Relative output changes for one shift δ (``*_aligned``: against the output shifted by
    the nearest whole step); conv is None where the strided conv does not fit."""

    shift: int
    pool: float
    pool_aligned: float
    identity: float
    identity_aligned: float
    conv: float | None = None
    conv_aligned: float | None = None


@dataclass(frozen=True)
class Translation(Record):
    """How much the pool's, a strided conv's and the identity's outputs move under shifts."""

    axis: str
    shift: str
    sigma: float
    trials: int
    seed: int
    conv: str
    rows: list[ShiftRow]


@dataclass
class PoolAnalysis(Record):
    """What one pooling layer keeps and loses for one input shape, and what it buys."""

    layer: str
    kind: str  # "max" or "avg"
    input_shape: Shape
    output_shape: Shape
    batch: int
    inputs_per_output: InputsPerOutput
    unread_inputs: int
    rank: Rank | None
    zero_grad: AvgZeroGradient | MaxZeroGradient
    identical_pair: IdenticalPair
    memory: Memory
    pool_cost: dict[str, int]
    following_conv: FollowingConv | None
    translation: Translation
    pair: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    explanation: Explanation | None = field(default=None, repr=False)
