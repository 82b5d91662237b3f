"""Exceptions raised by ptg_refine.

Every error derives from :class:`PTGError` and *also* from the closest builtin exception, so
``except ValueError`` keeps working for callers who do not know about ptg_refine. Messages say what was
wrong, what was expected, what was received, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DTypeError",
    "DataError",
    "DeviceMismatchError",
    "EncoderError",
    "EncoderWeightsUnavailableError",
    "HubError",
    "HubFileMissingError",
    "HubOfflineError",
    "HubRepoNotFoundError",
    "MissingDependencyError",
    "PTGError",
    "ShapeError",
    "UnknownEncoderError",
    "WeightsNotPublishedError",
]


class PTGError(Exception):
    """Base class of every error raised on purpose by ptg_refine."""


class ShapeError(PTGError, ValueError):
    """A tensor has the wrong number of dimensions, channels or feature length."""


class DTypeError(PTGError, TypeError):
    """A tensor has the wrong dtype (images must be floating point)."""


class DeviceMismatchError(PTGError, ValueError):
    """An input lives on another device than the module it is given to."""


class ConfigError(PTGError, ValueError):
    """A configuration value is invalid or inconsistent."""


class CheckpointError(PTGError, ValueError):
    """A weights file is corrupt, or its keys / shapes do not match the model (strict loading)."""


class DataError(PTGError, ValueError):
    """A dataset is empty, unreadable or its pairs do not match."""


class MissingDependencyError(PTGError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class EncoderError(PTGError, ValueError):
    """An encoder spec is malformed or an encoder could not be built."""


class UnknownEncoderError(PTGError, KeyError):
    """No encoder is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EncoderWeightsUnavailableError(PTGError, RuntimeError):
    """Pretrained encoder weights could not be loaded (usually: no network and not cached)."""


class HubError(PTGError, OSError):
    """Base class of Hugging Face Hub failures, translated into actionable messages."""


class HubOfflineError(HubError):
    """Offline (or network unreachable) and the files are not in the local cache."""


class HubRepoNotFoundError(HubError):
    """The Hub repository does not exist, or it is private and no valid token was given."""


class HubFileMissingError(HubError):
    """The repository exists but lacks a required file (config.json or model.safetensors)."""


class WeightsNotPublishedError(PTGError, LookupError):
    """The alias is known but its weights are not published yet."""
