"""DnCNN (Zhang et al., TIP 2017), the grayscale σ = 25 model of KAIR with batch norm merged.

Architecture (from the paper and the key list ``model.{0,2,...,32}.{weight,bias}``): 17 convolutions
3×3 with bias, padding 1 — ``1 → 64``, 15 × ``64 → 64``, ``64 → 1`` — with a ReLU after each but the
last (the BN layers of the paper are folded into the conv weights and biases). The network predicts
the noise: ``output = input − net(input)`` (residual learning).

Channel convention: 1 channel (gray). An RGB input is denoised channel by channel (each channel
treated as an independent gray image); this is *not* the colour DnCNN model, only a convenience.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .images import require_data

__all__ = ["WEIGHTS", "DnCNN", "load_dncnn"]

WEIGHTS = ("DnCNN-KAIR", "dncnn_25.pth")
"""Location of the weights below the evaluation-data folder."""


class DnCNN(nn.Module):
    """Residual denoiser: ``x − net(x)`` with ``net`` a plain stack of 3×3 conv + ReLU.

    Args:
        channels: image channels of the model (1 for the gray KAIR model).
        features: width of the hidden layers.
        depth: number of convolutions (17 for DnCNN-S).

    Shape:
        (B, C, H, W) in [0, 1] → (B, C, H, W). Any H, W ≥ 1 (no padding needed). If ``C`` differs
        from ``channels`` and ``channels == 1``, each channel is denoised separately.
    """

    def __init__(self, channels: int = 1, features: int = 64, depth: int = 17) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.model = nn.Sequential(*layers)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x``.

        Args:
            x: noisy images in [0, 1], shape (B, C, H, W).

        Returns:
            The denoised images (not clamped), same shape.
        """
        b, c, h, w = x.shape
        if c != self.channels and self.channels == 1:
            y = x.reshape(b * c, 1, h, w)
            return (y - self.model(y)).reshape(b, c, h, w)
        return x - self.model(x)


def load_dncnn(data_dir: str | Path | None = None) -> DnCNN:
    """Build :class:`DnCNN` and load the KAIR σ = 25 gray weights strictly.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        EvalDataMissing: the weight file is absent.
    """
    path = require_data(data_dir, *WEIGHTS)
    model = DnCNN(channels=1, features=64, depth=17)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
