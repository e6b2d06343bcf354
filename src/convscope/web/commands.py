"""The web API's one path to the answers: a query string becomes a command line, and the
command line runs through ``convscope.cli.execute`` (or, for pictures, the CLI's own parser and
layer builder), so the web answers exactly what the CLI prints.

Query keys are the CLI's option names with underscores for dashes (``--out-channels`` is
``out_channels``) plus its positional arguments (``layers`` of ``compose``, ``model`` of
``summary``). A switch (``--no-bias``) takes ``1``/``true``/``yes``/``on`` to set it and
``0``/``false``/``no``/``off`` to leave it out. The output switches (``--json``, ``--markdown``,
``--csv``) are not keys: the API always answers JSON.

Everything here is blocking; the app runs it in a thread pool.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli import (
    ANALYZE_ONLY,
    CommandLineError,  # the CLI's own one-line usage error, so the web says the same line
    calculator_layer,
    execute,
    make_parser,
    model_input,
    one_line,
)
from ..errors import ConvScopeError
from ..grammar import shown

#: The calculators the web serves, in the order the calculator page lists them.
CALCULATORS = ("conv", "conv-transpose", "pool", "linear")
#: The layers ``/api/draw/...`` draws (the CLI's ``draw`` subcommands) and their formats.
DRAWN_LAYERS = ("conv", "conv-transpose", "pool")
LAYER_FORMATS = {"svg": "image/svg+xml", "png": "image/png", "gif": "image/gif"}
NETWORK_FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
#: The largest spec file accepted over the web (the CLI's own limit is larger).
MAX_UPLOAD_BYTES = 1 << 20
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
SWITCH_ON = frozenset({"1", "true", "yes", "on"})
SWITCH_OFF = frozenset({"0", "false", "no", "off"})
#: CLI options that are not query keys: the API picks the output format and the file itself.
NOT_KEYS = frozenset({"help", "json", "markdown", "csv", "out"})
#: A zoo name: the only model reference the web takes by name (never a file, never code).
ZOO_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The pool analysis' own options: on the pooling page, not the calculator.
POOL_ANALYSIS_KEYS = ("analyze", *ANALYZE_ONLY)


class WebError(Exception):
    """Bad input: the one-line message (as the CLI prints it) and the HTTP status."""

    def __init__(self, line: str, status: int = 400) -> None:
        super().__init__(line)
        self.line = line
        self.status = status


def error_line(command: str, message: str) -> str:
    """A message in the CLI's form: ``convscope conv: error: ...``, one clipped line."""
    return f"convscope {command}: error: {one_line(message)}"


@dataclass(frozen=True)
class QueryKey:
    """One query key: the CLI argument it stands for."""

    name: str  # out_channels
    flag: str | None  # --out-channels; None for a positional argument
    switch: bool  # a flag without a value (--no-bias)
    many: bool  # a positional taking several values (compose's layers): the key repeats
    help: str
    choices: tuple[str, ...]
    required: bool
    default: Any


