"""The ``open_clip`` encoder: the image tower of an OpenCLIP / CLIP model (the paper's "-c" prior).

Spec: ``open_clip:<model>@<weights>`` where ``<weights>`` is required and one of

- a pretrained tag, e.g. ``open_clip:ViT-B-32@openai`` (downloaded once into the Hugging Face
  cache; see ``open_clip.list_pretrained_tags_by_model(model)``),
- a local weights file, e.g. ``open_clip:ViT-B-32@/path/to/open_clip_pytorch_model.bin``
  (``.safetensors`` or a torch file; the full CLIP state dict or only the image tower's),
- ``random``: reproducible random initialization (seed 0), for tests and shape checks.

With a pretrained tag the tag's own settings are applied (its mean/std, and QuickGELU for the
OpenAI weights, so ``ViT-B-32@openai`` is the real CLIP model). A local file gets the named
model's architecture as is: for an OpenAI checkpoint name the QuickGELU variant
(``open_clip:ViT-B-32-quickgelu@/path/to/ViT-B-32.bin``).

Only the image tower (``model.visual``, i.e. ``model.encode_image``) is kept; the text tower is
dropped after construction. The input size and mean/std come from the model's preprocessing
config (recorded in :meth:`~ptg_refine.encoders.Encoder.preprocess_config`); images are resized
to a square with bilinear, antialiased interpolation.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..errors import EncoderError, EncoderWeightsUnavailableError
from . import _weights
from .base import Encoder
from .registry import register_encoder

__all__ = ["OpenCLIPEncoder"]

logger = logging.getLogger(__name__)

_EXAMPLE = "open_clip:ViT-B-32@openai"


def _import_open_clip() -> Any:
    return _weights.import_optional("open_clip", "clip", "The 'open_clip' encoder")


def _check_model(open_clip: Any, model: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        import difflib

        close = difflib.get_close_matches(model, open_clip.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise EncoderError(
            f"Unknown open_clip model {model!r}.{hint} See open_clip.list_models() for all names."
        )
    return cfg


def _unavailable(model: str, tag: str, exc: BaseException) -> EncoderWeightsUnavailableError:
    return EncoderWeightsUnavailableError(
        f"Could not load the pretrained open_clip weights {model}@{tag} "
        f"({type(exc).__name__}: {exc}). They are downloaded from the internet on first use; "
        "this machine seems offline and they are not in the local cache. Alternatives: download "
        f"the weights elsewhere and use a local file ('open_clip:{model}@/path/to/weights.bin'), "
        f"use the built-in 'stats' encoder (no weights), or 'open_clip:{model}@random' (random "
        "initialization, for tests only)."
    )


class OpenCLIPEncoder(Encoder):
    """Image tower of an OpenCLIP model as a frozen prior encoder.

    Build it with :func:`~ptg_refine.encoders.create_encoder` (``"open_clip:ViT-B-32@openai"``)
    rather than directly.

    Args:
        visual: The ``visual`` module of an OpenCLIP model (maps normalized images to (B, D)).
        dim: Output length (the model's ``embed_dim``).
        input_size: Square input side.
        mean: Normalization mean.
        std: Normalization std.
        spec: Spec string that rebuilds this encoder.

    Shape:
        images: (B, C, H, W), C in {1, 3}, values in [0, 1] -> (B, dim) float32, L2-normalized.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        dim: int,
        input_size: int | None,
        mean: Any,
        std: Any,
        spec: str | None = None,
    ) -> None:
        super().__init__(dim=dim, input_size=input_size, mean=mean, std=std, spec=spec)
        self.visual = visual
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        if isinstance(out, (tuple, list)):  # towers returning (pooled, tokens)
            out = out[0]
        return out


def _load_local(model: nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
    """Load a full-CLIP or image-tower-only state dict strictly into ``model.visual``."""
    if any(k.startswith("visual.") for k in sd):
        # full CLIP checkpoint: the image tower must match exactly; text tower keys are dropped
        sd = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    _weights.load_strict(model.visual, sd, repr(path))


def _parse(arg: str | None) -> tuple[str, str]:
    model, tag = _weights.split_tag(arg, "open_clip", _EXAMPLE)
    if tag is None:
        raise EncoderError(
            f"The open_clip spec 'open_clip:{model}' needs weights after '@' (no silent random "
            f"init): a pretrained tag ('open_clip:{model}@openai'; see "
            f"open_clip.list_pretrained_tags_by_model({model!r})), a local weights file "
            f"('open_clip:{model}@/path/to/weights.bin'), or 'open_clip:{model}@random'."
        )
    return model, tag


def _open_clip_dim(arg: str | None) -> int:
    model, _ = _parse(arg)
    return int(_check_model(_import_open_clip(), model)["embed_dim"])


@register_encoder("open_clip", dim=_open_clip_dim)
def _make_open_clip(arg: str | None, **overrides: Any) -> OpenCLIPEncoder:
    """Factory of ``open_clip:<model>@<tag | path | random>`` (see the module doc)."""
    model_name, tag = _parse(arg)
    open_clip = _import_open_clip()
    _check_model(open_clip, model_name)
    kwargs: dict[str, Any] = {"pretrained_image": False, "pretrained_text": False}
    local_path: str | None = None
    local_sd: dict[str, torch.Tensor] = {}
    checkpoint: str | None = None
    if tag == _weights.RANDOM_TAG:
        logger.info("open_clip:%s with random weights (seed 0): for tests only", model_name)
    elif _weights.looks_like_path(tag):
        local_path = tag
        local_sd = _weights.load_state_dict_file(tag)  # fail fast, before building the model
    else:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise EncoderError(
                f"Unknown pretrained tag {tag!r} for open_clip model {model_name!r}. Known tags: "
                f"{', '.join(tags) or '(none)'}; or a local weights file path, or 'random'."
            )
        try:
            checkpoint = open_clip.download_pretrained(tag_cfg)
        except Exception as exc:  # offline, not cached, hub or HTTP failure
            raise _unavailable(model_name, tag, exc) from exc
        if not checkpoint:
            raise _unavailable(model_name, tag, RuntimeError("no download source"))
        # the tag's own preprocessing and activation (e.g. QuickGELU for OpenAI weights)
        kwargs["force_preprocess_cfg"] = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }
        if tag_cfg.get("quick_gelu", False):
            kwargs["force_quick_gelu"] = True
    try:
        with _weights.quiet_root_logging(), _weights.seeded():
            model = open_clip.create_model(model_name, pretrained=checkpoint, **kwargs)
    except Exception as exc:
        if checkpoint is not None:
            raise EncoderError(
                f"The open_clip weights {model_name}@{tag} were found at {checkpoint!r} but could "
                f"not be loaded ({type(exc).__name__}: {exc}). Hint: delete the cached file and "
                "retry, or use a local weights file."
            ) from exc
        raise EncoderError(
            f"Could not build open_clip model {model_name!r} ({type(exc).__name__}: {exc})."
        ) from exc
    if local_path is not None:
        _load_local(model, local_sd, local_path)
    pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = pp.get("size", getattr(model.visual, "image_size", 224))
    mean = pp.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = pp.get("std", (0.26862954, 0.26130258, 0.27577711))
    dim = int(_check_model(open_clip, model_name)["embed_dim"])
    enc = OpenCLIPEncoder(
        model.visual,
        dim=dim,
        input_size=size,
        mean=mean,
        std=std,
        spec=f"open_clip:{arg}",
    )
    del model  # drops the text tower
    enc.set_preprocess(**overrides)
    return enc
