"""Composition at the level of weights: one Conv module equal to a chain, a conv with its
BatchNorm folded in, and parallel branches merged into one conv (re-parameterisation).

An average pool is a depthwise convolution with a constant kernel and an eval-mode BatchNorm a
depthwise 1×1 convolution with a bias, so both compose too (their families' ``linear_map``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .. import registry
from ..errors import NotComposableError
from ..explain import Working
from ..geometry import axis_names
from ..kernels.im2col import dense_weight, grouped_weight
from ..module import Module
from ..ops.conv import ConvSpec
from ..ops.normalization import BatchNormSpec, bn_affine
from .chain import ChainLink, chain_links, flatten_layers
from .specs import compose_spec, fold_spec


def fold_arrays(
    a: ConvSpec,
    wa: np.ndarray,
    ba: np.ndarray | None,
    b: ConvSpec,
    wb: np.ndarray,
    bb: np.ndarray | None,
    out: ConvSpec,
) -> tuple[np.ndarray, np.ndarray | None]:
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


def chain_arrays(
    links: Sequence[ChainLink],
) -> tuple[ConvSpec, np.ndarray, np.ndarray | None]:
    """The single layer's spec, dense float64 weight and bias."""
    spec = links[0].conv
    weight, bias = links[0].map.arrays()
    for link in links[1:]:
        folded = fold_spec(spec, link.conv, Working(record=False))
        wb, bb = link.map.arrays()
        weight, bias = fold_arrays(spec, weight, bias, link.conv, wb, bb, folded)
        spec = folded
    return spec, weight, bias


def _module(spec: ConvSpec, dense: np.ndarray, bias: np.ndarray | None, dtype: Any) -> Module:
    """A Conv module of ``spec`` holding these weights, in ``dtype``."""
    layer = registry.module_for(replace(spec, bias=bias is not None))
    layer.astype(dtype)
    layer.weight.data = grouped_weight(dense, spec.groups)
    if bias is not None:
        layer.bias.data = bias
    return layer


def _result_dtype(modules: Sequence[Module | None]) -> np.dtype:
    dtypes = [
        p.dtype
        for m in modules
        if m is not None
        for _, p in m._named("")
        if np.issubdtype(p.dtype, np.floating)
    ]
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
    spec, weight, bias = chain_arrays(result.links)
    assert spec == result.spec
    return _module(spec, weight, bias, _result_dtype([link.module for link in result.links]))


def fold_batchnorm(conv: Module, bn: Module) -> Module:
    """The conv followed by an eval-mode BatchNorm as one conv:
    ``w' = w·γ/√(σ² + ε)`` per output channel and ``b' = (b − μ)·γ/√(σ² + ε) + β``."""
    if not isinstance(getattr(conv, "spec", None), ConvSpec):
        raise NotComposableError(f"fold_batchnorm takes a Conv module first, got {conv!r}")
    if not isinstance(getattr(bn, "spec", None), BatchNormSpec):
        raise NotComposableError(f"fold_batchnorm takes a BatchNorm module second, got {bn!r}")
    chain_links([conv, bn])  # the refusals and the channel and rank checks
    spec: ConvSpec = conv.spec  # type: ignore[assignment]
    scale, shift = bn_affine(bn)
    weight = conv.weight.data.astype(np.float64) * scale.reshape(-1, *(1,) * (spec.ndim + 1))
    bias = shift if conv.bias is None else conv.bias.data.astype(np.float64) * scale + shift
    return _module(spec, dense_weight(weight, spec.groups), bias, _result_dtype([conv, bn]))


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
    chains = [[] if b is None else flatten_layers(b) for b in branches]
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
            ones = np.eye(channels).reshape(channels, channels, *(1,) * ndim)
            parts.append((f"branch {n} (identity)", eye, ones, None))
            continue
        try:
            result = compose_spec(chain, None)
        except NotComposableError as error:
            raise NotComposableError(f"branch {n}: {error}") from None
        if not result.exact:
            raise NotComposableError(f"branch {n} is not exact: {result.inexact_reason()}")
        parts.append((f"branch {n}", *chain_arrays(result.links)))
    label0, spec0 = parts[0][0], parts[0][1]
    for label, spec, _, _ in parts[1:]:
        for what in ("ndim", "in_channels", "out_channels", "stride"):
            if getattr(spec, what) != getattr(spec0, what):
                raise NotComposableError(
                    f"{label} has {what} {getattr(spec, what)} but {label0} has "
                    f"{getattr(spec0, what)}: parallel branches must share it"
                )
    for label, spec, _, _ in parts:
        if spec.padding_mode != "zeros" and spec.padded:
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
        spec0.ndim,
        spec0.in_channels,
        spec0.out_channels,
        tuple(kernel),
        spec0.stride,
        tuple(pads),
        tuple(dilation),
        groups,
        any(b is not None for *_, b in parts),
    )
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
