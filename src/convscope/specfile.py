"""Networks described as data (JSON or YAML): a list of layers and blocks, built into
``convscope.nn`` modules, and written back by ``dump_spec``. Loading never executes code: JSON
is parsed by ``json``, YAML by PyYAML's safe loader (plain data only), and layer names are
looked up among the keys the operation families declare (``convscope.registry``).

A spec may come from anyone, so reading one is bounded (docs/specfile.md, "Limits"): its size,
its nesting depth, its number of values and of layers; YAML aliases and duplicate keys are
refused; every argument is checked against its constructor's type before the layer is built;
and a value echoed in an error message is cut short."""

from __future__ import annotations

import inspect
import json
import math
import re
import reprlib
import sys
import typing
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from . import registry
from .containers import Concat, Residual, Sequential
from .errors import ConvScopeError
from .geometry import Shape, check_sizes
from .module import Module

MAX_BYTES = 10_000_000
"""The largest spec file, in bytes (spec text: in characters)."""
MAX_DEPTH = 64
"""The deepest nesting of lists and objects (the top-level object is depth 1)."""
MAX_VALUES = 100_000
"""The most values a spec holds: every list, object, key, string, number, boolean and null."""
MAX_LAYERS = 5_000
"""The most layers and blocks a spec builds."""
MAX_INT = 2**63 - 1
"""The largest magnitude of an integer in a spec (the int64 range)."""

_SHOWN = 80  # characters of a value echoed in an error message

_BLOCKS = {
    "residual": ("branch", "shortcut"),
    "concat": ("branches", "dim"),
    "sequential": ("layers",),
}
_TOP = ("input", "layers", "name")


class SpecFileError(ConvScopeError):
    """A spec file that cannot be read or breaks a rule; the message names where and which."""


# Rules on argument values beyond their type, by argument name (the normalisations' eps and
# momentum; their specs accept any float, PyTorch's rules are these).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "eps": (lambda v: v > 0, "must be > 0 (it keeps the variance's square root from 0)"),
    "momentum": (lambda v: v is None or 0 <= v <= 1, "must be null or between 0 and 1"),
}


