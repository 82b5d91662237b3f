"""Shared helpers of the pretrained encoders: lazy imports, seeded construction, local weight files."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import nn

from .._weights import load_state_dict_strict, read_state_dict
from ..errors import EncoderError, MissingDependencyError

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
    """Read encoder weights (see :func:`ptg_refine._weights.read_state_dict`).

    Raises:
        EncoderError: the file does not exist.
        CheckpointError: the file cannot be read or holds no tensors.
    """
    return read_state_dict(
        path,
        missing=EncoderError,
        hint="Give an existing local file (.safetensors, .bin, .pt), a pretrained tag, or "
        "'@random'.",
    )


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict loading with one readable CheckpointError (see ``ptg_refine._weights``)."""
    load_state_dict_strict(
        module,
        state_dict,
        source=source,
        what="encoder",
        hint="Check that the model name matches the checkpoint.",
    )
