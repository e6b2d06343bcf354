"""The shape of the code that the registry depends on: no import cycle, every spec class
registered, one layer grammar and one output switch for every command."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest

import convscope
from convscope import registry
from convscope.cli import main
from convscope.ops.base import Op

SRC = Path(convscope.__file__).parent


def module_imports(path: Path) -> set[str]:
    """The convscope modules a file imports when it is imported (not under TYPE_CHECKING, not
    inside a function)."""
    name = ".".join(("convscope", *path.relative_to(SRC).with_suffix("").parts))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {t.removesuffix(".__init__") for t in targets if t.startswith("convscope")}
    return found


def test_no_import_cycle():
    files = {p: ".".join(("convscope", *p.relative_to(SRC).with_suffix("").parts))
             for p in SRC.rglob("*.py")}  # fmt: skip
    names = {n.removesuffix(".__init__") for n in files.values()}
    graph = {files[p].removesuffix(".__init__"): module_imports(p) & names for p in files}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node or node.startswith(nxt + "."):  # a package's own module
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_spec_class_belongs_to_a_family():
    from convscope import ops

    registered = {spec for family in registry.families() for spec in family.specs}
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"convscope.ops.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            leaf = not cls.__subclasses__()
            if issubclass(cls, Op) and cls is not Op and cls.__module__ == module.__name__ and leaf:
                assert cls in registered, f"{cls.__name__} is defined but not registered"


@pytest.mark.parametrize(
    "argv",
    [
        ["pool", "--input", "8x32x32", "--kind", "max", "--kernel", "2", "--analyze",
         "--next-conv", "c=8 k=3 p=1:2,0:1"],
        ["conv", "--input", "8x16x16", "--out-channels", "8", "--kernel", "3",
         "--padding", "1:2,0:1"],
        ["compose", "conv k=3 p=1:2,0:1 c=8", "--input", "8x16x16"],
        ["conv", "--input", "2x9", "--out-channels", "2", "--kernel", "3", "--padding", "-1",
         "--padding-mode", "reflect"],
        ["compose", "conv k=3 p=-1 mode=reflect", "--input", "2x9"],
        ["conv", "--input", "2x9x9", "--out-channels", "2", "--kernel", "3,5", "--padding", "same"],
        ["compose", "conv k=3,5 p=same", "--input", "2x9x9"],
    ],
)  # fmt: skip
def test_every_command_takes_the_same_spellings(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out


def test_a_negative_pad_is_refused_where_the_layer_refuses_it(capsys):
    for argv in (
        ["conv", "--input", "2x9", "--out-channels", "2", "--kernel", "3", "--padding", "-1"],
        ["compose", "conv k=3 p=-1", "--input", "2x9"],
        ["pool", "--input", "2x9", "--kernel", "3", "--analyze", "--next-conv", "c=2 k=3 p=-1"],
    ):
        assert main(argv) == 2
        assert "padding must be >= 0" in capsys.readouterr().err


COMMANDS = [
    ["conv", "--input", "3x8x8", "--out-channels", "4", "--kernel", "3"],
    ["pool", "--input", "3x8x8", "--kernel", "2"],
    ["pool", "--input", "3x8x8", "--kernel", "2", "--analyze", "--trials", "2", "--shifts", "1"],
    ["linear", "--input", "16", "--out-features", "4"],
    ["conv-transpose", "--input", "3x4x4", "--out-channels", "2", "--kernel", "3"],
    ["summary", "lenet5"],
    ["compose", "conv k=3", "conv k=3", "--input", "1x8x8"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("switch", [[], ["--markdown"], ["--json"], ["--csv"], ["--explain"]])
def test_one_output_switch_serves_every_command(argv, switch, capsys):
    assert main([*argv, *switch]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if switch == ["--json"]:
        assert isinstance(json.loads(out), dict)
    elif switch == ["--csv"]:
        rows = out.splitlines()
        assert len(rows) >= 2 and all(row.count(",") == rows[0].count(",") for row in rows)
    elif switch == ["--markdown"]:
        assert "|" in out or "```" in out
    elif switch == ["--explain"]:
        assert " = " in out  # a worked formula
