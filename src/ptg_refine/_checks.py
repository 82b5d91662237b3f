"""Validation of tensors at public entry points (the only module that does it)."""

from __future__ import annotations

import torch

from .errors import DeviceMismatchError, DTypeError, ShapeError

__all__ = ["check_features", "check_image", "check_same_device", "check_same_shape"]


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_image(
    x: object,
    name: str = "image",
    *,
    channels: int | tuple[int, ...] | None = (1, 3),
) -> torch.Tensor:
    """Check that ``x`` is a float image batch ``(B, C, H, W)`` with an allowed channel count.

    Raises:
        TypeError / DTypeError: not a tensor, or not floating point.
        ShapeError: wrong number of dimensions, empty, or wrong channel count.
    """
    if not isinstance(x, torch.Tensor):
        raise DTypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}. "
            "Hint: convert with torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255."
        )
    if x.ndim != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
        raise ShapeError(f"{name} must have 4 dimensions (B, C, H, W), got {_describe(x)}.{hint}")
    if not x.is_floating_point():
        raise DTypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got {_describe(x)}. "
            "Hint: for uint8 images use x.float() / 255."
        )
    if x.numel() == 0:
        raise ShapeError(f"{name} is empty: {_describe(x)}.")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            raise ShapeError(
                f"{name} must have {' or '.join(map(str, allowed))} channels in dim 1 (B, C, H, W), "
                f"got {_describe(x)}. Hint: channels-last arrays need x.permute(0, 3, 1, 2)."
            )
    return x


def check_features(features: object, batch: int, dim: int, name: str = "features") -> torch.Tensor:
    """Check an encoder feature batch ``(B, D)``."""
    if not isinstance(features, torch.Tensor):
        raise DTypeError(
            f"{name} must be a torch.Tensor of shape (B, D), got {type(features).__name__}."
        )
    if features.ndim != 2 or features.shape[0] != batch or features.shape[1] != dim:
        raise ShapeError(
            f"{name} must have shape (B={batch}, D={dim}), got {_describe(features)}. Hint: the "
            f"refiner was built with embed_dim={dim}; use an encoder of that output size."
        )
    if not features.is_floating_point():
        raise DTypeError(f"{name} must be floating point, got {_describe(features)}.")
    return features


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Check that two image batches have the same shape."""
    if a.shape != b.shape:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Hint: the base network must return an image of its input's size."
        )


def check_same_device(x: torch.Tensor, module: torch.nn.Module, name: str = "input") -> None:
    """Check that ``x`` lives on the device of ``module``'s parameters (if it has any)."""
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    if p is not None and p.device != x.device:
        raise DeviceMismatchError(
            f"{name} is on {x.device} but the model is on {p.device}. "
            f"Hint: move one of them, e.g. x = x.to('{p.device}') or model.to('{x.device}')."
        )
