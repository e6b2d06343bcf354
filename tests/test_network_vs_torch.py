"""A whole small network: convscope and PyTorch with the same weights agree on the loss and
on every parameter gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as tnn

from convscope import nn
from convscope.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward


class TorchResidual(tnn.Module):
    def __init__(self, branch, shortcut=None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x):
        return self.branch(x) + (self.shortcut(x) if self.shortcut is not None else x)


class TorchConcat(tnn.Module):
    def __init__(self, *branches):
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(str(i), b)

    def forward(self, x):
        return torch.cat([b(x) for b in self.children()], dim=1)


def build(lib):
    """The same architecture from either library's modules."""
    if lib is nn:
        residual, concat, seq = nn.Residual, nn.Concat, nn.Sequential
    else:
        residual, concat, seq = TorchResidual, TorchConcat, tnn.Sequential
    return seq(
        lib.Conv2d(3, 8, 3, padding=1),
        lib.BatchNorm2d(8),
        lib.ReLU(),
        residual(
            seq(lib.Conv2d(8, 8, 3, padding=1, groups=2), lib.ReLU()),
            lib.Conv2d(8, 8, 1, bias=False),
        ),  # fmt: skip
        concat(lib.Conv2d(8, 4, 1), seq(lib.AvgPool2d(3, 1, 1), lib.Conv2d(8, 4, 3, padding=1))),
        lib.MaxPool2d(2),
        lib.ConvTranspose2d(8, 4, 2, stride=2),
        lib.Conv2d(4, 6, 3, stride=2),
        lib.AdaptiveAvgPool2d(2),
        lib.Flatten(),
        lib.Linear(24, 16),
        lib.Tanh(),
        lib.Dropout(0.0),
        lib.Linear(16, 5),
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_gradients_match_torch(dtype):
    torch.manual_seed(0)
    theirs = build(tnn).to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = build(nn).astype(dtype)
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 10, 10)).astype(dtype)
    y = rng.integers(0, 5, 4)
    logits = ours(x)
    loss = softmax_cross_entropy(logits, y)
    ours.zero_grad()
    ours.backward(softmax_cross_entropy_backward(logits, y))

    tx = torch.tensor(x)
    tloss = tnn.functional.cross_entropy(theirs(tx), torch.tensor(y))
    tloss.backward()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert loss == pytest.approx(tloss.item(), rel=tol)
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=tol, atol=tol * 10, err_msg=name)
    # the running statistics moved the same way
    np.testing.assert_allclose(ours[1].state_dict()["running_mean"],
                               theirs[1].running_mean.numpy(), rtol=tol, atol=tol)  # fmt: skip
