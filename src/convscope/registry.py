"""The registry of operation families: each family declares every face once, in its own file
under ``convscope/ops/``, and every consumer reads it from here.

``nn`` and ``functional`` export what the families declare; spec files, the summary, compose,
the PyTorch adapter and the CLI look operations up here. None of them keeps a list of op
classes. A face a family does not have is an explicit ``NotSupported`` with the reason, never a
silent default, and ``register`` refuses a family that leaves a face out.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConvScopeError
from .geometry import Shape
from .ops.base import FACES, Op

if TYPE_CHECKING:
    from .grammar import LayerKind
    from .module import Module


@dataclass(frozen=True)
class NotSupported:
    """A face a family does not have, and why."""

    reason: str


@dataclass(frozen=True)
class SpecFileLayer:
    """A layer a spec file may name: the module it builds and the constructor argument that the
    running shape supplies (``in_channels`` from axis 0, ``in_features`` from the last)."""

    module: type[Module]
    inferred: str | None = None
    axis: int = 0


class Unsupported(ConvScopeError):
    """A traced PyTorch call that a family's mapping cannot count; the message says why."""


@dataclass(frozen=True)
class Tensor:
    """A tensor operand of a traced call, computed from the model's input (shape without the
    batch)."""

    shape: Shape
    dtype: str = "float32"


@dataclass(frozen=True)
class Constant:
    """A tensor operand of a traced call that is not computed from the input: a parameter or
    buffer, or a tensor built from them (full shape, no batch axis); ``reads`` names them."""

    shape: Shape
    reads: tuple[str, ...] = ()
    dtype: str = "float32"


