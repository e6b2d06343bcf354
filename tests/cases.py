"""The contract test's cases: one or more per registered operation family.

A case names what convscope builds (an ``nn`` module, or for a family of traced graphs its
spec and a run of its functional pair), its PyTorch twin (a torch.nn module or a function of
tensors), the input shapes, and the instrumented reference that counts its operations. Adding a
family means adding its cases here: ``test_contract`` fails for a family without any.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as tnn

from convscope import functional as F
from convscope import nn
from convscope.ops.arithmetic import AddSpec, MeanSpec, MulSpec, SubSpec, SumSpec
from convscope.ops.attention import AttentionSpec
from convscope.ops.matmul import MatmulSpec
from convscope.ops.structural import ConcatSpec, PermuteSpec, ReshapeSpec, SliceSpec
from tests.reference import instrumented as ref

Shape = tuple[int, ...]
Run = Callable[[list[np.ndarray]], tuple[np.ndarray, Callable[[np.ndarray], list[np.ndarray]]]]


@dataclass(frozen=True)
class Case:
    """One configuration of a family, with its oracles.

    ``build`` makes convscope's module (or, for a family without one, its spec; then ``run``
    is the functional forward and backward). ``twin`` makes the PyTorch twin: a module with the
    same constructor arguments, or a function of the input tensors. ``counts(batch, mode)`` is
    the instrumented reference. ``traced`` makes the torch module whose trace holds the case's
    operation for the adapter (default: the twin, if it is a module). ``train`` is the mode the
    passes run in.
    """

    family: str
    label: str
    build: Callable[[], Any]
    twin: Callable[[], Any]
    shapes: tuple[Shape, ...]
    counts: Callable[[int, str], dict]
    batch: int = 2
    run: Run | None = None
    traced: Callable[[], tnn.Module] | None = None
    train: bool = True

    @property
    def id(self) -> str:
        return self.label


class Wrap(tnn.Module):
    """A function of one tensor as a torch module, for the adapter to trace."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def same_in_both_modes(count: Callable[[int], dict]) -> Callable[[int, str], dict]:
    """A reference for a layer without padding: both count modes agree."""
    return lambda batch, mode: count(batch)


def moved(move: Callable[..., Any], shapes: Sequence[Shape]) -> Callable[[int, str], dict]:
    """The reference of a data movement, on counting scalars."""
    return same_in_both_modes(lambda batch: ref.moved_counts(move, shapes, batch))


def graph_run(forward: Callable[..., np.ndarray], backward: Callable[..., Any]) -> Run:
    """A run of a functional pair: ``forward(*xs)`` and ``backward(g, *xs)``."""

    def run(xs: list[np.ndarray]) -> tuple[np.ndarray, Callable[[np.ndarray], list[np.ndarray]]]:
        y = forward(*xs)
        return y, lambda g: list(_tuple(backward(g, *xs)))

    return run


def _tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


# -- the windowed families --------------------------------------------------------------------


def conv(
    label: str,
    ndim: int,
    c_in: int,
    c_out: int,
    spatial: Shape,
    k,
    s=1,
    p=0,
    d=1,
    g=1,
    bias=True,
    mode="zeros",
) -> Case:
    args = dict(stride=s, padding=p, dilation=d, groups=g, bias=bias, padding_mode=mode)
    name = f"Conv{ndim}d"
    pads = tuple((v, v) for v in (p if isinstance(p, tuple) else (p,) * ndim))
    return Case(
        "conv",
        label,
        lambda: getattr(nn, name)(c_in, c_out, k, **args),
        lambda: getattr(tnn, name)(c_in, c_out, k, **args),
        ((c_in, *spatial),),
        lambda batch, count: ref.conv_counts(
            (c_in, *spatial), c_out, k, s, pads, d, g, bias, mode, batch, count
        ),
    )


def conv_transpose(
    label: str,
    ndim: int,
    c_in: int,
    c_out: int,
    spatial: Shape,
    k,
    s=1,
    p=0,
    op=0,
    g=1,
    bias=True,
    d=1,
) -> Case:
    args = dict(stride=s, padding=p, output_padding=op, groups=g, bias=bias, dilation=d)
    name = f"ConvTranspose{ndim}d"
    return Case(
        "conv_transpose",
        label,
        lambda: getattr(nn, name)(c_in, c_out, k, **args),
        lambda: getattr(tnn, name)(c_in, c_out, k, **args),
        ((c_in, *spatial),),
        lambda batch, count: ref.conv_transpose_counts(
            (c_in, *spatial), c_out, k, s, p, op, d, g, bias, batch, count
        ),
    )


