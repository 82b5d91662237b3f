"""Adapters that turn other libraries' model objects into base networks for :func:`ptg_refine.refine`.

:func:`as_base_if_needed` returns its argument unchanged unless it is a spandrel
``ImageModelDescriptor`` (recognized without importing spandrel when it is not already loaded), in
which case it returns :func:`ptg_refine.interop.spandrel.as_base` of it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["as_base_if_needed", "is_spandrel_descriptor"]


def is_spandrel_descriptor(obj: Any) -> bool:
    """True if ``obj`` is a spandrel model descriptor (image or masked-image).

    Never imports spandrel: an object built by spandrel implies that spandrel is already loaded.
    """
    spandrel = sys.modules.get("spandrel")
    if spandrel is None:
        return False
    kinds = tuple(
        k
        for k in (
            getattr(spandrel, "ImageModelDescriptor", None),
            getattr(spandrel, "MaskedImageModelDescriptor", None),
        )
        if isinstance(k, type)
    )
    return bool(kinds) and isinstance(obj, kinds)


def as_base_if_needed(obj: Any) -> Any:
    """Wrap a spandrel descriptor with :func:`~ptg_refine.interop.spandrel.as_base`; else no-op.

    Args:
        obj: Anything :func:`ptg_refine.refine` accepts as ``model``, or a spandrel descriptor.

    Returns:
        ``obj`` itself, or a :class:`~ptg_refine.interop.spandrel.SpandrelBase` module.

    Raises:
        ConfigError: a spandrel descriptor that cannot serve as a same-size restoration base.
    """
    if is_spandrel_descriptor(obj):
        from .spandrel import as_base

        return as_base(obj)
    return obj
