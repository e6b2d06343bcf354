"""Batch 0 through the engine, as PyTorch: every contract case (tests/cases.py) runs forward and
backward on an empty batch. The output and the gradients have PyTorch's shapes (parameter
gradients their parameters' shapes); where PyTorch refuses an empty batch (e.g. BatchNorm in
training mode), convscope refuses it with a ConvScopeError, not a stray traceback.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.errors import ConvScopeError
from convscope.module import Module
from convscope.random import manual_seed
from tests import cases
from tests.cases import Case

torch.backends.mkldnn.enabled = False  # native CPU kernels, as the contract test
ALL = [case for group in cases.CASES.values() for case in group]


def empty(case: Case) -> list[np.ndarray]:
    return [np.zeros((0, *shape), np.float32) for shape in case.shapes]


#: Families where PyTorch itself mishandles an empty batch, so convscope's shape rule stands in:
#: pixel_unshuffle returns its empty input unchanged (an early return for numel() == 0), and
#: pixel_shuffle's backward then checks the gradient against the wrong shape.
TORCH_BUGS = {"pixel_shuffle"}


def rule_shape(case: Case) -> tuple[int, ...]:
    """The batch-0 output shape by convscope's shape rule."""
    built = case.build()
    spec = built.spec if isinstance(built, Module) else built
    return (0, *spec.output_shape(case.shapes[0] if len(case.shapes) == 1 else list(case.shapes)))


def torch_pass(case: Case, xs: list[np.ndarray]):
    """The twin's output shape and input gradients at batch 0 (None where PyTorch's own bug
    leaves only the shape rule), or the error its forward refuses the batch with."""
    if case.family in TORCH_BUGS:
        return (rule_shape(case), [None] * len(xs)), None
    twin = case.twin()
    if isinstance(twin, torch.nn.Module):
        twin.train(case.train)
    tensors = [torch.tensor(x, requires_grad=True) for x in xs]
    try:
        y = twin(*tensors)
    except IndexError:
        # PyTorch's own bug, not a refusal (InstanceNorm with affine or running statistics
        # selects item 0 of an empty tensor)
        return (rule_shape(case), [None] * len(xs)), None
    except (RuntimeError, ValueError) as error:
        return None, error
    y.backward(torch.zeros_like(y))
    return (tuple(y.shape), [t.grad for t in tensors]), None


def ours_pass(case: Case, xs: list[np.ndarray]):
    """Convscope's output, input gradients, parameter gradients (with their parameters) and
    state (parameters and running statistics)."""
    manual_seed(0)
    ours = case.build()
    if isinstance(ours, Module):
        ours.train(case.train)
        y = ours.forward(xs[0])
        ours.zero_grad()
        gx = ours.backward(np.zeros_like(y))
        params = {n: (p.data, p.grad) for n, p in ours.named_parameters()}
        return y, [gx], params, ours.state_dict()
    y, backward = case.run(xs)
    return y, backward(np.zeros_like(y)), {}, {}


@pytest.mark.filterwarnings("error")  # no NaN means or divisions by zero on the way
@pytest.mark.parametrize("case", ALL, ids=[f"{c.family}-{c.id}" for c in ALL])
def test_batch_zero(case: Case) -> None:
    xs = empty(case)
    theirs, refused = torch_pass(case, xs)
    if refused is not None:
        with pytest.raises(ConvScopeError):
            ours_pass(case, xs)
        return
    y_shape, grads_torch = theirs
    y, grads, params, state = ours_pass(case, xs)
    assert y.shape == y_shape
    assert len(grads) == len(xs)
    for grad, x, expected in zip(grads, xs, grads_torch):
        assert grad.shape == x.shape
        if expected is not None:
            assert grad.shape == tuple(expected.shape)
    for name, (data, grad) in params.items():
        assert grad is not None and grad.shape == data.shape, name
        assert not np.any(grad), name  # nothing flowed: the gradient is zero
    for name, value in state.items():  # an empty batch leaves no NaN statistics behind
        assert np.all(np.isfinite(value)), name