def max_pool(label: str, ndim: int, shape: Shape, k, s=None, p=0, d=1, ceil=False) -> Case:
    name = f"MaxPool{ndim}d"
    return Case(
        "pool",
        label,
        lambda: getattr(nn, name)(k, s, p, d, ceil),
        lambda: getattr(tnn, name)(k, s, p, d, ceil_mode=ceil),
        (shape,),
        lambda batch, count: ref.max_pool_counts(
            shape, k, s if s is not None else k, p, d, ceil, batch, count
        ),
    )


def avg_pool(
    label: str, ndim: int, shape: Shape, k, s=None, p=0, ceil=False, include=True, divisor=None
) -> Case:
    name = f"AvgPool{ndim}d"
    extra = {} if ndim == 1 else {"divisor_override": divisor}
    return Case(
        "pool",
        label,
        lambda: getattr(nn, name)(k, s, p, ceil, include, **extra),
        lambda: getattr(tnn, name)(k, s, p, ceil, include, **extra),
        (shape,),
        lambda batch, count: ref.avg_pool_counts(
            shape, k, s if s is not None else k, p, ceil, include, divisor, batch, count
        ),
    )


def adaptive(label: str, kind: str, ndim: int, shape: Shape, size) -> Case:
    name = f"Adaptive{kind.capitalize()}Pool{ndim}d"
    return Case(
        "adaptive_pool",
        label,
        lambda: getattr(nn, name)(size),
        lambda: getattr(tnn, name)(size),
        (shape,),
        same_in_both_modes(lambda batch: ref.adaptive_pool_counts(kind, shape, size, batch)),
    )


def norm(family: str, label: str, shape: Shape, kind: str, *args: Any, **kwargs: Any) -> Case:
    """A normalisation layer and its twin, of the class its label names."""
    name = label.split("-")[0]
    affine = kwargs.get("affine", kwargs.get("elementwise_affine", kind in ("layer", "group")))
    options = {
        "affine": affine,
        "bias": kwargs.get("bias", True),
        "groups": args[0] if kind == "group" else 1,
        "normalized_ndim": len(args[0]) if kind == "layer" and isinstance(args[0], tuple) else 1,
    }
    return Case(
        family,
        label,
        lambda: getattr(nn, name)(*args, **kwargs),
        lambda: getattr(tnn, name)(*args, **kwargs),
        (shape,),
        same_in_both_modes(lambda batch: ref.normalization_counts(shape, batch, kind, **options)),
    )


# -- the cases --------------------------------------------------------------------------------

ACTIVATIONS = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "LeakyReLU": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "SiLU": "silu",
    "GELU": "gelu",
    "Hardsigmoid": "hardsigmoid",
    "Hardswish": "hardswish",
}


def activation(name: str) -> Case:
    args = (0.2,) if name == "LeakyReLU" else ()
    shape = (2, 3, 3)
    return Case(
        "activation",
        name,
        lambda: getattr(nn, name)(*args),
        lambda: getattr(tnn, name)(*args),
        (shape,),
        same_in_both_modes(
            lambda batch: ref.activation_counts(ACTIVATIONS[name], shape, batch, *args)
        ),
    )


def _reshape_move(*xs, adjoint=None):
    return xs[0].reshape(xs[0].shape[0], 3, 8) if adjoint is None else adjoint.reshape(xs[0].shape)


def _permute_move(*xs, adjoint=None):
    return xs[0].transpose(0, 2, 1, 3) if adjoint is None else adjoint.transpose(0, 2, 1, 3)


def _slice_move(*xs, adjoint=None):
    if adjoint is None:
        return xs[0][:, 1:3]
    grad = np.zeros(xs[0].shape, dtype=object)
    grad[:, 1:3] = adjoint
    return grad


def _flatten_move(*xs, adjoint=None):
    return xs[0].reshape(xs[0].shape[0], -1) if adjoint is None else adjoint.reshape(xs[0].shape)


def _concat_move(*xs, adjoint=None):
    if adjoint is None:
        return np.concatenate(xs, axis=1)
    return np.split(adjoint, [xs[0].shape[1]], axis=1)


