"""Where a model named on the command line comes from: the zoo, a Python file, torchvision or
a spec file.

``path/to/file.py:attr`` runs the file, as ``python path/to/file.py`` would (its top level and,
for a class or a factory function, that call): name only files you trust. An error in that code
comes out as one message naming the exception and the file's line (``UserCodeError``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConvScopeError


class UserCodeError(ConvScopeError):
    """The user's model file raised an exception: its type, message and line."""


def _where(error: BaseException, file: Path) -> str:
    """``file:line`` of the innermost frame of ``error``'s traceback that lies in ``file`` (a
    SyntaxError's own line), or "" when none does."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f"{file}:{error.lineno}"
    target = file.resolve()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename and Path(frame.filename).resolve() == target
    ]
    return f"{file}:{lines[-1]}" if lines else ""


def _user_error(error: BaseException, file: Path, doing: str) -> UserCodeError:
    """One line: what convscope was doing, the exception, and where in the user's file."""
    where = _where(error, file)
    said = error.msg if isinstance(error, SyntaxError) else str(error)  # without its "(line 1)"
    text = str(said).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return UserCodeError(f"{doing}: {detail}" + (f" (at {where})" if where else ""))


def _model_file(ref: str) -> Path | None:
    """The Python file of a ``path/to/file.py:attr`` reference (None for other references)."""
    path, _, attr = ref.rpartition(":")
    return Path(path) if path.endswith(".py") and attr else None


@contextlib.contextmanager
def user_code_errors(ref: str) -> Iterator[None]:
    """Around work that runs a model from a Python file (tracing its forward): an exception
    raised in that file becomes a ``UserCodeError``; convscope's own errors pass through."""
    file = _model_file(ref)
    try:
        yield
    except ConvScopeError as error:
        # the adapter names a failing forward; add the line of the user's file it failed on
        cause = error.__cause__ or error.__context__
        where = _where(cause, file) if file is not None and cause is not None else ""
        if not where or where in str(error):
            raise
        raise type(error)(f"{error} (at {where})") from error
    except Exception as error:
        if file is None or not _where(error, file):
            raise
        raise _user_error(error, file, f"{ref}: running the model") from error


def _available(module: ModuleType) -> list[str]:
    """The names a file defines that could be a model: classes, functions and instances
    (not the modules it imports, nor private names)."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
    ]


def _load_file(ref: str, file: Path, attr: str) -> Any:
    """Runs ``file`` and returns its ``attr`` (called when a class or a function)."""
    if not file.is_file():
        raise ConvScopeError(
            f"no such file: {file}" if not file.exists() else f"not a file: {file}"
        )
    spec = importlib.util.spec_from_file_location(file.stem, file)
    if spec is None or spec.loader is None:
        raise ConvScopeError(f"{file}: cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # the user's code: anything may come out of it
        raise _user_error(error, file, f"{file} failed when run") from error
    if not hasattr(module, attr):
        names = _available(module)
        listed = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
        raise ConvScopeError(
            f"{file} defines no {attr!r}; it defines: {listed}"
            if names
            else f"{file} defines no {attr!r} (nor anything else public)"
        )
    value = getattr(module, attr)
    if isinstance(value, (type, type(load_model))):
        try:
            value = value()  # a class or a factory function
        except (Exception, SystemExit) as error:
            raise _user_error(error, file, f"{ref}() failed") from error
    return value


def load_model(ref: str) -> Any:
    """A zoo name (returned as is: the summary builds it), ``torchvision:NAME``,
    ``path/to/file.py:attr`` (a module, or a class or function returning one: the file is run),
    or a spec file."""
    if ref.startswith("torchvision:"):
        try:
            import torchvision.models as tv
        except Exception as error:  # torchvision missing or broken beside this torch
            raise ConvScopeError(f"{ref}: torchvision cannot be imported ({error})") from error
        name = ref.split(":", 1)[1]
        if not name.isidentifier() or not callable(getattr(tv, name, None)):
            raise ConvScopeError(f"{ref}: torchvision.models has no model {name!r}")
        try:
            return getattr(tv, name)(weights=None)
        except Exception as error:  # a name that is no model builder (get_weight, ...)
            raise ConvScopeError(f"{ref}: {type(error).__name__}: {error}") from None
    file = _model_file(ref)
    if file is not None:
        return _load_file(ref, file, ref.rpartition(":")[2])
    if ref.endswith((".json", ".yaml", ".yml")):
        from .specfile import load_spec

        return load_spec(ref)
    return ref  # a zoo name
