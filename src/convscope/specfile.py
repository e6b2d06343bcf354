"""Networks described as data (JSON or YAML): a list of layers and blocks, built into
``convscope.nn`` modules, and written back by ``dump_spec``. Loading never executes code: JSON
is parsed by ``json``, YAML by PyYAML's ``safe_load`` (plain data only), and layer names are
looked up among the keys the operation families declare (``convscope.registry``)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from . import registry
from .containers import Concat, Residual, Sequential
from .errors import ConvScopeError
from .geometry import Shape, check_sizes
from .module import Module

_BLOCKS = {
    "residual": ("branch", "shortcut"),
    "concat": ("branches", "dim"),
    "sequential": ("layers",),
}
_TOP = ("input", "layers", "name")


def load_spec(source: str | Path | dict[str, Any]) -> Sequential:
    """A network from a spec file's path, its text (JSON or YAML) or the parsed object.

    The result is a ``Sequential`` of real modules (it runs); its ``input_shape`` attribute
    holds the spec's ``input``."""
    data = _parse(source) if not isinstance(source, dict) else source
    if not isinstance(data, dict):
        raise ConvScopeError(
            f"a spec is an object with 'input' and 'layers', got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_TOP))
    if unknown:
        raise ConvScopeError(f"spec: unknown key {unknown[0]!r}; known: {', '.join(_TOP)}")
    for key in ("input", "layers"):
        if key not in data:
            raise ConvScopeError(f"spec: {key!r} is missing")
    shape = _shape(data["input"])
    model, _ = _sequence(data["layers"], shape, "layers")
    model.input_shape = shape  # type: ignore[attr-defined]
    return model


def _parse(source: str | Path) -> Any:
    """JSON or YAML text, or a file of either (by its suffix)."""
    text, yaml_file = str(source), False
    is_path = isinstance(source, Path) or (
        "\n" not in text and text.endswith((".json", ".yaml", ".yml"))
    )
    if is_path:
        path = Path(source)
        if not path.is_file():
            raise ConvScopeError(f"no such spec file: {path}")
        text, yaml_file = path.read_text(encoding="utf-8"), path.suffix in (".yaml", ".yml")
    if not yaml_file and text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConvScopeError(f"spec is not valid JSON: {error}") from error
    try:
        import yaml
    except ImportError as error:
        raise ConvScopeError(
            "YAML specs need PyYAML (pip install 'convscope[yaml]'); JSON needs nothing"
        ) from error
    try:
        return yaml.safe_load(text)  # plain data only: python/object tags are refused
    except yaml.YAMLError as error:
        raise ConvScopeError(f"spec is not valid YAML (or uses a tag): {error}") from error


def _shape(value: Any) -> Shape:
    try:
        return check_sizes(value if isinstance(value, list) else None, "spec")
    except ConvScopeError:
        raise ConvScopeError(
            "spec: 'input' is the input shape, channel-first without the batch "
            f"(e.g. [3, 32, 32]), got {value!r}"
        ) from None


def _sequence(items: Any, shape: Shape, where: str) -> tuple[Sequential, Shape]:
    """A list of layers and blocks, built in order from the running shape."""
    if not isinstance(items, list) or not items:
        raise ConvScopeError(f"{where}: expected a non-empty list of layers, got {items!r}")
    layers = []
    for i, item in enumerate(items):
        layer, shape = _item(item, shape, f"{where}[{i}]")
        layers.append(layer)
    return Sequential(*layers), shape


def _item(item: Any, shape: Shape, where: str) -> tuple[Module, Shape]:
    """One layer: ``"relu"`` or ``{"conv2d": {...arguments}}``, or a block."""
    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, args = next(iter(item.items()))
        args = {} if args is None else args
    else:
        raise ConvScopeError(
            f"{where}: a layer is a name or an object with one key (the layer), got {item!r}"
        )
    key = str(name).lower()
    where = f"{where} ({name})"
    if not isinstance(args, dict):
        raise ConvScopeError(f"{where}: arguments must be an object, got {args!r}")
    if key in _BLOCKS:
        return _block(key, args, shape, where)
    layers = registry.spec_file_layers()
    if key not in layers:
        known = ", ".join([*layers, *_BLOCKS])
        raise ConvScopeError(f"{where}: unknown layer {name!r}; known: {known}")
    cls, inferred, axis = layers[key].module, layers[key].inferred, layers[key].axis
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for arg in args:
        if arg not in allowed:
            raise ConvScopeError(f"{where}: unknown key {arg!r}; known: {', '.join(allowed)}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    if inferred is not None:
        given = shape[axis]
        if inferred in args and args[inferred] != given:
            raise ConvScopeError(
                f"{where}: {inferred}={args[inferred]} but the input of shape {shape} has {given}"
            )
        args[inferred] = given
    try:
        layer = cls(**args)
        return layer, layer.output_shape(shape)
    except (ConvScopeError, TypeError) as error:
        raise ConvScopeError(f"{where}: {error}") from error


def _block(key: str, args: dict[str, Any], shape: Shape, where: str) -> tuple[Module, Shape]:
    unknown = sorted(set(args) - set(_BLOCKS[key]))
    if unknown:
        known = ", ".join(_BLOCKS[key])
        raise ConvScopeError(f"{where}: unknown key {unknown[0]!r}; known: {known}")
    try:
        if key == "sequential":
            return _sequence(args.get("layers"), shape, f"{where}.layers")
        if key == "residual":
            branch, _ = _sequence(args.get("branch"), shape, f"{where}.branch")
            shortcut = None
            if args.get("shortcut") is not None:
                shortcut, _ = _sequence(args["shortcut"], shape, f"{where}.shortcut")
            block: Module = Residual(branch, shortcut)
        else:
            branches = args.get("branches")
            if not isinstance(branches, list) or not branches:
                raise ConvScopeError(f"{where}.branches: expected a list of layer lists")
            dim = args.get("dim", 1)
            if not isinstance(dim, int) or isinstance(dim, bool):
                raise ConvScopeError(f"{where}: dim must be an int, got {dim!r}")
            parts = [
                _sequence(b, shape, f"{where}.branches[{i}]")[0] for i, b in enumerate(branches)
            ]
            block = Concat(*parts, dim=dim)
        return block, block.output_shape(shape)
    except ConvScopeError as error:
        if str(error).startswith(where):
            raise
        raise ConvScopeError(f"{where}: {error}") from error


def dump_spec(model: Module, input_shape: Shape) -> dict[str, Any]:
    """The spec (a JSON-ready object) that ``load_spec`` builds ``model`` from: containers as
    blocks, each layer under its key with its constructor arguments read from its spec."""
    return {"input": list(input_shape), "layers": _dump_layers(model)}


def _dump_layers(model: Module) -> list[Any]:
    if isinstance(model, Sequential):
        return [item for layer in model for item in _dump_layers(layer)]
    if isinstance(model, Residual):
        block: dict[str, Any] = {"branch": _dump_layers(model.branch)}
        if model.shortcut is not None:
            block["shortcut"] = _dump_layers(model.shortcut)
        return [{"residual": block}]
    if isinstance(model, Concat):
        branches = [_dump_layers(b) for b in model.branches]
        return [{"concat": {"branches": branches, "dim": model.spec.dim}}]
    keys = {layer.module: key for key, layer in registry.spec_file_layers().items()}
    key = keys.get(type(model))
    if key is None:
        raise ConvScopeError(f"spec files have no key for {type(model).__name__}")
    names = [p for p in inspect.signature(type(model).__init__).parameters if p != "self"]
    return [{key: {name: _plain(getattr(model.spec, name)) for name in names}}]


def _plain(value: Any) -> Any:
    """A spec value as JSON data: tuples as lists."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
