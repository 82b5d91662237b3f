"""``refine(model, refiner)``: wrap any restoration network with a PTG-RM refiner.

Base-network outputs
--------------------
Many restoration networks return more than one image. ``RefinedModel`` takes the restored image from
the base output by this rule, which ``output=`` overrides:

* a tensor is used as is;
* a tuple or list: its element ``0``;
* a dict: the first present key among ``"out", "output", "restored", "pred", "image"``.

``output`` may be an int (sequence index), a str (dict key) or a callable ``f(base_output) -> tensor``.

Tiled inference
---------------
``refine(model, refiner, tile=512, tile_overlap=32)`` bounds memory on large images (an 8K frame
refines in a few GB). The base network runs on ``tile`` x ``tile`` windows that overlap by
``tile_overlap`` pixels; their outputs are blended with weights that are zero on the
``tile_overlap // 4`` pixels next to an inner tile edge and ramp linearly to one across the rest of
the overlap, so a base whose receptive field reaches at most ``tile_overlap // 4`` pixels gives
exactly its untiled output, and others get seamless blends. The prior is global: it is computed
once from the whole image (downscaled so that its longer side is at most ``PRIOR_MAX_SIDE``),
never per tile. The refiner then runs tile by tile with whole-image statistics, which reproduces
its untiled output up to rounding (see :meth:`PTGRefiner.forward`). Tiled outputs carry no
gradients: train on crops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .errors import ConfigError, ShapeError
from .refiner import PTGRefiner

__all__ = [
    "DICT_OUTPUT_KEYS",
    "PRIOR_MAX_SIDE",
    "RefineOutput",
    "RefinedModel",
    "refine",
    "select_output",
]

DICT_OUTPUT_KEYS = ("out", "output", "restored", "pred", "image")
PRIOR_MAX_SIDE = 2048  # tiled inference computes the prior from the image downscaled to this side

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


class RefineOutput(NamedTuple):
    """Everything one forward pass computes: the base output, the refined image and the prior."""

    restored: torch.Tensor
    refined: torch.Tensor
    features: torch.Tensor


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """Pick the restored image out of a base network's output (see the module docstring)."""
    if callable(output):
        picked = output(out)
    elif isinstance(out, torch.Tensor) and output is None:
        picked = out
    elif isinstance(out, Mapping):
        keys = [output] if isinstance(output, str) else list(DICT_OUTPUT_KEYS)
        found = next((k for k in keys if k in out), None)
        if found is None:
            raise ShapeError(
                f"The base network returned a dict with keys {sorted(map(str, out))}; none of "
                f"{keys} is among them. Pass output='<key>' (or a callable) to refine()."
            )
        picked = out[found]
    elif isinstance(out, Sequence) and not isinstance(out, str | bytes):
        index = 0 if output is None else output
        if not isinstance(index, int) or not -len(out) <= index < len(out):
            raise ShapeError(
                f"The base network returned a {type(out).__name__} of {len(out)} items; cannot take "
                f"item {index!r}. Pass output=<index> (or a callable) to refine()."
            )
        picked = out[index]
    else:
        raise ShapeError(
            f"Cannot take an image out of the base network's output of type {type(out).__name__} "
            f"with output={output!r}. Pass output= an index, a key or a callable to refine()."
        )
    if not isinstance(picked, torch.Tensor):
        raise ShapeError(
            f"The selected base output is a {type(picked).__name__}, not a tensor. Pass output= "
            "to refine() to select the restored image."
        )
    return picked


