"""Training PTG-RM refiners: the fit loop, losses, the OSF feature cache and training data.

>>> from ptg_refine.train import fit, FitResult, FeatureCache, get_loss, list_losses
"""

from __future__ import annotations

import importlib.util

from .cache import FeatureCache
from .fit import FitResult, fit
from .losses import LOSSES, charbonnier, get_loss, l1, list_losses, mse, zero_dce

__all__ = [
    "LOSSES",
    "FeatureCache",
    "FitResult",
    "charbonnier",
    "fit",
    "get_loss",
    "l1",
    "list_losses",
    "mse",
    "zero_dce",
]

if importlib.util.find_spec(f"{__name__}.data") is not None:
    from .data import PairedFolder, SyntheticPairs

    __all__ += ["PairedFolder", "SyntheticPairs"]
