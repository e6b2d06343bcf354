"""Every pattern of today's timm and torchvision models (tests/torch_patterns.py), checked
against PyTorch itself: parameters and buffers equal the model's unique tensors, MACs equal
FlopCounterMode's FLOPs / 2, and the shapes are those of a real forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from convscope import summary
from tests.torch_patterns import PATTERNS, MyBN, MyConv


def flop_counter_macs(model: tnn.Module, shape: tuple[int, ...]) -> int:
    # CPU attention of 4-D (multi-head) inputs runs a fused kernel that FlopCounterMode does
    # not count at all (torch 2.13); its math path is two bmm, which it counts
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def unique_numel(tensors) -> int:
    return sum(t.numel() for t in {id(t): t for t in tensors}.values())


@pytest.mark.parametrize("name", PATTERNS)
def test_pattern_params_and_macs_equal_pytorch(name):
    make, shape = PATTERNS[name]
    torch.manual_seed(0)
    model = make().eval()
    report = summary(model, shape)
    assert report.total_params == unique_numel(model.parameters())
    assert report.trainable_params == unique_numel(p for p in model.parameters() if p.requires_grad)
    assert report.total_buffers == unique_numel(model.buffers())
    assert report.total_macs == flop_counter_macs(model, shape)


@pytest.mark.parametrize("name", PATTERNS)
def test_pattern_nothing_with_a_rule_is_left_out(name):
    make, shape = PATTERNS[name]
    report = summary(make(), shape)
    # interpolation and padding have rules (their families); roll only moves values
    assert report.unsupported == [], report.unsupported


def test_a_subclass_is_its_torch_base():
    model = tnn.Sequential(MyConv(8, 8, 3, padding=1), MyBN(8), tnn.ReLU())
    report = summary(model, (8, 16, 16))
    assert [r.kind for r in report.layers[1:]] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert report.total_macs == 8 * 8 * 9 * 16 * 16 == flop_counter_macs(model, (8, 16, 16))


@pytest.mark.parametrize(
    "layer",
    [tnn.Conv2d(8, 8, 3, padding=1), tnn.ConvTranspose2d(8, 4, 3, stride=2), tnn.BatchNorm2d(8)],
    ids=lambda m: type(m).__name__,
)
def test_a_bare_layer_is_a_one_layer_model(layer):
    report = summary(layer, (8, 16, 16))
    leaves = [r for r in report.layers if not r.container]
    assert [r.kind for r in leaves] == [type(layer).__name__]
    assert report.total_params == sum(p.numel() for p in layer.parameters())
    assert report.total_macs == flop_counter_macs(layer.eval(), (8, 16, 16))


def test_cat_of_chunk_is_slices_and_a_concat():
    make, shape = PATTERNS["cat_chunk"]
    report = summary(make(), shape)
    kinds = [r.kind for r in report.layers if not r.container]
    assert kinds.count("Slice") == 4 and kinds.count("Concat") == 2


def test_tied_and_unused_parameters_are_counted_once():
    make, shape = PATTERNS["tied"]
    model = make()
    report = summary(model, shape)
    rows = {r.name: r.params for r in report.layers if not r.container}
    assert rows["a"] == 4 * 4 * 9 + 4  # the shared weight with the layer that reads it first
    assert rows["b"] == 4  # its own bias only
    assert rows["a_1"] == 0  # the second call of a
    assert rows["unused.weight"] + rows["unused.bias"] == 12  # on rows of their own


def test_a_model_that_branches_on_sizes_is_read():
    """MobileViT's check and TF-same padding: plain Python on the input's size."""
    make, shape = PATTERNS["mobilevit_unfold"]
    report = summary(make(), shape)
    assert report.layers[0].output_shape == (8, 8, 10)
    assert report.method.startswith("run once")


def test_channels_last_linear_keeps_the_field():
    make, shape = PATTERNS["convnext"]
    report = summary(make(), shape)
    rows = {r.name: r for r in report.layers}
    block = "2"  # the first ConvNeXt block
    assert rows[f"{block}.dwconv"].field.size[0] == 4 + 6 * 4  # stem 4, then a 7-tap window
    for layer in ("norm", "pwconv1", "act", "pwconv2"):
        assert rows[f"{block}.{layer}"].field == rows[f"{block}.dwconv"].field.permuted(
            (0, 2, 3, 1)
        )


def test_window_attention_is_not_called_global():
    make, shape = PATTERNS["swin"]
    report = summary(make(), shape)
    attention = [r for r in report.layers if r.repeat != 1 and r.field is not None]
    assert attention and not any(r.field.global_ and not r.field.unknown for r in attention)


class Functional(tnn.Module):
    """Every functional form a family maps, called on the module's own parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(4, 6, 3, padding=1)
        self.convt = tnn.ConvTranspose2d(6, 4, 2, stride=2)
        self.gn = tnn.GroupNorm(2, 4)
        self.inorm = tnn.InstanceNorm2d(4, affine=True)
        self.fc = tnn.Linear(4, 5)
        self.fc2 = tnn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.conv.weight, self.conv.bias, 1, 1)
        x = F.conv_transpose2d(x, self.convt.weight, self.convt.bias, stride=2)
        x = F.group_norm(x, 2, self.gn.weight, self.gn.bias)
        x = F.instance_norm(x, weight=self.inorm.weight, bias=self.inorm.bias)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = F.linear(x, self.fc.weight, self.fc.bias)
        return torch.addmm(self.fc2.bias, x, self.fc2.weight.t())


