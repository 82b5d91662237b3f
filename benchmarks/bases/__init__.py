"""Small real pretrained restoration networks ("bases") for benchmarking ptg_refine.

Each base is written here from its paper and the key list of its released weights, and loads the
real weights from the shared evaluation-data folder (never copied into the repository) with
``torch.load(..., weights_only=True)`` and ``strict=True``. Every module's ``forward`` takes
``(B, C, H, W)`` images in [0, 1] and returns the restored images with the same shape:

============  =========================================  ==========  =========================
name          network                                    channels    weights (below data dir)
============  =========================================  ==========  =========================
``dncnn``     DnCNN gray σ = 25 (KAIR, BN merged)        1 (gray)    DnCNN-KAIR/dncnn_25.pth
``zerodce``   Zero-DCE curve estimator (low light)       3 (RGB)     Zero-DCE/Epoch99.pth
``sci``       SCI illumination network (low light)       3 (RGB)     SCI/{easy,medium,...}.pt
``prenet``    PReNet / PRN deraining (6 stages)          3 (RGB)     PReNet/logs/<set>/<v>/...
``wiener``    Wiener deconvolution, known kernel         any         blur-kernels-KAIR/Levin09
============  =========================================  ==========  =========================

Example:
    >>> from benchmarks.bases import load_base  # doctest: +SKIP
    >>> net = load_base("dncnn", "../shared/evaldata")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from .dncnn import DnCNN, load_dncnn
from .images import DEFAULT_DATA_DIR, EvalDataMissing, read_image, require_data
from .prenet import PReNet, load_prenet
from .sci import SCI, load_sci
from .wiener import WienerDeconv, blur, load_levin_kernels, load_wiener
from .zerodce import ZeroDCE, load_zerodce

__all__ = [
    "BASES",
    "DEFAULT_DATA_DIR",
    "SCI",
    "DnCNN",
    "EvalDataMissing",
    "PReNet",
    "WienerDeconv",
    "ZeroDCE",
    "blur",
    "load_base",
    "load_levin_kernels",
    "read_image",
    "require_data",
]

BASES: dict[str, Callable[..., nn.Module]] = {
    "dncnn": load_dncnn,
    "zerodce": load_zerodce,
    "sci": load_sci,
    "prenet": load_prenet,
    "wiener": load_wiener,
}
"""Loader of each base, by name."""


def load_base(name: str, data_dir: str | Path | None = None, **kwargs: object) -> nn.Module:
    """Build a base network and load its real pretrained weights strictly.

    Args:
        name: one of ``dncnn``, ``zerodce``, ``sci``, ``prenet``, ``wiener``.
        data_dir: the shared evaluation-data folder (``None``: ``../shared/evaldata`` from the
            repository root).
        **kwargs: passed to the loader: ``variant`` for ``sci`` (``"medium"``) and ``prenet``
            (``"PReNet6"``), ``dataset`` for ``prenet`` (``"Rain100L"``), ``kernel_index`` and
            ``nsr`` for ``wiener``, ``sign`` for ``zerodce``.

    Returns:
        The module in eval mode, on the CPU.

    Raises:
        KeyError: unknown ``name``.
        EvalDataMissing: the weights (or, for ``wiener``, the kernels or ``h5py``) are missing.
    """
    try:
        loader = BASES[name]
    except KeyError:
        raise KeyError(f"unknown base {name!r}; choose one of {sorted(BASES)}") from None
    return loader(data_dir, **kwargs)
