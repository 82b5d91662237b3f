"""Registry of encoder factories: ``register_encoder``, ``create_encoder``, ``list_encoders``.

A spec is a string ``"name"`` or ``"name:arg"`` (only the first ``:`` separates; ``arg`` is passed to
the factory untouched and may contain ``@``, ``:`` or a file path), an :class:`Encoder` instance, or
any ``nn.Module`` / callable mapping normalized (B, 3, H, W) images to (B, D) features.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import EncoderError, UnknownEncoderError
from .base import Encoder

__all__ = [
    "EncoderFactory",
    "create_encoder",
    "encoder_dim",
    "list_encoders",
    "parse_spec",
    "register_encoder",
]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class EncoderFactory(Protocol):
    """``factory(arg, **overrides) -> Encoder``; overrides: ``input_size``, ``mean``, ``std``."""

    def __call__(self, arg: str | None, **overrides: Any) -> Encoder: ...


# name -> factory, and name -> cheap dim function ``fn(arg) -> int`` (optional)
_REGISTRY: dict[str, EncoderFactory] = {}
_DIM_FNS: dict[str, Callable[[str | None], int]] = {}


def register_encoder(
    name: str, *, dim: Callable[[str | None], int] | None = None
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator registering an encoder factory under ``name``.

    Args:
        name: Registry name (letters, digits, ``_``, ``-``, ``.``; no ``:``).
        dim: Optional cheap function ``fn(arg) -> int`` returning the output length without building
            the encoder (used by :func:`encoder_dim`).

    Returns:
        A decorator that registers ``fn(arg: str | None, **overrides) -> Encoder`` and returns it
        unchanged.

    Raises:
        EncoderError: ``name`` is malformed or already registered.

    Example (not run as a doctest: registration is global)::

        from ptg_refine.encoders import ModuleEncoder, register_encoder

        @register_encoder("my_net")
        def _make(arg, **overrides):  # spec "my_net" or "my_net:<arg>"
            return ModuleEncoder(build_my_net(arg), **overrides)
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EncoderError(
            f"Encoder name must be a non-empty string of letters, digits, '_', '-' or '.', "
            f"got {name!r}."
        )

    def decorator(fn: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY:
            raise EncoderError(
                f"An encoder named {name!r} is already registered. Hint: choose another name; "
                f"registered: {', '.join(list_encoders())}."
            )
        if not callable(fn):
            raise EncoderError(f"register_encoder({name!r}) must decorate a callable, got {fn!r}.")
        _REGISTRY[name] = fn
        if dim is not None:
            _DIM_FNS[name] = dim
        return fn

    return decorator


def list_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(_REGISTRY)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"name[:arg]"`` into ``(name, arg)`` and check that ``name`` is registered.

    Raises:
        EncoderError: malformed spec (empty, empty name or empty argument).
        UnknownEncoderError: no encoder registered under ``name``.
    """
    if not isinstance(spec, str):
        raise EncoderError(f"An encoder spec string is expected, got {type(spec).__name__}.")
    name, sep, arg = spec.partition(":")
    if not name or not _NAME_RE.match(name) or (sep and not arg):
        raise EncoderError(
            f"Malformed encoder spec {spec!r}: expected 'name' or 'name:argument' with a non-empty "
            f"name and argument, e.g. 'stats' or 'open_clip:ViT-B-32@openai'. "
            f"Registered names: {', '.join(list_encoders())}."
        )
    if name not in _REGISTRY:
        raise UnknownEncoderError(
            f"Unknown encoder {name!r} (spec {spec!r}). Registered encoders: "
            f"{', '.join(list_encoders())}. Hint: register your own with "
            "@ptg_refine.encoders.register_encoder(name), or pass an nn.Module."
        )
    return name, (arg if sep else None)


def _check_instance_overrides(enc: Encoder, overrides: dict[str, Any]) -> None:
    current = enc.preprocess_config()
    probe = Encoder(dim=enc.dim, input_size=enc.input_size, mean=enc.mean, std=enc.std)
    probe.set_preprocess(**{k: v for k, v in overrides.items() if k != "dim"})
    wanted = probe.preprocess_config()
    if "dim" in overrides:
        wanted["dim"] = overrides["dim"]
    diff = {k: (current[k], wanted[k]) for k in current if current[k] != wanted[k]}
    if diff:
        details = "; ".join(
            f"{k}: encoder has {a!r}, requested {b!r}" for k, (a, b) in diff.items()
        )
        raise EncoderError(
            f"The given Encoder instance does not match the requested settings ({details}). "
            "Hint: build it with those settings, or call encoder.set_preprocess(...) yourself."
        )


