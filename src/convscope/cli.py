"""The ``convscope`` command: a thin layer over the Python API.

The calculators (``conv``, ``conv-transpose``, ``pool``, ``linear``, ...) are the layer kinds
the operation families declare; their options are the layer grammar's (``convscope.grammar``).
Every answer is printed by the one renderer (``convscope.render``) in the format the output
switch picks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import registry
from .errors import ConvScopeError
from .grammar import Context, LayerKind, parse_padding, parse_shape, shown, to_int
from .render import render
from .render.documents import (
    analysis_document,
    composition_document,
    pool_analysis_document,
    summary_document,
)

EXIT_USAGE = 2
Write = Callable[[str], Any]

__all__ = ["main", "make_parser", "parse_padding", "parse_shape"]


class UsageError(ConvScopeError):
    """A malformed command-line value."""


MESSAGE_LIMIT = 500  # characters of one error line: a hostile value must not flood the terminal


def one_line(message: str) -> str:
    """One line of at most ``MESSAGE_LIMIT`` characters."""
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


class CommandLineError(Exception):
    """A usage error found by argparse, with the (sub)command it belongs to."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.line = f"{prog}: error: {one_line(message)} (see {prog} --help)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one short line (exit 2), like every other error of the
    command, and never echoes a value of unbounded length."""

    def error(self, message: str) -> Any:  # argparse's signature: it never returns
        raise CommandLineError(self.prog, message)


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum`` (and <= ``maximum``) of at most ``MAX_DIGITS``
    digits."""

    def parse(text: str) -> int:
        try:
            value = to_int(text, "the value")
        except ConvScopeError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0 (a learning rate)."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {shown(text)}")
    return value


def _output(parser: argparse.ArgumentParser, explain: str) -> None:
    """The one output switch: a table by default, or Markdown, JSON or CSV; and the working."""
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", dest="format", action="store_const", const="json", help="print one JSON object"
    )
    fmt.add_argument(
        "--markdown",
        dest="format",
        action="store_const",
        const="markdown",
        help="print Markdown (LaTeX formulas)",
    )
    fmt.add_argument(
        "--csv",
        dest="format",
        action="store_const",
        const="csv",
        help="print the main table as CSV",
    )
    parser.set_defaults(format="text")
    parser.add_argument("--explain", action="store_true", help=explain)


def _counting(
    parser: argparse.ArgumentParser, batch: int | None, shapes_show_batch: bool = True
) -> None:
    """``--batch`` (default ``batch``; None: given only to add the batch axis to the shapes
    shown, where ``shapes_show_batch``) and ``--count``."""
    shown = batch is None and shapes_show_batch
    parser.add_argument(
        "--batch",
        type=integer(1),
        default=batch,
        help="batch size N" + (" (adds the batch axis to shapes)" if shown else ""),
    )
    parser.add_argument(
        "--count",
        choices=("exact", "dense"),
        default="exact",
        help="exact: products with padding zeros are skipped (default); "
        "dense: as if run on the zero-padded input",
    )


def _input(parser: argparse.ArgumentParser, text: str, required: bool = True) -> None:
    parser.add_argument("--input", required=required, help=text)
    parser.add_argument(
        "--layout",
        choices=("chw", "hwc"),
        default="chw",
        help="order of --input: channels first (PyTorch, default) or last",
    )


def _layer_input(p: argparse.ArgumentParser, kind: LayerKind) -> None:
    """``--input`` and ``--layout`` as a layer kind reads them."""
    _input(
        p,
        "input shape C×H×W (or C×L, C×D×H×W), e.g. 10x64x64"
        if kind.ranks
        else "input shape (..., features), e.g. 512",
    )


def _layer_options(p: argparse.ArgumentParser, kind: LayerKind) -> None:
    """A layer kind's own options, from the grammar."""
    for option in kind.options:
        if option.flag is None:
            continue
        if option.switch is not None:
            p.add_argument(
                option.flag,
                dest=option.dest,
                action="store_const",
                const=option.switch,
                default=None,
                help=option.help,
            )
        else:
            p.add_argument(
                option.flag,
                dest=option.dest,
                default=None,
                help=option.help,
                required=option.required,
                choices=option.choices or None,
            )


def _calculator(sub: Any, kind: LayerKind) -> None:
    """A subcommand for one layer kind: its options from the grammar."""
    p = sub.add_parser(kind.name, help=kind.help)
    _layer_input(p, kind)
    _counting(p, None)
    _output(p, "add the worked derivations")
    _layer_options(p, kind)
    p.set_defaults(handler=run_calculator, calculator=kind.name)
    if kind.name == "pool":
        _pool_analysis_options(p)


#: The calculators ``convscope draw`` draws.
DRAWN_KINDS = ("conv", "conv-transpose", "pool")


