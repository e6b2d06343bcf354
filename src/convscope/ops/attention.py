"""Scaled dot-product attention, ``F.scaled_dot_product_attention(q, k, v)``: configuration,
shape rule, exact counts, working, receptive field, the passes and the registration.

The computation counted (and run) per head, for queries ``q`` (L, E), keys ``k`` (S, E) and
values ``v`` (S, Ev), as the reference implementation in PyTorch's documentation writes it:

1. scores ``s = q · kᵀ``: E mults and E − 1 adds per score;
2. ``s · scale``: 1 mult per score (PyTorch's C++ math path scales q and k by √scale instead,
   (L + S)·E mults; convscope counts the documented form, one scaling of each score);
3. a float ``attn_mask`` is added (1 add per score); a boolean mask or the causal mask replaces
   masked scores by −∞, a selection: free;
4. a stable softmax over each row of r scores: r − 1 compares (the max), r adds (minus the
   max), r exps, r − 1 adds (the sum), r divides;
5. ``p · v``: r mults and r − 1 adds per output entry.

Counting modes: **dense** computes every score, the masked ones too (their probability is
exp(−∞) = 0). **exact** does not compute a score the causal mask removes (as a padding zero is
not multiplied): row i of the causal mask keeps min(i + 1, S) scores. A boolean mask's pattern
is data, not shape, so both modes count every score for it. ``dropout_p`` must be 0 and
``enable_gqa`` False.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array, same_dtype
from ..counting import Cost, OpCount
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, prod
from .base import noted_shape
from .structural import JoiningOp, Shapes, graph_family

if TYPE_CHECKING:
    from ..receptive import Field

MASKS = (None, "bool", "float")


@dataclass(frozen=True)
class AttentionSpec(JoiningOp):
    """Scaled dot-product attention of inputs [q, k, v], each ``(*heads, tokens, features)``
    without the batch. ``attn_mask`` says the kind of mask (``"bool"``, ``"float"`` or None);
    the mask itself is a constant, not an input. ``scale`` None is 1/√E."""

    attn_mask: str | None = None
    is_causal: bool = False
    scale: float | None = None

    name = "ScaledDotProductAttention"

    def __post_init__(self) -> None:
        if self.attn_mask not in MASKS:
            raise LayerConfigError(f"attn_mask is one of {MASKS}, got {self.attn_mask!r}")
        if self.is_causal and self.attn_mask is not None:
            raise LayerConfigError("attention takes a mask or is_causal, not both (as PyTorch)")
        if not isinstance(self.is_causal, bool):
            raise LayerConfigError(f"is_causal must be a bool, got {self.is_causal!r}")

    def _check_joined(self, shapes: Shapes) -> None:
        if len(shapes) != 3:
            raise ShapeError(f"attention takes 3 inputs (q, k, v), got {len(shapes)}")
        q, k, v = shapes
        if not (len(q) == len(k) == len(v) >= 2) or not (q[:-2] == k[:-2] == v[:-2]):
            raise ShapeError(
                "attention takes q, k, v of one rank >= 2 with the same leading (head) axes, got "
                + ", ".join(shape_text(s) for s in shapes)
            )
        if q[-1] != k[-1] or k[-2] != v[-2]:
            raise ShapeError(
                f"attention: q {shape_text(q)} and k {shape_text(k)} need one feature size E, "
                f"k and v {shape_text(v)} one token count S"
            )

    def _shape(self, input_shape: Shapes, w: Working) -> Shape:
        q, _, v = input_shape
        shape = (*q[:-1], v[-1])
        return noted_shape(w, shape, f"One row of Ev values per query: {shape_text(shape)}")

    def _sizes(self, input_shape: Shapes, batch: int) -> dict[str, int]:
        q, k, v = input_shape
        return {"N": batch, "H": prod(q[:-2]), "L": q[-2], "S": k[-2], "E": q[-1], "Ev": v[-1]}

    def _macs(self, input_shape: Shapes, output_shape: Shape, batch: int, w: Working) -> int:
        w.section("MACs (the two products, dense)")
        v = self._sizes(input_shape, batch)
        macs = batch * v["H"] * v["L"] * v["S"] * (v["E"] + v["Ev"])
        return w.let("MACs", "N · H · L · S · (E + Ev)", macs, v)

    def _cost(
        self, input_shape: Shapes, output_shape: Shape, batch: int, count: str, w: Working
    ) -> Cost:
        v = self._sizes(input_shape, batch)
        L, S, E, Ev = v["L"], v["S"], v["E"], v["Ev"]
        w.section("Scores kept")
        g = w.let("G", "N · H", batch * v["H"], v, why="H: the product of the head axes")
        sv = {**v, "G": g}
        if self.is_causal and count == "exact":
            w.note("Causal, exact: row i keeps min(i + 1, S) scores; the others are not computed.")
            kept = L * (L + 1) // 2 if L <= S else S * (S + 1) // 2 + (L - S) * S
            t = w.let("T", "Σ_i min(i + 1, S)", kept, sv)
            c = w.let("C", "min(L, S)", min(L, S), sv, why="C: keys some query reads")
        else:
            t = w.let("T", "L · S", L * S, sv)
            c = w.let("C", "S", S, sv, why="C: keys some query reads")
        tv = {**sv, "T": t, "C": c}
        w.section("Forward pass: s = q · kᵀ · scale (+ mask), p = softmax(s), y = p · v")
        mask_adds = t if self.attn_mask == "float" else 0
        mults = w.let("mults", "G · (T · E + T + T · Ev)", g * t * (E + 1 + Ev), tv)
        adds = w.let(
            "adds",
            "G · (T · (E − 1) + m · T + T + (T − L) + (T − L) · Ev)",
            g * (t * (E - 1) + mask_adds + t + (t - L) + (t - L) * Ev),
            {**tv, "m": int(mask_adds > 0)},
            why="m = 1 with a float mask; T − L: the sums of L rows",
        )
        compares = w.let("compares", "G · (T − L)", g * (t - L), tv, why="each row's max")
        specials = w.let("exps", "G · T", g * t, tv)
        divides = w.let("divides", "G · T", g * t, tv)
        w.section("Backward pass: g_v = pᵀ · ε, g_p = ε · vᵀ, softmax, scale, g_q, g_k")
        w.note("softmax: g_s = p · (g_p − Σ_row p · g_p); then g_s · scale.")
        back_mults = w.let(
            "mults", "G · (2 · T · Ev + 3 · T + 2 · T · E)", g * t * (2 * Ev + 3 + 2 * E), tv
        )
        back_adds = w.let(
            "adds",
            "G · ((T − C) · Ev + T · (Ev − 1) + (T − L) + T + (T − L) · E + (T − C) · E)",
            g * ((t - c) * Ev + t * (Ev - 1) + (t - L) + t + (t - L) * E + (t - c) * E),
            tv,
        )
        forward = OpCount(mults, adds, compares, divides, specials)
        return Cost(forward, OpCount(mults=back_mults, adds=back_adds))

    def receptive_field(self, field: Field, input_shape: Shapes, output_shape: Shape) -> Field:
        """A query reads every key and value token: the field is global."""
        return field.as_global()


# -- engine: forward and backward pairs --------------------------------------------------------


def _swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _probabilities(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attn_mask: np.ndarray | None,
    is_causal: bool,
    scale: float | None,
) -> tuple[np.ndarray, float]:
    q, k, v = (float_array(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
    same_dtype(q=q, k=k, v=v)
    kind = None if attn_mask is None else ("bool" if attn_mask.dtype == bool else "float")
    AttentionSpec(kind, is_causal, scale).output_shape([q.shape[1:], k.shape[1:], v.shape[1:]])
    factor = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ _swap(k)) * factor
    keep = None
    if is_causal:
        keep = np.tril(np.ones((q.shape[-2], k.shape[-2]), dtype=bool))
    elif kind == "bool":
        keep = np.asarray(attn_mask)
    elif kind == "float":
        s = s + attn_mask
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True), factor


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attn_mask: np.ndarray | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> np.ndarray:
    """softmax(q · kᵀ · scale + mask) · v, over arrays ``(N, *heads, tokens, features)``; a
    boolean ``attn_mask`` keeps the True scores, a float one is added."""
    p, _ = _probabilities(q, k, v, attn_mask, is_causal, scale)
    return p @ v


def scaled_dot_product_attention_backward(
    grad_out: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attn_mask: np.ndarray | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g_q, g_k, g_v); the mask is a constant and has no gradient."""
    p, factor = _probabilities(q, k, v, attn_mask, is_causal, scale)
    grad_out = float_array(grad_out, "grad_out")
    expect_shape(grad_out, (*np.shape(q)[:-1], np.shape(v)[-1]), "grad_out", "(attention)")
    g_v = _swap(p) @ grad_out
    g_p = grad_out @ _swap(v)
    g_s = p * (g_p - np.sum(p * g_p, axis=-1, keepdims=True)) * factor
    return g_s @ k, _swap(g_s) @ q, g_v


