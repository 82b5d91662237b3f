"""Access to ``ptg_refine.metrics`` (psnr, ssim) even while the package itself cannot be imported.

The benchmarks score with the project's own metrics. When ``import ptg_refine`` fails (for example
the package is installed but one of its other sub-packages is broken or unfinished), the metrics
module is loaded alone from ``src/ptg_refine/metrics.py`` under a private package name, so that its
relative imports (``._checks``, ``.errors``) still resolve without running ``ptg_refine/__init__``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable

import torch

from .images import REPO_ROOT

__all__ = ["load_metrics"]

_PRIVATE = "_ptg_refine_metrics_only"

Metric = Callable[..., torch.Tensor]


def load_metrics() -> tuple[Metric, Metric]:
    """Return ``(psnr, ssim)`` from ``ptg_refine.metrics``.

    Returns:
        The two metric functions (see ``ptg_refine.metrics`` for their signatures).

    Raises:
        ImportError: neither the package nor ``src/ptg_refine/metrics.py`` can be imported.
    """
    try:
        from ptg_refine.metrics import psnr, ssim

        return psnr, ssim
    except ImportError:
        pass
    src = REPO_ROOT / "src" / "ptg_refine"
    if not (src / "metrics.py").exists():
        raise ImportError(f"cannot import ptg_refine.metrics, and {src / 'metrics.py'} is absent")
    if _PRIVATE not in sys.modules:
        pkg = types.ModuleType(_PRIVATE)
        pkg.__path__ = [str(src)]
        sys.modules[_PRIVATE] = pkg
    mod = importlib.import_module(f"{_PRIVATE}.metrics")
    return mod.psnr, mod.ssim