def _draw_commands(sub: Any) -> None:
    """``convscope draw``: a layer's diagram or animation, a network's picture, training
    curves. The picture's format is the ``--out`` file's extension."""
    p = sub.add_parser("draw", help="pictures: a layer (SVG, PNG, GIF), a network, training curves")
    what = p.add_subparsers(dest="drawing", required=True)
    kinds = registry.layer_kinds()
    for name in DRAWN_KINDS:
        kind = kinds[name]
        q = what.add_parser(name, help=f"draw a {name} layer: {kind.help}")
        _layer_input(q, kind)
        _counting(q, None, shapes_show_batch=False)
        _layer_options(q, kind)
        q.add_argument("--out", required=True, help="the picture: FILE.svg, FILE.png or FILE.gif")
        q.add_argument(
            "--pass",
            dest="pass_",
            choices=("forward", "backward-input", "backward-weight"),
            default="forward",
            help="the pass to draw: the forward F, or the gradient G computes",
        )
        q.add_argument(
            "--frames",
            type=integer(1),
            default=None,
            help="at most this many animation frames (a frame per output row, or per several, "
            "once the positions exceed it)",
        )
        q.set_defaults(handler=run_draw_layer, calculator=name)

    q = what.add_parser("summary", help="a network's receptive field, costs and memory per layer")
    q.add_argument("model", help="as for summary: a zoo name, a spec file or FILE.py:attr")
    _input(q, "input shape C×H×W (default: the zoo model's own)", required=False)
    q.add_argument("--batch", type=integer(1), default=1, help="batch size N")
    q.add_argument("--out", required=True, help="the picture: FILE.png or FILE.svg")
    q.set_defaults(handler=run_draw_summary)

    q = what.add_parser("train", help="training curves from a run's metrics.json")
    q.add_argument("metrics", help="runs/NAME/metrics.json")
    q.add_argument("--out", required=True, help="the picture: FILE.png or FILE.svg")
    q.set_defaults(handler=run_draw_train)


ANALYZE_ONLY = ("next_conv", "seed", "trials", "shifts")


def _pool_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--analyze",
        action="store_true",
        help="what the pool keeps and loses (rank, zero gradients, an identical-output pair) and "
        "what it buys (memory, the next conv's cost, translation robustness)",
    )
    p.add_argument(
        "--next-conv",
        help="with --analyze: the conv that follows, in the layer grammar: 'c=64 k=3 s=1 p=1 "
        "d=1 g=1 bias=1' (c and k required; k, s, p, d per axis as 3,5; p per side as 1:2)",
    )
    p.add_argument(
        "--seed", type=integer(0), help="with --analyze: seeds the random inputs (default 0)"
    )
    p.add_argument("--trials", type=integer(1), help="with --analyze: random inputs (default 8)")
    p.add_argument(
        "--shifts", type=integer(1), help="with --analyze: largest shift in pixels (default 4)"
    )


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convscope",
        description="Exact, explained arithmetic for CNN layers: shapes, parameters and "
        "operation counts of the forward and backward passes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in registry.layer_kinds().values():
        if kind.calculator:
            _calculator(sub, kind)

    _draw_commands(sub)

    p = sub.add_parser("serve", help="a local web calculator (http://127.0.0.1:8000)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port", type=integer(0, 65535), default=8000, help="port, 0 to 65535 (default 8000)"
    )
    p.set_defaults(handler=run_serve)

    p = sub.add_parser("summary", help="a whole network's shapes, costs and receptive fields")
    p.add_argument(
        "model",
        help="a zoo name (e.g. resnet50), torchvision:NAME, path/to/file.py:attr (runs that "
        "file), or a spec file (.json, .yaml)",
    )
    _input(p, "input shape C×H×W (default: the zoo model's own)", required=False)
    _counting(p, 1)
    p.add_argument(
        "--depth", type=integer(0), help="show nested modules down to this depth (0: the top)"
    )
    _output(p, "add each layer's worked derivation")
    p.set_defaults(handler=run_summary)

    p = sub.add_parser("compose", help="stacked linear layers as one convolution (docs/compose.md)")
    p.add_argument("layers", nargs="+", help='layers in order, e.g. "conv k=5" "conv k=5 s=2 c=16"')
    _input(p, "input shape C×H×W (or C×L, C×D×H×W): counts, border positions", required=False)
    _counting(p, 1)
    _output(p, "add the worked derivation")
    p.set_defaults(handler=run_compose)

    p = sub.add_parser("train", help="train a LeNet-style CNN (default: the built-in digits)")
    p.add_argument("--epochs", type=integer(1), default=20)
    p.add_argument("--batch-size", type=integer(1), default=32)
    p.add_argument(
        "--lr", type=positive_float, default=0.005, help="peak learning rate (cosine-annealed to 0)"
    )
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--seed", type=integer(0), default=0, help="makes the run reproducible")
    p.add_argument("--data", help="a folder of MNIST/Fashion-MNIST IDX files or CIFAR-10 batches")
    p.add_argument("--out", default="runs/digits", help="folder for checkpoint.npz, metrics.json")
    p.add_argument("--resume", help="a checkpoint to continue from")
    p.add_argument("--limit", type=integer(1), help=argparse.SUPPRESS)
    p.add_argument(
        "--engine",
        choices=("numpy", "torch"),
        default="numpy",
        help="numpy: convscope's own engine (default); torch: the same run with PyTorch "
        "(pip install 'convscope[torch]')",
    )
    p.add_argument("--device", help="with --engine torch: a torch device, e.g. cpu or cuda")
    p.add_argument(
        "--workers",
        type=integer(1),
        help="with --engine torch: processes under torch.distributed (DDP, gloo backend)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(handler=run_train)

    p = sub.add_parser("predict", help="classify images with a trained checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", help=".npy, .npz (key 'images') or IDX file of N×H×W or N×C×H×W")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_predict)
    return parser


