"""convscope models to PyTorch and back: every family's modules (the contract cases), the
containers, asymmetric padding, checkpoints both ways. The oracle is the engine itself: the
exported module's outputs and gradients (autograd) must equal convscope's forward and backward,
in train and eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope import nn
from convscope.export import ExportError, from_torch, to_torch, twins
from convscope.module import Module
from convscope.random import manual_seed
from tests import cases

MODULE_CASES = [
    case
    for group in cases.CASES.values()
    for case in group
    if isinstance(case.build(), Module) and len(case.shapes) == 1
]


def _with_weights(module: Module) -> Module:
    module.astype(np.float64)
    rng = np.random.default_rng(1)
    for _, p in module.named_parameters():
        p.data = rng.uniform(0.5, 1.5, p.shape)
    return module


def _passes(ours: Module, theirs: torch.nn.Module, x: np.ndarray, train: bool):
    """Both engines' output, input gradient and parameter gradients for one upstream gradient."""
    ours.train(train)
    theirs.train(train)
    manual_seed(0)
    y = ours.forward(x)
    g = np.random.default_rng(2).standard_normal(y.shape)
    ours.zero_grad()
    gx = ours.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(g))
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    their_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    return (y, gx, ours_grads), (ty.detach().numpy(), tx.grad.numpy(), their_grads)


def _close(a, b) -> None:
    (y, gx, grads), (ty, tgx, tgrads) = a, b
    np.testing.assert_allclose(ty, y, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tgx, gx, rtol=1e-6, atol=1e-9)
    assert set(grads) == set(tgrads)
    for name in grads:
        np.testing.assert_allclose(tgrads[name], grads[name], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: f"{c.family}-{c.label}")
def test_every_family_exports_to_torch_and_back(case: cases.Case) -> None:
    """Outputs and gradients equal in train and eval mode (Dropout's mask is random in train
    mode, so it is compared in eval only), and torch → convscope gives the same state."""
    manual_seed(0)
    ours = _with_weights(case.build())
    x = np.random.default_rng(0).uniform(-1, 1, (case.batch, *case.shapes[0]))
    if type(ours).__name__ not in twins():
        with pytest.raises(ExportError, match=type(ours).__name__):
            to_torch(ours)
        return
    theirs = to_torch(ours)
    for train in (False,) if type(ours).__name__ == "Dropout" else (True, False):
        _close(*_passes(_with_weights(case.build()), to_torch(ours), x, train))
    back = from_torch(theirs)
    assert type(back) is type(ours)
    state, returned = ours.state_dict(), back.state_dict()
    assert state.keys() == returned.keys()
    for name, value in state.items():
        np.testing.assert_array_equal(returned[name], value)
    assert repr(back) == repr(ours)


def _network() -> Module:
    return nn.Sequential(
        {
            "stem": nn.Conv2d(3, 8, 3, padding=((1, 2), (0, 1))),
            "bn": nn.BatchNorm2d(8, eps=1e-3, momentum=0.2),
            "act": nn.ReLU(),
            "block": nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2))),
            "down": nn.Residual(nn.Conv2d(8, 8, 1, stride=2), nn.AvgPool2d(1, 2)),
            "mix": nn.Concat(nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1, bias=False)),
            "pool": nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            "avg": nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
            "flat": nn.Flatten(),
            "fc": nn.Linear(8 * 2 * 2, 5),
        }
    )


def test_containers_and_asymmetric_padding_export() -> None:
    """Sequential names, Residual with and without a shortcut, Concat, per-side padding, pools'
    ceil_mode and count_include_pad, BatchNorm's eps and momentum, in train and eval mode."""
    ours = _with_weights(_network())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 11, 12))
    theirs = to_torch(ours)
    assert [n for n, _ in theirs.named_children()][:3] == ["stem", "bn", "act"]
    assert theirs.bn.eps == 1e-3 and theirs.bn.momentum == 0.2
    assert theirs.avg.ceil_mode and not theirs.avg.count_include_pad
    for train in (True, False):
        _close(*_passes(_with_weights(_network()), to_torch(ours), x, train))
    back = from_torch(theirs)
    np.testing.assert_allclose(back.eval()(x), ours.eval()(x), rtol=1e-12)
    assert back.stem.padding == ((1, 2), (0, 1))


def test_checkpoints_move_both_ways() -> None:
    """A convscope state_dict loads into the torch model, and a torch state_dict (after torch
    trains a step) loads into the convscope model, which then computes what torch computes."""
    ours = _with_weights(_network())
    theirs = to_torch(ours)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 11, 12))
    theirs(torch.tensor(x)).sum().backward()
    opt.step()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    theirs.eval()
    np.testing.assert_allclose(ours.eval()(x), theirs(torch.tensor(x)).detach().numpy(), 1e-9)


def test_unsupported_layers_are_named() -> None:
    class Mine(torch.nn.Module):
        def forward(self, x):
            return x * 2

    with pytest.raises(ExportError, match=r"model\.1: Mine has no convscope counterpart"):
        from_torch(torch.nn.Sequential(torch.nn.ReLU(), Mine()))
    with pytest.raises(ExportError, match="LSTM"):
        from_torch(torch.nn.Sequential(torch.nn.LSTM(3, 4)))
