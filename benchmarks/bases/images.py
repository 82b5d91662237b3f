"""Helpers to locate the shared evaluation data and read its images as float tensors.

The evaluation material (real test images, real pretrained weights) lives outside the repository,
by default in ``../shared/evaldata`` relative to the repository root. Nothing from it is copied into
the repository: every benchmark takes a ``--data`` path and skips with a clear message when the data
is absent (see :class:`EvalDataMissing`).

Images are returned as ``float32`` tensors of shape ``(1, C, H, W)`` with values in ``[0, 1]``
(``C = 1`` for grayscale, ``C = 3`` for RGB), the convention of every base in
:mod:`benchmarks.bases`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "DEFAULT_DATA_DIR",
    "REPO_ROOT",
    "EvalDataMissing",
    "list_images",
    "read_image",
    "read_pairs",
    "require_data",
    "resolve_data_dir",
    "to_uint8",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Root of the repository (the folder holding ``benchmarks/`` and ``src/``)."""

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "evaldata"
"""Default location of the shared evaluation data: ``../shared/evaldata`` from the repo root."""

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class EvalDataMissing(FileNotFoundError):
    """The shared evaluation data (or one of its files) is not available on this machine."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the evaluation-data folder, defaulting to :data:`DEFAULT_DATA_DIR`.

    Args:
        data_dir: folder given by the user (``--data``), or ``None`` for the default.

    Returns:
        The folder as an absolute :class:`~pathlib.Path` (it may not exist).
    """
    return Path(data_dir).expanduser().resolve() if data_dir else DEFAULT_DATA_DIR


def require_data(data_dir: str | Path | None, *parts: str) -> Path:
    """Return ``data_dir / parts...`` or raise :class:`EvalDataMissing` with a clear message.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).
        *parts: path components below it, e.g. ``("DnCNN-KAIR", "dncnn_25.pth")``.

    Returns:
        The existing path.

    Raises:
        EvalDataMissing: the path does not exist.
    """
    root = resolve_data_dir(data_dir)
    path = root.joinpath(*parts)
    if not path.exists():
        raise EvalDataMissing(
            f"evaluation data not found: {path}. It is not part of the repository; pass "
            f"--data pointing to the shared evaldata folder (default {DEFAULT_DATA_DIR})."
        )
    return path


def _natural_key(path: Path) -> list[object]:
    """Sort key ordering ``2.png`` before ``10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path, *, natural: bool = False) -> list[Path]:
    """List the image files of a folder in a stable order.

    Args:
        folder: the folder to list (not recursive).
        natural: sort numerically (``2.png`` before ``10.png``) instead of lexicographically.
            Lexicographic order is the default because it is what ``sorted(os.listdir())`` (and so
            most reference test scripts) use when they take "the first N images".

    Returns:
        The image paths, sorted.

    Raises:
        EvalDataMissing: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataMissing(f"image folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=_natural_key) if natural else sorted(files)


def read_image(path: str | Path, mode: str = "RGB") -> torch.Tensor:
    """Read an image file as a float tensor in [0, 1].

    Args:
        path: the image file.
        mode: Pillow mode to convert to: ``"RGB"`` (3 channels) or ``"L"`` (1 channel, gray).

    Returns:
        ``float32`` tensor of shape ``(1, C, H, W)``, values ``uint8 / 255``.

    Raises:
        ValueError: ``mode`` is not ``"RGB"`` or ``"L"``.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return t.unsqueeze(0)


def read_pairs(
    degraded_dir: str | Path,
    clean_dir: str | Path,
    *,
    mode: str = "RGB",
    limit: int | None = None,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Read paired images that share file names in two folders.

    Args:
        degraded_dir: folder of degraded inputs (e.g. ``LOL-v1-eval15/low``).
        clean_dir: folder of references with the same file names (e.g. ``LOL-v1-eval15/high``).
        mode: ``"RGB"`` or ``"L"``.
        limit: keep only the first ``limit`` pairs (lexicographic order of the names).

    Returns:
        ``(name, degraded, clean)`` tuples, each tensor ``(1, C, H, W)`` in [0, 1].

    Raises:
        EvalDataMissing: a folder, or the partner of an image, is missing.
    """
    clean_dir = Path(clean_dir)
    out = []
    for p in list_images(degraded_dir)[:limit]:
        q = clean_dir / p.name
        if not q.exists():
            raise EvalDataMissing(f"no reference image {q} for {p}")
        out.append((p.name, read_image(p, mode), read_image(q, mode)))
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantize [0, 1] images to the 8-bit grid (``round(clamp(x) * 255) / 255``).

    Reference test scripts usually save results as 8-bit PNGs (or convert to ``uint8``) before
    scoring; apply this to reproduce that convention.

    Args:
        x: images in [0, 1] (values outside are clamped).

    Returns:
        Tensor of the same shape and dtype, on the 8-bit grid.
    """
    return x.clamp(0, 1).mul(255).round().div(255)