CASES: dict[str, list[Case]] = {
    "conv": [
        conv("Conv2d-k3s2p1g2", 2, 4, 6, (7, 7), 3, s=2, p=1, g=2),
        conv(
            "Conv1d-k3d2p2-reflect-nobias", 1, 2, 3, (9,), 3, p=2, d=2, bias=False, mode="reflect"
        ),
        conv("Conv3d-k231p110", 3, 2, 2, (4, 5, 3), (2, 3, 1), p=(1, 1, 0)),
    ],
    "conv_transpose": [
        conv_transpose("ConvTranspose2d-k3s2p1op1", 2, 4, 2, (4, 4), 3, s=2, p=1, op=1),
        conv_transpose("ConvTranspose1d-k3g2d2-nobias", 1, 2, 4, (5,), 3, g=2, bias=False, d=2),
    ],
    "pool": [
        max_pool("MaxPool2d-k3s2p1", 2, (2, 7, 7), 3, 2, 1),
        max_pool("MaxPool1d-k2d2-ceil", 1, (2, 8), 2, 2, 0, 2, True),
        avg_pool("AvgPool2d-k3s2p1-ceil-exclude", 2, (2, 6, 6), 3, 2, 1, True, False),
        avg_pool("AvgPool1d-k2", 1, (2, 8), 2),
        avg_pool("AvgPool3d-k2-divisor3", 3, (1, 4, 4, 4), 2, divisor=3),
    ],
    "adaptive_pool": [
        adaptive("AdaptiveAvgPool2d-2x3", "avg", 2, (2, 5, 6), (2, 3)),
        adaptive("AdaptiveMaxPool1d-1", "max", 1, (3, 7), 1),
        adaptive("AdaptiveMaxPool2d-2", "max", 2, (2, 6, 4), 2),
    ],
    "linear": [
        Case(
            "linear",
            "Linear-8-5",
            lambda: nn.Linear(8, 5),
            lambda: tnn.Linear(8, 5),
            ((8,),),
            same_in_both_modes(lambda batch: ref.linear_counts((8,), 5, True, batch)),
        ),
        Case(
            "linear",
            "Linear-6-3-nobias-rows",
            lambda: nn.Linear(6, 3, bias=False),
            lambda: tnn.Linear(6, 3, bias=False),
            ((4, 6),),
            same_in_both_modes(lambda batch: ref.linear_counts((4, 6), 3, False, batch)),
        ),
    ],
    "batchnorm": [
        Case(
            "batchnorm",
            "BatchNorm2d",
            lambda: nn.BatchNorm2d(3),
            lambda: tnn.BatchNorm2d(3),
            ((3, 4, 4),),
            same_in_both_modes(lambda batch: ref.batchnorm_counts((3, 4, 4), True, batch)),
        ),
        Case(
            "batchnorm",
            "BatchNorm1d-noaffine",
            lambda: nn.BatchNorm1d(4, affine=False),
            lambda: tnn.BatchNorm1d(4, affine=False),
            ((4, 5),),
            same_in_both_modes(lambda batch: ref.batchnorm_counts((4, 5), False, batch)),
        ),
    ],
    "layernorm": [
        norm("layernorm", "LayerNorm-4", (3, 4), "layer", 4),
        norm(
            "layernorm",
            "LayerNorm-3x4-noaffine",
            (2, 3, 4),
            "layer",
            (3, 4),
            elementwise_affine=False,
        ),
        norm("layernorm", "LayerNorm-4-nobias", (2, 4), "layer", 4, bias=False),
    ],
    "groupnorm": [
        norm("groupnorm", "GroupNorm-2-4", (4, 3, 3), "group", 2, 4),
        norm("groupnorm", "GroupNorm-1-3-noaffine", (3, 5), "group", 1, 3, affine=False),
    ],
    "instancenorm": [
        norm("instancenorm", "InstanceNorm2d-affine", (3, 4, 4), "instance", 3, affine=True),
        norm("instancenorm", "InstanceNorm1d", (2, 6), "instance", 2),
        norm(
            "instancenorm",
            "InstanceNorm2d-tracked",
            (2, 3, 3),
            "instance",
            2,
            affine=True,
            track_running_stats=True,
        ),
    ],
    "activation": [
        *(activation(name) for name in ACTIVATIONS),
        # counted in training, as the summary counts a training step; run in eval, where it is
        # deterministic (the training mask's passes are tested in test_engine_dense)
        Case(
            "activation",
            "Dropout",
            lambda: nn.Dropout(0.3),
            lambda: tnn.Dropout(0.3),
            ((2, 3, 3),),
            same_in_both_modes(lambda batch: ref.dropout_counts((2, 3, 3), batch, 0.3)),
            train=False,
        ),
    ],
    "flatten": [
        Case(
            "flatten",
            "Flatten",
            lambda: nn.Flatten(),
            lambda: tnn.Flatten(),
            ((2, 3, 4),),
            moved(_flatten_move, [(2, 3, 4)]),
        ),
        Case(
            "flatten",
            "Flatten-2",
            lambda: nn.Flatten(2),
            lambda: tnn.Flatten(2),
            ((2, 3, 4),),
            moved(
                lambda *xs, adjoint=None: (
                    xs[0].reshape(*xs[0].shape[:2], -1)
                    if adjoint is None
                    else adjoint.reshape(xs[0].shape)
                ),
                [(2, 3, 4)],
            ),
        ),
    ],
    "reshape": [
        Case(
            "reshape",
            "Reshape-3x8",
            lambda: ReshapeSpec((3, 8)),
            lambda: lambda x: x.reshape(x.shape[0], 3, 8),
            ((2, 3, 4),),
            moved(_reshape_move, [(2, 3, 4)]),
            run=graph_run(lambda x: F.reshape(x, (3, 8)), F.reshape_backward),
        ),
    ],
    "permute": [
        Case(
            "permute",
            "Permute-0213",
            lambda: PermuteSpec((0, 2, 1, 3)),
            lambda: lambda x: x.permute(0, 2, 1, 3),
            ((2, 3, 4),),
            moved(_permute_move, [(2, 3, 4)]),
            run=graph_run(
                lambda x: F.permute(x, (0, 2, 1, 3)),
                lambda g, x: F.permute_backward(g, (0, 2, 1, 3)),
            ),
        ),
    ],
    "slice": [
        Case(
            "slice",
            "Slice-1-1:3",
            lambda: SliceSpec(1, 1, 3),
            lambda: lambda x: x[:, 1:3],
            ((4, 3, 3),),
            moved(_slice_move, [(4, 3, 3)]),
            run=graph_run(
                lambda x: F.slice_along(x, 1, 1, 3),
                lambda g, x: F.slice_along_backward(g, x, 1, 1, 3),
            ),
            traced=lambda: Wrap(lambda x: torch.split(x, [1, 2, 1], 1)[1]),
        ),
    ],
    "concat": [
        Case(
            "concat",
            "Concat-channels",
            lambda: ConcatSpec(1),
            lambda: lambda a, b: torch.cat([a, b], 1),
            ((2, 3, 3), (3, 3, 3)),
            moved(_concat_move, [(2, 3, 3), (3, 3, 3)]),
            run=graph_run(
                lambda a, b: F.concat([a, b], 1), lambda g, a, b: F.concat_backward(g, [a, b], 1)
            ),
            traced=lambda: Wrap(lambda x: torch.cat([x, x], 1)),
        ),
    ],
    "add": [
        Case(
            "add",
            "Add",
            lambda: AddSpec(),
            lambda: lambda a, b: a + b,
            ((2, 3, 3), (2, 3, 3)),
            same_in_both_modes(lambda batch: ref.add_counts((2, 3, 3), 2, batch)),
            run=graph_run(F.add, lambda g, a, b: F.add_backward(g, 2)),
            traced=lambda: Wrap(lambda x: x + x),
        ),
    ],
    "mul": [
        Case(
            "mul",
            "Mul-gate",
            lambda: MulSpec(),
            lambda: lambda a, b: a * b,
            ((2, 3, 3), (2, 1, 1)),
            same_in_both_modes(lambda batch: ref.mul_counts((2, 3, 3), (2, 1, 1), batch)),
            run=graph_run(F.mul, F.mul_backward),
            traced=lambda: Wrap(lambda x: x * x.mean((2, 3), keepdim=True)),
        ),
    ],
    "mean": [
        Case(
            "mean",
            "Mean-spatial-keepdim",
            lambda: MeanSpec((2, 3), True),
            lambda: lambda x: x.mean((2, 3), keepdim=True),
            ((2, 4, 4),),
            same_in_both_modes(lambda batch: ref.mean_counts((2, 4, 4), (2, 3), True, batch)),
            run=graph_run(
                lambda x: F.mean(x, (2, 3), True), lambda g, x: F.mean_backward(g, x, (2, 3), True)
            ),
        ),
        Case(
            "mean",
            "Mean-channels",
            lambda: MeanSpec((1,)),
            lambda: lambda x: x.mean(1),
            ((3, 4, 4),),
            same_in_both_modes(lambda batch: ref.mean_counts((3, 4, 4), (1,), False, batch)),
            run=graph_run(lambda x: F.mean(x, (1,)), lambda g, x: F.mean_backward(g, x, (1,))),
        ),
    ],
}


