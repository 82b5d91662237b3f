"""Zero-DCE (Guo et al., CVPR 2020): zero-reference deep curve estimation for low-light images.

Architecture (paper, and the key list ``e_conv{1..7}.{weight,bias}``): seven 3×3 convolutions,
stride 1, padding 1, 32 channels, ReLU after the first six, with symmetric skip concatenations::

    x1 = relu(conv1(I))              3  → 32
    x2 = relu(conv2(x1))             32 → 32
    x3 = relu(conv3(x2))             32 → 32
    x4 = relu(conv4(x3))             32 → 32
    x5 = relu(conv5([x3, x4]))       64 → 32
    x6 = relu(conv6([x2, x5]))       64 → 32
    A  = tanh(conv7([x1, x6]))       64 → 24  = 8 curve maps of 3 channels (one per RGB channel)

The image is then enhanced by 8 iterations of the quadratic light-enhancement curve, one per map
``A_n``. **Sign convention**: the paper writes ``LE(x) = x + α·x·(1 − x)``; the released weights were
trained with ``LE(x) = x + A·(x² − x)``, i.e. ``α = −A``. Using the paper's sign with these weights
darkens the image (6.5 dB PSNR on LOL-v1-eval15, below the 7.8 dB of the input itself,
instead of 14.86); :class:`ZeroDCE` uses the weights' convention
(``sign=-1``, so ``x + α x (1 − x)`` with ``α = −A``).

Channel convention: RGB, 3 channels, values in [0, 1]; any H, W (fully convolutional, no padding
needed). The output stays in [0, 1] whenever the input does (``|A| ≤ 1``), and is not clamped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .images import require_data

__all__ = ["WEIGHTS", "ZeroDCE", "load_zerodce"]

WEIGHTS = ("Zero-DCE", "Epoch99.pth")
"""Location of the weights below the evaluation-data folder."""


class ZeroDCE(nn.Module):
    """DCE-Net curve estimator and the iterated quadratic curve.

    Args:
        features: hidden width (32 in the paper).
        iterations: number of curve iterations (8 in the paper, giving 24 output maps).
        sign: ``α = sign · A`` in ``LE(x) = x + α x (1 − x)``. ``-1`` matches the released weights
            (see the module docstring); ``+1`` is the paper's formula read literally.

    Shape:
        (B, 3, H, W) in [0, 1] → (B, 3, H, W).
    """

    def __init__(self, features: int = 32, iterations: int = 8, sign: float = -1.0) -> None:
        super().__init__()
        f = features
        self.e_conv1 = nn.Conv2d(3, f, 3, padding=1)
        self.e_conv2 = nn.Conv2d(f, f, 3, padding=1)
        self.e_conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.e_conv4 = nn.Conv2d(f, f, 3, padding=1)
        self.e_conv5 = nn.Conv2d(2 * f, f, 3, padding=1)
        self.e_conv6 = nn.Conv2d(2 * f, f, 3, padding=1)
        self.e_conv7 = nn.Conv2d(2 * f, 3 * iterations, 3, padding=1)
        self.iterations = iterations
        self.sign = float(sign)

    def curve_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Estimate the curve-parameter maps ``A`` (tanh output, in [-1, 1]).

        Args:
            x: low-light RGB images in [0, 1], shape (B, 3, H, W).

        Returns:
            ``A`` of shape (B, 3 · iterations, H, W).
        """
        x1 = torch.relu(self.e_conv1(x))
        x2 = torch.relu(self.e_conv2(x1))
        x3 = torch.relu(self.e_conv3(x2))
        x4 = torch.relu(self.e_conv4(x3))
        x5 = torch.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = torch.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance low-light images.

        Args:
            x: low-light RGB images in [0, 1], shape (B, 3, H, W).

        Returns:
            The enhanced images, same shape.
        """
        maps = self.curve_maps(x)
        y = x
        for a in torch.split(maps, 3, dim=1):
            y = y + self.sign * a * y * (1 - y)
        return y


def load_zerodce(data_dir: str | Path | None = None, *, sign: float = -1.0) -> ZeroDCE:
    """Build :class:`ZeroDCE` and load the released ``Epoch99.pth`` weights strictly.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).
        sign: curve sign convention (keep ``-1`` for these weights).

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        EvalDataMissing: the weight file is absent.
    """
    path = require_data(data_dir, *WEIGHTS)
    model = ZeroDCE(sign=sign)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
