"""Where a model named on the command line comes from: the zoo, a Python file, torchvision or
a spec file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import ConvScopeError


def load_model(ref: str) -> Any:
    """A zoo name (returned as is: the summary builds it), ``torchvision:NAME``,
    ``path/to/file.py:attr`` (a module, or a function returning one), or a spec file."""
    if ref.startswith("torchvision:"):
        try:
            import torchvision.models as tv
        except Exception as error:  # torchvision missing or broken beside this torch
            raise ConvScopeError(f"{ref}: torchvision cannot be imported ({error})") from error
        name = ref.split(":", 1)[1]
        if not hasattr(tv, name):
            raise ConvScopeError(f"{ref}: torchvision.models has no {name!r}")
        return getattr(tv, name)(weights=None)
    path, _, attr = ref.rpartition(":")
    if path.endswith(".py") and attr:
        file = Path(path)
        if not file.exists():
            raise ConvScopeError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, attr):
            raise ConvScopeError(f"{path} defines no {attr!r}")
        value = getattr(module, attr)
        if isinstance(value, (type, type(load_model))):
            value = value()  # a class or a factory function
        return value
    if ref.endswith((".json", ".yaml", ".yml")):
        from .specfile import load_spec

        return load_spec(ref)
    return ref  # a zoo name
