"""The :class:`Encoder` base class: a frozen image -> prior-vector ``g`` module (the OSF of PAPER.md)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_image
from ..errors import EncoderError, ShapeError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Encoder"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_NORM_EPS = 1e-12


def _as_input_size(value: Any) -> int | None:
    """Validate an ``input_size``: ``None`` (native resolution) or a positive int (square side)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if len(value) == 3:  # timm style (C, H, W)
            value = value[1:]
        if len(value) == 2 and value[0] == value[1]:
            value = value[0]
        else:
            raise EncoderError(
                f"input_size must be one int (a square side) or None, got {value!r}. "
                "Hint: encoders resize to input_size x input_size; non-square inputs are not supported."
            )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EncoderError(f"input_size must be a positive int or None, got {value!r}.")
    return int(value)


def _as_triple(value: Any, name: str, *, positive: bool = False) -> tuple[float, float, float]:
    """Validate a per-channel ``mean`` / ``std``: one number or a sequence of 1 or 3 numbers."""
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) not in (1, 3):
        raise EncoderError(
            f"{name} must be a number or a sequence of 1 or 3 numbers, got {value!r}."
        )
    try:
        floats = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise EncoderError(f"{name} must contain numbers, got {value!r}.") from exc
    if len(floats) == 1:
        floats = floats * 3
    if not all(math.isfinite(v) for v in floats) or (positive and min(floats) <= 0):
        expected = "finite positive numbers" if positive else "finite numbers"
        raise EncoderError(f"{name} must contain {expected}, got {value!r}.")
    return floats  # type: ignore[return-value]


class Encoder(nn.Module):
    """Frozen encoder mapping a degraded image batch to its prior vector ``g`` (one per image).

    Subclasses implement :meth:`embed`, which receives images that are already clamped to [0, 1],
    replicated to 3 channels, resized to ``input_size`` (when set) and normalized with ``mean`` /
    ``std``. :meth:`forward` does that preprocessing, then flattens, casts to float32 and
    L2-normalizes the result, all under ``torch.no_grad()``.

    An encoder is always frozen: its parameters do not require gradients and it stays in eval mode
    (``.train(True)`` is ignored), so it can live inside a model that is being trained.

    Attributes:
        dim: Output length ``D``.
        input_size: Square side the images are resized to, or ``None`` for native resolution.
        mean: Per-channel normalization mean (3 floats).
        std: Per-channel normalization std (3 floats).
        spec: The spec string that rebuilds this encoder with
            :func:`~ptg_refine.encoders.create_encoder`, or ``None`` (user modules).

    Shape:
        images: (B, C, H, W) with C in {1, 3}, values in [0, 1], any H and W -> (B, D) float32,
        L2-normalized, on the device of ``images``.

    Example:
        >>> import torch
        >>> from ptg_refine.encoders import create_encoder
        >>> enc = create_encoder("stats")
        >>> g = enc(torch.rand(2, 3, 40, 56))
        >>> g.shape == (2, enc.dim), g.dtype
        (True, torch.float32)
    """

    dim: int
    input_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: str | None

    def __init__(
        self,
        *,
        dim: int,
        input_size: int | None = None,
        mean: Sequence[float] | float = (0.0, 0.0, 0.0),
        std: Sequence[float] | float = (1.0, 1.0, 1.0),
        spec: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise EncoderError(f"dim must be a positive int, got {dim!r}.")
        self.dim = int(dim)
        self.spec = spec
        self.input_size = None
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        self.register_buffer("_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.ones(1, 3, 1, 1), persistent=False)
        self.set_preprocess(input_size=input_size, mean=mean, std=std, keep_unset=False)

    # ------------------------------------------------------------------ configuration
    def set_preprocess(
        self,
        *,
        input_size: Any = None,
        mean: Any = None,
        std: Any = None,
        keep_unset: bool = True,
    ) -> Encoder:
        """Change the preprocessing in place.

        Args:
            input_size: New square side (int) or ``None``.
            mean: New per-channel mean (1 or 3 numbers) or ``None``.
            std: New per-channel std (1 or 3 positive numbers) or ``None``.
            keep_unset: If True (default), arguments left at ``None`` keep their current value;
                if False, ``input_size=None`` means native resolution.

        Returns:
            ``self``.

        Raises:
            EncoderError: A value is malformed.
        """
        if input_size is not None or not keep_unset:
            self.input_size = _as_input_size(input_size)
        if mean is not None:
            self.mean = _as_triple(mean, "mean")
            self._mean.copy_(torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1))
        if std is not None:
            self.std = _as_triple(std, "std", positive=True)
            self._std.copy_(torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1))
        return self

    def preprocess_config(self) -> dict[str, Any]:
        """The preprocessing that defines this encoder's output, as plain JSON values.

        Stored next to the spec string in a refiner's ``config.json``;
        ``create_encoder(spec, **encoder.preprocess_config())`` rebuilds an encoder with exactly
        this preprocessing, whatever the library defaults become.

        Returns:
            ``{"input_size": int | None, "mean": [3 floats], "std": [3 floats], "dim": int}``.
        """
        return {
            "input_size": self.input_size,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "dim": int(self.dim),
        }

    # ------------------------------------------------------------------ frozen / eval
    def freeze(self) -> Encoder:
        """Make every parameter non-trainable and switch to eval mode. Returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Ignore ``mode``: an encoder always stays in eval mode (frozen statistics, no dropout)."""
        return super().train(False)

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Compute features of preprocessed images (implemented by subclasses).

        Args:
            x: (B, 3, h, w) normalized images on this encoder's device, in its parameters' dtype.

        Returns:
            (B, D) features (any float dtype; extra trailing dims are flattened).
        """
        raise NotImplementedError

    def _device(self) -> torch.device:
        return self._mean.device

    def _compute_dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Clamp, replicate grayscale, resize and normalize (no validation; float32 result).

        Args:
            images: (B, C, H, W) with C in {1, 3}.

        Returns:
            (B, 3, h, w) float32 on this encoder's device.
        """
        x = images.to(device=self._device(), dtype=torch.float32).clamp(0.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.input_size
        if size is not None and (x.shape[-2], x.shape[-1]) != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - self._mean) / self._std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images into L2-normalized prior vectors.

        Args:
            images: (B, C, H, W) float, C in {1, 3}, values in [0, 1] (clamped), any H and W. Moved
                to the encoder's device if needed.

        Returns:
            (B, D) float32, unit L2 norm per row, on the device of ``images``.

        Raises:
            ShapeError / DTypeError: ``images`` is not a (B, 1|3, H, W) float tensor.
            ShapeError: the wrapped model returned a feature length other than ``dim``.
        """
        check_image(images, "images")
        with torch.no_grad():
            x = self.preprocess(images).to(self._compute_dtype())
            feats = self.embed(x)
            if isinstance(feats, (tuple, list)):
                feats = feats[0]
            feats = feats.reshape(feats.shape[0], -1).float()
            if feats.shape[1] != self.dim:
                raise ShapeError(
                    f"{type(self).__name__} produced features of length {feats.shape[1]}, but its "
                    f"dim is {self.dim} (spec {self.spec!r}). Hint: pass the right dim= or check "
                    "the model's output."
                )
            feats = F.normalize(feats, p=2.0, dim=1, eps=_NORM_EPS)
        return feats.to(images.device)

    def extra_repr(self) -> str:
        return (
            f"spec={self.spec!r}, dim={self.dim}, input_size={self.input_size}, "
            f"mean={self.mean}, std={self.std}"
        )
