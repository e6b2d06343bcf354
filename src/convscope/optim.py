"""Optimizers with PyTorch's update rules: SGD (momentum, weight decay) and Adam."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import ConvScopeError
from .module import Parameter


class Optimizer:
    """Updates parameters from their accumulated gradients."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ConvScopeError("the optimizer got no parameters")
        if lr <= 0:
            raise ConvScopeError(f"learning rate must be > 0, got {lr}")
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
        for i in range(len(self.params)):
            self.velocity[i] = state.get(f"velocity.{i}")


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
        self.steps = int(state["steps"])
        self.m = [np.asarray(state[f"m.{i}"]) for i in range(len(self.params))]
        self.v = [np.asarray(state[f"v.{i}"]) for i in range(len(self.params))]
