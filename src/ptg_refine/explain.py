"""Explanations of what a refiner does to an image: its range map and attention maps.

``explain(refiner, restored, degraded, features)`` runs the refiner once and returns, at image size:

* ``range_map`` M of PTG-SVE (Eqs. 2-3): 1 where the short-range branch (a residual block) was
  chosen, 0 where the long-range branch (transformer blocks) was chosen;
* ``spatial_attention`` M_s of PTG-CSA (Eqs. 5-6);
* ``channel_attention`` M_c of PTG-CSA (Eq. 4), one weight per feature channel, (B, c);
* ``mask`` I_m and ``residual`` I_r of Eq. 1 (``mask`` = 1: the base output is kept as is).

The 1/4-resolution maps are upsampled bilinearly to the input's (padded) size and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Explanation", "explain", "overlay"]


@dataclass
class Explanation:
    """What :func:`explain` returns (all tensors detached, float32, on the input's device).

    Shape:
        range_map, spatial_attention: (B, 1, H, W) in [0, 1].
        channel_attention: (B, c) in [0, 1].
        mask: (B, C, H, W) in [0, 2]; residual: (B, C, H, W).
        refined: (B, C, H, W), the refiner's output.
    """

    range_map: torch.Tensor
    spatial_attention: torch.Tensor
    channel_attention: torch.Tensor
    mask: torch.Tensor
    residual: torch.Tensor
    refined: torch.Tensor


def explain(
    refiner, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
) -> Explanation:
    """Run ``refiner`` once and capture its range map and attention maps (see module docstring)."""
    refiner._validate(restored, degraded, features)
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            captured[name] = output.detach()

        return hook

    handles = [
        refiner.range_conv2.register_forward_hook(keep("range")),
        refiner.spatial_conv.register_forward_hook(keep("spatial")),
        refiner.channel_fc2.register_forward_hook(keep("channel")),
    ]
    try:
        with torch.no_grad():
            logit, residual = refiner._predict(restored, degraded, features)
    finally:
        for h in handles:
            h.remove()
    h, w = restored.shape[-2:]
    pad_h, pad_w = -(-h // 4) * 4, -(-w // 4) * 4

    def to_image(t: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(
            torch.sigmoid(t.float()), size=(pad_h, pad_w), mode="bilinear", align_corners=False
        )
        return up[..., :h, :w].contiguous()

    mask = 1 + torch.tanh(logit.float())
    refined = restored + (restored - degraded) * (mask - 1).to(restored.dtype) + residual
    return Explanation(
        range_map=to_image(captured["range"]),
        spatial_attention=to_image(captured["spatial"]),
        channel_attention=torch.sigmoid(captured["channel"].float()),
        mask=mask,
        residual=residual.float(),
        refined=refined.detach(),
    )


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.55) -> torch.Tensor:
    """Blend a [0, 1] heat map over an image (blue = 0, red = 1) for viewing.

    Shape:
        image: (C, H, W) with C in {1, 3}; heat: (1, H, W) -> (3, H, W)
    """
    base = image.clamp(0, 1).expand(3, -1, -1) if image.shape[0] == 1 else image.clamp(0, 1)
    heat = heat.clamp(0, 1)
    colour = torch.cat([heat, 1 - (2 * heat - 1).abs(), 1 - heat], dim=0)
    return (1 - alpha) * base + alpha * colour
