"""The NumPy engine's forward/backward pairs, gathered from the operation-family modules.

Layout N×C×spatial as PyTorch; float32 and float64, dtype preserved. Each forward ``f`` has
a ``f_backward`` companion that returns the gradients of its inputs.
"""

from .ops.activation import (
    dropout,
    dropout_backward,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    tanh,
    tanh_backward,
)
from .ops.conv import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
)
from .ops.conv_transpose import (
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
)
from .ops.linear import linear, linear_backward
from .ops.loss import (
    mse_loss,
    mse_loss_backward,
    softmax_cross_entropy,
    softmax_cross_entropy_backward,
)
from .ops.normalization import batch_norm, batch_norm_backward
from .ops.pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool1d_backward,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool3d,
    adaptive_avg_pool3d_backward,
    adaptive_max_pool1d,
    adaptive_max_pool1d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    adaptive_max_pool3d,
    adaptive_max_pool3d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
)
from .ops.structural import flatten, flatten_backward

__all__ = [name for name in dir() if not name.startswith("_")]
