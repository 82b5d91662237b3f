"""Wrap any ``nn.Module`` or callable as a frozen :class:`Encoder`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import EncoderError
from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder

__all__ = ["ModuleEncoder"]

_PROBE_SIZE = 224  # probe resolution when input_size is None


class ModuleEncoder(Encoder):
    """A user model (or plain function) used as the prior encoder ``G``.

    The wrapped ``module`` receives normalized images (B, 3, input_size, input_size) and must return
    (B, D) features (or (B, ...) which is flattened; a tuple/list output uses its first element).
    Wrapping freezes it: its parameters get ``requires_grad=False`` and it is put in eval mode.

    Args:
        module: An ``nn.Module`` or a callable ``f(images) -> features``.
        input_size: Square side images are resized to (default 224; ``None``: native resolution).
        mean: Normalization mean (default ImageNet).
        std: Normalization std (default ImageNet).
        dim: Output length ``D``. If ``None``, found by running ``module`` once on a dummy batch.
        spec: Optional spec string to record (default ``None``: not rebuildable from a string).

    Shape:
        images: (B, C, H, W), C in {1, 3}, values in [0, 1] -> (B, D) float32, L2-normalized.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> enc = ModuleEncoder(nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()), input_size=32)
        >>> enc.dim, enc(torch.rand(2, 1, 20, 30)).shape
        (48, torch.Size([2, 48]))
    """

    def __init__(
        self,
        module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        input_size: int | None = 224,
        mean: Sequence[float] | float = IMAGENET_MEAN,
        std: Sequence[float] | float = IMAGENET_STD,
        dim: int | None = None,
        spec: str | None = None,
    ) -> None:
        if not callable(module):
            raise EncoderError(
                f"ModuleEncoder needs an nn.Module or a callable, got {type(module).__name__}."
            )
        super().__init__(dim=dim or 1, input_size=input_size, mean=mean, std=std, spec=spec)
        if isinstance(module, nn.Module):
            self.module = module
            self._fn = None
            p = next(module.parameters(), None)
            if p is not None:  # keep the normalization buffers on the module's device
                self._mean = self._mean.to(p.device)
                self._std = self._std.to(p.device)
        else:
            self.module = None
            self._fn = module
        self.freeze()
        if dim is None:
            self.dim = self._probe_dim()

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) if self.module is not None else self._fn(x)

    def _probe_dim(self) -> int:
        """Run the wrapped model once on a dummy (1, 3, s, s) batch to find ``D``."""
        size = self.input_size or _PROBE_SIZE
        x = torch.zeros(1, 3, size, size, device=self._device(), dtype=self._compute_dtype())
        try:
            with torch.no_grad():
                out = self._call(x)
        except Exception as exc:
            raise EncoderError(
                f"Could not find the output size of {type(self.module or self._fn).__name__} by "
                f"running it on a dummy batch of shape {tuple(x.shape)}: {exc}. Hint: pass dim= "
                "explicitly, or an input_size the model accepts."
            ) from exc
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != 1:
            raise EncoderError(
                "The wrapped model must return a (B, D) tensor; on a (1, 3, "
                f"{size}, {size}) batch it returned {type(out).__name__}"
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}."
            )
        return int(out[0].numel())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(x)
