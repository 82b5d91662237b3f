"""PReNet / PRN (Ren et al., CVPR 2019): progressive (recurrent) image deraining networks.

One stage, repeated ``T = 6`` times with shared weights (paper, and the key lists of
``PReNet/logs/<set>/<variant>/net_latest.pth``), starting from ``x⁰ = y`` (the rainy image)::

    z = relu(conv0([y, xᵗ⁻¹]))                        6 → 32, 3×3 conv
    i, f, o = σ(conv_{i,f,o}([z, h])); g = tanh(conv_g([z, h]))   64 → 32 each (ConvLSTM;
    c = f·c + i·g;  z = h = o·tanh(c)                             PReNet only, not PRN)
    z = relu(res_k(z) + z)    for k = 1..5            res_k = conv 3×3, ReLU, conv 3×3, ReLU
    xᵗ = y + conv(z)                                  32 → 3, 3×3 conv; residual on the rainy input

The ``_r`` variants are recursive: one ResBlock (``res_conv1``) applied 5 times. The LSTM state
``(h, c)`` starts at zero. The output is the last stage ``x⁶``, clamped to [0, 1] as in the test
protocol of the paper.

Channel convention: RGB, 3 channels, in [0, 1]; any H, W (fully convolutional, no padding).
Score deraining on the Y channel (``psnr(..., y_channel=True)``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .images import require_data

__all__ = ["DATASETS", "VARIANTS", "PReNet", "load_prenet"]

DATASETS = ("Rain100L", "Rain100H", "Rain1400")
"""Training sets of the released weights (``PReNet/logs/<dataset>/<variant>/net_latest.pth``)."""

VARIANTS = ("PReNet6", "PReNet6_r", "PRN6", "PRN6_r")
"""Released variants: with/without ConvLSTM (PReNet/PRN), plain or recursive ResBlocks (``_r``)."""


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class PReNet(nn.Module):
    """Progressive recurrent deraining network.

    Args:
        stages: number of recurrent stages ``T`` (6 in the released weights).
        features: hidden width (32).
        lstm: use the ConvLSTM (PReNet) or not (PRN).
        recursive: one shared ResBlock applied ``blocks`` times (``_r`` variants) instead of
            ``blocks`` distinct ones.
        blocks: number of ResBlock applications per stage (5).

    Shape:
        (B, 3, H, W) in [0, 1] → (B, 3, H, W) in [0, 1].
    """

    def __init__(
        self,
        stages: int = 6,
        features: int = 32,
        *,
        lstm: bool = True,
        recursive: bool = False,
        blocks: int = 5,
    ) -> None:
        super().__init__()
        f = features
        self.stages = stages
        self.features = features
        self.lstm = lstm
        self.recursive = recursive
        self.blocks = blocks
        self.conv0 = _conv_relu(6, f)
        for k in range(1 if recursive else blocks):
            block = nn.Sequential(
                nn.Conv2d(f, f, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(f, f, 3, padding=1),
                nn.ReLU(),
            )
            self.add_module(f"res_conv{k + 1}", block)
        if lstm:
            self.conv_i = nn.Sequential(nn.Conv2d(2 * f, f, 3, padding=1), nn.Sigmoid())
            self.conv_f = nn.Sequential(nn.Conv2d(2 * f, f, 3, padding=1), nn.Sigmoid())
            self.conv_g = nn.Sequential(nn.Conv2d(2 * f, f, 3, padding=1), nn.Tanh())
            self.conv_o = nn.Sequential(nn.Conv2d(2 * f, f, 3, padding=1), nn.Sigmoid())
        self.conv = nn.Sequential(nn.Conv2d(f, 3, 3, padding=1))

    def _res_blocks(self) -> list[nn.Module]:
        if self.recursive:
            return [self.res_conv1] * self.blocks
        return [getattr(self, f"res_conv{k + 1}") for k in range(self.blocks)]

    def forward_stages(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Run all stages and return every stage's (unclamped) estimate ``x¹ … xᵀ``.

        Args:
            y: rainy RGB images in [0, 1], shape (B, 3, H, W).

        Returns:
            ``T`` tensors of shape (B, 3, H, W).
        """
        b, _, hgt, wid = y.shape
        x = y
        h = y.new_zeros(b, self.features, hgt, wid)
        c = y.new_zeros(b, self.features, hgt, wid)
        blocks = self._res_blocks()
        out = []
        for _ in range(self.stages):
            z = self.conv0(torch.cat([y, x], 1))
            if self.lstm:
                zh = torch.cat([z, h], 1)
                i, f, g, o = self.conv_i(zh), self.conv_f(zh), self.conv_g(zh), self.conv_o(zh)
                c = f * c + i * g
                h = o * torch.tanh(c)
                z = h
            for block in blocks:
                z = torch.relu(block(z) + z)
            x = y + self.conv(z)
            out.append(x)
        return out

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Derain ``y``; returns the last stage clamped to [0, 1], same shape."""
        return self.forward_stages(y)[-1].clamp(0.0, 1.0)


def load_prenet(
    data_dir: str | Path | None = None,
    variant: str = "PReNet6",
    dataset: str = "Rain100L",
) -> PReNet:
    """Build :class:`PReNet` for a released checkpoint and load it strictly.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).
        variant: one of :data:`VARIANTS`.
        dataset: training set, one of :data:`DATASETS`.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ValueError: unknown ``variant`` or ``dataset``.
        EvalDataMissing: the weight file is absent.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    path = require_data(data_dir, "PReNet", "logs", dataset, variant, "net_latest.pth")
    model = PReNet(lstm=variant.startswith("PReNet"), recursive=variant.endswith("_r"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
