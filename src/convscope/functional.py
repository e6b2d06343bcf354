"""The NumPy engine's forward/backward pairs, as the operation families declare them
(``convscope.registry``), and the losses.

Layout N×C×spatial as PyTorch; float32 and float64, dtype preserved. Each forward ``f`` has
a ``f_backward`` companion that returns the gradients of its inputs.
"""

from . import registry
from .ops.loss import (
    mse_loss,
    mse_loss_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)

__all__, __dir__ = registry.export(
    globals(),
    registry.functional(),
    mse_loss,
    mse_loss_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
