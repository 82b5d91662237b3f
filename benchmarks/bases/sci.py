"""SCI (Ma et al., CVPR 2022): self-calibrated illumination learning for low-light enhancement.

At test time SCI keeps only its illumination-estimation network (state-dict prefix ``enhance.``);
the self-calibration module (prefix ``calibrate.``) is a training-time aid and is discarded.

Illumination network (paper, and the key list of ``SCI/*.pt``), with ``C = 3`` channels::

    f = relu(in_conv(x))                                   3 → C, 3×3 conv
    f = f + block(f)   (repeated; one block here)          block = conv 3×3 → BN → ReLU
    u = clamp(x + sigmoid(out_conv(f)), 1e-4, 1)           C → 3, 3×3 conv; residual illumination
    y = clamp(x / u, 0, 1)                                 Retinex: reflectance = image / illumination

The stored files hold the block twice, under ``enhance.conv.*`` and ``enhance.blocks.0.*`` with
identical values: the repeated blocks share one module (weight sharing across stages is the point
of SCI), so :class:`SCI` registers the same module under both names and loads strictly.

The illumination is residual (``x + sigmoid(...)``), as in the paper. Taking the sigmoid output alone
as ``u`` is measurably wrong: on LOL-v1-eval15, ``medium.pt`` then gives 13.89 dB / SSIM 0.419
instead of 14.85 dB / 0.524, and SSIM falls to ≈ 0.41 for all three files (``difficult.pt``'s PSNR
rises, 14.78 instead of 13.87 dB, but its SSIM falls from 0.529 to 0.413).

Channel convention: RGB, 3 channels, in [0, 1]; any H, W (fully convolutional). Three weight files
are released without documentation of their training sets: ``easy``, ``medium`` and
``difficult``; ``medium`` is the default (best on LOL-v1-eval15).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .images import require_data

__all__ = ["SCI", "VARIANTS", "load_sci"]

VARIANTS = ("easy", "medium", "difficult")
"""Released SCI weight files (``SCI/<variant>.pt``)."""


class _Enhance(nn.Module):
    """Illumination-estimation network, keys ``in_conv``, ``conv``, ``blocks``, ``out_conv``."""

    def __init__(self, channels: int = 3, layers: int = 1) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
        )
        # Weight sharing: every stage is the same module.
        self.blocks = nn.ModuleList([self.conv for _ in range(layers)])
        self.out_conv = nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the illumination ``u`` in [1e-4, 1]."""
        f = self.in_conv(x)
        for block in self.blocks:
            f = f + block(f)
        return torch.clamp(x + self.out_conv(f), 1e-4, 1.0)


class SCI(nn.Module):
    """SCI at test time: ``y = clamp(x / u(x), 0, 1)``.

    Args:
        channels: width of the illumination network (3 in the released weights).
        layers: number of (weight-shared) blocks (1 in the released weights).

    Shape:
        (B, 3, H, W) in [0, 1] → (B, 3, H, W) in [0, 1].
    """

    def __init__(self, channels: int = 3, layers: int = 1) -> None:
        super().__init__()
        self.enhance = _Enhance(channels, layers)

    def illumination(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated illumination ``u`` of ``x`` (same shape, in [1e-4, 1])."""
        return self.enhance(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance low-light images.

        Args:
            x: low-light RGB images in [0, 1], shape (B, 3, H, W).

        Returns:
            The enhanced images in [0, 1], same shape.
        """
        return torch.clamp(x / self.enhance(x), 0.0, 1.0)


def load_sci(data_dir: str | Path | None = None, variant: str = "medium") -> SCI:
    """Build :class:`SCI` and load the ``enhance.*`` weights of ``SCI/<variant>.pt`` strictly.

    The ``calibrate.*`` entries (training-only self-calibration module) are dropped; every other
    key must match exactly.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).
        variant: one of :data:`VARIANTS`.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ValueError: unknown ``variant``, or the file holds keys other than ``enhance.*`` and
            ``calibrate.*``.
        EvalDataMissing: the weight file is absent.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    path = require_data(data_dir, "SCI", f"{variant}.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    other = [k for k in state if not k.startswith(("enhance.", "calibrate."))]
    if other:
        raise ValueError(f"unexpected keys in {path}: {other[:5]}")
    model = SCI()
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("enhance.")}, strict=True)
    return model.eval()