# -- products and attention (traced graphs): shapes whose every output reads every position of
# every input (a matrix-vector product, one value feature, no causal mask, whose first row
# reads one key and so depends on no q or k), so that the global receptive field is checked
# literally; tests/test_matmul_attention.py runs the other shapes and the masks --------------

sdpa = torch.nn.functional.scaled_dot_product_attention

CASES["matmul"] = [
    Case(
        "matmul",
        "Matmul-matvec",
        lambda: MatmulSpec(),
        lambda: lambda a, b: a @ b,
        ((3, 4), (4, 1)),
        same_in_both_modes(
            lambda batch: ref.contraction_counts(("ik", "kj", "ij"), (3, 4), (4, 1), batch)
        ),
        run=graph_run(F.matmul, F.matmul_backward),
        traced=lambda: Wrap(lambda x: x @ x.transpose(1, 2)[:, :, :1]),
    ),
    Case(
        "matmul",
        "Baddbmm-beta0.5-alpha2",
        lambda: MatmulSpec(alpha=2.0, beta=0.5),
        lambda: lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2.0),
        ((3, 1), (3, 4), (4, 1)),
        same_in_both_modes(
            lambda batch: ref.contraction_counts(
                ("ik", "kj", "ij"), (3, 4), (4, 1), batch, 2.0, 0.5, (3, 1)
            )
        ),
        run=graph_run(
            lambda c, a, b: F.baddbmm(c, a, b, 0.5, 2.0),
            lambda g, c, a, b: F.baddbmm_backward(g, c, a, b, 0.5, 2.0),
        ),
        traced=lambda: Wrap(
            lambda x: torch.baddbmm(
                x, torch.cat([x] * 4, 2), torch.cat([x, x[:, :1]], 1), beta=0.5, alpha=2.0
            )
        ),
    ),
]

