"""Shared helpers of the pretrained encoders: lazy imports, seeded construction, local weight files."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, EncoderError, MissingDependencyError

__all__ = [
    "RANDOM_TAG",
    "WEIGHT_SUFFIXES",
    "import_optional",
    "load_state_dict_file",
    "load_strict",
    "looks_like_path",
    "quiet_root_logging",
    "seeded",
    "split_tag",
]

logger = logging.getLogger(__name__)

RANDOM_TAG = "random"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_RANDOM_SEED = 0


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, translating any failure into MissingDependencyError."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or e.g. a torchvision built for another torch
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module!r}, which could not be imported "
            f'({type(exc).__name__}: {exc}). Install it with: pip install "ptg_refine[{extra}]" '
            "(torchvision must match your torch version). Hint: the built-in 'stats' encoder "
            "needs no extra package."
        ) from exc


def split_tag(arg: str | None, encoder: str, example: str) -> tuple[str, str | None]:
    """Split ``"model@tag"`` on the first ``@``; the tag may itself contain ``@`` (paths)."""
    if not arg:
        raise EncoderError(
            f"The '{encoder}' encoder needs a model name, e.g. '{example}'. Got '{encoder}' "
            "without an argument."
        )
    model, sep, tag = arg.partition("@")
    if not model or (sep and not tag):
        raise EncoderError(
            f"Malformed '{encoder}' spec '{encoder}:{arg}': expected '{encoder}:<model>@<tag>' "
            f"with a non-empty model and tag, e.g. '{example}'."
        )
    return model, (tag if sep else None)


def looks_like_path(tag: str) -> bool:
    """A tag is read as a weights file if it has a path separator, a weights suffix, or exists."""
    return (
        "/" in tag
        or "\\" in tag
        or tag.startswith("~")
        or tag.lower().endswith(WEIGHT_SUFFIXES)
        or os.path.isfile(tag)
    )


@contextlib.contextmanager
def seeded(seed: int = _RANDOM_SEED) -> Iterator[None]:
    """Run model construction with a fixed CPU seed, without touching the caller's RNG state.

    Makes ``@random`` encoders reproducible: the same spec always gives the same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet_root_logging() -> Iterator[None]:
    """Stop third-party ``logging.warning(...)`` calls from configuring the root logger.

    Module-level ``logging.warning`` calls ``logging.basicConfig()`` (a stderr handler on the root
    logger) when the root logger has no handler. While this context is active a ``NullHandler``
    sits on an otherwise unconfigured root logger, so the library prints nothing and leaves the
    user's logging configuration untouched. Configured applications see the records as usual.
    """
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` (safetensors) or a torch file (weights_only=True).

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints and a ``module.`` prefix.

    Raises:
        EncoderError: the file does not exist.
        CheckpointError: the file cannot be read or holds no tensors.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise EncoderError(
            f"Encoder weights file not found: {path!r}. Hint: give an existing local file "
            "(.safetensors, .bin, .pt), a pretrained tag, or '@random'."
        )
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            sd: Any = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Could not read encoder weights from {path!r} ({type(exc).__name__}: {exc}). "
            "Hint: the file may be corrupt or truncated; safetensors files must end in "
            "'.safetensors', other files are read with torch.load(weights_only=True)."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if (
        not isinstance(sd, dict)
        or not sd
        or not all(isinstance(v, torch.Tensor) for v in sd.values())
    ):
        raise CheckpointError(f"{path!r} does not hold a state dict of tensors.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable CheckpointError on any mismatch."""
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"Weights in {source} do not fit the model: {exc}. Hint: check that the model name "
            "matches the checkpoint."
        ) from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise CheckpointError(
            f"Weights in {source} do not match the model (strict loading): "
            f"{len(missing)} missing keys [{show(missing)}], {len(unexpected)} unexpected keys "
            f"[{show(unexpected)}]. Hint: check that the model name matches the checkpoint."
        )
