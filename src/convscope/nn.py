"""Layer modules with PyTorch's constructors, attribute names and ``state_dict`` names, as the
operation families declare them (``convscope.registry``), and the containers and losses.

Each module's configuration is its ``spec``.
"""

from . import registry
from .containers import Concat, Residual, Sequential
from .module import Module, Parameter
from .ops.loss import CrossEntropyLoss, MSELoss

__all__, __dir__ = registry.export(
    globals(),
    registry.modules(),
    Module,
    Parameter,
    Sequential,
    Residual,
    Concat,
    CrossEntropyLoss,
    MSELoss,
)