CASES["attention"] = [
    Case(
        "attention",
        "SDPA",
        lambda: AttentionSpec(),
        lambda: lambda q, k, v: sdpa(q, k, v),
        ((4, 3), (4, 3), (4, 1)),
        lambda batch, mode: ref.attention_counts((4, 3), (4, 3), (4, 1), batch, mode),
        run=graph_run(F.scaled_dot_product_attention, F.scaled_dot_product_attention_backward),
        traced=lambda: Wrap(lambda x: sdpa(x, x, x[:, :, :1])),
    ),
    Case(
        "attention",
        "SDPA-L3-S5-scale0.5",
        lambda: AttentionSpec(scale=0.5),
        lambda: lambda q, k, v: sdpa(q, k, v, scale=0.5),
        ((3, 2), (5, 2), (5, 1)),
        lambda batch, mode: ref.attention_counts((3, 2), (5, 2), (5, 1), batch, mode, scale=0.5),
        run=graph_run(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.5),
            lambda g, q, k, v: F.scaled_dot_product_attention_backward(g, q, k, v, scale=0.5),
        ),
        traced=lambda: Wrap(
            lambda x: sdpa(
                x, torch.cat([x, x[:, :2]], 1), torch.cat([x, x[:, :2]], 1)[:, :, :1], scale=0.5
            )
        ),
    ),
]


# -- softmax, padding, pixel_shuffle ------------------------------------------------------------


def softmax(label: str, shape: Shape, dim: int, log: bool = False, traced=None) -> Case:
    name = "LogSoftmax" if log else "Softmax"
    return Case(
        "softmax",
        label,
        lambda: getattr(nn, name)(dim),
        lambda: getattr(tnn, name)(dim),
        (shape,),
        same_in_both_modes(lambda batch: ref.softmax_counts(shape, dim, log, batch)),
        traced=traced,
    )


