"""convscope: exact, explained arithmetic for convolutional neural network layers."""

from . import nn
from .counting import Cost, OpCount, ParamCount
from .errors import ConvScopeError, LayerConfigError, ShapeError
from .explain import Explanation
from .ops.base import Analysis, Op

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "ConvScopeError",
    "Cost",
    "Explanation",
    "LayerConfigError",
    "Op",
    "OpCount",
    "ParamCount",
    "ShapeError",
    "nn",
]
