"""Optimizers with PyTorch's update rules: SGD (momentum, weight decay) and Adam."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .errors import ConvScopeError
from .module import CheckpointError, Parameter


class Optimizer:
    """Updates parameters from their accumulated gradients."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ConvScopeError("the optimizer got no parameters")
        if not (math.isfinite(lr) and lr > 0):
            raise ConvScopeError(f"learning rate must be a finite number > 0, got {lr}")
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimizer's per-parameter state, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restores what ``state_dict`` returned."""

    def _slot(self, state: dict[str, np.ndarray], key: str, i: int) -> np.ndarray:
        """``state[key]`` checked to fit parameter ``i``: same shape, finite floats; a copy
        in the parameter's dtype (the update works on it in place)."""
        if key not in state:
            raise CheckpointError(f"optimizer state {key} is missing")
        value = np.asarray(state[key])
        p = self.params[i]
        if value.shape != p.shape:
            raise CheckpointError(
                f"optimizer state {key} has shape {value.shape}, its parameter {p.shape}"
            )
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise CheckpointError(f"optimizer state {key} must hold finite floats")
        return value.astype(p.dtype, copy=True)

    def _refuse_unexpected(self, state: dict[str, np.ndarray], known: set[str]) -> None:
        unexpected = sorted(set(state) - known)
        if unexpected:
            raise CheckpointError(f"unexpected optimizer state {', '.join(unexpected[:5])}")


class SGD(Optimizer):
    """``v = μ·v + (g + λ·w)``; ``w −= lr·v`` (PyTorch's SGD, no dampening)."""

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                v = self.velocity[i]
                self.velocity[i] = g.copy() if v is None else self.momentum * v + g
                g = self.velocity[i]
            p.data -= self.lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"velocity.{i}": v for i, v in enumerate(self.velocity) if v is not None}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restores the velocities (a parameter never stepped has none)."""
        keys = [f"velocity.{i}" for i in range(len(self.params))]
        self._refuse_unexpected(state, set(keys))
        self.velocity = [self._slot(state, k, i) if k in state else None
                         for i, k in enumerate(keys)]  # fmt: skip


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with PyTorch's bias correction and L2 weight decay."""

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.steps = 0
        self.m = [np.zeros(p.shape, p.dtype) for p in self.params]
        self.v = [np.zeros(p.shape, p.dtype) for p in self.params]

    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p.data -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"steps": np.array(self.steps)}
        state.update({f"m.{i}": m for i, m in enumerate(self.m)})
        state.update({f"v.{i}": v for i, v in enumerate(self.v)})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restores the step count and both moments of every parameter."""
        n = len(self.params)
        self._refuse_unexpected(
            state, {"steps"} | {f"{k}.{i}" for k in ("m", "v") for i in range(n)}
        )
        steps = np.asarray(state.get("steps"))
        if steps.shape != () or steps.dtype.kind not in "iu" or int(steps) < 0:
            raise CheckpointError("optimizer state steps must be one integer >= 0")
        m = [self._slot(state, f"m.{i}", i) for i in range(n)]
        v = [self._slot(state, f"v.{i}", i) for i in range(n)]
        if any((x < 0).any() for x in v):  # squared gradients: negative means damaged
            raise CheckpointError("optimizer state v holds negative values")
        self.steps, self.m, self.v = int(steps), m, v
