"""Building blocks of PTG-RM (torch + einops only; no encoders, no training).

Notation follows ``PAPER.md``: ``c`` is the refiner width, ``D`` the prior (OSF) length, ``k`` the size
of the predicted per-pixel kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "GatedDConvFeedForward",
    "LayerNorm2d",
    "PositionEmbedding",
    "PriorMapping",
    "ResidualBlock",
    "TransformerBlock",
    "TransposedAttention",
    "per_pixel_conv",
]

_SLOPE = 0.1  # LeakyReLU negative slope used throughout the paper's module


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, with weight and bias.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class TransposedAttention(nn.Module):
    """Multi-Dconv-head transposed attention (MDTA): attention across channels, not pixels.

    Cost is linear in the number of pixels, so it runs at any resolution.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, heads: int = 1, bias: bool = False) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.proj = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (rearrange(t, "b (n c) h w -> b n c (h w)", n=self.heads) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        out = rearrange(out, "b n c (h w) -> b (n c) h w", h=h, w=w)
        return self.proj(out)


class GatedDConvFeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, expansion: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x)).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, heads: int = 1, expansion: float = 2.66) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = TransposedAttention(channels, heads=heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedDConvFeedForward(channels, expansion=expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ResidualBlock(nn.Module):
    """Short-range branch: x + conv(relu(conv(x))).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class PositionEmbedding(nn.Module):
    """Learnable embedding of a fixed [-1, 1] coordinate grid (S_m / S_c in the paper).

    Shape:
        forward(b, h, w) -> (b, C, h, w)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]
        emb = self.conv2(lrelu(self.conv1(grid)))
        return emb.expand(batch, -1, -1, -1)


class PriorMapping(nn.Module):
    """MLP mapping the 1-D prior g (B, D) to (B, out) (T_m / T_c in the paper), no biases.

    Shape:
        g: (B, D) -> (B, out)
    """

    def __init__(self, dim: int, out: int, *, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out, bias=False)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.fc2(lrelu(self.fc1(g)))


def per_pixel_conv(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Depthwise convolution with a separate k x k kernel at every pixel and channel.

    Accumulates the k^2 shifted copies of the zero-padded input instead of materializing an
    unfolded (B, C, k^2, H, W) copy of it: memory stays at the size of ``kernels``.

    Shape:
        x: (B, C, H, W), kernels: (B, C * k * k, H, W) -> (B, C, H, W)
    """
    b, c, h, w = x.shape
    k = kernel_size
    kernels = kernels.view(b, c, k * k, h, w)
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    out = None
    for i in range(k):
        for j in range(k):
            term = kernels[:, :, i * k + j] * xp[:, :, i : i + h, j : j + w]
            out = term if out is None else out + term
    return out
