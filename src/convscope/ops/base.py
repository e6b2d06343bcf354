"""What every operation answers: shape, parameters, MACs and exact costs, with the working.

An operation's configuration is its *spec*: a frozen dataclass, subclass of ``Op``, that
validates itself on construction. Each family implements every face below in its own file; the
base class gives no silent defaults (no zero parameters, no unchanged receptive field), and
``registry.register`` refuses a spec class that leaves one out. A face that does not apply is
declared explicitly, with ``no_params``, ``no_macs``, ``pointwise_field`` and the like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..counting import COUNT_MODES, Cost, ParamCount
from ..errors import ConvScopeError, NotComposableError
from ..explain import NO_WORKING, Explanation, Working, shape_text
from ..geometry import Shape, check_batch

if TYPE_CHECKING:
    import numpy as np

    from ..module import Module
    from ..receptive import Field
    from .conv import ConvSpec

#: The faces each spec class must define itself (``registry.register`` checks).
FACES = ("_check_input", "_shape", "_params", "_macs", "_cost", "receptive_field", "linear_map")


@dataclass(frozen=True)
class Analysis:
    """Everything one layer answers for one input (shapes exclude the batch dimension)."""

    layer: Op
    input_shape: Shape | tuple[Shape, ...]
    output_shape: Shape
    batch: int
    count: str
    params: ParamCount
    macs: int
    cost: Cost
    explanation: Explanation | None = None


@dataclass(frozen=True)
class LinearMap:
    """An operation read as a convolution, for ``compose``: the convolution, a sentence saying
    how the operation is that convolution, and its dense float64 weight (C_out, C_in, *k) and
    bias."""

    conv: ConvSpec
    reads_as: str
    arrays: Callable[[], tuple[np.ndarray, np.ndarray | None]]


class Answers:
    """The public faces: shape, parameters, MACs, exact costs and the working, answered by the
    rules of ``_rules()``: an operation's own, a module's spec's (``convscope.module``)."""

    def _rules(self) -> Op:
        """The operation whose rules answer."""
        raise NotImplementedError

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """The output shape for an input shape, both channel-first and without the batch."""
        op = self._rules()
        return op._shape(op._check_input(input_shape), NO_WORKING)

    def params(self) -> ParamCount:
        """Weights, biases and buffers, in elements."""
        return self._rules()._params(NO_WORKING)

    def macs(self, input_shape: Sequence[int], batch: int = 1) -> int:
        """Multiply-accumulates in the torchvision convention (conv and linear, dense, no bias)."""
        op = self._rules()
        shape = op._check_input(input_shape)
        return op._macs(shape, op._shape(shape, NO_WORKING), check_batch(batch), NO_WORKING)

    def cost(self, input_shape: Sequence[int], batch: int = 1, count: str = "exact") -> Cost:
        """Exact operation counts of the forward pass and of each backward output."""
        op = self._rules()
        shape = op._check_input(input_shape)
        out = op._shape(shape, NO_WORKING)
        return op._cost(shape, out, check_batch(batch), check_count(count), NO_WORKING)

    def analyze(
        self,
        input_shape: Sequence[int],
        batch: int = 1,
        count: str = "exact",
        explain: bool = False,
    ) -> Analysis:
        """All answers at once; with ``explain`` also the worked derivation of each."""
        w = Working(record=explain)
        op = self._rules()
        shape = op._check_input(input_shape)
        batch = check_batch(batch)
        count = check_count(count)
        out = op._shape(shape, w)
        params = op._params(w)
        cost = op._cost(shape, out, batch, count, w)
        macs = op._macs(shape, out, batch, w)
        return Analysis(
            op, shape, out, batch, count, params, macs, cost, w.explanation if explain else None
        )

    def explain(
        self, input_shape: Sequence[int], batch: int = 1, count: str = "exact"
    ) -> Explanation:
        """The worked derivation of the shape, parameters and every count."""
        explanation = self.analyze(input_shape, batch, count, explain=True).explanation
        assert explanation is not None
        return explanation


