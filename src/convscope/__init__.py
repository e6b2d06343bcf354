"""convscope: exact, explained arithmetic for convolutional neural network layers."""

from . import functional, nn
from .compose import compose
from .counting import Cost, OpCount, ParamCount
from .errors import ConvScopeError, LayerConfigError, NotComposableError, ShapeError
from .explain import Explanation
from .ops.base import Analysis, Op
from .ops.conv import conv2d, conv2d_backward  # the seed's F and G
from .random import manual_seed
from .summary import Report, summary

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "ConvScopeError",
    "Cost",
    "Explanation",
    "LayerConfigError",
    "NotComposableError",
    "Op",
    "OpCount",
    "ParamCount",
    "Report",
    "ShapeError",
    "compose",
    "conv2d",
    "conv2d_backward",
    "functional",
    "manual_seed",
    "nn",
    "summary",
]
