"""Composition at the level of configurations: the single convolution a chain is, with its
derivation, and where it is exact.

Along one axis, layer 1 (kernel k1, stride s1, dilation d1) followed by layer 2 (k2, s2, d2)
reads the input at the offsets ``t1·d1 + t2·s1·d2``: one kernel spanning
``K = d1·(k1 − 1) + s1·d2·(k2 − 1) + 1`` at stride ``s1·s2``, stored as a dilated kernel when
every offset shares a factor. Its weight sums, over the intermediate channels, the products of
the taps of the two kernels that land on the same offset, and the first layer's bias passes
through the second layer's kernel sums. Longer chains fold from the left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import functional
from ..containers import Sequential
from ..errors import NotComposableError
from ..explain import Explanation, Working
from ..geometry import Shape, axis_names, prod
from ..module import Module
from ..ops.conv import ConvSpec
from .chain import ChainLink, chain_links, check_chain_shape, flatten_layers


def fold_spec(a: ConvSpec, b: ConvSpec, w: Working) -> ConvSpec:
    """The single convolution of ``a`` then ``b`` (``b``'s padding moved onto the input)."""
    kernel, stride, dilation, pads = [], [], [], []
    for ax, k1, s1, d1, (pb1, pa1), k2, s2, d2, (pb2, pa2) in zip(
        axis_names(a.ndim),
        a.kernel_size,
        a.stride,
        a.dilation,
        a.padding,
        b.kernel_size,
        b.stride,
        b.dilation,
        b.padding,
    ):
        v = {
            "k_1": k1,
            "s_1": s1,
            "d_1": d1,
            "k_2": k2,
            "s_2": s2,
            "d_2": d2,
            "pb_1": pb1,
            "pa_1": pa1,
            "pb_2": pb2,
            "pa_2": pa2,
        }
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
    mode = a.padding_mode if a.padded else "zeros"
    return ConvSpec.create(
        a.ndim,
        a.in_channels,
        b.out_channels,
        tuple(kernel),
        tuple(stride),
        tuple(pads),
        tuple(dilation),
        groups,
        a.bias or b.bias,
        mode,
    )


@dataclass(frozen=True)
class Composition:
    """The single convolution equal to a chain, and whether (and where) it is exact.

    ``inner_padding`` names the layers after the first that pad with zeros: the single layer
    carries their padding on its input instead, so it equals the chain with the padding moved
    onto the first layer, and differs from the given chain at ``differing`` output positions
    (spatial indices, the same for every output channel; known when an input shape is given).
    """

    spec: ConvSpec
    links: tuple[ChainLink, ...]
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

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the single layer and whether (and where) it is exact."""
        spec = self.spec
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
            "span": list(self.span),
            "exact": self.exact,
            "inner_padding": list(self.inner_padding),
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
        }
        if not self.exact:
            out["reason"] = self.inexact_reason()
            out["differing"] = None if self.differing is None else [list(p) for p in self.differing]
        return out

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


def _differing(links: Sequence[ChainLink], spec: ConvSpec, input_shape: Shape) -> tuple:
    """Output positions where the chain and ``spec`` differ for generic weights: every weight and
    bias set to 1 (all sums positive, so a path through a zero-padded intermediate position
    shows as a difference), the chain against the chain with the padding moved to the input."""
    conv = getattr(functional, f"conv{spec.ndim}d")
    x = np.ones((1, 1, *input_shape[1:]))
    chain, moved = x, conv(x, np.ones((1, 1, *(1,) * spec.ndim)), padding=spec.padding)
    for link in links:
        s = link.conv
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
    shape = check_chain_shape(input_shape)
    links = chain_links(layers, shape[0] if shape else in_channels)
    w = Working(record=explain)
    w.section("The chain as convolutions")
    for link in links:
        w.note(link.describe())
    spec = links[0].conv
    inner = []
    for i, link in enumerate(links[1:], start=2):
        if link.conv.padded:
            if spec.padding_mode != "zeros" and spec.padded:
                raise NotComposableError(
                    f"{link.label} pads with zeros after a first layer with padding_mode="
                    f"{spec.padding_mode!r}: the moved padding would mix the two modes"
                )
            inner.append(link.label)
        before = "layer 1" if i == 2 else f"layers 1–{i - 1}"
        w.section(f"Compose {before} (symbols _1) with {link.label} (symbols _2)")
        spec = fold_spec(spec, link.conv, w)
        w.note(f"Layers 1–{i}: {spec.name}({spec.describe()})")
    w.section("The single layer")
    w.note(f"{spec.name}({spec.describe()})")
    out = differing = None
    if shape is not None:
        out = Sequential(*flatten_layers(layers)).output_shape(shape)
        single = spec.output_shape(shape)
        assert single == out, (single, out)
        if inner:
            differing = _differing(links, spec, shape)
    result = Composition(spec, tuple(links), tuple(inner), shape, out, differing, None)
    w.note(
        "Exact: equals the chain at every output position."
        if result.exact
        else "Not exact: " + result.inexact_reason()
    )
    return Composition(
        spec,
        tuple(links),
        tuple(inner),
        shape,
        out,
        differing,
        w.explanation if explain else None,
    )
