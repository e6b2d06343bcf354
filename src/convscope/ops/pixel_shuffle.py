"""PixelShuffle and PixelUnshuffle: channels moved to space and back by a factor r, as
PyTorch: the configuration, rules, passes, modules and registration of the pixel_shuffle family.

Shuffle: ``y[c, h·r + i, w·r + j] = x[c·r² + i·r + j, h, w]``; unshuffle is its inverse. Both
only move values: no arithmetic in either pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import registry
from ..arrays import expect_shape, float_array
from ..errors import LayerConfigError, ShapeError
from ..explain import Working, shape_text
from ..geometry import Shape, check_sizes, is_int, positive_int
from ..module import Module
from .base import Op, no_macs, no_params, not_a_convolution
from .structural import moved, no_arithmetic

if TYPE_CHECKING:
    from ..receptive import Field


@dataclass(frozen=True)
class PixelShuffleSpec(Op):
    """Depth to space by ``factor`` (``inverse``: space to depth), over the last three axes
    (C, H, W); leading axes are kept."""

    factor: int
    inverse: bool = False

    _hidden: ClassVar = ("inverse",)
    _positional: ClassVar = ("factor",)

    def __post_init__(self) -> None:
        what = "downscale_factor" if self.inverse else "upscale_factor"
        object.__setattr__(self, "factor", positive_int(self.factor, what))

    @property
    def name(self) -> str:
        return "PixelUnshuffle" if self.inverse else "PixelShuffle"

    @property
    def upscale_factor(self) -> int:
        """PyTorch's name of the factor of PixelShuffle."""
        return self.factor

    @property
    def downscale_factor(self) -> int:
        """PyTorch's name of the factor of PixelUnshuffle."""
        return self.factor

    def _check_input(self, input_shape: Sequence[int]) -> Shape:
        shape = check_sizes(input_shape, self.name)
        r = self.factor
        if len(shape) < 3:
            raise ShapeError(
                f"{self.name} takes an input of (C, H, W) (any leading axes first) without the "
                f"batch, got {shape_text(shape)}"
            )
        c, h, w = shape[-3:]
        if not self.inverse and c % (r * r):
            raise ShapeError(
                f"PixelShuffle({r}) needs channels divisible by r² = {r * r}, got C = {c} in "
                f"{shape_text(shape)}"
            )
        if self.inverse and (h % r or w % r):
            raise ShapeError(
                f"PixelUnshuffle({r}) needs H and W divisible by r = {r}, got {h}×{w} in "
                f"{shape_text(shape)}"
            )
        return shape

    def _shape(self, input_shape: Shape, w: Working) -> Shape:
        r = self.factor
        c, h, wd = input_shape[-3:]
        if self.inverse:
            last = (c * r * r, h // r, wd // r)
            detail = ": (C·r², H/r, W/r)"
        else:
            last = (c // (r * r), h * r, wd * r)
            detail = ": (C/r², H·r, W·r)"
        return moved(w, input_shape, input_shape[:-3] + last, detail)

    _params = no_params
    _macs = no_macs
    linear_map = not_a_convolution
    _cost = no_arithmetic("A reordering of the entries (at most a copy): no arithmetic.")

    def receptive_field(self, field: Field, input_shape: Shape, output_shape: Shape) -> Field:
        """Shuffle: output row o copies input row ⌊o/r⌋, the one integer of the transposed
        window ``(o − r + 1)/r … o/r`` (stride 1/r): exact. Unshuffle: output row o copies row
        o·r + i, where i is set by the output channel: the entries at one position read r × r
        different places, so no one field describes every output entry (flagged as varying).
        Leading axes before (C, H, W): not tracked (unknown)."""
        if field.global_ or field.undefined or field.unknown:
            return field
        if len(input_shape) != 3 or len(field.size) != 2:
            return field.as_unknown()
        if self.factor == 1:
            return field
        if self.inverse:
            return field.as_varying()
        r = (self.factor,) * 2
        return field.transposed(r, r, (1, 1), (0, 0))


# -- running: functional forward and backward ----------------------------------------------


def _checked(x: np.ndarray, factor: int, inverse: bool) -> np.ndarray:
    x = float_array(x, "x")
    if x.ndim < 4:
        raise ShapeError(f"x must be (N, [..., ] C, H, W), got shape {x.shape}")
    PixelShuffleSpec(factor, inverse).output_shape(x.shape[1:])
    return x


def _shuffle(x: np.ndarray, r: int) -> np.ndarray:
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def _unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def pixel_shuffle(x: np.ndarray, upscale_factor: int) -> np.ndarray:
    """``y[..., c, h·r + i, w·r + j] = x[..., c·r² + i·r + j, h, w]``."""
    return _shuffle(_checked(x, upscale_factor, False), upscale_factor)


def pixel_shuffle_backward(grad_out: np.ndarray, upscale_factor: int) -> np.ndarray:
    """The output gradient moved back: the unshuffle of ``grad_out``."""
    grad = _checked(grad_out, upscale_factor, True)
    return _unshuffle(grad, upscale_factor)


def pixel_unshuffle(x: np.ndarray, downscale_factor: int) -> np.ndarray:
    """``y[..., c·r² + i·r + j, h, w] = x[..., c, h·r + i, w·r + j]``."""
    return _unshuffle(_checked(x, downscale_factor, True), downscale_factor)


def pixel_unshuffle_backward(grad_out: np.ndarray, downscale_factor: int) -> np.ndarray:
    """The output gradient moved back: the shuffle of ``grad_out``."""
    grad = _checked(grad_out, downscale_factor, False)
    return _shuffle(grad, downscale_factor)


# -- running: modules -----------------------------------------------------------------------


class PixelShuffle(Module):
    """Rearranges (C·r², H, W) into (C, H·r, W·r), as torch.nn.PixelShuffle."""

    spec: PixelShuffleSpec

    def __init__(self, upscale_factor: int) -> None:
        self.spec = PixelShuffleSpec(upscale_factor)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The shuffled ``x``; keeps its shape for backward."""
        self.save_for_backward(np.shape(x))
        return pixel_shuffle(x, self.spec.factor)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The output gradient in the input's layout."""
        (shape,) = self.saved()
        grad = pixel_shuffle_backward(grad_out, self.spec.factor)
        expect_shape(grad, shape, "the input gradient", "(the last forward's input)")
        return grad


class PixelUnshuffle(Module):
    """Rearranges (C, H·r, W·r) into (C·r², H, W), as torch.nn.PixelUnshuffle."""

    spec: PixelShuffleSpec

    def __init__(self, downscale_factor: int) -> None:
        self.spec = PixelShuffleSpec(downscale_factor, inverse=True)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The unshuffled ``x``; keeps its shape for backward."""
        self.save_for_backward(np.shape(x))
        return pixel_unshuffle(x, self.spec.factor)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The output gradient in the input's layout."""
        (shape,) = self.saved()
        grad = pixel_unshuffle_backward(grad_out, self.spec.factor)
        expect_shape(grad, shape, "the input gradient", "(the last forward's input)")
        return grad


# -- registration -------------------------------------------------------------------------------


def _call(inverse: bool) -> registry.CallRule:
    name = "downscale_factor" if inverse else "upscale_factor"

    def rule(call: registry.TorchCall) -> Op:
        (factor,) = call.bind((name, None))
        if not is_int(factor):
            raise registry.Unsupported(f"{name} that is not an int: {factor!r}")
        try:
            return PixelShuffleSpec(factor, inverse)
        except LayerConfigError as error:
            raise registry.Unsupported(str(error)) from None

    return rule


def _module_rule(inverse: bool) -> registry.ModuleRule:
    name = "downscale_factor" if inverse else "upscale_factor"
    return lambda module: PixelShuffleSpec(getattr(module, name), inverse)


FAMILY = registry.register(
    registry.Family(
        "pixel_shuffle",
        (PixelShuffleSpec,),
        registry.by_name(PixelShuffle, PixelUnshuffle),
        registry.by_name(
            pixel_shuffle, pixel_shuffle_backward, pixel_unshuffle, pixel_unshuffle_backward
        ),
        {
            "pixelshuffle": registry.SpecFileLayer(PixelShuffle),
            "pixelunshuffle": registry.SpecFileLayer(PixelUnshuffle),
        },
        registry.TorchMapping(
            {"PixelShuffle": _module_rule(False), "PixelUnshuffle": _module_rule(True)},
            {
                **dict.fromkeys(
                    ("torch.nn.functional.pixel_shuffle", "torch.pixel_shuffle"), _call(False)
                ),
                **dict.fromkeys(
                    ("torch.nn.functional.pixel_unshuffle", "torch.pixel_unshuffle"), _call(True)
                ),
            },
        ),
    )
)