def create_encoder(
    spec: str | Encoder | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    *,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dim: int | None = None,
    device: torch.device | str | None = None,
) -> Encoder:
    """Build a frozen encoder from a spec.

    Args:
        spec: ``"name"`` or ``"name:arg"`` of a registered encoder (see :func:`list_encoders`), e.g.
            ``"stats"``, ``"open_clip:ViT-B-32@openai"``, ``"open_clip:ViT-B-32@random"``,
            ``"open_clip:ViT-B-32@/path/weights.safetensors"``, ``"timm:convnext_tiny"``; an
            :class:`Encoder` (returned as is); or any ``nn.Module`` / callable mapping normalized
            (B, 3, H, W) images to (B, D), wrapped in :class:`ModuleEncoder` (defaults: 224 px,
            ImageNet mean/std).
        input_size: Override of the square input side (``None``: the encoder's default).
        mean: Override of the per-channel normalization mean.
        std: Override of the per-channel normalization std.
        dim: Expected output length. Checked against the built encoder (mismatch raises); for a
            wrapped module it replaces probing with a dummy batch.
        device: Device to move the encoder to (default: where it was built, the CPU).

    Returns:
        A frozen :class:`Encoder` in eval mode. Its :meth:`~Encoder.preprocess_config` passed back
        as keyword arguments (``create_encoder(spec, **cfg)``) rebuilds the same preprocessing.

    Raises:
        UnknownEncoderError: no encoder registered under the spec's name (the message lists them).
        EncoderError: malformed spec or override, or a ``dim`` mismatch.
        EncoderWeightsUnavailableError: pretrained weights could not be downloaded or found.
        MissingDependencyError: the encoder needs an optional package that is not installed.

    Example:
        >>> from ptg_refine.encoders import create_encoder
        >>> create_encoder("stats").dim
        71
    """
    overrides = {
        k: v
        for k, v in {"input_size": input_size, "mean": mean, "std": std}.items()
        if v is not None
    }
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise EncoderError(f"dim must be a positive int, got {dim!r}.")

    if isinstance(spec, Encoder):
        _check_instance_overrides(spec, {**overrides, **({"dim": dim} if dim else {})})
        enc = spec
    elif isinstance(spec, str):
        name, arg = parse_spec(spec)
        enc = _REGISTRY[name](arg, **overrides)
        if not isinstance(enc, Encoder):
            raise EncoderError(
                f"The factory registered as {name!r} returned {type(enc).__name__}, not an Encoder."
            )
        enc.set_preprocess(**overrides)
        if enc.spec is None:
            enc.spec = spec
        if dim is not None and dim != enc.dim:
            raise EncoderError(
                f"Encoder {spec!r} outputs D={enc.dim}, but dim={dim} was requested. Hint: the "
                "saved configuration belongs to another encoder; use the spec it was saved with."
            )
    elif isinstance(spec, nn.Module) or callable(spec):
        from .module import ModuleEncoder

        enc = ModuleEncoder(spec, dim=dim, **overrides)
    else:
        raise EncoderError(
            f"Cannot build an encoder from {type(spec).__name__}: expected a spec string "
            f"(registered: {', '.join(list_encoders())}), an Encoder, an nn.Module or a callable."
        )
    enc.freeze()
    if device is not None:
        enc.to(device)
    logger.debug("Built encoder %s (dim=%d, input_size=%s)", enc.spec, enc.dim, enc.input_size)
    return enc


def encoder_dim(spec: str | Encoder | nn.Module | Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Output length ``D`` of an encoder spec, computed cheaply where possible.

    Registered encoders with a dim function (``stats``, ``open_clip``, ``timm``) answer without
    loading weights; others are built once.

    Raises:
        The same errors as :func:`create_encoder`.
    """
    if isinstance(spec, Encoder):
        return spec.dim
    if isinstance(spec, str):
        name, arg = parse_spec(spec)
        if name in _DIM_FNS:
            return int(_DIM_FNS[name](arg))
    return create_encoder(spec).dim


def describe_encoder(spec: str) -> dict[str, Any]:
    """The preprocessing a refiner records for ``spec`` (``Encoder.preprocess_config()``).

    ``stats`` answers without building anything; other encoders are built once (weights included,
    so a pretrained tag that cannot be downloaded raises here, early and clearly).
    """
    name, _ = parse_spec(spec)
    if name == "stats":
        from .stats import StatsEncoder

        return StatsEncoder().preprocess_config()
    return create_encoder(spec).preprocess_config()
