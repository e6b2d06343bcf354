"""The family of arithmetic with a parameter read in ``forward``: a learnable tensor multiplied
into the input (layer scale, ``x * self.gamma``), added to it (position embeddings,
``x + self.pos_embed``) or joined to it (ViT's class token,
``torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)``), with its rules, passes, modules
and registration.

The parameter is one tensor shared by every sample: it broadcasts against the per-sample input
as PyTorch broadcasts (axes aligned on the right; a leading axis of size 1 stands for the batch
when the parameter has the input's full rank) and never enlarges it. Its gradient sums the
per-sample terms over the batch and the broadcast axes, and is reported as ``backward_weight``.

The traced calls reach this family through the rules of ``mul``, ``add`` (``arithmetic._binary``)
and ``concat`` (``structural._cat``): a call whose other operand is a ``registry.Constant``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array
from ..counting import Cost, OpCount, ParamCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, is_int, prod
from ..module import Module, Parameter, constant_init
from .base import Op, no_macs, not_linear, noted_shape, pointwise_field
from .structural import batch_free_dim, moves_values

#: The piece of a ParamConcatSpec that is the layer's input.
INPUT = "input"


def _sizes(value: Any, layer: str, what: str, empty: bool = False) -> Shape:
    """``value`` as a shape of ints >= 1 (a list becomes a tuple); ``empty``: () allowed."""
    sizes = tuple(value) if isinstance(value, (tuple, list)) else None
    if sizes is None or (not sizes and not empty) or not all(is_int(v) and v >= 1 for v in sizes):
        raise LayerConfigError(f"{layer} takes {what} of sizes >= 1, got {value!r}")
    return tuple(int(v) for v in sizes)


class ParamOp(Op):
    """What the elementwise ops with a parameter share: the shape of the parameter, its
    broadcast against the per-sample input (the output keeps the input's shape), its count."""

    shape: Shape

    @property
    def name(self) -> str:
        """The class's name without ``Spec``: ParamMul, ParamAdd."""
        return type(self).__name__.removesuffix("Spec")

    def __post_init__(self) -> None:
        what = "the parameter's shape (its full torch shape)"
        object.__setattr__(self, "shape", _sizes(self.shape, self.name, what, empty=True))

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, self.name)
        p, rank = self.shape, len(shape)
        text = f"{self.name}: the parameter of shape {shape_text(p)}"
        if len(p) > rank + 1:
            raise ShapeError(
                f"{text} has more axes than the input (N, {', '.join(map(str, shape))}): it "
                "would enlarge the output"
            )
        if len(p) == rank + 1 and p[0] != 1:
            raise ShapeError(
                f"{text} has the input's full rank, so its leading axis stands for the batch and "
                f"must be 1, got {p[0]}: it would enlarge the output"
            )
        for axis, (a, b) in enumerate(zip(p[::-1], shape[::-1])):
            if a not in (1, b):
                how = "would enlarge the output" if b == 1 else "does not broadcast"
                raise ShapeError(
                    f"{text} {how} against the input {shape_text(shape)}: size {a} against "
                    f"{b} on the axis {rank - axis} (batch = 0)"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        note = (
            f"The parameter {shape_text(self.shape)} broadcasts against the input; the output "
            f"keeps the input's shape {shape_text(input_shape)}"
        )
        return noted_shape(w, input_shape, note)

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        n = w.let(
            "weights",
            "P",
            prod(self.shape),
            {"P": prod(self.shape)},
            why=f"P: the parameter's elements, {shape_text(self.shape)}, shared by every sample",
        )
        w.let("params", "weights", n, {"weights": n})
        return ParamCount(weights=n)

    _macs = no_macs
    #: Each output entry reads the same position of the input (and one parameter entry).
    receptive_field = pointwise_field

    def _values(self, output_shape: Shape, batch: int) -> dict[str, int]:
        return {"N": batch, "m": prod(output_shape), "P": prod(self.shape)}


@dataclass(frozen=True)
class ParamMulSpec(ParamOp):
    """y = x ⊙ p, p a learnable tensor broadcast against each sample (layer scale)."""

    shape: Shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        values = self._values(output_shape, batch)
        n = batch * values["m"]
        w.section("Forward pass: y = x ⊙ p")
        mults = w.let("mults", "N · m", n, values, why="m: elements per sample")
        w.section("Backward pass: g_x = ε ⊙ p")
        back = w.let("mults", "N · m", n, values)
        w.section("Backward pass: g_p = Σ ε ⊙ x, over the batch and the broadcast axes")
        w.let("mults", "N · m", n, values)
        adds = w.let(
            "adds",
            "N · m − P",
            n - values["P"],
            values,
            why="each of the P entries sums its N · m / P products",
        )
        return Cost(OpCount(mults=mults), OpCount(mults=back), OpCount(mults=n, adds=adds))

    linear_map = not_linear(
        "multiplies by a parameter read in forward: compose takes only convolutions, average "
        "pools and BatchNorms"
    )


@dataclass(frozen=True)
class ParamAddSpec(ParamOp):
    """y = x + p, p a learnable tensor broadcast against each sample (a position embedding)."""

    shape: Shape

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        values = self._values(output_shape, batch)
        n = batch * values["m"]
        w.section("Forward pass: y = x + p")
        adds = w.let("adds", "N · m", n, values, why="m: elements per sample")
        w.section("Backward pass: g_x = ε")
        w.note("The input receives the output gradient unchanged: no arithmetic.")
        w.section("Backward pass: g_p = Σ ε, over the batch and the broadcast axes")
        back = w.let(
            "adds",
            "N · m − P",
            n - values["P"],
            values,
            why="each of the P entries sums its N · m / P terms",
        )
        return Cost(OpCount(adds=adds), OpCount(), OpCount(adds=back))

    linear_map = not_linear(
        "adds a parameter read in forward: compose takes only convolutions, average pools and "
        "BatchNorms"
    )


@dataclass(frozen=True)
class ParamConcatSpec(Op):
    """The input joined with learnable pieces along ``dim`` (PyTorch numbering, batch = 0):
    ``pieces`` lists, in order, ``"input"`` once and the per-sample shape of each parameter
    (ViT's class token of shape (1, 1, C) is the piece (1, C), expanded over the batch)."""

    dim: int
    pieces: tuple[Any, ...]

    name = "ParamConcat"

    def __post_init__(self) -> None:
        if not is_int(self.dim):
            raise LayerConfigError(f"ParamConcat takes an int dim, got {self.dim!r}")
        given = self.pieces if isinstance(self.pieces, (tuple, list)) else ()
        pieces = tuple(
            INPUT
            if piece == INPUT
            else _sizes(piece, "ParamConcat", "pieces: 'input' or a parameter's per-sample shape")
            for piece in given
        )
        if pieces.count(INPUT) != 1 or len(pieces) < 2:
            raise LayerConfigError(
                "ParamConcat takes pieces that hold 'input' once and at least one parameter's "
                f"per-sample shape, got {self.pieces!r}"
            )
        object.__setattr__(self, "pieces", pieces)

    @property
    def parameters(self) -> tuple[Shape, ...]:
        """The per-sample shapes of the parameter pieces, in order."""
        return tuple(p for p in self.pieces if p != INPUT)

    def axis(self, rank: int, shape: Shape) -> int:
        """The concatenation axis among the per-sample axes (0-based, batch excluded)."""
        resolved = self.dim + rank if self.dim < 0 else self.dim
        if not 1 <= resolved < rank:
            raise ShapeError(
                f"ParamConcat: dim {self.dim} is not a non-batch axis of an input of shape "
                f"(N, {', '.join(map(str, shape))})"
            )
        return resolved - 1

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, "ParamConcat")
        axis = self.axis(len(shape) + 1, shape)
        rest = shape[:axis] + shape[axis + 1 :]
        for piece in self.parameters:
            if len(piece) != len(shape) or piece[:axis] + piece[axis + 1 :] != rest:
                raise ShapeError(
                    f"ParamConcat along dim {self.dim}: the parameter piece {shape_text(piece)} "
                    f"needs the input's other axes, the input is {shape_text(shape)}"
                )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        axis = self.axis(len(input_shape) + 1, input_shape)
        size = input_shape[axis] + sum(p[axis] for p in self.parameters)
        shape = input_shape[:axis] + (size,) + input_shape[axis + 1 :]
        note = f"Sizes along dim {self.dim} add up (input and parameters): {shape_text(shape)}"
        return noted_shape(w, shape, note)

    def _params(self, w: Working) -> ParamCount:
        w.section("Parameters")
        sizes = [prod(p) for p in self.parameters]
        n = w.let(
            "weights",
            "T",
            sum(sizes),
            {"T": sum(sizes)},
            why="T: the parameter pieces' elements, "
            + " + ".join(shape_text(p) for p in self.parameters)
            + ", one copy shared by every sample",
        )
        w.let("params", "weights", n, {"weights": n})
        return ParamCount(weights=n)

    _macs = no_macs

    def _cost(
        self, input_shape: Shape, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        tokens = sum(prod(p) for p in self.parameters)
        w.section("Forward pass")
        w.note("A copy of the input and of each parameter piece per sample: no arithmetic.")
        w.section("Backward pass: g_x = the input's part of ε")
        w.note("A copy: no arithmetic.")
        w.section("Backward pass: g_p = Σ over the batch of each piece's part of ε")
        adds = w.let(
            "adds",
            "(N − 1) · T",
            (batch - 1) * tokens,
            {"N": batch, "T": tokens},
            why="T: the parameter pieces' elements, each a sum of N terms",
        )
        return Cost(OpCount(), OpCount(), OpCount(adds=adds))

    #: Each output entry is one input entry (its field) or a parameter entry (no input).
    receptive_field = moves_values

    linear_map = not_linear(
        "joins parameter entries that no input reaches: it is not a convolution, an average "
        "pool or a BatchNorm"
    )


# -- engine: forward and backward pairs --------------------------------------------------------


def _reduced(grad: np.ndarray, shape: Shape) -> np.ndarray:
    """A batched gradient summed onto a parameter of ``shape``: over the leading axes it lacks
    and the axes where it has size 1."""
    lead = grad.ndim - len(shape)
    summed = grad.sum(axis=tuple(range(lead))) if lead > 0 else grad
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and summed.shape[i] != 1)
    summed = summed.sum(axis=axes, keepdims=True) if axes else summed
    return summed.reshape(shape)


