"""``refine(model, refiner)``: wrap any restoration network with a PTG-RM refiner.

Base-network outputs
--------------------
Many restoration networks return more than one image. ``RefinedModel`` takes the restored image from
the base output by this rule, which ``output=`` overrides:

* a tensor is used as is;
* a tuple or list: its element ``0``;
* a dict: the first present key among ``"out", "output", "restored", "pred", "image"``.

``output`` may be an int (sequence index), a str (dict key) or a callable ``f(base_output) -> tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from . import _checks
from .errors import ConfigError, ShapeError
from .refiner import PTGRefiner

__all__ = ["DICT_OUTPUT_KEYS", "RefineOutput", "RefinedModel", "refine", "select_output"]

DICT_OUTPUT_KEYS = ("out", "output", "restored", "pred", "image")

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
    ) -> None:
        super().__init__()
        self.base = base
        self.encoder = encoder
        self.refiner = refiner
        self.freeze_base = freeze_base
        self.output = output
        if freeze_base:
            base.requires_grad_(False)
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

    def forward_all(self, degraded: torch.Tensor, features: torch.Tensor | None = None) -> RefineOutput:
        """Base output, refined output and prior in one pass (for Eq. 8 training)."""
        self._validate(degraded)
        restored = self.restore(degraded)
        if features is None:
            features = self.encode(degraded)
        refined = self.refiner(restored, degraded, features)
        return RefineOutput(restored, refined, features)

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

    if not isinstance(model, nn.Module):
        if not callable(model):
            raise ConfigError(f"model must be an nn.Module or callable, got {type(model).__name__}.")
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
        pre = {k: v for k, v in (cfg.encoder_config or {}).items() if k in ("input_size", "mean", "std")}
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
    return RefinedModel(model, refiner, encoder, freeze_base=freeze_base, output=output)


class _CallableModule(nn.Module):
    """Lets a plain function stand as the base network."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)