def padding(label: str, name: str, shape: Shape, pad, *args: Any, traced=None) -> Case:
    """A padding layer ``name`` and its twin; ``pad`` in PyTorch's flat order (a tuple)."""
    ndim, value = int(name[-2]), args[0] if args else 0.0
    mode = {"Ref": "reflect", "Rep": "replicate", "Cir": "circular"}.get(name[:3], "constant")
    flat = pad if isinstance(pad, tuple) else (pad,) * (2 * ndim)
    return Case(
        "padding",
        label,
        lambda: getattr(nn, name)(pad, *args),
        lambda: getattr(tnn, name)(pad, *args),
        (shape,),
        same_in_both_modes(lambda batch: ref.padding_counts(shape, flat, mode, batch, value)),
        traced=traced,
    )


def _shuffled(x, r: int):
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def _unshuffled(x, r: int):
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def pixel_shuffle(label: str, shape: Shape, r: int, inverse: bool = False, traced=None) -> Case:
    name = "PixelUnshuffle" if inverse else "PixelShuffle"
    there, back = (_unshuffled, _shuffled) if inverse else (_shuffled, _unshuffled)

    def move(*xs, adjoint=None):
        return there(xs[0], r) if adjoint is None else back(adjoint, r)

    return Case(
        "pixel_shuffle",
        label,
        lambda: getattr(nn, name)(r),
        lambda: getattr(tnn, name)(r),
        (shape,),
        moved(move, [shape]),
        traced=traced,
    )


_TF = torch.nn.functional

CASES.update(
    {
        "softmax": [
            softmax("Softmax-channels", (4, 3, 3), 1),
            softmax("Softmax-width", (2, 3, 4), -1),
            softmax("LogSoftmax-height", (3, 4, 2), 2, log=True),
            softmax("LogSoftmax-features", (5,), 1, log=True),
            softmax(
                "F.softmax-width",
                (2, 2, 5),
                3,
                traced=lambda: Wrap(lambda x: _TF.softmax(x, dim=3)),
            ),
            softmax(
                "Tensor.log_softmax-channels",
                (3, 4),
                -2,
                log=True,
                traced=lambda: Wrap(lambda x: x.log_softmax(-2)),
            ),
            softmax(
                "torch.softmax-length",
                (2, 6),
                2,
                traced=lambda: Wrap(lambda x: torch.softmax(x, 2)),
            ),
        ],
        # positive constant padding is in tests/test_softmax_padding_shuffle.py: its padding
        # outputs read nothing, which the dependence oracle here does not allow
        "padding": [
            padding("ReflectionPad1d-2", "ReflectionPad1d", (2, 5), 2),
            padding("ReflectionPad2d-1220", "ReflectionPad2d", (2, 4, 5), (1, 2, 2, 0)),
            padding("ReplicationPad1d-31", "ReplicationPad1d", (2, 4), (3, 1)),
            padding("ReplicationPad3d-1", "ReplicationPad3d", (2, 2, 3, 3), 1),
            padding("CircularPad2d-1120", "CircularPad2d", (2, 3, 4), (1, 1, 2, 0)),
            padding("CircularPad1d-crop-wrap", "CircularPad1d", (2, 5), (-1, 2)),
            padding(
                "F.pad-reflect-crop-and-pad",
                "ReflectionPad2d",
                (2, 4, 5),
                (-1, 2, 1, -1),
                traced=lambda: Wrap(lambda x: _TF.pad(x, (-1, 2, 1, -1), "reflect")),
            ),
            padding(
                "F.pad-replicate-crop",
                "ReplicationPad2d",
                (2, 4, 5),
                (-1, -1, -1, 0),
                traced=lambda: Wrap(lambda x: _TF.pad(x, (-1, -1, -1, 0), mode="replicate")),
            ),
            padding("ZeroPad2d-crop", "ZeroPad2d", (2, 3, 4), (-1, 0, 0, -1)),
            padding(
                "ConstantPad3d-crop", "ConstantPad3d", (2, 3, 3, 3), (0, -1, -1, 0, 0, -1), 2.5
            ),
            padding(
                "F.pad-constant-channels-crop",
                "ZeroPad3d",
                (3, 3, 3),
                (0, 0, -1, 0, -1, 0),
                traced=lambda: Wrap(lambda x: _TF.pad(x, (0, 0, -1, 0, -1, 0))),
            ),
        ],
        "pixel_shuffle": [
            pixel_shuffle("PixelShuffle-2", (8, 2, 3), 2),
            pixel_shuffle("PixelUnshuffle-2", (2, 4, 6), 2, inverse=True),
            pixel_shuffle(
                "F.pixel_shuffle-3",
                (9, 2, 2),
                3,
                traced=lambda: Wrap(lambda x: _TF.pixel_shuffle(x, 3)),
            ),
            pixel_shuffle(
                "torch.pixel_unshuffle-3",
                (1, 3, 6),
                3,
                inverse=True,
                traced=lambda: Wrap(lambda x: torch.pixel_unshuffle(x, 3)),
            ),
        ],
    }
)


