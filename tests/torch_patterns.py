"""torch.nn models that reproduce how today's timm and torchvision models call torch, for the
adapter's tests and benchmarks (neither library imports beside the CPU torch the tests use).

Each pattern is written as those libraries write it: layers subclassed outside torch.nn,
functional calls on standardised weights, padding computed from the input size, size checks,
channels-last MLPs with layer scale, window attention, token attention, ``cat(chunk)``, tied
weights. The models are small; ``convnext``, ``vit`` and ``swin`` take a ``width`` and
``depth`` so that the benchmark can build them at real sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as tnn
import torch.nn.functional as F

# -- timm-style layers: subclasses of torch.nn layers, defined outside torch.nn -------------------


class StdConv2d(tnn.Conv2d):
    """A weight-standardised conv (timm's StdConv2d, BiT): F.batch_norm on the weight, then
    F.conv2d with the standardised weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            training=True,
            momentum=0.0,
            eps=1e-6,
        ).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class BatchNormAct2d(tnn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm, then an activation module."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = tnn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps
        )
        return self.act(x)


class Linear(tnn.Linear):
    """timm's Linear: F.linear in its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class LayerNorm2d(tnn.LayerNorm):
    """timm's LayerNorm2d: a LayerNorm over the channels of (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Conv2dSame(tnn.Conv2d):
    """TF "same" padding computed from the input's size in forward (timm's tf_* models)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pads = []
        for size, k, s, d in zip((iw, ih), self.kernel_size[::-1], self.stride[::-1], (1, 1)):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MyConv(tnn.Conv2d):
    """A user's subclass that changes nothing."""


class MyBN(tnn.BatchNorm2d):
    """A user's subclass that changes nothing."""


def timm_style_cnn() -> tnn.Module:
    """Subclassed and functional layers of a BiT/ResNetV2-style stem and head."""
    return tnn.Sequential(
        StdConv2d(3, 16, 3, padding=1, bias=False),
        BatchNormAct2d(16),
        MyConv(16, 16, 3, padding=1),
        MyBN(16),
        LayerNorm2d(16),
        Conv2dSame(16, 24, 3, stride=2),
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        Linear(24, 10),
    )


# -- shapes decided in forward ------------------------------------------------------------------


class MobileViTUnfold(tnn.Module):
    """MobileViT's check: resize when the size is not a multiple of the patch, then unfold
    patches into the batch axis, attend-free MLP on them, and fold back."""

    def __init__(self, channels: int = 8, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.conv = tnn.Conv2d(channels, channels, 3, padding=1)
        self.mlp = tnn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        new_h, new_w = math.ceil(h / p) * p, math.ceil(w / p) * p
        if new_h != h or new_w != w:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        x = self.conv(x)
        nh, nw = new_h // p, new_w // p
        x = x.reshape(b, c, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, -1, c)
        x = self.mlp(x)
        x = x.reshape(b, p, p, nh, nw, c).permute(0, 5, 3, 1, 4, 2)
        return x.reshape(b, c, new_h, new_w)


class CatChunk(tnn.Module):
    """``torch.cat(x.chunk(2, 1), 1)`` around two convs (a channel split and rejoin)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.a = tnn.Conv2d(channels // 2, channels // 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=1)
        y = torch.cat(x.chunk(2, dim=1), dim=1)
        return y + torch.cat((self.a(left), right), 1)


class Tied(tnn.Module):
    """One weight shared by two layers, and one layer called twice."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.a = tnn.Conv2d(channels, channels, 3, padding=1)
        self.b = tnn.Conv2d(channels, channels, 3, padding=1)
        self.b.weight = self.a.weight
        self.unused = tnn.Linear(3, 3)  # never called: its parameters are still the model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.a(x)


# -- ConvNeXt: channels-last MLP with layer scale ------------------------------------------------


class ConvNeXtBlock(tnn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = tnn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = tnn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = tnn.Linear(dim, 4 * dim)
        self.act = tnn.GELU()
        self.pwconv2 = tnn.Linear(4 * dim, dim)
        self.gamma = tnn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


def convnext(width: int = 16, depth: int = 1, classes: int = 10) -> tnn.Module:
    """A ConvNeXt: patchify stem, four stages of blocks with downsampling between them."""
    dims = [width, 2 * width, 4 * width, 8 * width]
    layers: list[tnn.Module] = [tnn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0])]
    for i, dim in enumerate(dims):
        if i:
            layers += [LayerNorm2d(dims[i - 1]), tnn.Conv2d(dims[i - 1], dim, 2, stride=2)]
        layers += [ConvNeXtBlock(dim) for _ in range(depth)]
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.LayerNorm(dims[-1])]
    layers += [tnn.Linear(dims[-1], classes)]
    return tnn.Sequential(*layers)


# -- ViT: class token, position embedding, token attention ---------------------------------------