# -- handlers ------------------------------------------------------------------------------------


def run_calculator(args: argparse.Namespace, write: Write) -> None:
    """One layer from the command-line options, analysed (or, for pools, ``--analyze``)."""
    layer, shape = calculator_layer(args)
    if getattr(args, "analyze", False):
        run_pool_analysis(args, layer, shape, write)
        return
    given = [f"--{n.replace('_', '-')}" for n in ANALYZE_ONLY if getattr(args, n, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} need --analyze")
    batch_given = args.batch is not None
    analysis = layer.analyze(shape, args.batch if batch_given else 1, args.count, args.explain)
    write(render(analysis_document(analysis, batch_given), args.format))


def calculator_layer(args: argparse.Namespace) -> tuple[Any, tuple[int, ...]]:
    """The layer a calculator's (or ``draw``'s) options describe, and its input shape."""
    kind = registry.layer_kinds()[args.calculator]
    # A layer over the last axis (linear) reads the shape as written in either layout: with
    # hwc the last axis is the channels, and those are its features, as PyTorch's Linear on
    # a channels-last tensor. Only the spatial layers move the channels to the front.
    shape = parse_shape(args.input, args.layout if kind.ranks else "chw")
    ndim = len(shape) - 1
    if kind.ranks and ndim not in kind.ranks:
        raise UsageError(
            f"{kind.name} takes --input as C×L, C×H×W or C×D×H×W (1 to 3 spatial axes), got "
            f"{'×'.join(map(str, shape))}"
        )
    return kind.build(kind.parse_flags(vars(args)), Context(shape[0], ndim, shape)), shape


def run_draw_layer(args: argparse.Namespace, write: Write) -> None:
    """``draw conv|conv-transpose|pool``: the layer's diagram or animation, to ``--out``."""
    from .draw import draw_layer

    layer, shape = calculator_layer(args)
    written = draw_layer(
        layer,
        shape,
        Path(args.out),
        batch=1 if args.batch is None else args.batch,
        count=args.count,
        pass_=args.pass_,
        frames=args.frames,
    )
    write(f"wrote {written}\n")


def run_draw_summary(args: argparse.Namespace, write: Write) -> None:
    """``draw summary MODEL``: receptive field, costs and memory per layer, as a picture."""
    from .draw import draw_network
    from .model_source import load_model, user_code_errors
    from .summary import summary

    model = load_model(args.model)
    shape = model_input(args, model)
    with user_code_errors(args.model):
        report = summary(model, shape, args.batch, "exact")
    report.model = args.model  # the picture's title names what the user gave
    write(f"wrote {draw_network(report, Path(args.out))}\n")


def run_draw_train(args: argparse.Namespace, write: Write) -> None:
    """``draw train metrics.json``: loss and accuracy per epoch."""
    from .draw import draw_curves

    write(f"wrote {draw_curves(Path(args.metrics), Path(args.out))}\n")


def run_serve(args: argparse.Namespace, write: Write) -> None:
    """``serve``: the local web calculator, until interrupted."""
    from .web import serve

    serve(args.host, args.port, write)


def run_pool_analysis(
    args: argparse.Namespace, layer: Any, shape: tuple[int, ...], write: Write
) -> None:
    """``pool --analyze``: what the pool keeps and loses, and why it is still used."""
    from .pool_analysis import analyze_pool

    options = {
        n: getattr(args, n) for n in ("seed", "trials", "shifts") if getattr(args, n) is not None
    }
    result = analyze_pool(
        layer,
        shape,
        following_conv=args.next_conv,
        batch=1 if args.batch is None else args.batch,
        count=args.count,
        explain=args.explain,
        **options,
    )
    write(render(pool_analysis_document(result), args.format))


def model_input(args: argparse.Namespace, model: Any) -> tuple[int, ...]:
    """``--input``, else the zoo model's or the spec file's own input shape."""
    if args.input is not None:
        return parse_shape(args.input, args.layout)
    if isinstance(model, str):
        from . import zoo

        return zoo.default_input(model)
    if getattr(model, "input_shape", None) is not None:
        return tuple(model.input_shape)  # a spec file names its input
    raise UsageError(f"{args.model}: give the input shape with --input, e.g. 3x224x224")


def run_summary(args: argparse.Namespace, write: Write) -> None:
    from .model_source import load_model, user_code_errors
    from .summary import summary

    model = load_model(args.model)
    shape = model_input(args, model)
    with user_code_errors(args.model):  # the model's own forward runs when it is traced
        report = summary(model, shape, args.batch, args.count, explain=args.explain)
    write(render(summary_document(report, args.depth), args.format))


def run_compose(args: argparse.Namespace, write: Write) -> None:
    from .compose import compare_cost, compose_spec, parse_chain
    from .explain import Explanation, Working

    shape = parse_shape(args.input, args.layout) if args.input else None
    layers = parse_chain(args.layers, shape)
    channels = None if shape is not None else 1  # the grammar's default input channels
    result = compose_spec(layers, shape, args.explain, channels)
    w = Working(record=args.explain)
    costs = compare_cost(layers, shape, args.batch, args.count, w, channels)
    explanation = None
    if result.explanation is not None:
        explanation = Explanation(result.explanation.sections + w.explanation.sections)
    write(render(composition_document(result, costs, explanation), args.format))


def writable_folder(text: str, option: str) -> Path:
    """The folder ``text`` names, made if missing; a UsageError naming ``option`` when it is a
    file (``/dev/null``), cannot be made, or cannot be written to. Checked before a run, so that
    no training is lost to a folder it cannot save in."""
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {shown(text)} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{option} {shown(text)}: cannot make the folder ({error.strerror or error})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {shown(text)}: the folder is not writable")
    return folder


def run_train(args: argparse.Namespace, write: Write) -> None:
    from .train import TrainConfig, train

    out = writable_folder(args.out, "--out")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        optimizer=args.optimizer,
        data=args.data,
        out=out,
        resume=Path(args.resume) if args.resume else None,
        limit=args.limit,
    )
    if args.engine == "torch":
        from .train_torch import train_with_torch

        sys.stdout.flush()
        result = train_with_torch(config, args.device or "cpu", args.workers or 1, args.json)
        if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than 0: rank 0 reports
            return
    else:
        torch_only = [f"--{n}" for n in ("device", "workers") if getattr(args, n) is not None]
        if torch_only:
            raise UsageError(f"{', '.join(torch_only)} need --engine torch")
        echo = (lambda text: None) if args.json else (lambda text: write(text + "\n"))
        result = train(config, echo=echo)
    if args.json:
        write(json.dumps({k: v for k, v in asdict(result).items() if k != "history"}) + "\n")
    else:
        write(
            f"test accuracy {100 * result.test_accuracy:.2f}% after {result.epochs} epochs "
            f"({result.seconds:.1f} s); checkpoint {result.checkpoint}, metrics {result.metrics}, "
            f"curves {result.curves}\n"
        )