@dataclass(frozen=True)
class TorchCall:
    """One traced call as the adapter hands it to a family, without torch: tensor operands
    computed from the input are ``Tensor`` placeholders, in ``operands`` in order, other
    tensors (parameters) ``Constant`` placeholders, and the arguments after the first operand
    are in ``args`` and ``kwargs``."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    operands: tuple[Shape, ...]
    output: Shape
    leading: tuple[Any, ...] = ()  # arguments before the first operand (addmm's bias)
    group: tuple[Any, ...] = ()  # a list of tensors given as the first argument (cat's), in order

    @property
    def rank(self) -> int:
        """The rank of the first operand, the batch axis included (PyTorch's numbering)."""
        return len(self.operands[0]) + 1

    def bind(self, *names_defaults: tuple[str, Any]) -> list[Any]:
        """The arguments after the first operand, by position or keyword, with defaults."""
        return [
            self.args[i] if i < len(self.args) else self.kwargs.get(name, default)
            for i, (name, default) in enumerate(names_defaults)
        ]


#: A torch.nn module's spec (None: the module is its input, as Identity).
ModuleRule = Callable[[Any], Op | None]
#: A traced function or method call's spec (None: the call is its first operand).
CallRule = Callable[[TorchCall], Op | None]


def constant(value: Any, what: str, optional: bool = False) -> Constant | None:
    """A call's argument that must be a parameter (or None when ``optional``): a weight computed
    from the input (a dynamic layer) has no fixed count."""
    if value is None and optional:
        return None
    if not isinstance(value, Constant):
        raise Unsupported(f"its {what} is computed from the input, not a parameter")
    return value


def present(value: Any) -> bool:
    """A torch attribute that holds a tensor or None (``bias``), as the flag it was built with."""
    return value is not None


def mirror(cls: type[Module], **convert: Callable[[Any], Any]) -> ModuleRule:
    """The rule for a torch.nn class whose twin is ``cls`` (same constructor arguments): ``cls``
    built from the torch module's attributes of those names, each passed through ``convert``
    where given. An argument of torch's constructor that ``cls`` does not take must hold torch's
    default, or the module is unsupported, naming it."""
    ours = inspect.signature(cls.__init__).parameters

    def rule(module: Any) -> Op:
        # a subclass (timm's, a user's) is read through the torch.nn class it extends
        base = next(
            (
                c
                for c in type(module).__mro__
                if c.__name__ == cls.__name__ and "torch" in c.__module__
            ),
            type(module),
        )
        theirs = inspect.signature(base.__init__).parameters
        kwargs = {}
        for name, param in theirs.items():
            if name in ("self", "device", "dtype") or param.kind in (
                param.VAR_POSITIONAL,
                param.VAR_KEYWORD,
            ):
                continue
            value = getattr(module, name, param.default)
            if name in convert:
                value = convert[name](value)
            elif isinstance(param.default, bool) and not isinstance(value, bool):
                value = present(value)  # a flag stored as a tensor or None (bias)
            if name in ours:
                kwargs[name] = value
            elif param.default is not param.empty and value != param.default:
                raise Unsupported(f"{name}={value!r}")
        return cls(**kwargs).spec

    return rule


@dataclass(frozen=True)
class TorchMapping:
    """How a family's PyTorch twins map to its specs. ``modules`` is keyed by torch.nn class
    name; ``functions`` by dotted path (``torch.nn.functional.relu``, ``operator.add``) or by
    Tensor method (``Tensor.relu``)."""

    modules: Mapping[str, ModuleRule] = field(default_factory=dict)
    functions: Mapping[str, CallRule] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """One operation family and all of its faces.

    ``specs`` hold the rules (shape, parameters, costs, working, receptive field, linear map);
    ``modules`` the ``nn`` classes and ``functional`` the engine's forward/backward pairs, both
    by public name; ``spec_file`` the layer keys of spec files; ``torch`` the PyTorch mapping;
    ``kinds`` the layer kinds of the grammar (layer text and CLI calculators).
    """

    name: str
    specs: tuple[type[Op], ...]
    modules: Mapping[str, type[Module]] | NotSupported
    functional: Mapping[str, Callable[..., Any]] | NotSupported
    spec_file: Mapping[str, SpecFileLayer] | NotSupported
    torch: TorchMapping | NotSupported
    kinds: tuple[LayerKind, ...] = ()


_FAMILIES: dict[str, Family] = {}
_LOADED = False


def register(family: Family) -> Family:
    """Adds a family after checking that it declares every face."""
    problems = list(_problems(family))
    if problems:
        raise TypeError(f"operation family {family.name!r} is incomplete: {'; '.join(problems)}")
    _FAMILIES[family.name] = family
    _TABLES.clear()
    return family


def _problems(family: Family) -> Iterator[str]:
    if family.name in _FAMILIES:
        yield "its name is registered already"
    if not family.specs:
        yield "it has no spec class"
    known = {spec for f in _FAMILIES.values() for spec in f.specs}
    for spec in family.specs:
        if spec in known:
            yield f"{spec.__name__} belongs to another family"
        for face in FACES:
            if getattr(spec, face) is getattr(Op, face):
                yield f"{spec.__name__} does not define {face}"
    if isinstance(family.functional, Mapping):
        for name in family.functional:
            if not name.endswith("_backward") and f"{name}_backward" not in family.functional:
                yield f"the forward {name} has no {name}_backward"
    if isinstance(family.spec_file, Mapping) and isinstance(family.modules, Mapping):
        ours = set(family.modules.values())
        for key, layer in family.spec_file.items():
            if layer.module not in ours:
                yield f"spec-file key {key!r} builds {layer.module.__name__}, none of its modules"
    taken = {k.name for f in _FAMILIES.values() for k in f.kinds}
    for kind in family.kinds:
        if kind.name in taken:
            yield f"layer kind {kind.name!r} is another family's"


def by_name(*items: Any) -> dict[str, Any]:
    """Classes or functions keyed by their ``__name__``."""
    return {item.__name__: item for item in items}


def register_twins(
    name: str,
    spec: type[Op],
    modules: Sequence[type[Module]],
    functional: Sequence[Callable[..., Any]],
    inferred: str | None = None,
    axis: int = 0,
    functions: Mapping[str, CallRule] | None = None,
    kinds: tuple[LayerKind, ...] = (),
) -> Family:
    """Registers a family whose modules are the twins of torch.nn's classes of the same names:
    a spec file names each in lower case (the running shape's ``axis`` supplying ``inferred``),
    and the adapter maps each torch class through ``mirror``."""
    twins = by_name(*modules)
    return register(
        Family(
            name,
            (spec,),
            twins,
            by_name(*functional),
            {key.lower(): SpecFileLayer(cls, inferred, axis) for key, cls in twins.items()},
            TorchMapping({key: mirror(cls) for key, cls in twins.items()}, functions or {}),
            kinds,
        )
    )


def families() -> list[Family]:
    """Every registered family, after importing every module of ``convscope.ops``."""
    global _LOADED
    if not _LOADED:
        from . import ops

        for info in pkgutil.iter_modules(ops.__path__):
            importlib.import_module(f"{ops.__name__}.{info.name}")
        _LOADED = True
    return list(_FAMILIES.values())


def family_of(spec: Op | type[Op]) -> Family:
    """The family a spec (or spec class) belongs to."""
    cls = spec if isinstance(spec, type) else type(spec)
    for family in families():
        if cls in family.specs:
            return family
    raise ConvScopeError(f"{cls.__name__} belongs to no registered operation family")


#: The merged tables, built once per registry state (``register`` clears them): the adapter
#: and spec files look one up per layer.
_TABLES: dict[str, dict[str, Any]] = {}


def _merged(
    what: str, face: Callable[[Family], Mapping[str, Any] | NotSupported]
) -> dict[str, Any]:
    """``face`` of every family in one table; a name declared by two families is an error."""
    if what in _TABLES:
        return _TABLES[what]
    out: dict[str, Any] = {}
    for face_of_family in map(face, families()):
        if not isinstance(face_of_family, Mapping):
            continue
        clash = set(out) & set(face_of_family)
        if clash:
            raise TypeError(f"{what} {sorted(clash)} declared by two families")
        out.update(face_of_family)
    _TABLES[what] = out
    return out


def modules() -> dict[str, type[Module]]:
    """Every ``nn`` layer class, by its public name."""
    return _merged("nn names", lambda f: f.modules)


def functional() -> dict[str, Callable[..., Any]]:
    """Every forward and backward function of the engine, by its public name."""
    return _merged("functional names", lambda f: f.functional)


def spec_file_layers() -> dict[str, SpecFileLayer]:
    """Every layer key a spec file may use."""
    return _merged("spec-file keys", lambda f: f.spec_file)


def torch_twins() -> dict[str, type[Module]]:
    """The ``nn`` classes whose family maps the ``torch.nn`` class of the same name to them:
    what ``convscope.export`` moves to and from PyTorch."""

    def twins(family: Family) -> Mapping[str, type[Module]] | NotSupported:
        if not isinstance(family.modules, Mapping) or not isinstance(family.torch, TorchMapping):
            return NotSupported("no torch twins")
        return {n: c for n, c in family.modules.items() if n in family.torch.modules}

    return _merged("torch twins", twins)


def torch_modules() -> dict[str, ModuleRule]:
    """Every torch.nn class name the adapter maps, with its rule."""
    return _merged("torch.nn classes", lambda f: _rules(f, "modules"))


def torch_functions() -> dict[str, CallRule]:
    """Every traced function path or Tensor method the adapter maps, with its rule."""
    return _merged("torch functions", lambda f: _rules(f, "functions"))


def _rules(family: Family, kind: str) -> Mapping[str, Any] | NotSupported:
    return getattr(family.torch, kind) if isinstance(family.torch, TorchMapping) else family.torch


def layer_kinds() -> dict[str, LayerKind]:
    """Every layer kind of the grammar, by name."""
    return _merged("layer kinds", lambda f: {kind.name: kind for kind in f.kinds})


def export(
    namespace: dict[str, Any], declared: Mapping[str, Any], *own: Any
) -> tuple[list[str], Callable[[], list[str]]]:
    """Publishes what the families ``declared`` in a module's ``namespace`` beside its ``own``
    classes and functions: the module's ``__all__`` (its own first) and ``__dir__``."""
    namespace.update(declared)
    names = [item.__name__ for item in own] + list(declared)
    return names, lambda: sorted(names)


def module_for(spec: Op) -> Module:
    """A module of the spec's family that runs ``spec``: the family's class of the spec's name,
    built from the spec's fields of its constructor's argument names."""
    family = family_of(spec)
    modules = family.modules if isinstance(family.modules, Mapping) else {}
    cls = modules.get(spec.name)
    if cls is None:
        raise ConvScopeError(f"{spec.name} has no module: {family.name} runs in graphs only")
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return cls(**{name: getattr(spec, name) for name in names})