class RefinedModel(nn.Module):
    """A base restoration network followed by a PTG-RM refiner guided by a frozen encoder.

    Build it with :func:`refine`. ``forward(degraded) -> refined``.

    Attributes:
        base: the user's restoration network F.
        encoder: the frozen pre-trained encoder G (``features = encoder(degraded)``).
        refiner: the :class:`~ptg_refine.PTGRefiner` R.
        freeze_base: whether F is frozen (no gradients, kept in eval mode).
        tile: tile side for tiled inference (see the module docstring), or None.
        tile_overlap: overlap of neighbouring base-network tiles, in pixels.

    Shape:
        degraded: (B, C, H, W) float in [0, 1], C = ``refiner.in_channels``.
        output: (B, C, H, W).
    """

    def __init__(
        self,
        base: nn.Module,
        refiner: PTGRefiner,
        encoder: nn.Module,
        *,
        freeze_base: bool = True,
        output: OutputSelector = None,
        tile: int | None = None,
        tile_overlap: int = 32,
    ) -> None:
        super().__init__()
        self.base = base
        self.encoder = encoder
        self.refiner = refiner
        self.freeze_base = freeze_base
        self.output = output
        self.tile, self.tile_overlap = _check_tiling(tile, tile_overlap)
        if freeze_base:
            for p in base.parameters():  # (ScriptModules lack requires_grad_)
                p.requires_grad_(False)
            base.eval()

    def train(self, mode: bool = True) -> RefinedModel:
        super().train(mode)
        if self.freeze_base:
            self.base.eval()
        self.encoder.eval()
        return self

    def forward(self, degraded: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Refined image for ``degraded``; ``features`` skips the encoder (e.g. cached)."""
        return self.forward_all(degraded, features).refined

    def forward_all(
        self, degraded: torch.Tensor, features: torch.Tensor | None = None
    ) -> RefineOutput:
        """Base output, refined output and prior in one pass (for Eq. 8 training)."""
        self._validate(degraded)
        if self.tile is not None:
            return self._forward_tiled(degraded, features)
        restored = self.restore(degraded)
        if features is None:
            features = self.encode(degraded)
        refined = self.refiner(restored, degraded, features)
        return RefineOutput(restored, refined, features)

    def _forward_tiled(self, degraded: torch.Tensor, features: torch.Tensor | None) -> RefineOutput:
        if self.training and torch.is_grad_enabled():
            raise ConfigError(
                "Tiled inference (tile=...) runs without gradients; the model is in training "
                "mode. Call model.eval() (or use torch.no_grad()) for tiled inference, or train "
                "on crops with tile=None."
            )
        assert self.tile is not None
        with torch.no_grad():
            restored = _blend_tiles(self._restore_tile, degraded, self.tile, self.tile_overlap)
            if features is None:
                features = self.encode(_downscale(degraded, PRIOR_MAX_SIDE))
            refined = self.refiner(restored, degraded, features, tile=self.tile)
        return RefineOutput(restored, refined, features)

    def _restore_tile(self, window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.restore(window)

    def restore(self, degraded: torch.Tensor) -> torch.Tensor:
        """The base network's output F(degraded), checked to be an image of the input's shape."""
        if self.freeze_base:
            with torch.no_grad():
                out = self.base(degraded)
        else:
            out = self.base(degraded)
        restored = select_output(out, self.output)
        if restored.shape != degraded.shape:
            raise ShapeError(
                f"The base network returned shape {tuple(restored.shape)} for input "
                f"{tuple(degraded.shape)}; PTG-RM needs an image of the input's shape. If the base "
                "needs sizes divisible by some factor, pad inside it; if it returns several images, "
                "choose one with refine(..., output=...)."
            )
        return restored.to(degraded.dtype) if not restored.is_floating_point() else restored

    def encode(self, degraded: torch.Tensor) -> torch.Tensor:
        """The prior g = G(degraded), (B, D)."""
        return self.encoder(degraded)

    def _validate(self, degraded: torch.Tensor) -> None:
        _checks.check_image(degraded, "degraded", channels=self.refiner.in_channels)
        _checks.check_same_device(degraded, self.refiner, "degraded")


def refine(
    model: nn.Module,
    refiner: PTGRefiner,
    *,
    encoder: Any = None,
    freeze_base: bool = True,
    output: OutputSelector = None,
    tile: int | None = None,
    tile_overlap: int = 32,
) -> RefinedModel:
    """Wrap ``model`` (any ``nn.Module`` mapping degraded to restored images) with ``refiner``.

    Args:
        model: the user's restoration network.
        refiner: a :class:`PTGRefiner` (new, or from ``PTGRefiner.from_pretrained``).
        encoder: the prior's encoder: None builds it from ``refiner.config.encoder`` (and its
            recorded preprocessing); else a spec string, an ``Encoder``, or any module / callable
            mapping images to (B, D) (see :func:`ptg_refine.create_encoder`).
        freeze_base: keep ``model`` frozen (no gradients, eval mode); False trains it jointly (Eq. 8).
        output: how to take the restored image out of ``model``'s output (see module docstring).
        tile: inference only: run the base network and the refiner on windows of about
            ``tile`` x ``tile`` pixels to bound memory (see "Tiled inference" in the module
            docstring); None processes the whole image at once.
        tile_overlap: overlap in pixels of neighbouring base-network windows (blended).

    Returns:
        A :class:`RefinedModel`; ``RefinedModel(degraded) -> refined``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from ptg_refine import PTGRefiner, refine
        >>> model = refine(nn.Conv2d(3, 3, 3, padding=1), PTGRefiner(encoder="stats"))
        >>> model(torch.rand(1, 3, 45, 61)).shape
        torch.Size([1, 3, 45, 61])
    """
    from .encoders import create_encoder
    from .interop import as_base_if_needed

    model = as_base_if_needed(model)  # a spandrel ImageModelDescriptor becomes a padded nn.Module
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise ConfigError(
                f"model must be an nn.Module or callable, got {type(model).__name__}."
            )
        model = _CallableModule(model)
    if not isinstance(refiner, PTGRefiner):
        raise ConfigError(
            f"refiner must be a PTGRefiner, got {type(refiner).__name__}. Build one with "
            "PTGRefiner(encoder='stats') or PTGRefiner.from_pretrained(...)."
        )
    cfg = refiner.config
    if encoder is None:
        if cfg.encoder is None:
            raise ConfigError(
                "The refiner's config names no encoder and refine() got none. Pass "
                "refine(model, refiner, encoder='stats' | 'open_clip:ViT-B-32@openai' | module)."
            )
        pre = {
            k: v
            for k, v in (cfg.encoder_config or {}).items()
            if k in ("input_size", "mean", "std")
        }
        encoder = create_encoder(cfg.encoder, **pre)
    else:
        encoder = create_encoder(encoder)
    dim = getattr(encoder, "dim", None)
    if dim is not None and dim != cfg.embed_dim:
        raise ConfigError(
            f"The encoder gives features of length {dim} but the refiner expects embed_dim="
            f"{cfg.embed_dim}. Build the refiner with PTGRefiner(encoder=<same spec>) or "
            f"embed_dim={dim}."
        )
    device = next(refiner.parameters()).device
    encoder = encoder.to(device)
    return RefinedModel(
        model,
        refiner,
        encoder,
        freeze_base=freeze_base,
        output=output,
        tile=tile,
        tile_overlap=tile_overlap,
    )


class _CallableModule(nn.Module):
    """Lets a plain function stand as the base network."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def _check_tiling(tile: object, overlap: object) -> tuple[int | None, int]:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 16):
        raise ConfigError(f"tile must be None or an integer of at least 16 pixels, got {tile!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"tile_overlap must be a non-negative integer, got {overlap!r}.")
    if tile is not None and 2 * overlap > tile:
        raise ConfigError(
            f"tile_overlap={overlap} is too large for tile={tile}: it must be at most half the "
            f"tile ({tile // 2})."
        )
    return tile, overlap


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering [0, size) with windows of ``tile`` overlapping by >= ``overlap``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def _ramp(length: int, start: int, stop: int, size: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of a window [start, stop) of [0, size) (see the module docstring)."""
    weight = torch.ones(length)
    if overlap == 0:
        return weight
    margin = overlap // 4
    span = overlap - 2 * margin
    d = torch.arange(length, dtype=torch.float32)
    if start > 0:
        weight = torch.minimum(weight, ((d - margin + 0.5) / span).clamp(0.0, 1.0))
    if stop < size:
        weight = torch.minimum(weight, ((length - 1 - d - margin + 0.5) / span).clamp(0.0, 1.0))
    return weight


def _blend_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int
) -> torch.Tensor:
    """``fn(x)`` computed on overlapping windows of ``x`` and blended (same shape as ``x``)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    out: torch.Tensor | None = None
    total = x.new_zeros((h, w), dtype=torch.float32)
    for y0 in _tile_starts(h, tile, overlap):
        y1 = min(y0 + tile, h)
        rows = _ramp(y1 - y0, y0, y1, h, overlap)
        for x0 in _tile_starts(w, tile, overlap):
            x1 = min(x0 + tile, w)
            weight = rows[:, None] * _ramp(x1 - x0, x0, x1, w, overlap)[None, :]
            weight = weight.to(x.device)
            part = fn(x[:, :, y0:y1, x0:x1])
            if out is None:
                out = torch.zeros(x.shape, dtype=part.dtype, device=part.device)
            out[:, :, y0:y1, x0:x1].add_(part * weight.to(part.dtype))
            total[y0:y1, x0:x1] += weight
    assert out is not None
    return out.div_(total.to(out.dtype))


def _downscale(x: torch.Tensor, max_side: int) -> torch.Tensor:
    """``x`` resized (antialiased) so that its longer side is at most ``max_side``."""
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