def load_spec(source: str | Path | dict[str, Any]) -> Sequential:
    """A network from a spec file's path, its text (JSON or YAML) or the parsed object.

    The result is a ``Sequential`` of real modules (it runs); its ``input_shape`` attribute
    holds the spec's ``input``. Every error is a ``SpecFileError`` (a ``ConvScopeError``)."""
    data = _parse(source) if not isinstance(source, dict) else source
    _check_data(data)
    if not isinstance(data, dict):
        raise SpecFileError(
            f"a spec is an object with 'input' and 'layers', got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_TOP))
    if unknown:
        raise SpecFileError(f"spec: unknown key {_show(unknown[0])}; known: {', '.join(_TOP)}")
    for key in ("input", "layers"):
        if key not in data:
            raise SpecFileError(f"spec: {key!r} is missing")
    if not isinstance(data.get("name", ""), str):
        raise SpecFileError(f"spec: 'name' must be a string, got {_show(data['name'])}")
    shape = _shape(data["input"])
    model, _ = _Builder().sequence(data["layers"], shape, "layers")
    model.input_shape = shape  # type: ignore[attr-defined]
    return model


# ---- reading: text, then data, within the limits ----------------------------------------


def _parse(source: str | Path) -> Any:
    """JSON or YAML text, or a file of either (by its suffix)."""
    text, yaml_file = str(source), False
    is_path = isinstance(source, Path) or (
        "\n" not in text and text.endswith((".json", ".yaml", ".yml"))
    )
    if is_path:
        path = Path(source)
        text, yaml_file = _read(path), path.suffix in (".yaml", ".yml")
    elif len(text) > MAX_BYTES:
        raise SpecFileError(
            f"spec text has {len(text):,} characters; the limit is {MAX_BYTES:,} (MAX_BYTES)"
        )
    if not yaml_file and text.lstrip().startswith(("{", "[")):
        return _load_json(text)
    return _load_yaml(text)


def _read(path: Path) -> str:
    """A spec file's text: a regular file of at most ``MAX_BYTES`` bytes of UTF-8. The size is
    read before the file, and no more than the limit is read (a file may grow meanwhile)."""
    try:
        if path.is_dir():
            raise SpecFileError(f"spec file {path} is a directory, not a file")
        if not path.exists():
            raise SpecFileError(f"no such spec file: {path}")
        if not path.is_file():
            raise SpecFileError(f"spec file {path} is not a regular file")
        size = path.stat().st_size
        if size <= MAX_BYTES:
            with path.open("rb") as file:
                data = file.read(MAX_BYTES + 1)
            size = len(data)
    except OSError as error:
        raise SpecFileError(f"cannot read spec file {path}: {error.strerror or error}") from None
    if size > MAX_BYTES:
        raise SpecFileError(
            f"spec file {path} has {size:,} bytes or more; the limit is {MAX_BYTES:,} (MAX_BYTES)"
        )
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is harmless
    except UnicodeDecodeError as error:
        raise SpecFileError(
            f"spec file {path} is not UTF-8 text: byte 0x{data[error.start]:02x} at offset "
            f"{error.start} is not valid UTF-8"
        ) from None


# A JSON string, escapes included; one without its closing quote runs to the end, so that every
# match succeeds and stripping strings stays linear in the text's length.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.DOTALL)


def _load_json(text: str) -> Any:
    # Count before parsing: json builds every value at once, and a few bytes a value (`[],`)
    # would make a 10 MB file hundreds of MB of lists. Outside strings, every value but the
    # first follows a '[', '{', ',' or ':', so their count bounds the values (keys included).
    bare = _JSON_STRING.sub('""', text)
    values = 1 + sum(bare.count(c) for c in "[{,:")
    if values > MAX_VALUES:
        raise SpecFileError(
            f"spec holds more than {MAX_VALUES:,} values (MAX_VALUES): about {values:,}"
        )
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as error:
        raise SpecFileError(f"spec is not valid JSON: {_cut(str(error))}") from None
    except RecursionError:
        raise SpecFileError(
            f"spec nests lists and objects too deep to parse; the limit is {MAX_DEPTH} (MAX_DEPTH)"
        ) from None
    except ValueError as error:  # an integer of more digits than Python converts
        if isinstance(error, SpecFileError):
            raise
        raise SpecFileError(f"spec is not valid JSON: {_cut(str(error))}") from None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (``json`` would keep the last silently)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            keys = _cut(", ".join(_show(k) for k, _ in pairs))
            raise SpecFileError(f"spec: duplicate key {_show(key)} in the object with keys {keys}")
        seen.add(key)
    return dict(pairs)


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError as error:
        raise SpecFileError(
            "YAML specs need PyYAML (pip install 'convscope[yaml]'); JSON needs nothing"
        ) from error
    loader = _yaml_loader()
    try:
        # First the events alone (libyaml's parser keeps its own stack, so any depth is safe
        # there): aliases, depth and size are refused before any node is built, because
        # building them is where aliases multiply and deep nesting recurses.
        _check_yaml_events(yaml.parse(text, Loader=loader), yaml)
        return yaml.load(text, Loader=loader)  # plain data only: python/object tags refused
    except yaml.YAMLError as error:
        raise SpecFileError(f"spec is not valid YAML (or uses a tag): {_cut(str(error))}") from None
    except (ValueError, TypeError, OverflowError) as error:  # e.g. a bad !!timestamp
        if isinstance(error, SpecFileError):
            raise
        raise SpecFileError(f"spec is not valid YAML: {_cut(str(error))}") from None


def _check_yaml_events(events: Iterable[Any], yaml: Any) -> None:
    """Refuse aliases, nesting deeper than ``MAX_DEPTH`` and more than ``MAX_VALUES`` values,
    reading the parser's events as they come (so a refusal stops the parse there)."""
    depth = values = 0
    for event in events:
        where = _mark(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            raise SpecFileError(
                f"spec files may not use YAML aliases (anchors and *references): "
                f"*{_label(event.anchor)} at {where}"
            )
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            values += 1
            if values > MAX_VALUES:
                raise SpecFileError(
                    f"spec holds more than {MAX_VALUES:,} values (MAX_VALUES); the next is at "
                    f"{where}"
                )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecFileError(
                    f"spec nests lists and objects {depth} deep at {where}; the limit is "
                    f"{MAX_DEPTH} (MAX_DEPTH)"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


@cache
def _yaml_loader() -> type:
    """PyYAML's safe loader (libyaml's when built with it) that refuses duplicate keys."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base class refuses it
                    continue
                if duplicate:
                    raise SpecFileError(
                        f"spec: duplicate key {_show(key)} at {_mark(key_node.start_mark)}"
                    )
            return super().construct_mapping(node, deep=deep)

    return Loader


def _mark(mark: Any) -> str:
    return "an unknown place" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"


def _check_data(data: Any) -> None:
    """Walk the parsed data (without recursion, so any shape is safe; a dict passed in may
    even be cyclic): refuse nesting deeper than ``MAX_DEPTH``, more than ``MAX_VALUES`` values,
    keys that are not strings, integers beyond int64, non-finite numbers, and anything that is
    not JSON data (YAML's sets, bytes and dates)."""
    stack: list[tuple[Any, int, Any]] = [(data, 1, None)]
    values = 0
    while stack:
        value, depth, path = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise SpecFileError(f"spec holds more than {MAX_VALUES:,} values (MAX_VALUES)")
        if isinstance(value, (dict, list, tuple)) and depth > MAX_DEPTH:
            raise SpecFileError(
                f"spec nests lists and objects deeper than {MAX_DEPTH} (MAX_DEPTH), at "
                f"{_path(path)}"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SpecFileError(f"{_path(path)}: keys must be strings, got {_show(key)}")
                values += 1
                stack.append((item, depth + 1, (path, key)))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1, (path, i)) for i, item in enumerate(value))
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_INT:
                raise SpecFileError(
                    f"{_path(path)}: integers must be at most 2**63 - 1 in magnitude (MAX_INT), "
                    f"got {_show(value)}"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise SpecFileError(f"{_path(path)}: numbers must be finite, got {value}")
        else:
            raise SpecFileError(
                f"{_path(path)}: a spec holds lists, objects, strings, numbers, booleans and "
                f"null, got a {type(value).__name__}"
            )


def _path(path: Any) -> str:
    """``spec.layers[2].conv2d.eps`` from the linked ``(parent, key)`` pairs of the walk."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{_label(key)}")
    return _cut("spec" + "".join(reversed(parts)), 120, keep_end=True)


# ---- echoing values: short, one line ------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def _show(value: Any) -> str:
    """A value as an error message echoes it: its repr, at most ``_SHOWN`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # a nested integer too long to print
        text = f"a {type(value).__name__}"
    return _cut(text, _SHOWN)


def _label(name: Any) -> str:
    """A name inside a location (``layers[0] (conv2d)``): plain when short and printable."""
    if isinstance(name, str) and len(name) <= 40 and name.isprintable():
        return name
    return _show(name)


def _cut(text: str, limit: int = 300, keep_end: bool = False) -> str:
    """A message part cut to ``limit`` characters, an ellipsis marking the cut (at the end, or
    at the start with ``keep_end``: a deep location's last steps say the most)."""
    if len(text) <= limit:
        return text
    return "…" + text[1 - limit :] if keep_end else text[: limit - 1] + "…"


# ---- building: layers and blocks from the running shape ----------------------------------


def _shape(value: Any) -> Shape:
    try:
        return check_sizes(value if isinstance(value, list) else None, "spec")
    except ConvScopeError:
        raise SpecFileError(
            "spec: 'input' is the input shape, channel-first without the batch "
            f"(e.g. [3, 32, 32]), got {_show(value)}"
        ) from None


class _Builder:
    """Builds the layers of one spec, counting them against ``MAX_LAYERS``."""

    def __init__(self) -> None:
        self.layers = 0

    def sequence(self, items: Any, shape: Shape, where: str) -> tuple[Sequential, Shape]:
        """A list of layers and blocks, built in order from the running shape."""
        if not isinstance(items, list) or not items:
            raise SpecFileError(f"{where}: expected a non-empty list of layers, got {_show(items)}")
        layers = []
        for i, item in enumerate(items):
            layer, shape = self.item(item, shape, f"{where}[{i}]")
            layers.append(layer)
        return Sequential(*layers), shape

    def item(self, item: Any, shape: Shape, where: str) -> tuple[Module, Shape]:
        """One layer: ``"relu"`` or ``{"conv2d": {...arguments}}``, or a block."""
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise SpecFileError(
                f"{where}: a spec builds at most {MAX_LAYERS:,} layers and blocks (MAX_LAYERS)"
            )
        if isinstance(item, str):
            name, args = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, args = next(iter(item.items()))
            args = {} if args is None else args
        else:
            raise SpecFileError(
                f"{where}: a layer is a name or an object with one key (the layer), "
                f"got {_show(item)}"
            )
        key = name.lower()
        where = f"{where} ({_label(name)})"
        if not isinstance(args, dict):
            raise SpecFileError(f"{where}: arguments must be an object, got {_show(args)}")
        if key in _BLOCKS:
            return self.block(key, args, shape, where)
        layers = registry.spec_file_layers()
        if key not in layers:
            known = ", ".join([*layers, *_BLOCKS])
            raise SpecFileError(f"{where}: unknown layer {_show(name)}; known: {known}")
        cls, inferred, axis = layers[key].module, layers[key].inferred, layers[key].axis
        hints = _arguments(cls)
        for arg, value in args.items():
            if arg not in hints:
                known = ", ".join(hints)
                raise SpecFileError(f"{where}: unknown key {_show(arg)}; known: {known}")
            _check_argument(arg, value, hints[arg], where)
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        if inferred is not None:
            given = shape[axis]
            if inferred in args and args[inferred] != given:
                raise SpecFileError(
                    f"{where}: {inferred}={args[inferred]} but the input of shape {shape} "
                    f"has {given}"
                )
            args[inferred] = given
        try:
            layer = cls(**args)
            return layer, layer.output_shape(shape)
        except (ConvScopeError, TypeError, OverflowError) as error:
            raise SpecFileError(f"{where}: {_cut(str(error))}") from error

    def block(
        self, key: str, args: dict[str, Any], shape: Shape, where: str
    ) -> tuple[Module, Shape]:
        unknown = sorted(set(args) - set(_BLOCKS[key]))
        if unknown:
            known = ", ".join(_BLOCKS[key])
            raise SpecFileError(f"{where}: unknown key {_show(unknown[0])}; known: {known}")
        try:
            if key == "sequential":
                return self.sequence(args.get("layers"), shape, f"{where}.layers")
            if key == "residual":
                branch, _ = self.sequence(args.get("branch"), shape, f"{where}.branch")
                shortcut = None
                if args.get("shortcut") is not None:
                    shortcut, _ = self.sequence(args["shortcut"], shape, f"{where}.shortcut")
                block: Module = Residual(branch, shortcut)
            else:
                branches = args.get("branches")
                if not isinstance(branches, list) or not branches:
                    raise SpecFileError(f"{where}.branches: expected a list of layer lists")
                dim = args.get("dim", 1)
                if not isinstance(dim, int) or isinstance(dim, bool):
                    raise SpecFileError(f"{where}: dim must be an integer, got {_show(dim)}")
                parts = [
                    self.sequence(b, shape, f"{where}.branches[{i}]")[0]
                    for i, b in enumerate(branches)
                ]
                block = Concat(*parts, dim=dim)
            return block, block.output_shape(shape)
        except ConvScopeError as error:
            if str(error).startswith(where):
                raise
            raise SpecFileError(f"{where}: {_cut(str(error))}") from error


# ---- arguments: checked against the constructor's annotations ----------------------------


@cache
def _arguments(cls: type) -> dict[str, Any]:
    """A layer's constructor arguments with their types (``Any`` where one is unannotated or
    its annotation does not resolve: the constructor then checks it alone)."""
    signature = inspect.signature(cls.__init__, eval_str=True)
    return {
        name: _resolve(p.annotation, cls)
        for name, p in signature.parameters.items()
        if name != "self"
    }


def _resolve(annotation: Any, cls: type) -> Any:
    """An annotation as a type. A signature built at run time (the convolutions') keeps its
    annotations as strings; they are convscope's own source text, never a spec's."""
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    namespace = {"Sequence": Sequence, "Any": Any, **vars(sys.modules[cls.__module__])}
    try:
        return eval(annotation, namespace)  # noqa: S307 (library annotations only)
    except Exception:
        return Any


#: Numbers YAML 1.1 reads as strings: an exponent without a decimal point or without a sign
#: (1e5, 2E-3, 1.5e3); 1.5e+3 is a float.
_YAML_11_NUMBER = re.compile(r"[-+]?(?:[0-9]+[eE][-+]?|[0-9]*\.[0-9]*[eE])[0-9]+")


def _check_argument(name: str, value: Any, hint: Any, where: str) -> None:
    """Refuse a value of the wrong type (``"no"`` for a bool, ``3.0`` or ``true`` for an int)
    and one that breaks a rule of ``_RULES``."""
    if not _fits(hint, value):
        hint_text = ""
        if isinstance(value, str) and _YAML_11_NUMBER.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads 1e300 as text; 1.0e300 is a number
            mantissa, exponent = value.strip().lower().split("e")
            mantissa += "" if "." in mantissa else ".0"
            exponent = exponent if exponent[:1] in "+-" else "+" + exponent
            hint_text = (
                " (YAML reads an exponent as a number only with a decimal point and a signed "
                f"exponent: write {mantissa}e{exponent})"
            )
        raise SpecFileError(
            f"{where}: {name} must be {_describe(hint)}, got {_show(value)}{hint_text}"
        )
    rule = _RULES.get(name)
    if rule is not None and isinstance(value, (int, float, type(None))) and not rule[0](value):
        raise SpecFileError(f"{where}: {name} {rule[1]}, got {_show(value)}")


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` (spec data: lists, not tuples) is of the annotated type. Booleans are
    only booleans, integers never booleans, and a float argument takes an integer too."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    args = typing.get_args(hint)
    if _is_union(hint):
        return any(_fits(a, value) for a in args)
    if typing.get_origin(hint) in (Sequence, list, tuple) and args:
        return isinstance(value, (list, tuple)) and all(_fits(args[0], v) for v in value)
    return True  # a type this table does not know: the constructor checks it


def _is_union(hint: Any) -> bool:
    import types

    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any, plural: bool = False) -> str:
    """A type in words: ``int | Sequence[int]`` is "an integer or a list of integers"."""
    words = {
        bool: ("true or false", "booleans"),
        int: ("an integer", "integers"),
        float: ("a finite number", "finite numbers"),
        str: ("a string", "strings"),
        type(None): ("null", "nulls"),
    }
    if hint in words:
        return words[hint][plural]
    if _is_union(hint):
        parts = [_describe(a, plural) for a in typing.get_args(hint)]
        text = " or ".join(parts)
        return f"({text})" if plural else text
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (Sequence, list, tuple) and args:
        inner = _describe(args[0], plural=True)
        return f"lists of {inner}" if plural else f"a list of {inner}"
    return "values" if plural else "a value"


# ---- writing ------------------------------------------------------------------------------


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