# -- param_arith: a parameter read in forward (layer scale, position embedding) ----------------


class TorchParamMul(tnn.Module):
    """``x * self.weight`` (``self.weight * x`` when ``leading``), the twin of nn.ParamMul."""

    def __init__(self, shape: Shape, leading: bool = False) -> None:
        super().__init__()
        self.weight = tnn.Parameter(torch.ones(shape))
        self.leading = leading
        self.shape = tuple(shape)  # the constructor argument, as convscope's twin exposes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x if self.leading else x * self.weight


class TorchParamAdd(tnn.Module):
    """``x + self.weight`` (``self.weight + x`` when ``leading``), the twin of nn.ParamAdd."""

    def __init__(self, shape: Shape, leading: bool = False) -> None:
        super().__init__()
        self.weight = tnn.Parameter(torch.zeros(shape))
        self.leading = leading
        self.shape = tuple(shape)  # the constructor argument, as convscope's twin exposes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight + x if self.leading else x + self.weight


def param_binary(op: str, label: str, shape: Shape, param: Shape, leading: bool = False) -> Case:
    module, twin = (nn.ParamMul, TorchParamMul) if op == "mul" else (nn.ParamAdd, TorchParamAdd)
    count = ref.param_mul_counts if op == "mul" else ref.param_add_counts
    return Case(
        "param_arith",
        label,
        lambda: module(param),
        lambda: twin(param, leading),
        (shape,),
        same_in_both_modes(lambda batch: count(shape, param, batch)),
    )


CASES["param_arith"] = [
    param_binary("mul", "ParamMul-layerscale", (3, 8), (8,)),
    param_binary("mul", "ParamMul-channels-leading", (3, 4, 4), (3, 1, 1), leading=True),
    param_binary("add", "ParamAdd-pos-embed", (4, 8), (1, 4, 8)),
    param_binary("add", "ParamAdd-rows-leading", (2, 4, 3), (4, 1), leading=True),
]


# -- interpolation (nn.Upsample, F.interpolate) -------------------------------------------------


def upsample(label: str, shape: Shape, twin: Any = None, traced: Any = None, **kw: Any) -> Case:
    """nn.Upsample(**kw) against torch's (or ``twin``, a torch class taking the same size and
    scale_factor), with the instrumented reference."""
    keys = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")
    args = [kw.get(k, "nearest" if k == "mode" else None) for k in keys]
    own = {k: v for k, v in kw.items() if k in ("size", "scale_factor")}
    return Case(
        "interpolate",
        label,
        lambda: nn.Upsample(**kw),
        (lambda: twin(**own)) if twin is not None else (lambda: tnn.Upsample(**kw)),
        (shape,),
        lambda batch, count: ref.interpolate_counts(shape, *args, batch, count),
        traced=traced,
    )


