"""Value types for parameter and operation counts."""

from __future__ import annotations

from dataclasses import dataclass, fields

COUNT_MODES = ("exact", "dense")


@dataclass(frozen=True)
class OpCount:
    """Arithmetic operations of one computation.

    ``upper_bound`` marks a count that depends on the data and is reported as its worst case.
    """

    mults: int = 0
    adds: int = 0
    compares: int = 0
    divides: int = 0
    specials: int = 0
    upper_bound: bool = False

    def __add__(self, other: OpCount) -> OpCount:
        return OpCount(
            self.mults + other.mults,
            self.adds + other.adds,
            self.compares + other.compares,
            self.divides + other.divides,
            self.specials + other.specials,
            self.upper_bound or other.upper_bound,
        )

    @property
    def total(self) -> int:
        return self.mults + self.adds + self.compares + self.divides + self.specials

    def to_dict(self, keys: tuple[str, ...] = ("mults", "adds")) -> dict[str, int | bool]:
        """The named keys always, any other non-zero count, and ``upper_bound`` when set."""
        out: dict[str, int | bool] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "upper_bound":
                if value:
                    out["upper_bound"] = True
            elif f.name in keys or value:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Cost:
    """Operation counts of a layer's forward pass and of each output of its backward pass.

    A gradient the layer does not have (no weight, no bias) is ``None``.
    """

    forward: OpCount
    backward_input: OpCount
    backward_weight: OpCount | None = None
    backward_bias: OpCount | None = None

    @property
    def backward(self) -> OpCount:
        total = self.backward_input
        for part in (self.backward_weight, self.backward_bias):
            if part is not None:
                total = total + part
        return total


@dataclass(frozen=True)
class ParamCount:
    """Learnable weights and biases, and non-learnable buffers, in elements."""

    weights: int = 0
    biases: int = 0
    buffers: int = 0
    frozen: int = 0  # parameters (weights or biases) that do not require a gradient

    @property
    def params(self) -> int:
        return self.weights + self.biases

    def __add__(self, other: ParamCount) -> ParamCount:
        return ParamCount(
            self.weights + other.weights,
            self.biases + other.biases,
            self.buffers + other.buffers,
            self.frozen + other.frozen,
        )