def param_mul(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x ⊙ weight, the weight broadcast against each sample (it never enlarges x)."""
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    ParamMulSpec(weight.shape).output_shape(x.shape[1:])
    return x * weight


def param_mul_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(g_x, g_w): ε ⊙ w, and ε ⊙ x summed over the batch and the broadcast axes."""
    grad_out, x = float_array(grad_out, "grad_out"), float_array(x, "x")
    weight = float_array(weight, "weight")
    expect_shape(grad_out, x.shape, "grad_out", "(the input's shape)")
    return grad_out * weight, _reduced(grad_out * x, weight.shape)


def param_add(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x + weight, the weight broadcast against each sample (it never enlarges x)."""
    x, weight = float_array(x, "x"), float_array(weight, "weight")
    ParamAddSpec(weight.shape).output_shape(x.shape[1:])
    return x + weight


def param_add_backward(grad_out: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g_x, g_w): ε unchanged, and ε summed over the batch and the broadcast axes."""
    grad_out, weight = float_array(grad_out, "grad_out"), float_array(weight, "weight")
    return grad_out.copy(), _reduced(grad_out, weight.shape)


def param_concat(
    x: np.ndarray, weights: Sequence[np.ndarray], dim: int, pieces: Sequence[Any]
) -> np.ndarray:
    """The input joined along ``dim`` with each parameter piece, expanded over the batch; each
    weight holds its piece's elements (shape (1, *piece), as ViT's class token, or the piece)."""
    x = float_array(x, "x")
    spec = ParamConcatSpec(dim, tuple(pieces))
    spec.output_shape(x.shape[1:])
    shapes = spec.parameters
    if len(weights) != len(shapes):
        raise ShapeError(f"ParamConcat has {len(shapes)} parameter pieces, got {len(weights)}")
    parts, given = [], iter(weights)
    for piece in spec.pieces:
        if piece == INPUT:
            parts.append(x)
            continue
        w = float_array(next(given), "weight")
        if prod(w.shape) != prod(piece):
            raise ShapeError(f"a weight of shape {w.shape} for the piece {shape_text(piece)}")
        parts.append(np.broadcast_to(w.reshape(1, *piece), (x.shape[0], *piece)))
    return np.concatenate(parts, axis=spec.axis(x.ndim, x.shape[1:]) + 1)


def param_concat_backward(
    grad_out: np.ndarray, dim: int, pieces: Sequence[Any]
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """(g_x, (g_w, ...)): the input's part of ε, and each piece's part summed over the batch
    (shape (1, *piece))."""
    grad_out = float_array(grad_out, "grad_out")
    spec = ParamConcatSpec(dim, tuple(pieces))
    axis = spec.axis(grad_out.ndim, grad_out.shape[1:]) + 1
    sizes = [p[axis - 1] for p in spec.parameters]
    known = sum(sizes)
    if grad_out.shape[axis] <= known:
        raise ShapeError(f"grad_out {grad_out.shape} leaves no entries for the input")
    start, grad_x, grads = 0, None, []
    for piece in spec.pieces:
        size = grad_out.shape[axis] - known if piece == INPUT else piece[axis - 1]
        part = np.take(grad_out, np.arange(start, start + size), axis=axis)
        start += size
        if piece == INPUT:
            grad_x = part
        else:
            grads.append(part.sum(axis=0, keepdims=True))
    assert grad_x is not None
    return grad_x, tuple(grads)


# -- modules -------------------------------------------------------------------------------------


class ParamMul(Module):
    """y = x ⊙ weight: a learnable tensor of ``shape`` (its full torch shape, a leading 1 for
    the batch allowed) broadcast against each sample, as ``x * self.gamma`` in a forward."""

    spec: ParamMulSpec

    def __init__(self, shape: Sequence[int]) -> None:
        self.spec = ParamMulSpec(shape)  # type: ignore[arg-type]
        self.register("weight", Parameter(self.spec.shape, constant_init(1.0)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` scaled by the weight; keeps ``x`` for backward."""
        self.save_for_backward(x)
        return param_mul(x, self.weight.data)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds the weight's gradient into its ``grad``."""
        (x,) = self.saved()
        grad_x, grad_w = param_mul_backward(grad_out, x, self.weight.data)
        self.weight.accumulate(grad_w)
        return grad_x


class ParamAdd(Module):
    """y = x + weight: a learnable tensor of ``shape`` (its full torch shape, a leading 1 for
    the batch allowed) broadcast against each sample, as ``x + self.pos_embed``."""

    spec: ParamAddSpec

    def __init__(self, shape: Sequence[int]) -> None:
        self.spec = ParamAddSpec(shape)  # type: ignore[arg-type]
        self.register("weight", Parameter(self.spec.shape, constant_init(0.0)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` plus the weight."""
        self.save_for_backward(x.shape)
        return param_add(x, self.weight.data)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds the weight's gradient into its ``grad``."""
        self.saved()
        grad_x, grad_w = param_add_backward(grad_out, self.weight.data)
        self.weight.accumulate(grad_w)
        return grad_x


class ParamConcat(Module):
    """The input joined along ``dim`` with learnable pieces (``pieces``: ``"input"`` once and
    each parameter's per-sample shape, in order), as ViT's
    ``torch.cat((cls_token.expand(B, -1, -1), x), dim=1)``. The k-th parameter is
    ``weight_k`` of shape (1, *piece), expanded over the batch."""

    spec: ParamConcatSpec

    def __init__(self, dim: int, pieces: Sequence[Any]) -> None:
        self.spec = ParamConcatSpec(dim, pieces)  # type: ignore[arg-type]
        for k, piece in enumerate(self.spec.parameters):
            self.register(f"weight_{k}", Parameter((1, *piece), constant_init(0.0)))

    def _weights(self) -> list[Parameter]:
        return [self._own()[f"weight_{k}"] for k in range(len(self.spec.parameters))]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` joined with the parameter pieces."""
        self.save_for_backward(x.shape)
        weights = [p.data for p in self._weights()]
        return param_concat(x, weights, self.spec.dim, self.spec.pieces)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input's part of the gradient; adds each piece's gradient into its ``grad``."""
        self.saved()
        grad_x, grads = param_concat_backward(grad_out, self.spec.dim, self.spec.pieces)
        for p, grad in zip(self._weights(), grads):
            p.accumulate(grad)
        return grad_x


# -- the torch rules (read by arithmetic._binary and structural._cat) ---------------------------


def binary_rule(op: str, call: registry.TorchCall) -> Op:
    """``x * p``, ``p * x``, ``x + p`` or ``p + x`` with ``p`` a parameter (a Constant):
    ParamMulSpec or ParamAddSpec of the parameter's full shape."""
    if set(call.kwargs) - {"out"} or call.kwargs.get("out") is not None:
        raise registry.Unsupported("not a plain binary call (alpha or extra arguments)")
    others = (*call.leading, *call.args)
    if len(others) != 1 or not isinstance(others[0], registry.Constant):
        raise registry.Unsupported("not one input and one parameter")
    spec = {"mul": ParamMulSpec, "add": ParamAddSpec}.get(op)
    if spec is None:
        raise registry.Unsupported(f"{op} with a parameter operand")
    return spec(others[0].shape)


def concat_rule(call: registry.TorchCall, dim: Any) -> Op:
    """A cat of one input-derived tensor with parameter pieces (ViT's class and distillation
    tokens), in the list's order; a parameter piece's per-sample shape drops the leading axis
    that stands for the batch (``cls_token.expand(B, -1, -1)``)."""
    resolved = batch_free_dim(dim, call.rank)
    shape, out = call.operands[0], call.output
    pieces: list[Any] = []
    for item in call.group:
        if isinstance(item, registry.Tensor):
            pieces.append(INPUT)
        elif isinstance(item, registry.Constant) and len(item.shape) == len(shape) + 1:
            pieces.append(tuple(item.shape[1:]))
        else:
            raise registry.Unsupported(
                f"a cat piece {item!r} that is neither the input nor a token"
            )
    if pieces.count(INPUT) != 1 or len(out) != len(shape):
        raise registry.Unsupported("a cat of one input with parameter pieces of its rank")
    return ParamConcatSpec(resolved, tuple(pieces))


# -- registration -------------------------------------------------------------------------------

_MODULES = (ParamMul, ParamAdd, ParamConcat)

PARAM_ARITH = registry.register(
    registry.Family(
        "param_arith",
        (ParamMulSpec, ParamAddSpec, ParamConcatSpec),
        registry.by_name(*_MODULES),
        registry.by_name(
            param_mul,
            param_mul_backward,
            param_add,
            param_add_backward,
            param_concat,
            param_concat_backward,
        ),
        {cls.__name__.lower(): registry.SpecFileLayer(cls) for cls in _MODULES},
        # the calls are mul's, add's and concat's: their rules hand a parameter operand here
        registry.TorchMapping(),
    )
)
