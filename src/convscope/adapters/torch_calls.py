"""How the PyTorch adapter names and looks up the calls it records: the calls that only move
values, split a tensor into parts or read only its shape; every family's rule keyed by the
function object torch hands a ``TorchFunctionMode``; and a layer's nearest ``torch.nn`` base."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F

from .. import registry

#: The batch of the recorded run: a per-sample count without dividing, and a leading axis of
#: any other size marks a tensor whose batch axis was regrouped (windows, heads, tokens first).
RUN_BATCH = 1

#: Calls whose result is a tuple of parts of one tensor: each part becomes a slice.
PARTS = ("torch.chunk", "torch.split", "Tensor.chunk", "Tensor.split")
#: Calls that only move values; where no exact structural rule fits (the batch axis regrouped),
#: they become a RegroupSpec: no arithmetic, receptive field unknown.
MOVES = (
    "Tensor.view",
    "Tensor.reshape",
    "torch.reshape",
    "Tensor.permute",
    "torch.permute",
    "Tensor.transpose",
    "torch.transpose",
    "Tensor.flatten",
    "torch.flatten",
    "Tensor.unflatten",
    "Tensor.squeeze",
    "Tensor.unsqueeze",
    "torch.squeeze",
    "torch.unsqueeze",
    "Tensor.contiguous",
    "Tensor.expand",
    "Tensor.expand_as",
    "Tensor.__getitem__",
    "Tensor.unbind",
    "torch.unbind",
    "Tensor.roll",
    "torch.roll",
    "Tensor.repeat",
    "Tensor.narrow",
    "torch.narrow",
    "Tensor.select",
    "torch.stack",
    "torch.cat",
    "torch.concat",
    "Tensor.type_as",
    "Tensor.to",
    "Tensor.float",
    "Tensor.clone",
    "Tensor.detach",
    "Tensor.reshape_as",
    "Tensor.view_as",
    "Tensor.t",
    "torch.t",
    "Tensor.swapaxes",
    "Tensor.swapdims",
    "torch.swapaxes",
    "torch.swapdims",
    "Tensor.movedim",
    "Tensor.moveaxis",
    "torch.movedim",
    "torch.moveaxis",
    "Tensor.flip",
    "torch.flip",
    "Tensor.repeat_interleave",
    "torch.repeat_interleave",
    "Tensor.tile",
    "torch.tile",
    "Tensor.index_select",
    "torch.index_select",
    "Tensor.gather",
    "torch.gather",
    "Tensor.broadcast_to",
    "torch.broadcast_to",
    "Tensor.unfold",
    "Tensor.masked_fill",
    "torch.masked_fill",
    "torch.where",
    "Tensor.half",
    "Tensor.double",
    "Tensor.bfloat16",
    "Tensor.type",
    "torch.atleast_2d",
    "torch.atleast_3d",
)
#: Calls whose result depends on the input's shape only, never on its values.
SHAPE_ONLY = (
    "torch.zeros_like",
    "torch.ones_like",
    "torch.empty_like",
    "torch.full_like",
    "Tensor.new_zeros",
    "Tensor.new_ones",
    "Tensor.new_empty",
    "Tensor.new_full",
    "Tensor.new_tensor",
)


def target_of(path: str) -> Any:
    """The object a dotted path names (``torch.nn.functional.relu``, ``Tensor.view``), or None
    when this torch has no such object."""
    if path.startswith("Tensor."):
        return getattr(torch.Tensor, path.removeprefix("Tensor."), None)
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def objects_of(paths: Sequence[str]) -> dict[Any, str]:
    found = {}
    for path in paths:
        target = target_of(path)
        if target is not None:
            found.setdefault(target, path)
    return found


@functools.cache
def tables() -> tuple[dict[Any, tuple[str, registry.CallRule]], dict[Any, str], set, set]:
    """Every call the families map, keyed by function object, with its path; the parts, moves
    and shape-only calls."""
    rules = {}
    for path, rule in registry.torch_functions().items():
        target = target_of(path)
        if target is not None:
            rules.setdefault(target, (path, rule))
    return rules, objects_of(PARTS), set(objects_of(MOVES)), set(objects_of(SHAPE_ONLY))


def call_path(func: Any) -> str:
    """A readable dotted name of a torch callable."""
    owner = getattr(func, "__objclass__", None)
    name = getattr(func, "__name__", repr(func))
    if owner is not None and issubclass(owner, torch._C.TensorBase):
        return f"Tensor.{name}"
    module = getattr(func, "__module__", None) or "torch"
    if module.startswith("torch._C"):
        module = {"torch._C._nn": "torch.nn.functional"}.get(module, "torch")
    qualname = getattr(func, "__qualname__", name)
    return f"{module}.{qualname}".replace("_VariableFunctionsClass.", "")


def dtype_name(t: torch.Tensor) -> str:
    """A tensor's element type by name (``float32``, ``bool``)."""
    return str(t.dtype).removeprefix("torch.")


def composite(func: Any) -> bool:
    """A Python function of torch.nn.functional that no family maps: made of other calls."""
    rules, parts, moves, shape_only = tables()
    return (
        inspect.isfunction(func)
        and func.__module__ == F.__name__
        and func not in rules
        and func not in moves
    )


def torch_base(module: tnn.Module) -> tuple[str, registry.ModuleRule] | None:
    """The nearest torch.nn class of a module that a family maps, unless a class below it
    overrides how it computes (``forward``): then its calls are recorded one by one."""
    rules = registry.torch_modules()
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ in rules:
            below = type(module).__mro__[: type(module).__mro__.index(cls)]
            if any("forward" in c.__dict__ or "_conv_forward" in c.__dict__ for c in below):
                return None
            return cls.__name__, rules[cls.__name__]
    return None
