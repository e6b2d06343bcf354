"""convscope models to PyTorch modules and back, weights included.

convscope's NumPy engine is for learning, checking and small jobs; PyTorch is the engine for
scale. ``to_torch`` builds the ``torch.nn`` module of the same structure: a layer becomes the
``torch.nn`` class its family declares as its twin (same name, constructor arguments and
``state_dict`` names), built from the layer's own arguments; ``Sequential`` stays a
``torch.nn.Sequential`` with the same child names, and ``Residual`` and ``Concat`` become the small
modules below. ``from_torch`` is the reverse, for modules built from those classes. A layer or
argument with no counterpart is refused, naming it: nothing is dropped silently.

PyTorch is imported here only: it stays an optional extra (``pip install 'convscope[torch]'``).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from functools import cache
from typing import Any

import numpy as np

from . import registry
from .containers import Concat, Residual, Sequential
from .errors import ConvScopeError
from .module import Module


class ExportError(ConvScopeError):
    """A model, layer or argument with no counterpart on the other side."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ExportError(
            "PyTorch is not installed: pip install 'convscope[torch]' (torch==2.13.0)"
        ) from None
    return torch


@cache
def _torch_modules() -> dict[str, Any]:
    """The torch side's containers for Residual and Concat, defined once torch is imported."""
    torch = _torch()

    class TorchResidual(torch.nn.Module):
        """``branch(x) + shortcut(x)``, or ``branch(x) + x`` without a shortcut."""

        def __init__(self, branch: Any, shortcut: Any = None) -> None:
            super().__init__()
            self.branch = branch
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

    class TorchConcat(torch.nn.Module):
        """Branches on one input, joined along ``dim``; children named "0", "1", …"""

        def __init__(self, *branches: Any, dim: int = 1) -> None:
            super().__init__()
            self.dim = dim
            for i, branch in enumerate(branches):
                self.add_module(str(i), branch)

        def forward(self, x: Any) -> Any:
            return torch.cat([branch(x) for branch in self.children()], dim=self.dim)

    return {"Residual": TorchResidual, "Concat": TorchConcat}


def twins() -> dict[str, type[Module]]:
    """convscope's layer classes that have a ``torch.nn`` twin of the same name, as the
    families declare them in the registry."""
    return registry.torch_twins()