# -- registration -------------------------------------------------------------------------------


def _attention(call: registry.TorchCall) -> AttentionSpec:
    names = ("key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, None, None, 0.0, False, None, False)
    _, _, mask, dropout, causal, scale, gqa = call.bind(*zip(names, defaults))
    if mask is not None and not isinstance(mask, registry.Constant):
        raise registry.Unsupported("an attn_mask computed from the input")
    if len(call.operands) != 3 or not all(
        isinstance(x, registry.Tensor) for x in call.bind(("key", None), ("value", None))
    ):
        raise registry.Unsupported("q, k and v must all be computed from the input")
    if dropout != 0:
        raise registry.Unsupported(f"dropout_p={dropout!r} (random; only 0 is counted)")
    if gqa:
        raise registry.Unsupported("enable_gqa=True")
    if len({len(s) for s in call.operands}) != 1 or len(call.operands[0]) < 2:
        raise registry.Unsupported("q, k, v of different ranks or without a token axis")
    kind = None if mask is None else "bool" if mask.dtype == "bool" else "float"
    return AttentionSpec(kind, bool(causal), None if scale is None else float(scale))


FAMILY = graph_family(
    "attention",
    AttentionSpec,
    {
        "scaled_dot_product_attention": scaled_dot_product_attention,
        "scaled_dot_product_attention_backward": scaled_dot_product_attention_backward,
    },
    {"torch.nn.functional.scaled_dot_product_attention": _attention},
    registry.NotSupported("attention joins three branches: it comes from traced models"),
)