class Op(Answers):
    """Base of every operation's configuration.

    Subclasses are frozen dataclasses with PyTorch's argument names as fields. ``describe()``
    shows the fields as constructor arguments: ``_positional`` ones by value, the rest as
    ``name=value`` where the value differs from its default (the dataclass default, or the one
    in ``_defaults``; a field with neither is always shown). ``_hidden`` fields name the variant
    (rank, mode) and are not shown.
    """

    _positional: ClassVar[tuple[str, ...]] = ()
    _hidden: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    # -- faces each family implements (no defaults: see FACES) --------------------------------
    def _check_input(self, input_shape: Any) -> Any:
        raise NotImplementedError

    def _shape(self, input_shape: Any, w: Working) -> Shape:
        raise NotImplementedError

    def _params(self, w: Working) -> ParamCount:
        raise NotImplementedError

    def _macs(self, input_shape: Any, output_shape: Shape, batch: int, w: Working) -> int:
        raise NotImplementedError

    def _cost(
        self, input_shape: Any, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        raise NotImplementedError

    def receptive_field(self, field: Field, input_shape: Any, output_shape: Shape) -> Field:
        """The receptive field of an output after this operation, given the field of its input
        (Araujo et al.; see ``convscope.receptive``)."""
        raise NotImplementedError

    def linear_map(self, channels: int | None, module: Module | None = None) -> LinearMap:
        """This operation as one convolution of ``channels`` input channels, or
        NotComposableError saying why it is none (a phrase that follows the layer's name)."""
        raise NotImplementedError

    # -- display --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The layer's name, as PyTorch's class name (Conv2d, MaxPool3d, ...)."""
        raise NotImplementedError

    def _display(self, field: str) -> Any:
        """A field's value as ``describe`` shows it (a hook for resolved values)."""
        return getattr(self, field)

    def describe(self) -> str:
        """The configuration as constructor arguments, as PyTorch's ``extra_repr`` shows them:
        only the values that differ from their defaults."""
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            if f.name in self._hidden:
                continue
            value = _compact(self._display(f.name))
            if f.name in self._positional:
                parts.append(repr(value))
                continue
            default = self._defaults.get(f.name, f.default)
            if default is MISSING or value != _compact(default):
                parts.append(f"{f.name}={value!r}")
        return ", ".join(parts)

    def _rules(self) -> Op:
        return self


def _compact(value: Any) -> Any:
    """A per-axis tuple whose entries agree, as one value (as PyTorch's repr shows it)."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return _compact(value[0]) if not isinstance(value[0], tuple) else value
    return value


def check_count(count: str) -> str:
    """``count`` as one of the counting modes (docs/counting.md)."""
    if count not in COUNT_MODES:
        raise ConvScopeError(f"count must be one of {', '.join(COUNT_MODES)}, got {count!r}")
    return count


# -- explicit declarations for the faces that do not apply ------------------------------------


def no_params(self: Op, w: Working) -> ParamCount:
    """The face of an operation without weights, biases or buffers."""
    return ParamCount()


def no_macs(self: Op, input_shape: Any, output_shape: Shape, batch: int, w: Working) -> int:
    """The face of an operation that is no multiply-accumulate in the torchvision convention."""
    return 0


def noted_shape(w: Working, shape: Shape, note: str) -> Shape:
    """``shape`` as the output shape, with ``note`` saying how it comes about."""
    w.section("Output shape")
    w.note(note)
    return shape


def same_shape(self: Op, input_shape: Any, w: Working) -> Shape:
    """The face of an operation whose output has its input's shape."""
    return noted_shape(w, input_shape, f"Unchanged: {shape_text(input_shape)}")


def pointwise_field(self: Op, field: Field, input_shape: Any, output_shape: Shape) -> Field:
    """The face of an operation whose output entry depends on the same position of its input
    only: the receptive field is unchanged."""
    return field


def weight_params(
    w: Working,
    values: dict[str, int],
    weights: tuple[str, int],
    biases: tuple[str, int] | None,
    no_bias: str = "",
) -> ParamCount:
    """The face of a layer with a weight and an optional bias: the (formula, count) of each over
    ``values``, then their sum; ``no_bias`` is noted for a layer without one."""
    n_weights = w.let("weights", *weights, values)
    n_biases = 0 if biases is None else w.let("biases", *biases, values)
    if biases is None and no_bias:
        w.note(no_bias)
    sums = {"weights": n_weights, "biases": n_biases}
    w.let("params", "weights + biases", n_weights + n_biases, sums)
    return ParamCount(n_weights, n_biases)


def not_linear(why: str) -> Callable[..., LinearMap]:
    """The face of an operation that is no fixed convolution; ``why`` may name the spec's fields
    as ``{spec.field}``."""

    def linear_map(self: Op, channels: int | None, module: Module | None = None) -> LinearMap:
        raise NotComposableError(why.format(spec=self))

    return linear_map


#: Why an operation is not part of a composed convolution.
NOT_A_CONVOLUTION = "is not a convolution, an average pool or a BatchNorm: compose takes only those"
#: The linear-map face of an operation that compose does not take.
not_a_convolution = not_linear(NOT_A_CONVOLUTION)


# -- one definition for the 1-D, 2-D and 3-D variants of a layer ------------------------------

RANKS = (1, 2, 3)
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


def rank_function(function: F, name: str, doc: str) -> F:
    """``function`` (a closure over a rank) published under its rank's name and docstring."""
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


def rank_class(base: C, ndim: int, name: str, doc: str) -> C:
    """The subclass of ``base`` for one rank (``ndim``), defined in ``base``'s module."""
    return type(base)(name, (base,), {"ndim": ndim, "__doc__": doc, "__module__": base.__module__})


def of_rank(classes: Sequence[C], ndim: int) -> C:
    """The class among the rank variants ``classes`` whose ``ndim`` is ``ndim``."""
    return next(cls for cls in classes if cls.ndim == ndim)