def test_functional_forms_count_as_their_layers():
    model = Functional()
    report = summary(model, (4, 6, 6))
    kinds = [r.kind for r in report.layers if not r.container and r.kind != "Move"]
    assert kinds == [
        "Conv2d",
        "ConvTranspose2d",
        "GroupNorm",
        "InstanceNorm2d",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "Linear",
    ]
    assert report.unsupported == []
    assert report.total_params == unique_numel(model.parameters())
    assert report.total_macs == flop_counter_macs(model, (4, 6, 6))


def test_work_on_parameters_is_counted_once_per_forward():
    """Swin V2's bias MLP runs on a buffer: counted (FlopCounterMode counts it), on its own
    rows, and the same at any batch, since it does not run per sample."""
    make, shape = PATTERNS["swin_v2"]
    model = make()
    one, four = summary(model, shape, batch=1), summary(model, shape, batch=4)
    side = [r.name for r in one.layers if r.kind.endswith("(on parameters)")]
    assert any("cpb_mlp" in name for name in side)
    macs = {r.name: r.macs for r in one.layers}
    assert all(macs[n] == {r.name: r.macs for r in four.layers}[n] for n in side)
    # two blocks, each 49 coordinates through Linear(2, 32) and Linear(32, 2 heads)
    assert sum(macs[n] for n in side) == 2 * (7 * 7 * 2 * 32 + 7 * 7 * 32 * 2)


class RelativeBiasEinsum(tnn.Module):
    """MaxViT's (timm, TF port) relative bias: an einsum of a parameter table and a lookup
    buffer, in every forward, added to the features."""

    def __init__(self, heads: int = 2, window: int = 4) -> None:
        super().__init__()
        self.conv = tnn.Conv2d(3, heads * window, 3, padding=1)  # (heads · w) × w × w
        self.table = tnn.Parameter(torch.randn(heads, 2 * window - 1, 2 * window - 1))
        self.register_buffer("lookup", torch.randn(window, window, 2 * window - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.einsum("nhw,ixh->nixw", self.table, self.lookup)  # (heads, w, w, 2w − 1)
        bias = torch.einsum("nixw,jyw->nixjy", bias, self.lookup)  # operands of two ranks
        return self.conv(x) + bias[..., 0].reshape(1, -1, 4, 4)


def test_an_einsum_of_parameter_tables_is_counted():
    model = RelativeBiasEinsum()
    report = summary(model, (3, 4, 4))
    assert report.total_macs == flop_counter_macs(model, (3, 4, 4))
    assert sum(r.kind == "Einsum (on parameters)" for r in report.layers) == 2
    assert report.total_params == unique_numel(model.parameters())
