"""Composition: a chain of linear layers read as one convolution, and re-parameterisation.

Along one axis, layer 1 (kernel k1, stride s1, dilation d1) followed by layer 2 (k2, s2, d2)
reads the input at the offsets ``t1·d1 + t2·s1·d2``: one kernel spanning
``K = d1·(k1 − 1) + s1·d2·(k2 − 1) + 1`` at stride ``s1·s2``, stored as a dilated kernel when
every offset shares a factor. Its weight sums, over the intermediate channels, the products of
the taps of the two kernels that land on the same offset, and the first layer's bias passes
through the second layer's kernel sums. An average pool is a depthwise convolution with a
constant kernel and an eval-mode BatchNorm a depthwise 1×1 convolution with a bias, so both
compose too. Longer chains fold from the left.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .containers import Concat, Residual, Sequential
from .counting import Cost, OpCount, ParamCount
from .errors import ConvScopeError
from .explain import Explanation, Working, shape_text
from .geometry import Shape, axis_names, prod
from .module import Module
from .ops.activation import ElementwiseSpec
from .ops.conv import Conv1d, Conv2d, Conv3d, ConvSpec, _ConvNd, conv1d, conv2d, conv3d
from .ops.normalization import BatchNormSpec
from .ops.pooling import PoolSpec


class NotComposableError(ConvScopeError):
    """A chain of layers that is not one convolution; the message says which layer and why."""


CONV_MODULES = (Conv1d, Conv2d, Conv3d)
_CONV_FUNCTIONS = (conv1d, conv2d, conv3d)


@dataclass(frozen=True)
class Step:
    """One layer read as a convolution: ``kind`` is conv, avgpool, batchnorm or identity."""

    label: str
    kind: str
    spec: ConvSpec
    module: Module | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The dense (groups expanded) float64 weight (C_out, C_in, *k) and the bias."""
        spec, m = self.spec, self.module
        c, ones = spec.in_channels, (1,) * spec.ndim
        if self.kind == "conv":
            assert m is not None
            bias = None if m.bias is None else m.bias.data.astype(np.float64)
            return _dense(m.weight.data.astype(np.float64), spec.groups), bias
        if self.kind == "avgpool":
            assert m is not None
            pool: PoolSpec = m.spec  # type: ignore[assignment]
            divisor = pool.divisor_override or prod(pool.kernel_size)
            eye = np.eye(c).reshape(c, c, *ones)
            return np.broadcast_to(
                eye / divisor, spec.weight_shape[:1] + (c,) + spec.kernel_size
            ).copy(), None
        if self.kind == "batchnorm":
            assert m is not None
            scale, shift = bn_affine(m)
            return np.diag(scale).reshape(c, c, *ones), shift
        return np.eye(c).reshape(c, c, *ones), None


def _dtype(module: Module | None) -> list[np.dtype]:
    if module is None:
        return []
    return [p.dtype for _, p in module._named("") if np.issubdtype(p.dtype, np.floating)]