CASES["interpolate"] = [
    upsample("nearest-2d-x2", (2, 3, 4), scale_factor=2),
    upsample("nearest-1d-size7", (2, 4), size=7),
    upsample("nearest-2d-x0.5", (2, 6, 5), scale_factor=0.5),
    upsample("nearest-exact-1d-x3", (2, 4), scale_factor=3, mode="nearest-exact"),
    upsample("nearest-exact-2d-size", (2, 5, 3), size=(3, 4), mode="nearest-exact"),
    upsample("linear-1d-x2", (2, 5), scale_factor=2, mode="linear"),
    upsample("linear-1d-x0.5", (2, 8), scale_factor=0.5, mode="linear"),
    upsample("linear-1d-size3-odd-step", (2, 9), size=3, mode="linear"),
    upsample("linear-1d-ac-size9", (2, 4), size=9, mode="linear", align_corners=True),
    upsample("bilinear-2d-x2", (2, 3, 4), scale_factor=2, mode="bilinear"),
    upsample("bilinear-2d-ac-down", (2, 7, 5), size=(4, 3), mode="bilinear", align_corners=True),
    upsample("bilinear-2d-x1.5", (2, 4, 5), scale_factor=1.5, mode="bilinear"),
    upsample(
        "bilinear-2d-x1.7-recompute",
        (2, 4, 5),
        scale_factor=1.7,
        mode="bilinear",
        recompute_scale_factor=True,
    ),
    upsample("bilinear-2d-size-one", (2, 1, 4), size=(3, 1), mode="bilinear", align_corners=False),
    upsample("trilinear-3d", (1, 2, 3, 2), scale_factor=(2.0, 1.5, 1.0), mode="trilinear"),
    upsample("trilinear-3d-ac", (1, 3, 2, 4), size=(2, 3, 3), mode="trilinear", align_corners=True),
    upsample(
        "UpsamplingBilinear2d",
        (2, 3, 3),
        twin=tnn.UpsamplingBilinear2d,
        scale_factor=2,
        mode="bilinear",
        align_corners=True,
    ),
    upsample("UpsamplingNearest2d", (2, 3, 2), twin=tnn.UpsamplingNearest2d, size=(5, 3)),
    upsample(
        "F.interpolate-bilinear",
        (2, 3, 4),
        traced=lambda: Wrap(
            lambda x: torch.nn.functional.interpolate(
                x, scale_factor=2, mode="bilinear", align_corners=False
            )
        ),
        scale_factor=2,
        mode="bilinear",
        align_corners=False,
    ),
]


# -- scalar: arithmetic with a fixed number -------------------------------------------------------


def _scalar_case(op: str, value: float, torch_op: Callable[[Any, float], Any]) -> Case:
    from convscope.ops.scalar import ScalarSpec

    shape = (2, 3, 4)
    return Case(
        "scalar",
        f"Scalar-{op}-{value}",
        lambda: ScalarSpec(op, value),
        lambda: lambda x: torch_op(x, value),
        (shape,),
        same_in_both_modes(lambda batch: ref.scalar_counts(op, value, shape, batch)),
        run=graph_run(
            lambda x: F.scalar(x, op, value), lambda g, x: (F.scalar_backward(g, op, value),)
        ),
        traced=lambda: Wrap(lambda x: torch_op(x, value)),
    )


CASES["scalar"] = [
    _scalar_case("mul", 0.125, lambda x, c: x * c),
    _scalar_case("add", 3.0, lambda x, c: x + c),
    _scalar_case("sub", 1.5, lambda x, c: x - c),
    _scalar_case("div", 6.0, lambda x, c: x / c),
    _scalar_case("mul", -2, lambda x, c: torch.mul(x, c)),
]


CASES["sum"] = [
    Case(
        "sum",
        f"Sum-{dims}-{keepdim}",
        lambda dims=dims, keepdim=keepdim: SumSpec(dims, keepdim),
        lambda dims=dims, keepdim=keepdim: lambda x: x.sum(dims, keepdim=keepdim),
        ((2, 3, 4),),
        same_in_both_modes(
            lambda batch, dims=dims, keepdim=keepdim: ref.sum_counts(
                (2, 3, 4), dims, keepdim, batch
            )
        ),
        run=graph_run(
            lambda x, dims=dims, keepdim=keepdim: F.sum(x, dims, keepdim),
            lambda g, x, dims=dims, keepdim=keepdim: F.sum_backward(g, x, dims, keepdim),
        ),
    )
    for dims, keepdim in (((1,), False), ((2, 3), True), ((3,), True), ((2, 3), False))
]


CASES["sub"] = [
    Case(
        "sub",
        "Sub",
        lambda: SubSpec(),
        lambda: lambda a, b: a - b,
        ((2, 3, 3), (2, 3, 3)),
        same_in_both_modes(lambda batch: ref.sub_counts((2, 3, 3), batch)),
        run=graph_run(F.sub, lambda g, a, b: F.sub_backward(g)),
        traced=lambda: Wrap(lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1) - x),
    ),
]
