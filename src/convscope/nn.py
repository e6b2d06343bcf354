"""Layer modules with PyTorch's constructors, attribute names and ``state_dict`` names, as the
operation families declare them (``convscope.registry``), and the containers and losses.

Each module's configuration is its ``spec``.
"""

from . import registry
from .containers import Concat, Residual, Sequential
from .module import Module, Parameter
from .ops.loss import CrossEntropyLoss, MSELoss

globals().update(registry.modules())

__all__ = [
    "Module",
    "Parameter",
    "Sequential",
    "Residual",
    "Concat",
    "CrossEntropyLoss",
    "MSELoss",
    *registry.modules(),
]


def __dir__() -> list[str]:
    return sorted(__all__)