def _dense(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped weight (C_out, C_in/g, *k) as the dense (C_out, C_in, *k) one, zeros outside."""
    c_out, c_g, *kernel = weight.shape
    co_g = c_out // groups
    out = np.zeros((c_out, c_g * groups, *kernel), dtype=weight.dtype)
    view = out.reshape(groups, co_g, groups, c_g, *kernel)
    g = np.arange(groups)
    view[g, :, g] = weight.reshape(groups, co_g, c_g, *kernel)
    return out


def _grouped(dense: np.ndarray, groups: int) -> np.ndarray:
    """The diagonal blocks of a dense weight, as the (C_out, C_in/g, *k) grouped weight."""
    c_out, c_in, *kernel = dense.shape
    view = dense.reshape(groups, c_out // groups, groups, c_in // groups, *kernel)
    g = np.arange(groups)
    return view[g, :, g].reshape(c_out, c_in // groups, *kernel)


def bn_affine(bn: Module) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BatchNorm as ``y = scale·x + shift`` per channel (float64)."""
    spec: BatchNormSpec = bn.spec  # type: ignore[assignment]
    mean = bn.running_mean.data.astype(np.float64)
    var = bn.running_var.data.astype(np.float64)
    gamma = bn.weight.data.astype(np.float64) if bn.weight is not None else 1.0
    beta = bn.bias.data.astype(np.float64) if bn.bias is not None else 0.0
    scale = gamma / np.sqrt(var + spec.eps)
    return np.broadcast_to(scale, mean.shape).copy(), beta - mean * scale


# -- reading a chain --------------------------------------------------------------------------


def _flatten(layers: Sequence[Module] | Module) -> list[Module]:
    if isinstance(layers, Module):
        layers = [layers]
    out: list[Module] = []
    for layer in layers:
        if isinstance(layer, Sequential):
            out.extend(_flatten(list(layer)))
        elif isinstance(layer, Module):
            out.append(layer)
        else:
            raise NotComposableError(
                f"compose takes convscope.nn modules, got {type(layer).__name__}: {layer!r}"
            )
    return out


def _refusal(label: str, module: Module, first: bool) -> str | None:
    """Why this module cannot be part of one convolution, or None if it can."""
    spec = getattr(module, "spec", None)
    if isinstance(module, (Residual, Concat)):
        return (
            f"{label} holds parallel branches; a chain is one path. Merge parallel "
            "convolutions with merge_branches"
        )
    if isinstance(spec, ElementwiseSpec):
        if spec.op == "Dropout":
            return (
                f"{label} multiplies by a random mask in training and is the identity in eval: "
                "not one fixed convolution; remove it from the chain"
            )
        formula = {"LeakyReLU": "x if x > 0 else a·x"}.get(spec.op, "")
        from .ops.activation import ACTIVATIONS

        formula = formula or ACTIVATIONS[spec.op][2]
        return (
            f"{label} is not linear ({spec.op}(x) = {formula}): f(a + b) ≠ f(a) + f(b), so "
            "the layers around it are not one convolution"
        )
    if isinstance(spec, PoolSpec) and spec.mode == "max":
        return (
            f"{label} is a max pool, and max is not linear: max(a, b) + max(c, d) ≠ "
            "max(a + c, b + d), so no convolution equals it"
        )
    if isinstance(spec, PoolSpec):
        if spec.ceil_mode:
            return (
                f"{label} has ceil_mode=True: its last window may hang off the padded input and "
                "divide by fewer elements, so its weights are not the same everywhere"
            )
        if (
            not spec.count_include_pad
            and spec.divisor_override is None
            and any(p > 0 for p in spec.padding)
        ):
            return (
                f"{label} has count_include_pad=False with padding {spec.padding}: border "
                "windows divide by fewer elements, so its weights are not the same everywhere"
            )
        return None
    if isinstance(spec, BatchNormSpec):
        if module.running_mean is None:
            return (
                f"{label} has no running statistics (track_running_stats=False): it normalises "
                "with each batch's, which is not a fixed linear map"
            )
        if module.training:
            return (
                f"{label} is in training mode: it normalises with the batch's statistics, which "
                "is not a fixed linear map. Call .eval() to fold it with the running statistics"
            )
        return None
    if isinstance(module, _ConvNd):
        conv: ConvSpec = module.spec  # type: ignore[assignment]
        padded = any(p for pair in conv.padding for p in pair)
        if conv.padding_mode != "zeros" and padded and not first:
            return (
                f"{label} pads with padding_mode={conv.padding_mode!r}: copies of its own "
                "input, not a fixed convolution of the chain's input (only the first layer may)"
            )
        return None
    return f"{label} is not a convolution, an average pool or a BatchNorm: compose takes only those"


def chain_steps(layers: Sequence[Module] | Module, in_channels: int | None = None) -> list[Step]:
    """The layers of a chain read as convolutions; raises NotComposableError naming the layer."""
    modules = _flatten(layers)
    if not modules:
        raise NotComposableError("compose needs at least one layer")
    steps: list[Step] = []
    channels, ndim = in_channels, None
    for i, module in enumerate(modules, start=1):
        label = f"layer {i} ({type(module).__name__})"
        why = _refusal(label, module, not steps)
        if why:
            raise NotComposableError(why)
        spec = module.spec
        if ndim is not None and spec.ndim != ndim:
            raise NotComposableError(
                f"{label} is {spec.ndim}-D but the chain before it is {ndim}-D"
            )
        ndim = spec.ndim
        if isinstance(spec, ConvSpec):
            want = spec.in_channels
        elif isinstance(spec, BatchNormSpec):
            want = spec.num_features
        else:
            want = channels
            if want is None:
                raise NotComposableError(
                    f"{label} is first and has no channel count: give the input shape "
                    "(input_shape=(C, ...)) or put a convolution first"
                )
        if channels is not None and want != channels:
            raise NotComposableError(
                f"{label} takes {want} channels but "
                + ("the input has" if not steps else f"layer {i - 1} gives")
                + f" {channels}"
            )
        c = want
        if isinstance(spec, ConvSpec):
            steps.append(Step(label, "conv", spec, module))
            channels = spec.out_channels
        elif isinstance(spec, PoolSpec):
            pool = ConvSpec.create(
                ndim, c, c, spec.kernel_size, spec.stride, spec.padding, 1, c, False
            )
            steps.append(Step(label, "avgpool", pool, module))
        else:
            steps.append(Step(label, "batchnorm", ConvSpec.create(ndim, c, c, 1, groups=c), module))
    return steps


# -- spec level -------------------------------------------------------------------------------


def _padded(spec: ConvSpec) -> bool:
    return any(p for pair in spec.padding for p in pair)


def _fold_spec(a: ConvSpec, b: ConvSpec, w: Working) -> ConvSpec:
    """The single convolution of ``a`` then ``b`` (``b``'s padding moved onto the input)."""
    kernel, stride, dilation, pads = [], [], [], []
    for ax, k1, s1, d1, (pb1, pa1), k2, s2, d2, (pb2, pa2) in zip(
        axis_names(a.ndim), a.kernel_size, a.stride, a.dilation, a.padding,
        b.kernel_size, b.stride, b.dilation, b.padding,
    ):  # fmt: skip
        v = {"k_1": k1, "s_1": s1, "d_1": d1, "k_2": k2, "s_2": s2, "d_2": d2,
             "pb_1": pb1, "pa_1": pa1, "pb_2": pb2, "pa_2": pa2}  # fmt: skip
        span = w.let(
            f"K_{ax}",
            "d_1·(k_1 − 1) + s_1·d_2·(k_2 − 1) + 1",
            d1 * (k1 - 1) + s1 * d2 * (k2 - 1) + 1,
            v,
            why="span of the single kernel",
        )
        stride.append(w.let(f"s_{ax}", "s_1·s_2", s1 * s2, v))
        generators = [g for g, k in ((d1, k1), (s1 * d2, k2)) if k > 1]
        g = math.gcd(*generators) if generators else 1
        if g > 1 or d1 > 1 or s1 * d2 > 1:
            formula = {2: "gcd(d_1, s_1·d_2)", 0: "1"}.get(len(generators))
            if formula is None:
                formula = "d_1" if k1 > 1 else "s_1·d_2"
            w.let(
                f"d_{ax}",
                formula,
                g,
                v,
                why="every tap offset of the pair is a multiple of it",
            )
        v[f"K_{ax}"], v[f"d_{ax}"] = span, g
        if g > 1:
            kernel.append(
                w.let(
                    f"k_{ax}",
                    f"(K_{ax} − 1) / d_{ax} + 1",
                    (span - 1) // g + 1,
                    v,
                    why="stored as a smaller dilated kernel",
                )
            )
        else:
            kernel.append(span)
        dilation.append(g)
        if pb1 or pa1 or pb2 or pa2:
            before = w.let(f"pb_{ax}", "pb_1 + s_1·pb_2", pb1 + s1 * pb2, v)
            after = w.let(f"pa_{ax}", "pa_1 + s_1·pa_2", pa1 + s1 * pa2, v)
            pads.append((before, after))
        else:
            pads.append((0, 0))
    groups = math.gcd(a.groups, b.groups)
    if a.groups > 1 or b.groups > 1:
        w.let(
            "g",
            "gcd(g_1, g_2)",
            groups,
            {"g_1": a.groups, "g_2": b.groups},
            why="output group i reaches input group i only: the groups that line up",
        )
    if a.bias:
        w.note(
            "The bias of layers before passes through the kernel sums: "
            "b[c_2] = b_2[c_2] + Σ_c1 b_1[c_1] · Σ_t w_2[c_2, c_1, t]."
        )
    mode = a.padding_mode if _padded(a) else "zeros"
    return ConvSpec.create(
        a.ndim, a.in_channels, b.out_channels, tuple(kernel), tuple(stride), tuple(pads),
        tuple(dilation), groups, a.bias or b.bias, mode,
    )  # fmt: skip


def _conv_form(step: Step) -> str:
    spec = step.spec
    form = f"{spec.name}({spec.describe()})"
    if step.kind == "avgpool":
        pool: PoolSpec = step.module.spec  # type: ignore[union-attr,assignment]
        divisor = pool.divisor_override or prod(pool.kernel_size)
        return f"{step.label} is the depthwise {form} with every weight 1/{divisor}"
    if step.kind == "batchnorm":
        return (
            f"{step.label} (eval mode) is the depthwise {form}: w = γ / √(σ² + ε), "
            "b = β − μ·w per channel"
        )
    return f"{step.label} is {form}"


@dataclass(frozen=True)
class Composition:
    """The single convolution equal to a chain, and whether (and where) it is exact.

    ``inner_padding`` names the layers after the first that pad with zeros: the single layer
    carries their padding on its input instead, so it equals the chain with the padding moved
    onto the first layer, and differs from the given chain at ``differing`` output positions
    (spatial indices, the same for every output channel; known when an input shape is given).
    """

    spec: ConvSpec
    steps: tuple[Step, ...]
    inner_padding: tuple[str, ...]
    input_shape: Shape | None
    output_shape: Shape | None
    differing: tuple[tuple[int, ...], ...] | None
    explanation: Explanation | None

    @property
    def exact(self) -> bool:
        return not self.inner_padding

    @property
    def kernel(self) -> Shape:
        return self.spec.kernel_size

    @property
    def span(self) -> Shape:
        """The effective kernel ``d·(k − 1) + 1`` along each axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.spec.kernel_size, self.spec.dilation))

    def summary(self) -> str:
        """The single layer and the exactness verdict, in a few lines."""
        spec = self.spec
        pads = tuple(p[0] if p[0] == p[1] else p for p in spec.padding)
        lines = [
            f"Single layer: {spec.name}({spec.describe()})",
            f"  kernel {shape_text(spec.kernel_size)}, stride {shape_text(spec.stride)}, "
            f"dilation {shape_text(spec.dilation)}, padding {pads}, groups {spec.groups}, "
            f"bias {spec.bias}",
            f"  effective kernel (span) {shape_text(self.span)}",
        ]
        if self.exact:
            lines.append("  Exact: equals the chain at every output position.")
        else:
            lines.append("  Not exact: " + self.inexact_reason())
        return "\n".join(lines) + "\n"

    def inexact_reason(self) -> str:
        text = (
            f"{', '.join(self.inner_padding)} pad{'s' if len(self.inner_padding) == 1 else ''} "
            "an intermediate result with zeros, where the single layer sees the values the "
            "layers before would compute there. It equals exactly the chain with that padding "
            f"moved onto the first layer (padding {self.spec.padding} on the input, none inside)."
        )
        if self.differing is None:
            return text + " Give an input shape to list the output positions that differ."
        return text + " " + _positions_text(self.differing, self.output_shape)


def _positions_text(positions: tuple[tuple[int, ...], ...], out: Shape | None) -> str:
    assert out is not None
    names = axis_names(len(out) - 1)
    total = prod(out[1:])
    head = f"{len(positions)} of {total} output positions (per channel) differ"
    if not positions:
        return head + "."
    wanted = set(positions)
    # a union of whole hyperplanes (border rows, columns, ...) is the usual shape: say so
    planes: list[tuple[int, int]] = []
    for a, size in enumerate(out[1:]):
        for i in range(size):
            n = total // size
            if sum(1 for p in positions if p[a] == i) == n:
                planes.append((a, i))
    covered = {p for p in positions if any(p[a] == i for a, i in planes)}
    if planes and covered == wanted:
        parts = []
        for a, ax in enumerate(names):
            idx = [i for b, i in planes if b == a]
            if idx:
                parts.append(f"{ax} in {{{', '.join(map(str, idx))}}}")
        return f"{head}: those with {' or '.join(parts)}."
    shown = ", ".join(str(p) for p in positions[:12])
    return f"{head}: {shown}{', …' if len(positions) > 12 else ''}."


def _differing(steps: Sequence[Step], spec: ConvSpec, input_shape: Shape) -> tuple:
    """Output positions where the chain and ``spec`` differ for generic weights: every weight and
    bias set to 1 (all sums positive, so a path through a zero-padded intermediate position
    shows as a difference), the chain against the chain with the padding moved to the input."""
    conv = _CONV_FUNCTIONS[spec.ndim - 1]
    x = np.ones((1, 1, *input_shape[1:]))
    chain, moved = x, conv(x, np.ones((1, 1, *(1,) * spec.ndim)), padding=spec.padding)
    for step in steps:
        s = step.spec
        ones, bias = np.ones((1, 1, *s.kernel_size)), np.ones(1) if s.bias else None
        chain = conv(chain, ones, bias, s.stride, s.padding, s.dilation)
        moved = conv(moved, ones, bias, s.stride, 0, s.dilation)
    return tuple(tuple(int(i) for i in p) for p in np.argwhere(chain[0, 0] != moved[0, 0]))


def compose_spec(
    layers: Sequence[Module] | Module,
    input_shape: Sequence[int] | None = None,
    explain: bool = False,
    in_channels: int | None = None,
) -> Composition:
    """The single convolution equal to a chain (kernel, stride, dilation, padding), with its
    derivation and, for an input shape, the output positions where it is not exact."""
    shape = tuple(input_shape) if input_shape is not None else None
    steps = chain_steps(layers, shape[0] if shape else in_channels)
    w = Working(record=explain)
    w.section("The chain as convolutions")
    for step in steps:
        w.note(_conv_form(step))
    spec = steps[0].spec
    inner = []
    for i, step in enumerate(steps[1:], start=2):
        if _padded(step.spec):
            if spec.padding_mode != "zeros" and _padded(spec):
                raise NotComposableError(
                    f"{step.label} pads with zeros after a first layer with padding_mode="
                    f"{spec.padding_mode!r}: the moved padding would mix the two modes"
                )
            inner.append(step.label)
        before = "layer 1" if i == 2 else f"layers 1–{i - 1}"
        w.section(f"Compose {before} (symbols _1) with {step.label} (symbols _2)")
        spec = _fold_spec(spec, step.spec, w)
        w.note(f"Layers 1–{i}: {spec.name}({spec.describe()})")
    w.section("The single layer")
    w.note(f"{spec.name}({spec.describe()})")
    out = differing = None
    if shape is not None:
        out = Sequential(*_flatten(layers)).output_shape(shape)
        single = spec.output_shape(shape)
        assert single == out, (single, out)
        if inner:
            differing = _differing(steps, spec, shape)
    result = Composition(spec, tuple(steps), tuple(inner), shape, out, differing, None)
    w.note("Exact: equals the chain at every output position." if result.exact else
           "Not exact: " + result.inexact_reason())  # fmt: skip
    return Composition(
        spec, tuple(steps), tuple(inner), shape, out, differing,
        w.explanation if explain else None,
    )  # fmt: skip


# -- weight level -----------------------------------------------------------------------------


def _fold_arrays(
    a: ConvSpec, wa: np.ndarray, ba: np.ndarray | None,
    b: ConvSpec, wb: np.ndarray, bb: np.ndarray | None, out: ConvSpec,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Dense weights of ``a`` then ``b`` as the dense weight and bias of ``out``."""
    weight = np.zeros((wb.shape[0], wa.shape[1], *out.kernel_size))
    step1 = [d1 // g if k1 > 1 else 1 for k1, d1, g in zip(a.kernel_size, a.dilation, out.dilation)]
    for t2 in itertools.product(*(range(k) for k in b.kernel_size)):
        where = tuple(
            slice(t * s1 * d2 // g, t * s1 * d2 // g + st * (k1 - 1) + 1, st)
            for t, s1, d2, g, st, k1 in zip(
                t2, a.stride, b.dilation, out.dilation, step1, a.kernel_size
            )
        )
        # Σ over the intermediate channels c1 of w_b[c2, c1, t2] · w_a[c1, c0, t1]
        weight[(slice(None), slice(None), *where)] += np.tensordot(
            wb[(slice(None), slice(None), *t2)], wa, axes=(1, 0)
        )
    bias = bb
    if ba is not None:
        through = wb.sum(axis=tuple(range(2, wb.ndim))) @ ba
        bias = through if bb is None else bb + through
    return weight, bias


def _chain_arrays(
    steps: Sequence[Step],
) -> tuple[ConvSpec, np.ndarray, np.ndarray | None]:
    """The single layer's spec, dense float64 weight and bias."""
    spec = steps[0].spec
    weight, bias = steps[0].arrays()
    for step in steps[1:]:
        folded = _fold_spec(spec, step.spec, Working(record=False))
        wb, bb = step.arrays()
        weight, bias = _fold_arrays(spec, weight, bias, step.spec, wb, bb, folded)
        spec = folded
    return spec, weight, bias


def _module(spec: ConvSpec, dense: np.ndarray, bias: np.ndarray | None, dtype: Any) -> Module:
    """A Conv module of ``spec`` holding these weights, in ``dtype``."""
    layer = CONV_MODULES[spec.ndim - 1](
        spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
        spec.dilation, spec.groups, bias is not None, spec.padding_mode,
    )  # fmt: skip
    layer.astype(dtype)
    layer.weight.data = _grouped(dense, spec.groups)
    if bias is not None:
        layer.bias.data = bias
    return layer


def _result_dtype(modules: Sequence[Module | None]) -> np.dtype:
    dtypes = [d for m in modules for d in _dtype(m)]
    return np.result_type(*dtypes) if dtypes else np.dtype(np.float32)


def compose(
    layers: Sequence[Module] | Module,
    input_shape: Sequence[int] | None = None,
    move_padding: bool = False,
) -> Module:
    """One Conv module, with weights and bias, equal to applying the chain of layers.

    Takes convolutions, average pools and eval-mode BatchNorms (also inside a Sequential). A
    later layer that pads with zeros makes the single layer differ at the border: that raises
    NotComposableError unless ``move_padding``, which returns the exact composition of the chain
    with that padding moved onto the first layer. ``input_shape`` gives the channels to a chain
    that starts with a pool, and the differing positions to the error message. The weights keep
    the layers' dtype (computed in float64).
    """
    result = compose_spec(layers, input_shape)
    if not result.exact and not move_padding:
        raise NotComposableError(
            "the chain is not one convolution at the border: "
            + result.inexact_reason()
            + " Pass move_padding=True for that exact alternative."
        )
    spec, weight, bias = _chain_arrays(result.steps)
    assert spec == result.spec
    return _module(spec, weight, bias, _result_dtype([s.module for s in result.steps]))


def fold_batchnorm(conv: Module, bn: Module) -> Module:
    """The conv followed by an eval-mode BatchNorm as one conv:
    ``w' = w·γ/√(σ² + ε)`` per output channel and ``b' = (b − μ)·γ/√(σ² + ε) + β``."""
    if not isinstance(conv, _ConvNd):
        raise NotComposableError(f"fold_batchnorm takes a Conv module first, got {conv!r}")
    if not isinstance(getattr(bn, "spec", None), BatchNormSpec):
        raise NotComposableError(f"fold_batchnorm takes a BatchNorm module second, got {bn!r}")
    chain_steps([conv, bn])  # the refusals and the channel and rank checks
    spec: ConvSpec = conv.spec  # type: ignore[assignment]
    scale, shift = bn_affine(bn)
    weight = conv.weight.data.astype(np.float64) * scale.reshape(-1, *(1,) * (spec.ndim + 1))
    bias = shift if conv.bias is None else conv.bias.data.astype(np.float64) * scale + shift
    folded = ConvSpec.create(
        spec.ndim, spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
        spec.padding, spec.dilation, spec.groups, True, spec.padding_mode,
    )  # fmt: skip
    return _module(folded, _dense(weight, spec.groups), bias, _result_dtype([conv, bn]))


Branch = Module | Sequence[Module]


def merge_branches(*branches: Branch, channels: int | None = None) -> Module:
    """One conv equal to the sum of parallel branches on one input (RepVGG, ACNet, DBB).

    Each branch is a chain for ``compose``: a conv, a ``[conv, bn]`` list or a Sequential, and
    ``[]`` (or None) for the identity, ``[bn]`` for a BatchNorm'd identity. E.g. RepVGG's block is
    ``merge_branches([conv3x3, bn3], [conv1x1, bn1], [bn0])``. The smaller kernels are embedded
    in the largest; the branches must share the stride and line up their outputs.
    """
    if not branches:
        raise NotComposableError("merge_branches needs at least one branch")
    chains = [[] if b is None else _flatten(b) for b in branches]
    for chain in chains:
        if chain and channels is None:
            first = chain[0].spec
            channels = getattr(first, "in_channels", getattr(first, "num_features", None))
    if channels is None:
        raise NotComposableError("merge_branches needs one branch that is not the identity")
    parts = []
    for n, chain in enumerate(chains, start=1):
        if not chain:
            ndim = next((c[0].spec.ndim for c in chains if c), None)
            if ndim is None:
                raise NotComposableError("merge_branches needs one branch that is not the identity")
            eye = ConvSpec.create(ndim, channels, channels, 1, groups=channels, bias=False)
            parts.append((f"branch {n} (identity)", eye, *Step("", "identity", eye).arrays()))
            continue
        try:
            result = compose_spec(chain, None)
        except NotComposableError as error:
            raise NotComposableError(f"branch {n}: {error}") from None
        if not result.exact:
            raise NotComposableError(f"branch {n} is not exact: {result.inexact_reason()}")
        parts.append((f"branch {n}", *_chain_arrays(result.steps)))
    label0, spec0 = parts[0][0], parts[0][1]
    for label, spec, _, _ in parts[1:]:
        for what in ("ndim", "in_channels", "out_channels", "stride"):
            if getattr(spec, what) != getattr(spec0, what):
                raise NotComposableError(
                    f"{label} has {what} {getattr(spec, what)} but {label0} has "
                    f"{getattr(spec0, what)}: parallel branches must share it"
                )
    for label, spec, _, _ in parts:
        if spec.padding_mode != "zeros" and _padded(spec):
            raise NotComposableError(
                f"{label} pads with padding_mode={spec.padding_mode!r}; merging embeds kernels "
                "in zero padding only"
            )
    kernel, dilation, pads, starts = [], [], [], []
    for a, ax in enumerate(axis_names(spec0.ndim)):
        first = [-s.padding[a][0] for _, s, _, _ in parts]  # offset of each branch's first tap
        last = [f + s.dilation[a] * (s.kernel_size[a] - 1) for f, (_, s, _, _) in zip(first, parts)]
        slack = {s.padding[a][1] - e for e, (_, s, _, _) in zip(last, parts)}
        if len(slack) > 1:
            raise NotComposableError(
                f"the branches' outputs do not line up along {ax}: the last tap minus the after-"
                f"padding differs ({sorted(slack)}); pad each k-tap branch by (k − 1)/2"
            )
        lo, hi = min(first), max(last)
        gens = [f - lo for f in first] + [
            s.dilation[a] for _, s, _, _ in parts if s.kernel_size[a] > 1
        ]
        d = math.gcd(*gens) or 1
        kernel.append((hi - lo) // d + 1)
        dilation.append(d)
        pads.append((-lo, slack.pop() + hi))
        starts.append([(f - lo) // d for f in first])
    groups = math.gcd(*(s.groups for _, s, _, _ in parts))
    merged = ConvSpec.create(
        spec0.ndim, spec0.in_channels, spec0.out_channels, tuple(kernel), spec0.stride,
        tuple(pads), tuple(dilation), groups, any(b is not None for *_, b in parts),
    )  # fmt: skip
    weight = np.zeros((spec0.out_channels, spec0.in_channels, *kernel))
    bias = np.zeros(spec0.out_channels) if merged.bias else None
    for n, (_, spec, wb, bb) in enumerate(parts):
        where = tuple(
            slice(starts[a][n], starts[a][n] + (sd // d) * (k - 1) + 1, sd // d if k > 1 else 1)
            for a, (k, sd, d) in enumerate(zip(spec.kernel_size, spec.dilation, dilation))
        )
        weight[(slice(None), slice(None), *where)] += wb
        if bb is not None:
            bias = bias + bb
    modules = [m for chain in chains for m in chain]
    return _module(merged, weight, bias, _result_dtype(modules))


def verify(layers: Sequence[Module] | Module, single: Module, input_shape: Sequence[int],
           batch: int = 2, seed: int = 0) -> float:  # fmt: skip
    """The largest |chain(x) − single(x)| over a random float64 input of this shape."""
    dtype = single.weight.data.dtype
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape)).astype(dtype)
    chain = Sequential(*_flatten(layers)).forward(x)
    return float(np.max(np.abs(chain - single.forward(x))))


# -- cost side by side ------------------------------------------------------------------------


@dataclass(frozen=True)
class CostComparison:
    """The chain's parameters and counts (sums of its layers' own) beside the single layer's."""

    chain_params: ParamCount
    single_params: ParamCount
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    chain_cost: Cost | None = None
    single_cost: Cost | None = None
    chain_macs: int | None = None
    single_macs: int | None = None

    def rows(self) -> list[tuple[str, int, int]]:
        """(what, chain, single) for the parameters and, with a shape, each pass's operations."""
        rows = [("params", self.chain_params.params, self.single_params.params)]
        if self.chain_cost is not None and self.single_cost is not None:
            rows.append(("macs", self.chain_macs or 0, self.single_macs or 0))
            for key in ("forward", "backward_input", "backward_weight", "backward_bias"):
                a = getattr(self.chain_cost, key) or OpCount()
                b = getattr(self.single_cost, key) or OpCount()
                rows.append((key, a.total, b.total))
        return rows

    def cheaper(self) -> dict[str, str]:
        """For each row (params, macs and each pass's total operations), which side is
        cheaper: chain, single or equal."""
        return {
            what: "equal" if a == b else ("chain" if a < b else "single")
            for what, a, b in self.rows()
        }

    def table(self) -> str:
        lines = [f"{'':20} {'chain':>16} {'single':>16}   cheaper"]
        verdict = self.cheaper()
        for what, a, b in self.rows():
            label = what if what == "params" else f"{what.replace('_', ' ')} ops"
            lines.append(
                f"{label.replace('macs ops', 'MACs'):20} {a:>16,} {b:>16,}   {verdict[what]}"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        def side(params: ParamCount, cost: Cost | None, macs: int | None) -> dict[str, Any]:
            out: dict[str, Any] = {"params": params.params, "weights": params.weights,
                                   "biases": params.biases, "buffers": params.buffers}  # fmt: skip
            if cost is not None:
                out["macs"] = macs
                for key in ("forward", "backward_input", "backward_weight", "backward_bias"):
                    part = getattr(cost, key)
                    keys = ("mults", "adds", "compares", "divides", "specials")
                    out[key] = None if part is None else part.to_dict(keys)
            return out

        return {
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "chain": side(self.chain_params, self.chain_cost, self.chain_macs),
            "single": side(self.single_params, self.single_cost, self.single_macs),
            "cheaper": self.cheaper(),
        }


def compare_cost(
    layers: Sequence[Module] | Module,
    input_shape: Sequence[int] | None = None,
    batch: int = 1,
    count: str = "exact",
    w: Working | None = None,
    in_channels: int | None = None,
) -> CostComparison:
    """Parameters and, for an input shape, exact operation counts of the chain (the sum of its
    layers' own ``.params()`` and ``.cost()``) and of the single equivalent convolution."""
    modules = _flatten(layers)
    chain = Sequential(*modules)
    single = compose_spec(modules, input_shape, in_channels=in_channels).spec
    w = w or Working(record=False)
    w.section("Cost side by side" + ("" if input_shape is None else f" ({count} count)"))
    _sum_step(w, "params", [m.params().params for m in modules], single.params().params)
    if input_shape is None:
        return CostComparison(chain.params(), single.params())
    shape = tuple(input_shape)
    shapes = chain.shapes(shape)
    costs = [m.cost(s, batch, count) for m, s in zip(modules, shapes)]
    own = single.cost(shape, batch, count)
    for key in ("mults", "adds"):
        _sum_step(w, f"fwd{key}", [getattr(c.forward, key) for c in costs],
                  getattr(own.forward, key))  # fmt: skip
    w.note("Each layer's count is its own rule (docs/counting.md), for its own input shape.")
    return CostComparison(
        chain.params(), single.params(), shape, shapes[-1], chain.cost(shape, batch, count),
        own, chain.macs(shape, batch), single.macs(shape, batch),
    )  # fmt: skip


def _sum_step(w: Working, name: str, parts: list[int], single: int) -> None:
    symbols = [f"{name}_{i}" for i in range(1, len(parts) + 1)]
    w.let(f"{name}_chain", " + ".join(symbols), sum(parts), dict(zip(symbols, parts)))
    verdict = "equal" if sum(parts) == single else (
        "the chain is cheaper" if sum(parts) < single else "the single layer is cheaper"
    )  # fmt: skip
    w.let(f"{name}_single", "", single, why=verdict)


# -- the command-line grammar -----------------------------------------------------------------

#: Layer kinds of the grammar and the keys each takes (docs/compose.md).
GRAMMAR: dict[str, tuple[str, ...]] = {
    "conv": ("k", "s", "d", "p", "g", "c", "bias"),
    "avgpool": ("k", "s", "p"),
    "maxpool": ("k", "s", "p", "d"),
    "bn": (),
    "relu": (), "relu6": (), "leakyrelu": (), "sigmoid": (), "tanh": (), "silu": (), "gelu": (),
}  # fmt: skip
_ACTIVATION_MODULES = {
    "relu": "ReLU", "relu6": "ReLU6", "leakyrelu": "LeakyReLU", "sigmoid": "Sigmoid",
    "tanh": "Tanh", "silu": "SiLU", "gelu": "GELU",
}  # fmt: skip


def _value(text: str, key: str, layer: str) -> Any:
    """``3``, a per-axis list ``3,5``; for p also per-side pairs ``1:2,0:3``, same or valid."""
    if key == "p" and text in ("same", "valid"):
        return text
    if key == "bias":
        if text not in ("0", "1"):
            raise NotComposableError(f"bias must be 0 or 1, got {text!r} in {layer!r}")
        return text == "1"
    items: list[Any] = []
    for part in text.split(","):
        sides = part.split(":")
        if not all(side.isdigit() for side in sides) or len(sides) > (2 if key == "p" else 1):
            form = "an int, a comma list or before:after pairs" if key == "p" else (
                "an int or a comma list of ints"
            )  # fmt: skip
            raise NotComposableError(f"{key} must be {form}, got {text!r} in {layer!r}")
        items.append(int(sides[0]) if len(sides) == 1 else (int(sides[0]), int(sides[1])))
    if key in ("g", "c") and len(items) > 1:
        raise NotComposableError(f"{key} must be one int, got {text!r} in {layer!r}")
    return items[0] if len(items) == 1 and isinstance(items[0], int) else tuple(items)


def _parse(text: str) -> tuple[str, dict[str, Any]]:
    words = text.split()
    if not words:
        raise NotComposableError("an empty layer: give a kind such as 'conv k=3'")
    kind = words[0].lower()
    if kind not in GRAMMAR:
        raise NotComposableError(
            f"unknown layer kind {words[0]!r} in {text!r}; known: {', '.join(GRAMMAR)}"
        )
    keys: dict[str, Any] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or key not in GRAMMAR[kind] or not value:
            takes = f"takes {', '.join(GRAMMAR[kind])}" if GRAMMAR[kind] else "takes no keys"
            raise NotComposableError(f"{kind} {takes} (as key=value), got {word!r} in {text!r}")
        if key in keys:
            raise NotComposableError(f"{key} is given twice in {text!r}")
        keys[key] = _value(value, key, text)
    if kind in ("conv", "avgpool", "maxpool") and "k" not in keys:
        raise NotComposableError(
            f"{kind} needs k= (the kernel size), e.g. '{kind} k=3'; got {text!r}"
        )
    return kind, keys


def _rank(value: Any) -> int:
    return len(value) if isinstance(value, tuple) else 1


def parse_chain(texts: Sequence[str], input_shape: Sequence[int] | None = None) -> list[Module]:
    """Modules from layer texts such as ``"conv k=5 s=2 c=16"`` (docs/compose.md). The rank is
    the input's, else the longest per-axis list, else 2-D; the channels start at the input's
    (default 1)."""
    from . import nn

    parsed = [(text, *_parse(text)) for text in texts]
    if input_shape is not None:
        ndim = len(input_shape) - 1
        if not 1 <= ndim <= 3:
            raise NotComposableError(
                f"the input shape must be C×L, C×H×W or C×D×H×W, got {tuple(input_shape)}"
            )
    else:
        ranks = [_rank(v) for _, _, keys in parsed for k, v in keys.items() if k in "ksdp"]
        ndim = max([r for r in ranks if r > 1], default=2)
        if ndim > 3:
            raise NotComposableError(f"at most 3 spatial axes, got a per-axis list of {ndim}")
    channels = input_shape[0] if input_shape is not None else 1
    modules: list[Module] = []
    for i, (text, kind, keys) in enumerate(parsed, start=1):
        try:
            if kind == "conv":
                out = keys.get("c", channels)
                cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1]
                module: Module = cls(
                    channels, out, keys["k"], keys.get("s", 1), keys.get("p", 0),
                    keys.get("d", 1), keys.get("g", 1), keys.get("bias", True),
                )  # fmt: skip
                channels = out
            elif kind == "avgpool":
                cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[ndim - 1]
                module = cls(keys["k"], keys.get("s"), keys.get("p", 0))
            elif kind == "maxpool":
                cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[ndim - 1]
                module = cls(keys["k"], keys.get("s"), keys.get("p", 0), keys.get("d", 1))
            elif kind == "bn":
                module = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 1](channels)
                module.eval()
            else:
                module = getattr(nn, _ACTIVATION_MODULES[kind])()
        except NotComposableError:
            raise
        except ConvScopeError as error:
            raise NotComposableError(f"layer {i} ({text!r}): {error}") from None
        modules.append(module)
    return modules


def to_dict(result: Composition, costs: CostComparison | None = None) -> dict[str, Any]:
    """The JSON object of ``convscope compose``: the single layer, exactness and costs."""
    spec = result.spec
    out: dict[str, Any] = {
        "layer": spec.name,
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "kernel": list(spec.kernel_size),
        "stride": list(spec.stride),
        "dilation": list(spec.dilation),
        "padding": [list(p) for p in spec.padding],
        "groups": spec.groups,
        "bias": spec.bias,
        "span": list(result.span),
        "exact": result.exact,
        "inner_padding": list(result.inner_padding),
        "input_shape": None if result.input_shape is None else list(result.input_shape),
        "output_shape": None if result.output_shape is None else list(result.output_shape),
    }
    if not result.exact:
        out["reason"] = result.inexact_reason()
        out["differing"] = None if result.differing is None else [list(p) for p in result.differing]
    if costs is not None:
        out["cost"] = costs.to_dict()
    return out


def render(
    texts: Sequence[str],
    input_shape: Sequence[int] | None = None,
    batch: int = 1,
    count: str = "exact",
    explain: bool = False,
    fmt: str = "text",
) -> str:
    """What ``convscope compose`` prints: fmt is text, markdown or json."""
    layers = parse_chain(texts, input_shape)
    channels = None if input_shape is not None else 1  # the grammar's default input channels
    result = compose_spec(layers, input_shape, explain, channels)
    w = Working(record=explain)
    costs = compare_cost(layers, input_shape, batch, count, w, channels)
    explanation = None
    if result.explanation is not None:
        explanation = Explanation(result.explanation.sections + w.explanation.sections)
    if fmt == "json":
        data = to_dict(result, costs)
        if explanation is not None:
            data["explanation"] = explanation.text()
        return json.dumps(data) + "\n"
    shape = "" if input_shape is None else f" for input {shape_text(tuple(input_shape))}"
    head = f"Chain of {len(layers)} layer{'s' if len(layers) != 1 else ''}{shape}\n"
    table = costs.table()
    if input_shape is None:
        table += "(give --input C×H×W for the operation counts)\n"
    if fmt == "markdown":
        body = f"## {head}\n```\n{result.summary()}\n{table}```\n"
        return body + ("" if explanation is None else "\n" + explanation.markdown())
    body = head + result.summary() + "\n" + table
    return body + ("" if explanation is None else "\n" + explanation.text())
