"""Reading weight files and loading state dicts strictly, with one readable error.

Shared by the refiner, the distilled student, user base networks and local encoder weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

__all__ = [
    "load_state_dict_strict",
    "read_config_json",
    "read_safetensors",
    "read_state_dict",
    "short_list",
]

_WRAPPER_KEYS = ("state_dict", "model", "params")


def short_list(items: list[str], limit: int = 8) -> str:
    """``[a, b, ... and N more]``: a list cut for an error message."""
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... and {len(items) - limit} more' if len(items) > limit else ''}]"


def read_config_json(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in a saved model's ``config.json`` (``what``: e.g. "refiner").

    Raises:
        ConfigError: the file cannot be read or parsed, or holds no JSON object.
    """
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"Cannot read {what} config {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what.capitalize()} config {path} must hold a JSON object, got {type(data).__name__}."
        )
    return data


def read_safetensors(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a saved model's ``model.safetensors``.

    Raises:
        CheckpointError: the file is missing, corrupt or not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"Cannot read weights file {path}: {err}. The file is corrupt or not safetensors; "
            "re-download it (force_download=True) or re-save it with save_pretrained()."
        ) from err


def read_state_dict(
    path: str | os.PathLike, *, missing: type[Exception] = CheckpointError, hint: str = ""
) -> dict[str, torch.Tensor]:
    """Read tensors by name from ``.safetensors``, or a torch file with ``weights_only=True``.

    Unwraps ``{"state_dict" | "model" | "params": {...}}`` checkpoints and a ``module.`` prefix
    (DataParallel / DDP saves).

    Args:
        path: the file (``~`` is expanded).
        missing: the error class raised when the file does not exist.
        hint: a sentence appended to the "does not exist" message.

    Raises:
        missing: the file does not exist.
        CheckpointError: the file cannot be read, or holds no tensors.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.is_file():
        raise missing(f"Weights file {str(path)!r} does not exist.{(' ' + hint) if hint else ''}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or unsupported content
        raise CheckpointError(
            f"Cannot read weights file {str(path)!r} ({type(err).__name__}: {err}). The file may be "
            "corrupt or truncated; use a .safetensors file or a plain state dict saved with "
            "torch.save(model.state_dict(), path) (read with weights_only=True)."
        ) from err
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors.")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict_strict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str = "state dict",
    what: str | None = None,
    hint: str = "",
) -> None:
    """``module.load_state_dict(state, strict=True)`` with one readable error for every mismatch.

    Args:
        module: the module to load into.
        state: tensors by name.
        source: where ``state`` comes from (for the message).
        what: how to call the module in the message (default: its class name).
        hint: extra sentence appended to the error message.

    Raises:
        CheckpointError: missing or unexpected keys, wrong shapes or non-float tensors (all listed
            in one message), or NaN / Inf values.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {short_list(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {short_list(wrong)}")
    non_float = [
        k
        for k in state
        if k in own and own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    if non_float:
        problems.append(f"non-float tensors {short_list(non_float)}")
    if problems:
        raise CheckpointError(
            f"Weights in {source} do not match this {what or type(module).__name__} "
            f"({'; '.join(problems)}).{(' ' + hint) if hint else ''}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"Weights in {source} contain NaN or Inf values in {short_list(bad)}."
        )
    module.load_state_dict(state, strict=True)
