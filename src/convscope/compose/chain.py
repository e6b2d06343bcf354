"""Reading a chain: each layer as the convolution it is (its family's ``linear_map``), or the
reason it is none; and chains spelled in the layer grammar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..containers import Container, Sequential
from ..errors import ConvScopeError, NotComposableError
from ..geometry import Shape, check_sizes, positive_int
from ..grammar import Context, parse_layer, per_axis_rank
from ..module import Module
from ..ops.base import LinearMap


@dataclass(frozen=True)
class ChainLink:
    """One layer of a chain read as a convolution: its label (``layer 2 (Conv2d)``), the
    convolution it is, with its weights, and the module."""

    label: str
    map: LinearMap
    module: Module | None = None

    @property
    def conv(self) -> Any:
        return self.map.conv

    def describe(self) -> str:
        """How the layer is that convolution, for the explanation."""
        return f"{self.label} {self.map.reads_as}"


def check_chain_shape(input_shape: object) -> Shape | None:
    """A chain's ``input_shape`` argument: None, or sizes (C, *spatial) as Python ints."""
    if input_shape is None:
        return None
    return check_sizes(input_shape, "compose", "an input_shape (C, *spatial)")


def check_channels(in_channels: object) -> int | None:
    """A chain's ``in_channels`` argument: None, or an int >= 1."""
    return None if in_channels is None else positive_int(in_channels, "in_channels")


def flatten_layers(layers: Sequence[Module] | Module) -> list[Module]:
    """The chain's layers, with Sequentials opened."""
    if isinstance(layers, Module):
        layers = [layers]
    elif not isinstance(layers, Sequence) or isinstance(layers, str):
        raise NotComposableError(
            f"layers must be a convscope.nn module or a list of them, got {type(layers).__name__}"
        )
    out: list[Module] = []
    for layer in layers:
        if isinstance(layer, Sequential):
            out.extend(flatten_layers(list(layer)))
        elif isinstance(layer, Module):
            out.append(layer)
        else:
            raise NotComposableError(
                f"compose takes convscope.nn modules, got {type(layer).__name__}: {layer!r}"
            )
    return out


def chain_links(
    layers: Sequence[Module] | Module, in_channels: int | None = None
) -> list[ChainLink]:
    """The layers of a chain read as convolutions; raises NotComposableError naming the layer."""
    modules = flatten_layers(layers)
    if not modules:
        raise NotComposableError("compose needs at least one layer")
    links: list[ChainLink] = []
    channels, ndim = check_channels(in_channels), None
    for i, module in enumerate(modules, start=1):
        label = f"layer {i} ({type(module).__name__})"
        if isinstance(module, Container):
            raise NotComposableError(
                f"{label} holds parallel branches; a chain is one path. Merge parallel "
                "convolutions with merge_branches"
            )
        try:
            linear = module.spec.linear_map(channels, module)
        except NotComposableError as why:
            raise NotComposableError(f"{label} {why}") from None
        conv = linear.conv
        if links and conv.padding_mode != "zeros" and conv.padded:
            raise NotComposableError(
                f"{label} pads with padding_mode={conv.padding_mode!r}: copies of its own input, "
                "not a fixed convolution of the chain's input (only the first layer may)"
            )
        if ndim is not None and conv.ndim != ndim:
            raise NotComposableError(
                f"{label} is {conv.ndim}-D but the chain before it is {ndim}-D"
            )
        ndim = conv.ndim
        if channels is not None and conv.in_channels != channels:
            raise NotComposableError(
                f"{label} takes {conv.in_channels} channels but "
                + ("the input has" if not links else f"layer {i - 1} gives")
                + f" {channels}"
            )
        links.append(ChainLink(label, linear, module))
        channels = conv.out_channels
    return links


def parse_chain(texts: Sequence[str], input_shape: Sequence[int] | None = None) -> list[Module]:
    """Modules from layer texts such as ``"conv k=5 s=2 c=16"`` (docs/compose.md). The rank is
    the input's, else the longest per-axis list, else 2-D; the channels start at the input's
    (default 1). Every layer is read at inference (eval mode)."""
    kinds = registry.layer_kinds()
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise NotComposableError(
            f"texts must be a list of layer texts such as ['conv k=3'], got {type(texts).__name__}"
        )
    if not all(isinstance(text, str) for text in texts):
        raise NotComposableError("texts must be strings such as 'conv k=3 s=2'")
    input_shape = check_chain_shape(input_shape)
    try:
        parsed = [(text, *parse_layer(text, kinds)) for text in texts]
    except ConvScopeError as error:
        raise NotComposableError(str(error)) from None
    if input_shape is not None:
        ndim = len(input_shape) - 1
        if not 1 <= ndim <= 3:
            raise NotComposableError(
                f"the input shape must be C×L, C×H×W or C×D×H×W, got {tuple(input_shape)}"
            )
    else:
        ranks = [per_axis_rank(kind, values) or 1 for _, kind, values in parsed]
        ndim = max([r for r in ranks if r > 1], default=2)
        if ndim > 3:
            raise NotComposableError(f"at most 3 spatial axes, got a per-axis list of {ndim}")
    channels = input_shape[0] if input_shape is not None else 1
    shape = tuple(input_shape) if input_shape is not None else None
    modules: list[Module] = []
    for i, (text, kind, values) in enumerate(parsed, start=1):
        try:
            module = kind.build(dict(values), Context(channels, ndim, shape)).eval()
        except ConvScopeError as error:
            raise NotComposableError(f"layer {i} ({text!r}): {error}") from None
        channels = getattr(module.spec, "out_channels", channels)
        modules.append(module)
    return modules
