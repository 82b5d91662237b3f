"""The ``timm`` encoder: pooled features of any timm image model.

Spec: ``timm:<model>[@<weights>]``:

- ``timm:convnext_tiny`` (or ``timm:vit_base_patch16_224.augreg_in21k``, a timm pretrained tag after
  the dot): timm's pretrained weights, downloaded once into the Hugging Face cache,
- ``timm:<model>@/path/to/model.safetensors``: a local weights file (``.safetensors`` or a torch
  file; the classifier head, if present, is dropped; everything else must match strictly),
- ``timm:<model>@random``: reproducible random initialization (seed 0), for tests.

The model is built with ``num_classes=0``, so it returns pooled pre-logits features of length
``head_hidden_size`` (``num_features`` for most models). Input size and mean/std come from
``timm.data.resolve_data_config`` and are recorded in the encoder's preprocess config.
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

__all__ = ["TimmEncoder"]

logger = logging.getLogger(__name__)

_EXAMPLE = "timm:convnext_tiny"


def _import_timm() -> Any:
    return _weights.import_optional("timm", "timm", "The 'timm' encoder")


def _check_model(timm: Any, model: str) -> None:
    if not timm.is_model(model):
        import difflib

        close = difflib.get_close_matches(model, timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise EncoderError(
            f"Unknown timm model {model!r}.{hint} See timm.list_models() for all names."
        )


def _feature_dim(model: nn.Module) -> int:
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _parse(arg: str | None) -> tuple[str, str | None]:
    name, tag = _weights.split_tag(arg, "timm", _EXAMPLE)
    if tag is not None and tag != _weights.RANDOM_TAG and not _weights.looks_like_path(tag):
        raise EncoderError(
            f"Unknown weights {tag!r} in 'timm:{arg}': after '@' give a local weights file path "
            f"or 'random'. For a timm pretrained tag use a dot: 'timm:{name}.<tag>' "
            f"(see timm.list_pretrained({name!r} + '*'))."
        )
    return name, tag


class TimmEncoder(Encoder):
    """A timm model (built with ``num_classes=0``) as a frozen prior encoder.

    Build it with :func:`~ptg_refine.encoders.create_encoder` (``"timm:convnext_tiny"``).

    Args:
        model: A timm model returning pooled (B, D) features.
        dim: Output length ``D``.
        input_size: Square input side.
        mean: Normalization mean.
        std: Normalization std.
        spec: Spec string that rebuilds this encoder.

    Shape:
        images: (B, C, H, W), C in {1, 3}, values in [0, 1] -> (B, dim) float32, L2-normalized.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        dim: int,
        input_size: int | None,
        mean: Any,
        std: Any,
        spec: str | None = None,
    ) -> None:
        super().__init__(dim=dim, input_size=input_size, mean=mean, std=std, spec=spec)
        self.model = model
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _load_local(model: nn.Module, sd: dict[str, torch.Tensor], path: str) -> None:
    """Load ``sd`` strictly, after dropping the classifier weights of a checkpoint that has them."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    heads = (
        classifier if isinstance(classifier, (list, tuple)) else [classifier] if classifier else []
    )
    own = set(model.state_dict())
    dropped = [
        k for k in sd if k not in own and any(k.startswith(f"{h}.") for h in heads)
    ]  # classifier weights of a num_classes > 0 checkpoint
    for k in dropped:
        del sd[k]
    if dropped:
        logger.debug("Dropped classifier weights %s from %s", dropped, path)
    _weights.load_strict(model, sd, repr(path))


def _timm_dim(arg: str | None) -> int:
    name, _ = _parse(arg)
    timm = _import_timm()
    _check_model(timm, name)
    try:
        with torch.device("meta"), _weights.quiet_root_logging():
            model = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception:  # some constructors need real tensors: build on the CPU
        with _weights.quiet_root_logging():
            model = timm.create_model(name, pretrained=False, num_classes=0)
    return _feature_dim(model)


@register_encoder("timm", dim=_timm_dim)
def _make_timm(arg: str | None, **overrides: Any) -> TimmEncoder:
    """Factory of ``timm:<model>[@<path | random>]`` (see the module doc)."""
    name, tag = _parse(arg)
    timm = _import_timm()
    _check_model(timm, name)
    pretrained = tag is None
    if pretrained:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file or cfg.state_dict):
            raise EncoderError(
                f"timm model {name!r} has no default pretrained weights. Use 'timm:{name}@random', "
                f"a local weights file ('timm:{name}@/path/to/model.safetensors'), or a model "
                "from timm.list_pretrained()."
            )
    local_sd = None
    if tag is not None and tag != _weights.RANDOM_TAG:
        local_sd = _weights.load_state_dict_file(tag)  # fail fast, before building the model
    try:
        with _weights.quiet_root_logging(), _weights.seeded():
            model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as exc:
        if pretrained:
            raise EncoderWeightsUnavailableError(
                f"Could not load timm's pretrained weights for {name!r} ({type(exc).__name__}: "
                f"{exc}). They are downloaded from the internet on first use; this machine seems "
                "offline and they are not in the local cache. Alternatives: download them "
                f"elsewhere and use a local file ('timm:{name}@/path/to/model.safetensors'), use "
                f"the built-in 'stats' encoder (no weights), or 'timm:{name}@random' (random "
                "initialization, for tests only)."
            ) from exc
        raise EncoderError(
            f"Could not build timm model {name!r} ({type(exc).__name__}: {exc})."
        ) from exc
    if local_sd is not None:
        _load_local(model, local_sd, str(tag))
    data_cfg = timm.data.resolve_data_config({}, model=model)
    enc = TimmEncoder(
        model,
        dim=_feature_dim(model),
        input_size=tuple(data_cfg["input_size"]),
        mean=data_cfg["mean"],
        std=data_cfg["std"],
        spec=f"timm:{arg}",
    )
    enc.set_preprocess(**overrides)
    return enc