def run_predict(args: argparse.Namespace, write: Write) -> None:
    from .train import predict

    classes = predict(Path(args.checkpoint), args.images)
    if args.json:
        write(json.dumps({"predictions": classes.tolist()}) + "\n")
    else:
        write("\n".join(f"{i}\t{c}" for i, c in enumerate(classes.tolist())) + "\n")


def execute(argv: Sequence[str] | None, write: Write) -> tuple[int, str | None]:
    """Run one command, writing its answer with ``write``: the exit code, and on bad input
    (code 2) the one-line message the command prints. The web API answers through this."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except CommandLineError as error:
        return EXIT_USAGE, error.line
    except SystemExit as done:  # --help (0), already printed
        return (done.code if isinstance(done.code, int) else EXIT_USAGE), None
    try:
        args.handler(args, write)
    except ConvScopeError as error:
        message = str(error)
    except OSError as error:  # a file named on the command line: missing, unreadable, a folder
        where = f"{shown(str(error.filename))}: " if error.filename is not None else ""
        message = f"{where}{error.strerror or error}"
    else:
        return 0, None
    return EXIT_USAGE, f"convscope {args.command}: error: {one_line(message)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for invalid input, with one clear message)."""
    code, message = execute(argv, sys.stdout.write)
    if message is not None:
        print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