class Attention(tnn.Module):
    """timm's Attention: one qkv Linear, heads split by reshape and permute, fused SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(tnn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = tnn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(tnn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(tnn.Linear(dim, 4 * dim), tnn.GELU(), tnn.Linear(4 * dim, dim))


class ViTBlock(tnn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = tnn.LayerNorm(dim), Attention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = tnn.LayerNorm(dim), Mlp(dim), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViT(tnn.Module):
    def __init__(self, size: int = 32, patch: int = 8, dim: int = 32, depth: int = 1) -> None:
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch_embed = tnn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = tnn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = tnn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = tnn.Sequential(*[ViTBlock(dim, max(dim // 32, 2)) for _ in range(depth)])
        self.norm = tnn.LayerNorm(dim)
        self.head = tnn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x)[:, 0])


# -- Swin: window attention with a relative position bias ----------------------------------------


class WindowAttention(tnn.Module):
    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)
        self.table = tnn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        )
        flat = coords.flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer(
            "index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class ContinuousBiasAttention(WindowAttention):
    """Swin V2's bias: a small MLP run on a buffer of relative coordinates, in every forward
    (work on the model's own tensors, not on the input)."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__(dim, heads, window)
        side = torch.arange(-(window - 1), window, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1)[None]
        self.register_buffer("coords", table, persistent=False)
        self.cpb_mlp = tnn.Sequential(tnn.Linear(2, 32), tnn.ReLU(), tnn.Linear(32, heads))
        del self.table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        table = self.cpb_mlp(self.coords).view(-1, self.heads)
        bias = table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = (attn + 16 * torch.sigmoid(bias).unsqueeze(0)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinBlock(tnn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, v2: bool = False) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        attention = ContinuousBiasAttention if v2 else WindowAttention
        self.norm1, self.attn = tnn.LayerNorm(dim), attention(dim, heads, window)
        self.norm2, self.mlp = tnn.LayerNorm(dim), Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, shortcut = self.window, x
        x = self.norm1(x)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Swin(tnn.Module):
    def __init__(self, dim: int = 16, depth: int = 2, window: int = 4, v2: bool = False) -> None:
        super().__init__()
        self.patch_embed = tnn.Conv2d(3, dim, 4, stride=4)
        self.norm0 = tnn.LayerNorm(dim)
        self.blocks = tnn.Sequential(
            *[SwinBlock(dim, 2, window, (window // 2) * (i % 2), v2) for i in range(depth)]
        )
        self.norm = tnn.LayerNorm(dim)
        self.head = tnn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm0(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=(1, 2)))


# -- nn.MultiheadAttention over flattened tokens -------------------------------------------------


class TokenMHA(tnn.Module):
    """A conv stem, its positions as a sequence (sequence-first), nn.MultiheadAttention."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.stem = tnn.Conv2d(3, dim, 4, stride=4)
        self.attn = tnn.MultiheadAttention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).permute(2, 0, 1)
        return self.attn(t, t, t)[0]


class PositionalGrid(tnn.Module):
    """EdgeNeXt's Fourier position encoding, reduced: a grid built from the input's size and
    a 1×1 conv run on it in forward, added to the features."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.stem = tnn.Conv2d(3, channels, 3, padding=1)
        self.projection = tnn.Conv2d(2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h, w = x.shape[-2:]
        grid = torch.stack(
            torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        )[None]
        return x + self.projection(grid.to(x.device))


class SplitAttention(tnn.Module):
    """ResNeSt's split attention: radix branches summed (a reduction over a regrouped axis),
    a gate from their mean, a softmax over the radix axis after a view and a transpose."""

    def __init__(self, channels: int = 8, radix: int = 2) -> None:
        super().__init__()
        self.radix = radix
        self.conv = tnn.Conv2d(channels, channels * radix, 3, padding=1, groups=radix)
        self.fc = tnn.Conv2d(channels, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = self.conv(x).view(b, self.radix, c, *x.shape[2:])
        gap = self.fc(y.sum(dim=1).mean((2, 3), keepdim=True))
        attn = gap.view(b, 1, self.radix, -1).transpose(1, 2).softmax(dim=1)
        attn = attn.reshape(b, self.radix, c, 1, 1)
        return (y * attn).sum(dim=1)


#: name → (make the model, input shape without the batch)
PATTERNS = {
    "timm_style_cnn": (timm_style_cnn, (3, 17, 17)),
    "mobilevit_unfold": (MobileViTUnfold, (8, 7, 9)),
    "cat_chunk": (CatChunk, (8, 6, 6)),
    "tied": (Tied, (4, 8, 8)),
    "convnext": (convnext, (3, 64, 64)),
    "vit": (ViT, (3, 32, 32)),
    "swin": (Swin, (3, 32, 32)),
    "swin_v2": (lambda: Swin(v2=True), (3, 32, 32)),
    "positional_grid": (PositionalGrid, (3, 8, 8)),
    "split_attention": (SplitAttention, (8, 6, 6)),
    "token_mha": (TokenMHA, (3, 16, 16)),
}
