"""Pluggable encoders producing the prior ``g`` (the off-the-shelf feature, OSF) for PTG-RM.

Build one from a spec string with :func:`create_encoder`:

- ``"stats"``: hand-crafted degradation statistics (no weights, no download).
- ``"open_clip:<model>@<tag | /path/to/weights | random>"``, e.g. ``"open_clip:ViT-B-32@openai"``.
- ``"timm:<model>[@</path/to/weights | random>]"`` (no tag: timm's default pretrained weights).

or wrap any ``nn.Module`` / callable (:class:`ModuleEncoder`), or register a new name with
:func:`register_encoder`. Every encoder is frozen, in eval mode, and maps (B, C, H, W) images in
[0, 1] to (B, D) float32 L2-normalized vectors.
"""

from __future__ import annotations

from .. import distill as _distill  # noqa: F401  (registers "student")
from . import openclip as _openclip  # noqa: F401  (registers "open_clip")
from . import stats as _stats  # noqa: F401  (registers "stats")
from . import timm_encoder as _timm_encoder  # noqa: F401  (registers "timm")
from .base import Encoder
from .module import ModuleEncoder
from .registry import (
    create_encoder,
    describe_encoder,
    encoder_dim,
    list_encoders,
    register_encoder,
)
from .stats import StatsEncoder

__all__ = [
    "Encoder",
    "ModuleEncoder",
    "StatsEncoder",
    "create_encoder",
    "describe_encoder",
    "encoder_dim",
    "list_encoders",
    "register_encoder",
]
