"""Loading the user's base restoration network from a command-line spec.

A spec is one of:

* ``identity``: no base network (the refiner works on the degraded image directly);
* a TorchScript file (``model.pt`` saved with ``torch.jit.save``) or a ``torch.export`` program
  (``model.pt2`` saved with ``torch.export.save``; export it with dynamic height and width);
* ``package.module:factory``: a callable returning an ``nn.Module`` (a class or a function), with
  optional weights from ``--base-weights FILE`` (safetensors, or a state dict read with
  ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from ._weights import load_state_dict_strict, read_state_dict
from .errors import ConfigError

__all__ = ["TinyRestorer", "load_base", "load_state_dict_file"]


class TinyRestorer(nn.Module):
    """A small DnCNN-style residual CNN; the demo's stand-in for a user's restoration network.

    Args:
        channels: image channels.
        width: feature channels.
        depth: number of 3x3 convolutions.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


class _ExportedBase(nn.Module):
    """Holds a ``torch.export`` module, which refuses ``train()`` / ``eval()`` (it is inference-only).

    Exported programs are specialized to the device they were exported on; export on the device you
    run on.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(
            self, "_program", module
        )  # not a child: train()/eval() must not reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._program(x)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a torch file with ``weights_only=True``."""
    return read_state_dict(
        path,
        hint="Give the weights of the base network as a .safetensors file or a state dict saved "
        "with torch.save(model.state_dict(), path).",
    )


def load_base(spec: str, *, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build the base network described by ``spec`` (see the module docstring).

    Args:
        spec: ``identity``, a TorchScript or ``.pt2`` file, or ``package.module:factory``.
        weights: optional weights file for a ``module:factory`` spec (loaded strictly).

    Raises:
        ConfigError: the spec cannot be resolved (with what was tried).
        CheckpointError: the weights file is unreadable or does not match the network.
    """
    if spec == "identity":
        if weights is not None:
            raise ConfigError("--base identity takes no weights.")
        return nn.Identity()
    path = Path(spec)
    if path.is_file():
        if weights is not None:
            raise ConfigError("A saved program already holds its weights; drop --base-weights.")
        if path.suffix == ".pt2":
            try:
                return _ExportedBase(torch.export.load(str(path)).module())
            except Exception as err:
                raise ConfigError(
                    f"Cannot load {path} as a torch.export program ({err}). Save it with "
                    "torch.export.save(torch.export.export(model, (example,)), path)."
                ) from err
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise ConfigError(
                f"Cannot load {path} as TorchScript ({err}). Save the network with "
                "torch.jit.save(torch.jit.script(model), path), or use --base package.module:factory."
            ) from err
    if ":" not in spec:
        raise ConfigError(
            f"Unknown base spec {spec!r}: not 'identity', not an existing TorchScript file, and not of "
            "the form 'package.module:factory'."
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"Cannot import {module_name!r} for base spec {spec!r}: {err}") from err
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"{module_name!r} has no callable {attr!r} (base spec {spec!r}).")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec} returned {type(model).__name__}, not an nn.Module.")
    if weights is not None:
        state = load_state_dict_file(weights)
        load_state_dict_strict(model, state, source=str(weights), what=f"base {spec}")
    return model
