"""Layer modules with PyTorch's constructors. Each module's configuration is its ``spec``."""

from .containers import Concat, Residual, Sequential
from .module import Module, Parameter
from .ops.activation import GELU, Dropout, LeakyReLU, ReLU, ReLU6, Sigmoid, SiLU, Tanh
from .ops.conv import Conv1d, Conv2d, Conv3d
from .ops.conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .ops.linear import Linear
from .ops.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .ops.pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from .ops.structural import Flatten

__all__ = [
    "Module", "Parameter", "Sequential", "Residual", "Concat",
    "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "Linear",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "GELU", "Dropout",
    "Flatten",
]  # fmt: skip
