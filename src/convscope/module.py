"""The base of ``convscope.nn`` modules: parameters, training state, state dicts, and the
analysis faces, which read a layer's configuration from its ``spec``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from .errors import ConvScopeError
from .ops.base import Answers, Op
from .random import generator

Init = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


class CheckpointError(ConvScopeError):
    """A state dict or checkpoint that does not fit the model."""


def uniform_init(bound: float) -> Init:
    """U(−bound, bound): PyTorch's default for conv and linear weights and biases, with
    ``bound = 1/√fan_in`` (kaiming_uniform with a = √5)."""
    return lambda rng, shape: rng.uniform(-bound, bound, size=shape)


def constant_init(value: float) -> Init:
    return lambda rng, shape: np.full(shape, value)


class Parameter:
    """An array allocated on first use, so that a model built for analysis holds none.

    ``grad`` accumulates gradients; a buffer (``trainable=False``) has none.
    """

    def __init__(
        self,
        shape: Sequence[int],
        init: Init,
        dtype: Any = np.float32,
        trainable: bool = True,
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.trainable = trainable
        self.grad: np.ndarray | None = None
        self._init = init
        self._data: np.ndarray | None = None

    @property
    def allocated(self) -> bool:
        return self._data is not None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.asarray(self._init(generator(), self.shape), dtype=self.dtype)
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        if value.shape != self.shape:
            raise CheckpointError(f"expected an array of shape {self.shape}, got {value.shape}")
        self._data = value.astype(self.dtype, copy=True)

    def accumulate(self, grad: np.ndarray) -> None:
        """Adds ``grad`` into ``self.grad``."""
        if self.grad is None:
            self.grad = grad.astype(self.dtype, copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        state = "allocated" if self.allocated else "not allocated"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, {state})"


class Module(Answers):
    """A layer or a container of layers.

    A layer's configuration lives in ``spec``; the analysis faces read it from there. A layer
    that runs implements ``forward`` (keeping what its backward needs) and ``backward``, which
    returns the input gradient and accumulates its parameters' gradients.
    """

    spec: Op
    training: bool = True
    #: Whether the constructor's arguments are read back, read-only, from the spec under
    #: PyTorch's attribute names (``conv.stride``); containers and graph steps say no.
    spec_attributes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.spec_attributes or "__init__" not in cls.__dict__:
            return
        for name in inspect.signature(cls.__init__).parameters:
            if name not in ("self", "weight", "bias"):  # weight and bias are Parameters
                doc = f"``{name}``, as PyTorch names it (read-only, from the spec)."
                setattr(cls, name, property(lambda self, n=name: self.spec._display(n), doc=doc))

    # -- what forward keeps for backward ----------------------------------------------------
    def save_for_backward(self, *values: Any) -> None:
        """Keeps what ``backward`` needs from the last ``forward``."""
        self.__dict__["_saved"] = values

    def saved(self) -> tuple[Any, ...]:
        """What the last ``forward`` kept; an error when ``backward`` comes first."""
        if "_saved" not in self.__dict__:
            raise ConvScopeError(f"{type(self).__name__}.backward called before forward")
        return self.__dict__["_saved"]

    # -- parameters ---------------------------------------------------------------------------
    def _own(self) -> dict[str, Parameter]:
        if "_params" not in self.__dict__:
            self.__dict__["_params"] = {}
        return self.__dict__["_params"]

    def register(self, name: str, param: Parameter) -> Parameter:
        """Adds a parameter or buffer under ``name`` (PyTorch's name for it)."""
        self._own()[name] = param
        return param

    def __getattr__(self, name: str) -> Any:
        # Registered parameters read as attributes (``layer.weight``); as in PyTorch, a layer
        # without a bias has ``bias`` None.
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        if name in ("weight", "bias"):
            return None
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules with their names; a layer has none."""
        return iter(())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._named(prefix):
            if p.trainable:
                yield name, p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._named(prefix):
            if not p.trainable:
                yield name, p

    def _named(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        own = self._own()
        # PyTorch's state_dict order: a module's parameters, then its buffers, then children's.
        for trainable in (True, False):
            for name, p in own.items():
                if p.trainable == trainable:
                    yield prefix + name, p
        for name, child in self.children():
            yield from child._named(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in PyTorch's order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype: Any) -> Module:
        """Casts every parameter and buffer (float32 or float64) in place."""
        for _, p in self._named(""):
            if p.trainable or np.issubdtype(p.dtype, np.floating):
                p.dtype = np.dtype(dtype)
                if p.allocated:
                    p._data = p.data.astype(dtype)
        return self

    # -- training state ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # -- state dicts -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers under PyTorch's names and layouts."""
        return {name: p.data.copy() for name, p in self._named("")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Loads arrays by name; missing, unexpected or misshapen entries are an error."""
        own = dict(self._named(""))
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                "state dict does not fit the model: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(unexpected)}" if unexpected else "",
                    )
                    if part
                )
            )
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise CheckpointError(
                    f"state dict entry {name} has shape {value.shape}, the model needs {p.shape}"
                )
            p.data = value

    # -- running -----------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        raise ConvScopeError(f"{type(self).__name__} does not run: it only answers analysis")

    def backward(self, grad_out: np.ndarray) -> Any:
        raise ConvScopeError(f"{type(self).__name__}.backward called before forward")

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    # -- analysis faces, answered by the spec -------------------------------------------------
    def _rules(self) -> Op:
        return self.spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.describe()})"


class WeightedModule(Module):
    """A layer with a ``weight`` and an optional ``bias``, initialised as PyTorch does
    (U(±1/√fan_in)). Subclasses hand the arrays to their family's forward and backward."""

    def _register_weights(self, shape: Sequence[int], fan_in: int, bias: int | None) -> None:
        # 1/√fan_in through the log: math.sqrt overflows on ints past float range
        init = uniform_init(math.exp(-0.5 * math.log(fan_in)))
        self.register("weight", Parameter(shape, init))
        if bias is not None:
            self.register("bias", Parameter((bias,), init))

    def _forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, has_bias: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layer's output; keeps ``x`` for backward."""
        y = self._forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self.save_for_backward(x)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """The input gradient; adds the weight and bias gradients into their ``grad``."""
        (x,) = self.saved()
        gx, gw, gb = self._backward(grad_out, x, self.weight.data, self.bias is not None)
        self.weight.accumulate(gw)
        if gb is not None:
            self.bias.accumulate(gb)
        return gx