def _subcommand(parser: argparse.ArgumentParser, names: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``convscope NAME [NAME ...]`` (``("draw", "conv")``)."""
    for name in names:
        # argparse keeps its subcommands on a private action; the CLI is built only with it
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@functools.cache
def query_keys(*command: str) -> dict[str, QueryKey]:
    """The query keys of ``convscope COMMAND``, read from the CLI's own parser, in its order."""
    keys: dict[str, QueryKey] = {}
    for action in _subcommand(make_parser(), command)._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        long = next((s for s in action.option_strings if s.startswith("--")), None)
        name = action.dest if long is None else long[2:].replace("-", "_")
        if name in NOT_KEYS:
            continue
        keys[name] = QueryKey(
            name=name,
            flag=long,
            switch=long is not None and action.nargs == 0,
            many=long is None and action.nargs in ("+", "*"),
            help=action.help or "",
            choices=tuple(action.choices or ()),
            required=bool(action.required),
            default=action.default,
        )
    return keys


def command_argv(
    command: Sequence[str], items: Sequence[tuple[str, str]], extra: Sequence[str] = ()
) -> list[str]:
    """The command line a query stands for: ``command``, its options (``--flag=value``, so a
    value starting with a dash stays a value), ``extra``, then ``--`` and the positionals."""
    keys = query_keys(*command)
    where = " ".join(command)
    options: list[str] = []
    positionals: list[str] = []
    seen: set[str] = set()
    for name, value in items:
        key = keys.get(name)
        if key is None:
            raise WebError(
                error_line(
                    where,
                    f"unknown query key {shown(name)}; {where} takes: {', '.join(keys)}",
                )
            )
        if name in seen and not key.many:
            raise WebError(error_line(where, f"query key {shown(name)} is given twice"))
        seen.add(name)
        if key.flag is None:
            positionals.append(value)
        elif key.switch:
            word = value.strip().lower()
            if word in SWITCH_ON:
                options.append(key.flag)
            elif word not in SWITCH_OFF:
                raise WebError(
                    error_line(where, f"{name} takes 1 or 0 (true or false), got {shown(value)}")
                )
        else:
            options.append(f"{key.flag}={value}")
    return [*command, *options, *extra, *(["--", *positionals] if positionals else [])]


def run_text(argv: Sequence[str], flags: Sequence[str], hide: str | None = None) -> str:
    """What ``convscope ARGV`` prints with the output ``flags`` (put before any ``--``); a
    WebError with the CLI's one line on bad input. ``hide``: a private folder to leave out of
    every text."""
    buffer = io.StringIO()
    split = list(argv).index("--") if "--" in argv else len(argv)
    code, message = execute([*argv[:split], *flags, *argv[split:]], buffer.write)
    if message is not None:
        raise WebError(_hidden(message, hide))
    if code != 0:  # --help, say: not reachable from a query, but never answer half a result
        raise WebError(error_line(argv[0], f"the command ended with status {code}"))
    return _hidden(buffer.getvalue(), hide)


def run_json(argv: Sequence[str], hide: str | None = None) -> str:
    """``convscope ARGV --json``'s answer (without the trailing newline)."""
    return run_text(argv, ["--json"], hide).removesuffix("\n")


MATHML = "http://www.w3.org/1998/Math/MathML"


def safe_mathml(markup: str) -> str | None:
    """``markup`` re-serialised when it is well-formed XML of MathML elements only, else None.
    latex2mathml copies ``\\text{...}`` verbatim, so its output is checked before a page puts
    it in the document: every element in the MathML namespace, no attribute that runs code."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(markup)
    except ET.ParseError:
        return None
    for element in root.iter():
        if not element.tag.startswith(f"{{{MATHML}}}"):
            return None
        if any(name.lower().startswith("on") or "href" in name.lower() for name in element.attrib):
            return None
    ET.register_namespace("", MATHML)
    return ET.tostring(root, encoding="unicode")


def worked_explanation(argv: Sequence[str]) -> list[dict[str, Any]]:
    """``convscope ARGV --markdown --explain``'s worked explanation as sections: a title, then
    items that are a formula (its LaTeX as MathML, which browsers render natively) or a
    sentence. A WebError with the CLI's one line on bad input."""
    from latex2mathml.converter import convert

    sections: list[dict[str, Any]] = []
    for line in run_text(argv, ["--markdown", "--explain"]).splitlines():
        line = line.strip()
        if line.startswith("### "):
            sections.append({"title": line[4:], "items": []})
        elif not sections or not line or line.startswith("|"):
            continue  # the answer's tables come before the working
        elif line.startswith("$$") and line.endswith("$$") and len(line) > 4:
            math = safe_mathml(convert(line[2:-2], display="block"))
            sections[-1]["items"].append({"math": math} if math else {"text": line[2:-2]})
        else:
            sections[-1]["items"].append({"text": line})
    return sections


def _hidden(text: str, folder: str | None) -> str:
    """``text`` without the private upload folder's path (the file's own name stays)."""
    return text if folder is None else text.replace(folder + os.sep, "")


def check_zoo_name(command: str, model: str) -> None:
    """Refuse every model reference but a zoo name: over the web, never a file on the server,
    a Python file (``FILE.py:attr`` runs code) nor ``torchvision:``."""
    if not ZOO_NAME.fullmatch(model):
        raise WebError(
            error_line(
                command,
                f"the web takes a zoo model name or an uploaded spec file (POST), "
                f"not {shown(model)}",
            )
        )


def model_items(command: str, items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A GET query naming a model: its ``model`` must be a zoo name."""
    for name, value in items:
        if name == "model":
            check_zoo_name(command, value)
    return list(items)


@contextlib.contextmanager
def uploaded_spec(data: bytes, suffix: str, filename: str | None) -> Iterator[tuple[Path, str]]:
    """The upload as a file in a private temporary folder (mode 700), removed afterwards: its
    path and the folder (to hide from messages). The file is read as data by the spec loader,
    never imported."""
    stem = Path(filename or "").stem
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64].strip(".") or "upload"
    folder = tempfile.mkdtemp(prefix="convscope-upload-")
    try:
        path = Path(folder) / f"{stem}{suffix}"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(data)
        yield path, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spec_suffix(filename: str | None, content_type: str, data: bytes) -> str:
    """The upload's suffix: its file name's, else its content type's, else JSON when it starts
    like JSON and YAML otherwise (the spec loader reads both)."""
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in SPEC_SUFFIXES:
            return suffix
        if suffix:
            raise WebError(
                error_line(
                    "summary",
                    f"a spec file is .json, .yaml or .yml, got {shown(Path(filename).name)}",
                )
            )
    if "json" in content_type:
        return ".json"
    if "yaml" in content_type:
        return ".yaml"
    return ".json" if data.lstrip().startswith((b"{", b"[")) else ".yaml"


# -- pictures ------------------------------------------------------------------------------------


def _picture_format(command: str, items: list[tuple[str, str]], formats: dict[str, str]) -> str:
    """Takes ``format`` out of ``items``; svg by default."""
    given = [value for name, value in items if name == "format"]
    items[:] = [(name, value) for name, value in items if name != "format"]
    if len(given) > 1:
        raise WebError(error_line(command, "query key 'format' is given twice"))
    fmt = given[0].lower() if given else "svg"
    if fmt not in formats:
        raise WebError(
            error_line(command, f"format must be {' or '.join(formats)}, got {shown(given[0])}")
        )
    return fmt


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    try:
        return make_parser().parse_args(argv)
    except CommandLineError as error:
        raise WebError(error.line) from None
    except SystemExit as done:  # --help: not a query key, so not reachable
        raise WebError(error_line(argv[0], f"the command ended with status {done.code}")) from None


def _drawing_module(name: str) -> Any:
    """``convscope.draw.<name>``, imported on first use (it loads Pillow or matplotlib)."""
    return importlib.import_module(f"convscope.draw.{name}")


def _as_bytes(picture: str | bytes) -> bytes:
    return picture.encode() if isinstance(picture, str) else picture


def layer_picture(kind: str, query: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """``/api/draw/KIND``: the layer's picture (``format`` svg, png or gif) and media type,
    the layer built as ``convscope draw KIND ...`` builds it."""
    items = list(query)
    fmt = _picture_format(f"draw {kind}", items, LAYER_FORMATS)
    args = _parse(command_argv(("draw", kind), items, ("--out", f"picture.{fmt}")))
    try:
        layer, shape = calculator_layer(args)
        draw = getattr(_drawing_module("layer"), f"layer_{fmt}")
        picture = draw(
            layer,
            shape,
            batch=1 if args.batch is None else args.batch,
            count=args.count,
            pass_=args.pass_,
            frames=args.frames,
        )
    except ConvScopeError as error:  # a bad layer, or a drawing too big to draw
        raise WebError(error_line("draw", str(error))) from None
    return _as_bytes(picture), LAYER_FORMATS[fmt]


def network_picture(query: Sequence[tuple[str, str]], hide: str | None = None) -> tuple[bytes, str]:
    """``/api/draw/summary``: a network's receptive field, costs and memory per layer
    (``format`` png or svg), analysed as ``convscope draw summary ...`` does."""
    from ..model_source import load_model
    from ..summary import summary

    items = list(query)
    fmt = _picture_format("draw summary", items, NETWORK_FORMATS)
    args = _parse(command_argv(("draw", "summary"), items, ("--out", f"picture.{fmt}")))
    try:
        model = load_model(args.model)
        report = summary(model, model_input(args, model), args.batch, "exact")
        picture = _drawing_module("network").network_figure(report, fmt)
    except ConvScopeError as error:
        raise WebError(_hidden(error_line("draw", str(error)), hide)) from None
    except OSError as error:
        raise WebError(_hidden(error_line("draw", error.strerror or str(error)), hide)) from None
    return _as_bytes(picture), NETWORK_FORMATS[fmt]


def parse_answer(text: str) -> Any:
    """A JSON answer as Python data (the server-side first render)."""
    return json.loads(text)
