"""The ``convscope`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import report
from .errors import ConvScopeError
from .module import Module
from .ops import conv, conv_transpose, linear, pooling
from .summary import summary

EXIT_USAGE = 2


class UsageError(ConvScopeError):
    """A malformed command-line value."""


def parse_shape(text: str, layout: str = "chw") -> tuple[int, ...]:
    """``10x64x64`` (C×H×W) or, with layout ``hwc``, ``64x64x10``."""
    parts = re.split(r"[x×,]", text.strip().lower())
    if not parts or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--input must be sizes joined by 'x', such as 10x64x64, got {text!r}")
    shape = tuple(int(p) for p in parts)
    if layout == "hwc" and len(shape) > 1:
        shape = (shape[-1], *shape[:-1])
    return shape


def parse_ints(text: str, name: str) -> int | tuple[int, ...]:
    """``3`` or a per-axis list ``3,5``."""
    parts = text.split(",")
    if not all(re.fullmatch(r"-?\d+", p.strip()) for p in parts):
        raise UsageError(f"--{name} must be an int or a comma list of ints, got {text!r}")
    values = tuple(int(p) for p in parts)
    return values[0] if len(values) == 1 else values


def parse_padding(text: str) -> Any:
    """``1``, ``1,2``, per-side ``1:2,0:3``, ``same`` or ``valid``."""
    if text in ("same", "valid"):
        return text
    items: list[Any] = []
    for part in text.split(","):
        sides = part.split(":")
        if len(sides) > 2 or not all(re.fullmatch(r"-?\d+", s.strip()) for s in sides):
            raise UsageError(
                f"--padding must be an int, a comma list, before:after pairs, 'same' or 'valid', "
                f"got {text!r}"
            )
        items.append(int(sides[0]) if len(sides) == 1 else (int(sides[0]), int(sides[1])))
    if len(items) == 1 and isinstance(items[0], int):
        return items[0]
    return tuple(items)


def _spatial(shape: tuple[int, ...], layer: str) -> int:
    if not 2 <= len(shape) <= 4:
        raise UsageError(
            f"{layer} takes --input as C×L, C×H×W or C×D×H×W (1 to 3 spatial axes), got "
            f"{'×'.join(map(str, shape))}"
        )
    return len(shape) - 1


def build_conv(args: argparse.Namespace, shape: tuple[int, ...]) -> Module:
    ndim = _spatial(shape, "conv")
    cls = (conv.Conv1d, conv.Conv2d, conv.Conv3d)[ndim - 1]
    return cls(
        shape[0],
        args.out_channels,
        parse_ints(args.kernel, "kernel"),
        stride=parse_ints(args.stride, "stride"),
        padding=parse_padding(args.padding),
        dilation=parse_ints(args.dilation, "dilation"),
        groups=args.groups,
        bias=not args.no_bias,
        padding_mode=args.padding_mode,
    )


def build_conv_transpose(args: argparse.Namespace, shape: tuple[int, ...]) -> Module:
    ndim = _spatial(shape, "conv-transpose")
    cls = (
        conv_transpose.ConvTranspose1d,
        conv_transpose.ConvTranspose2d,
        conv_transpose.ConvTranspose3d,
    )[ndim - 1]
    return cls(
        shape[0],
        args.out_channels,
        parse_ints(args.kernel, "kernel"),
        stride=parse_ints(args.stride, "stride"),
        padding=parse_ints(args.padding, "padding"),
        output_padding=parse_ints(args.output_padding, "output-padding"),
        groups=args.groups,
        bias=not args.no_bias,
        dilation=parse_ints(args.dilation, "dilation"),
    )


def build_pool(args: argparse.Namespace, shape: tuple[int, ...]) -> Module:
    ndim = _spatial(shape, "pool")
    if args.kind in ("adaptive-max", "adaptive-avg"):
        if args.output_size is None:
            raise UsageError(f"--kind {args.kind} needs --output-size, such as 1x1")
        sizes = parse_shape(args.output_size)
        spec = pooling.AdaptivePoolSpec.create(ndim, args.kind.split("-")[1], sizes)
    else:
        if args.kernel is None:
            raise UsageError(f"--kind {args.kind} needs --kernel")
        if args.kind == "avg" and args.dilation != "1":
            raise UsageError("average pooling has no dilation (PyTorch's AvgPool takes none)")
        if args.divisor_override is not None and (args.kind != "avg" or ndim == 1):
            raise UsageError(
                "--divisor-override applies to 2-D and 3-D average pooling only "
                "(PyTorch's AvgPool1d and MaxPool take none)"
            )
        spec = pooling.PoolSpec.create(
            ndim,
            args.kind,
            parse_ints(args.kernel, "kernel"),
            None if args.stride is None else parse_ints(args.stride, "stride"),
            parse_ints(args.padding, "padding"),
            parse_ints(args.dilation, "dilation"),
            args.ceil_mode,
            not args.no_count_include_pad,
            args.divisor_override,
        )
    module = Module()
    module.spec = spec
    if not args.analyze:
        given = [f"--{n.replace('_', '-')}" for n in ANALYZE_ONLY if getattr(args, n) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need --analyze")
    return module


ANALYZE_ONLY = ("next_conv", "seed", "trials", "shifts")


def run_pool_analysis(
    args: argparse.Namespace, layer: Module, shape: tuple[int, ...], write: Callable[[str], Any]
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
    if args.json:
        data = result.to_dict()
        if result.explanation is not None:
            data["explanation"] = result.explanation.text()
        write(json.dumps(data) + "\n")
    elif args.markdown:
        write("```text\n" + result.table() + "```\n")
        if result.explanation is not None:
            write("\n" + result.explanation.markdown())
    else:
        write(result.table())
        if result.explanation is not None:
            write("\n" + result.explanation.text())


def build_linear(args: argparse.Namespace, shape: tuple[int, ...]) -> Module:
    return linear.Linear(shape[-1], args.out_features, bias=not args.no_bias)


def _common(parser: argparse.ArgumentParser, input_help: str) -> None:
    parser.add_argument("--input", required=True, help=input_help)
    parser.add_argument(
        "--layout",
        choices=("chw", "hwc"),
        default="chw",
        help="order of --input: channels first (PyTorch, default) or last",
    )
    parser.add_argument("--batch", type=int, help="batch size N (adds the batch axis to shapes)")
    parser.add_argument(
        "--count",
        choices=("exact", "dense"),
        default="exact",
        help="exact: products with padding zeros are skipped (default); "
        "dense: as if run on the zero-padded input",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--markdown", action="store_true", help="print Markdown (LaTeX formulas)")
    parser.add_argument("--explain", action="store_true", help="add the worked derivations")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convscope",
        description="Exact, explained arithmetic for CNN layers: shapes, parameters and "
        "operation counts of the forward and backward passes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    shape_help = "input shape C×H×W (or C×L, C×D×H×W), e.g. 10x64x64"

    p = sub.add_parser("conv", help="a convolution (1-D to 3-D from the input's rank)")
    _common(p, shape_help)
    p.add_argument("--out-channels", type=int, required=True)
    p.add_argument("--kernel", required=True, help="kernel size: 3 or per axis 3,5")
    p.add_argument("--stride", default="1")
    p.add_argument("--padding", default="0", help="1, 1,2, per side 1:2,0:3, same or valid")
    p.add_argument("--dilation", default="1")
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--no-bias", action="store_true")
    p.add_argument("--padding-mode", default="zeros", choices=conv.PADDING_MODES)
    p.set_defaults(build=build_conv)

    p = sub.add_parser("conv-transpose", help="a transposed convolution")
    _common(p, shape_help)
    p.add_argument("--out-channels", type=int, required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--stride", default="1")
    p.add_argument("--padding", default="0")
    p.add_argument("--output-padding", default="0")
    p.add_argument("--dilation", default="1")
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--no-bias", action="store_true")
    p.set_defaults(build=build_conv_transpose)

    p = sub.add_parser("pool", help="max, average or adaptive pooling")
    _common(p, shape_help)
    p.add_argument("--kind", choices=("max", "avg", "adaptive-max", "adaptive-avg"), default="max")
    p.add_argument("--kernel", help="window size: 2 or per axis 2,3")
    p.add_argument("--stride", help="defaults to the kernel size")
    p.add_argument("--padding", default="0")
    p.add_argument("--dilation", default="1", help="max pooling only")
    p.add_argument("--ceil-mode", action="store_true")
    p.add_argument("--no-count-include-pad", action="store_true", help="average pooling only")
    p.add_argument("--divisor-override", type=int)
    p.add_argument("--output-size", help="adaptive pools: e.g. 1x1")
    p.add_argument(
        "--analyze",
        action="store_true",
        help="what the pool keeps and loses (rank, zero gradients, an identical-output pair) and "
        "what it buys (memory, the next conv's cost, translation robustness)",
    )
    p.add_argument(
        "--next-conv",
        help="with --analyze: the conv that follows, as 'c=64 k=3 s=1 p=1 d=1 g=1 bias=1' "
        "(c and k required; k, s, p, d per axis as 3,5)",
    )
    p.add_argument("--seed", type=int, help="with --analyze: seeds the random inputs (default 0)")
    p.add_argument("--trials", type=int, help="with --analyze: random inputs (default 8)")
    p.add_argument("--shifts", type=int, help="with --analyze: largest shift in pixels (default 4)")
    p.set_defaults(build=build_pool)

    p = sub.add_parser("train", help="train a LeNet-style CNN (default: the built-in digits)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--lr", type=float, default=0.005, help="peak learning rate (cosine-annealed to 0)"
    )
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--seed", type=int, default=0, help="makes the run reproducible")
    p.add_argument("--data", help="a folder of MNIST/Fashion-MNIST IDX files or CIFAR-10 batches")
    p.add_argument("--out", default="runs/digits", help="folder for checkpoint.npz, metrics.json")
    p.add_argument("--resume", help="a checkpoint to continue from")
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(handler=run_train)

    p = sub.add_parser("predict", help="classify images with a trained checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", help=".npy, .npz (key 'images') or IDX file of N×H×W or N×C×H×W")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_predict)

    p = sub.add_parser("summary", help="a whole network's shapes, costs and receptive fields")
    p.add_argument(
        "model",
        help="a zoo name (e.g. resnet50), torchvision:NAME, path/to/file.py:attr, or a spec "
        "file (.json, .yaml)",
    )
    p.add_argument("--input", help="input shape C×H×W (default: the zoo model's own)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--count", choices=("exact", "dense"), default="exact")
    p.add_argument("--depth", type=int, help="show nested modules down to this depth")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.set_defaults(handler=run_summary)

    p = sub.add_parser("linear", help="a fully connected layer")
    _common(p, "input shape (..., in_features), e.g. 512")
    p.add_argument("--out-features", type=int, required=True)
    p.add_argument("--no-bias", action="store_true")
    p.set_defaults(build=build_linear)
    for name, action in sub.choices.items():
        if name not in ("train", "predict", "summary"):
            action.set_defaults(handler=run)

    p = sub.add_parser("compose", help="stacked linear layers as one convolution (docs/compose.md)")
    p.add_argument("layers", nargs="+", help='layers in order, e.g. "conv k=5" "conv k=5 s=2 c=16"')
    p.add_argument("--input", help="input shape C×H×W (or C×L, C×D×H×W): counts, border positions")
    p.add_argument("--layout", choices=("chw", "hwc"), default="chw")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--count", choices=("exact", "dense"), default="exact")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown (LaTeX formulas)")
    p.add_argument("--explain", action="store_true", help="add the worked derivation")
    p.set_defaults(handler=run_compose)
    return parser


def run_train(args: argparse.Namespace, write: Callable[[str], Any]) -> None:
    from .train import TrainConfig, train

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        optimizer=args.optimizer, data=args.data, out=Path(args.out),
        resume=Path(args.resume) if args.resume else None, limit=args.limit,
    )  # fmt: skip
    echo = (lambda text: None) if args.json else (lambda text: write(text + "\n"))
    result = train(config, echo=echo)
    if args.json:
        write(json.dumps({k: v for k, v in asdict(result).items() if k != "history"}) + "\n")
    else:
        write(
            f"test accuracy {100 * result.test_accuracy:.2f}% after {result.epochs} epochs "
            f"({result.seconds:.1f} s); checkpoint {result.checkpoint}, metrics {result.metrics}\n"
        )


def run_summary(args: argparse.Namespace, write: Callable[[str], Any]) -> None:
    from .models import load_model

    model = load_model(args.model)
    if args.input is not None:
        shape = parse_shape(args.input)
    elif isinstance(model, str):
        from . import zoo

        shape = zoo.default_input(model)
    elif getattr(model, "input_shape", None) is not None:
        shape = tuple(model.input_shape)  # a spec file names its input
    else:
        raise UsageError(f"{args.model}: give the input shape with --input, e.g. 3x224x224")
    report = summary(model, shape, args.batch, args.count)
    if args.json:
        write(report.json(args.depth) + "\n")
    elif args.markdown:
        write(report.markdown(args.depth))
    elif args.csv:
        write(report.csv(args.depth))
    else:
        write(report.table(args.depth))


def run_predict(args: argparse.Namespace, write: Callable[[str], Any]) -> None:
    from .train import predict

    classes = predict(Path(args.checkpoint), args.images)
    if args.json:
        write(json.dumps({"predictions": classes.tolist()}) + "\n")
    else:
        write("\n".join(f"{i}\t{c}" for i, c in enumerate(classes.tolist())) + "\n")


def run(args: argparse.Namespace, write: Callable[[str], Any]) -> None:
    shape = parse_shape(args.input, args.layout)
    layer = args.build(args, shape)
    if getattr(args, "analyze", False):
        run_pool_analysis(args, layer, shape, write)
        return
    batch_given = args.batch is not None
    analysis = layer.analyze(shape, args.batch if batch_given else 1, args.count, args.explain)
    if args.json:
        data = report.to_dict(analysis, batch_given)
        if args.explain and analysis.explanation is not None:
            data["explanation"] = analysis.explanation.text()
        write(json.dumps(data) + "\n")
    elif args.markdown:
        write(report.markdown(analysis, batch_given))
        if analysis.explanation is not None:
            write("\n" + analysis.explanation.markdown())
    else:
        write(report.table(analysis, batch_given))
        if analysis.explanation is not None:
            write("\n" + analysis.explanation.text())


def run_compose(args: argparse.Namespace, write: Callable[[str], Any]) -> None:
    from .compose import render

    shape = parse_shape(args.input, args.layout) if args.input else None
    fmt = "json" if args.json else "markdown" if args.markdown else "text"
    write(render(args.layers, shape, args.batch, args.count, args.explain, fmt))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for invalid input, with one clear message)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args, sys.stdout.write)
    except ConvScopeError as error:
        print(f"convscope {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