def _arguments(cls: type) -> dict[str, inspect.Parameter]:
    return {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


# -- convscope → torch --------------------------------------------------------------------------


def to_torch(model: Module) -> Any:
    """The ``torch.nn.Module`` of ``model``'s structure, weights and train/eval mode."""
    torch = _torch()
    built = _to_torch(model, "model")
    state = {
        name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in model.state_dict().items()
    }
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    if floats == {torch.float64}:
        built = built.double()  # a float64 model stays float64
    missing, unexpected = built.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(
            f"the torch module's state does not match: missing {missing}, unexpected {unexpected}"
        )
    return built.train(model.training)


def _to_torch(module: Module, where: str) -> Any:
    torch = _torch()
    extra = _torch_modules()
    if isinstance(module, Sequential):
        return torch.nn.Sequential(
            OrderedDict((n, _to_torch(m, f"{where}.{n}")) for n, m in module.children())
        )
    if isinstance(module, Residual):
        shortcut = module.shortcut
        return extra["Residual"](
            _to_torch(module.branch, f"{where}.branch"),
            None if shortcut is None else _to_torch(shortcut, f"{where}.shortcut"),
        )
    if isinstance(module, Concat):
        branches = [_to_torch(m, f"{where}.{n}") for n, m in module.children()]
        return extra["Concat"](*branches, dim=module.spec.dim)
    name = type(module).__name__
    if name not in twins():
        raise ExportError(f"{where}: {name} has no torch.nn counterpart to export to")
    return _twin_to_torch(module, getattr(torch.nn, name), where)


def _twin_to_torch(module: Module, torch_cls: type, where: str) -> Any:
    """``torch_cls`` built from the layer's constructor arguments, read back under PyTorch's
    names; an argument torch's class lacks must hold our default."""
    theirs = _arguments(torch_cls)
    kwargs: dict[str, Any] = {}
    side_pads = None
    for name, param in _arguments(type(module)).items():
        value = getattr(module, name)
        if name == "padding" and _is_per_side(value):
            side_pads, value = value, 0  # torch pads both sides alike: pad first, then run
        if name in theirs:
            kwargs[name] = list(value) if isinstance(value, tuple) and name == "size" else value
        elif param.default is param.empty or value != param.default:
            raise ExportError(f"{where}: torch.nn.{torch_cls.__name__} has no {name}={value!r}")
    built = torch_cls(**kwargs)
    if side_pads is not None:
        _pad_first(built, side_pads, kwargs.get("padding_mode", "zeros"))
    return built


def _is_per_side(padding: Any) -> bool:
    return isinstance(padding, tuple) and any(isinstance(p, tuple) for p in padding)


def _pad_first(layer: Any, pads: tuple[Any, ...], mode: str) -> None:
    """Makes ``layer`` pad each side as given before it runs (F.pad lists the last axis first),
    keeping its class's parameters and state_dict names."""
    torch = _torch()
    pairs = [p if isinstance(p, tuple) else (p, p) for p in pads]
    flat = [side for pair in reversed(pairs) for side in pair]
    pad_mode = "constant" if mode == "zeros" else mode
    run = type(layer).forward

    def forward(self: Any, x: Any) -> Any:
        return run(self, torch.nn.functional.pad(x, flat, mode=pad_mode))

    layer.forward = forward.__get__(layer)
    layer.side_padding = tuple(pairs)  # shown by repr and read back by from_torch


# -- torch → convscope --------------------------------------------------------------------------


def from_torch(module: Any) -> Module:
    """The convscope model of a ``torch.nn`` module built from classes convscope has, with its
    weights and train/eval mode; the unsupported layers are named in the error."""
    torch = _torch()
    built = _from_torch(module, "model")
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    if {v.dtype for v in state.values() if v.dtype.kind == "f"} == {np.dtype(np.float64)}:
        built.astype(np.float64)  # a float64 module stays float64
    built.load_state_dict(state)
    return built.train(module.training) if isinstance(module, torch.nn.Module) else built


def _from_torch(module: Any, where: str) -> Module:
    torch = _torch()
    extra = _torch_modules()
    if isinstance(module, torch.nn.Sequential):
        children = OrderedDict(
            (n, _from_torch(m, f"{where}.{n}")) for n, m in module.named_children()
        )
        return Sequential(children)
    if isinstance(module, extra["Residual"]):
        shortcut = module.shortcut
        return Residual(
            _from_torch(module.branch, f"{where}.branch"),
            None if shortcut is None else _from_torch(shortcut, f"{where}.shortcut"),
        )
    if isinstance(module, extra["Concat"]):
        branches = [_from_torch(m, f"{where}.{n}") for n, m in module.named_children()]
        return Concat(*branches, dim=module.dim)
    torch_cls = next(
        (c for c in type(module).__mro__ if c.__module__.startswith("torch.nn")), type(module)
    )
    ours = twins().get(torch_cls.__name__)
    if ours is None or getattr(torch.nn, torch_cls.__name__, None) is not torch_cls:
        raise ExportError(
            f"{where}: {type(module).__name__} has no convscope counterpart; convscope takes "
            f"torch.nn.Sequential and the torch.nn layers of its families"
        )
    if type(module).forward is not torch_cls.forward and not hasattr(module, "side_padding"):
        raise ExportError(f"{where}: {type(module).__name__} overrides forward; not importable")
    kwargs: dict[str, Any] = {}
    theirs = _arguments(torch_cls)
    for name, param in _arguments(ours).items():
        if name == "padding" and hasattr(module, "side_padding"):
            kwargs[name] = module.side_padding
        elif name in theirs or hasattr(module, name):
            value = getattr(module, name)
            if isinstance(param.default, bool) and not isinstance(value, bool):
                value = value is not None  # a flag stored as a tensor or None (bias)
            kwargs[name] = value
    for name, param in theirs.items():
        if name in kwargs or name in ("device", "dtype") or param.default is param.empty:
            continue
        value = getattr(module, name, param.default)
        if name not in _arguments(ours) and value != param.default:
            raise ExportError(f"{where}: convscope's {ours.__name__} has no {name}={value!r}")
    return ours(**kwargs)
