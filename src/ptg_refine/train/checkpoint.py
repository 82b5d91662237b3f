"""Training checkpoints: atomic save, safe load, random-number-generator state capture.

A checkpoint is one ``torch.save`` file (``out_dir/checkpoint.pt``) holding only tensors, numbers,
strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``. It is written through a
temporary file renamed over the target (:func:`ptg_refine._atomic.atomic_write`): a run killed while
saving leaves the previous checkpoint intact and no partial file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_write
from ..errors import CheckpointError, ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "capture_rng_state",
    "check_settings",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "ptg_refine.fit/1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temporary file + rename)."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a ptg_refine training
            checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Hint: pass resume=True to resume from "
            "out_dir/checkpoint.pt when it exists, or the path of an existing checkpoint."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}. The file is "
            "corrupt or truncated. Delete it to start training over (or call fit with "
            "resume=False), or pass resume=<path of another checkpoint>."
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a ptg_refine training checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}). Delete it or pass resume=<path of a checkpoint written by "
            "ptg_refine.train.fit>."
        )
    return state


def capture_rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python ``random`` states, as tensors / lists (weights_only safe)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global state users' code draws from)
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [int(py_state[0]), [int(v) for v in py_state[1]], py_state[2]],
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _normalize(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    return value


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short content hash of ``module``'s state dict (names, shapes, dtypes and values).

    Recorded in checkpoints so that resuming with another base network (other weights) is refused
    instead of silently continuing a refiner trained for a different network.
    """
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_settings(saved: dict[str, Any], current: dict[str, Any], *, source: str) -> None:
    """Raise :class:`ConfigError` listing every setting of ``current`` that differs from ``saved``.

    Settings present on only one side (e.g. from another ptg_refine version) are ignored.
    """
    saved_n, current_n = _normalize(saved), _normalize(current)
    diffs = [
        f"{key}: checkpoint {saved_n[key]!r}, now {current_n[key]!r}"
        for key in sorted(set(saved_n) & set(current_n))
        if saved_n[key] != current_n[key]
    ]
    if "base_fingerprint" in saved_n and saved_n.get("base_fingerprint") != current_n.get(
        "base_fingerprint", saved_n["base_fingerprint"]
    ):
        diffs = [d for d in diffs if not d.startswith("base_fingerprint:")]
        diffs.append(
            "base network: its weights differ from those of the run that wrote the checkpoint "
            "(a refiner is trained for one base network)"
        )
    if diffs:
        raise ConfigError(
            f"Cannot resume from {source}: it was written with other training settings:\n  "
            + "\n  ".join(diffs)
            + "\nA resumed run must use the same settings to continue the same training. Hint: "
            "call fit with the checkpoint's settings, or start a new run (resume=False or another "
            "out_dir)."
        )
