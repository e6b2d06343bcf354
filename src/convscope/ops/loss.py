"""Losses: softmax cross-entropy over class logits and mean squared error, both mean-reduced.

A loss ends the chain: its forward returns a Python float (computed in the prediction's dtype)
and its backward the gradient of that loss w.r.t. the prediction, in the prediction's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from ..arrays import expect_rank, expect_shape, float_array, same_dtype
from ..errors import ShapeError

# -- running: functional forward and backward ----------------------------------------------------


def _check_ce(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checks (N, classes) logits against (N,) integer class indices in range."""
    logits = float_array(logits, "logits")
    expect_rank(logits, 2, "logits", "(N, classes)")
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise ShapeError(
            f"target must hold integer class indices, got {target.dtype} {tuple(target.shape)}"
        )
    expect_shape(
        target, logits.shape[:1], "target", f"(one class per row of logits {logits.shape})"
    )
    classes = logits.shape[1]
    if target.size and (target.min() < 0 or target.max() >= classes):
        raise ShapeError(
            f"target holds class indices from {target.min()} to {target.max()}, outside "
            f"[0, {classes}) for logits of shape {logits.shape}"
        )
    if logits.shape[0] == 0:
        raise ShapeError(f"cross-entropy needs at least one row, got logits {logits.shape}")
    return logits, target


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    """The mean over rows of −log softmax(logits)[target]."""
    logits, target = _check_ce(logits, target)
    picked = _log_softmax(logits)[np.arange(logits.shape[0]), target]
    return float(-picked.mean())


def softmax_cross_entropy_backward(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The gradient of the mean cross-entropy w.r.t. the logits: (softmax − one-hot) / N."""
    logits, target = _check_ce(logits, target)
    n = logits.shape[0]
    grad = np.exp(_log_softmax(logits))
    grad[np.arange(n), target] -= 1
    grad /= n
    return grad


def _check_mse(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = float_array(pred, "pred")
    target = float_array(target, "target")
    same_dtype(pred=pred, target=target)
    expect_shape(target, pred.shape, "target", "(the shape of pred)")
    if pred.size == 0:
        raise ShapeError(f"mse_loss needs at least one element, got pred {pred.shape}")
    return pred, target


def mse_loss(pred: np.ndarray, target: np.ndarray) -> float:
    """The mean of (pred − target)² over every element."""
    pred, target = _check_mse(pred, target)
    diff = pred - target
    return float(np.mean(diff * diff))


def mse_loss_backward(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The gradient of mse_loss w.r.t. pred: 2 (pred − target) / size."""
    pred, target = _check_mse(pred, target)
    return (pred - target) * pred.dtype.type(2 / pred.size)


# -- running: loss objects -----------------------------------------------------------------------


class Loss:
    """A mean-reduced loss of a prediction against a target: forward keeps both for backward,
    which returns the gradient w.r.t. the prediction. ``passes`` are its (loss, gradient)."""

    passes: ClassVar[tuple[Callable[..., float], Callable[..., np.ndarray]]]

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        self._pred, self._target = pred, target
        return self.passes[0](pred, target)

    def backward(self) -> np.ndarray:
        """The gradient of the last forward's loss w.r.t. its prediction (for cross-entropy, its
        logits)."""
        return self.passes[1](self._pred, self._target)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.forward(pred, target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """Mean softmax cross-entropy of (N, classes) logits against (N,) class indices."""

    passes = (softmax_cross_entropy, softmax_cross_entropy_backward)


class MSELoss(Loss):
    """Mean squared error between a prediction and a target of the same shape."""

    passes = (mse_loss, mse_loss_backward)
