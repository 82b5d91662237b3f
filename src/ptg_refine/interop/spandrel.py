"""spandrel interop: use any of the architectures `spandrel <https://github.com/chaiNNer-org/spandrel>`_
loads as the base network of :func:`ptg_refine.refine`.

Install the extra with ``pip install "ptg_refine[spandrel]"``. Example::

    import spandrel
    from ptg_refine import PTGRefiner, refine
    from ptg_refine.interop.spandrel import as_base

    descriptor = spandrel.ModelLoader().load_from_file("drunet_color.pth")
    model = refine(as_base(descriptor), PTGRefiner(encoder="stats"))

:class:`SpandrelBase` pads the input to the descriptor's ``size_requirements`` (reflection, then
replication, like spandrel), calls the model the way spandrel does (its ``call_fn``, e.g. DRUNet's
extra noise-level channel), clamps to [0, 1] and crops back. Unlike ``descriptor(image)`` it does not
run under ``torch.inference_mode``, so ``refine(..., freeze_base=False)`` can train the base jointly
(Eq. 8), and it accepts batches.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, MissingDependencyError, ShapeError

__all__ = ["SpandrelBase", "as_base"]

logger = logging.getLogger(__name__)


def _import_spandrel() -> Any:
    try:
        import spandrel
    except ImportError as err:
        raise MissingDependencyError(
            'spandrel interop needs the spandrel package: pip install "ptg_refine[spandrel]"'
        ) from err
    return spandrel


def _padding(req: Any, h: int, w: int) -> tuple[int, int]:
    """(pad_h, pad_w) meeting spandrel ``SizeRequirements`` (minimum, multiple_of, square)."""
    minimum = int(getattr(req, "minimum", 0) or 0)
    multiple = max(int(getattr(req, "multiple_of", 1) or 1), 1)
    ph, pw = max(minimum, h), max(minimum, w)
    ph, pw = -(-ph // multiple) * multiple, -(-pw // multiple) * multiple
    if getattr(req, "square", False):
        ph = pw = max(ph, pw)
    return ph - h, pw - w


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad bottom / right: reflection as far as it goes, then replication (as spandrel does)."""
    h, w = x.shape[-2:]
    rh, rw = min(pad_h, h - 1), min(pad_w, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_h - rh or pad_w - rw:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


class SpandrelBase(nn.Module):
    """A spandrel ``ImageModelDescriptor`` as a same-size restoration ``nn.Module``.

    Args:
        descriptor: A spandrel ``ImageModelDescriptor`` with ``scale == 1`` and as many output as
            input channels.

    Attributes:
        descriptor: The wrapped descriptor.
        model: ``descriptor.model`` (registered, so ``.to()``, ``.parameters()`` and freezing
            reach it).

    Shape:
        x: (B, C, H, W), C = ``descriptor.input_channels``, any H and W -> (B, C, H, W) in [0, 1].
    """

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        _check_descriptor(descriptor)
        self.model = descriptor.model
        # not a submodule attribute: the descriptor is a plain object holding self.model
        object.__setattr__(self, "descriptor", descriptor)
        self._call_fn = getattr(descriptor, "_call_fn", None)

    @property
    def size_requirements(self) -> Any:
        """The descriptor's ``SizeRequirements``."""
        return self.descriptor.size_requirements

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._call_fn is not None:
            return self._call_fn(self.model, x)
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.descriptor
        if x.ndim != 4 or x.shape[1] != d.input_channels:
            raise ShapeError(
                f"{d.architecture.name} expects (B, {d.input_channels}, H, W) images, got "
                f"{tuple(x.shape)}."
            )
        h, w = x.shape[-2:]
        pad_h, pad_w = _padding(d.size_requirements, h, w)
        xp = _pad(x, pad_h, pad_w) if pad_h or pad_w else x
        try:
            out = self._call(xp)
        except RuntimeError:
            if xp.shape[0] == 1:
                raise
            # some spandrel call_fns assume a batch of one (e.g. DRUNet's noise map)
            logger.debug("%s failed on a batch; running per image", d.architecture.name)
            out = torch.cat([self._call(xp[i : i + 1]) for i in range(xp.shape[0])])
        if not isinstance(out, torch.Tensor):
            raise ShapeError(
                f"{d.architecture.name} returned {type(out).__name__}, expected a tensor."
            )
        out = out.clamp(0.0, 1.0)[..., :h, :w]
        if tuple(out.shape) != (x.shape[0], d.output_channels, h, w):
            raise ShapeError(
                f"{d.architecture.name} returned {tuple(out.shape)} for input {tuple(x.shape)}; "
                "expected the same size."
            )
        return out

    def extra_repr(self) -> str:
        d = self.descriptor
        return (
            f"architecture={d.architecture.name!r}, channels={d.input_channels}, "
            f"size_requirements={d.size_requirements}"
        )


def _check_descriptor(descriptor: Any) -> None:
    spandrel = _import_spandrel()
    if isinstance(descriptor, spandrel.MaskedImageModelDescriptor):
        raise ConfigError(
            f"{descriptor.architecture.name} is an inpainting model (it takes an image and a "
            "mask); PTG-RM refines image-to-image restoration networks."
        )
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ConfigError(
            f"as_base expects a spandrel ImageModelDescriptor, got {type(descriptor).__name__}. "
            "Hint: spandrel.ModelLoader().load_from_file(path) returns one."
        )
    name = descriptor.architecture.name
    if descriptor.scale != 1:
        raise ConfigError(
            f"{name} is a x{descriptor.scale} super-resolution model (purpose "
            f"{descriptor.purpose!r}): its output is {descriptor.scale} times larger than its "
            "input. PTG-RM refines same-size restoration (the refiner combines the restored image "
            "with the degraded input pixel by pixel), so it needs a scale-1 model: denoising, "
            "deraining, deblurring, low-light enhancement, JPEG artifact removal..."
        )
    if descriptor.input_channels != descriptor.output_channels:
        raise ConfigError(
            f"{name} maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
            "PTG-RM needs the same number of input and output channels."
        )
    if descriptor.input_channels not in (1, 3):
        raise ConfigError(
            f"{name} works on {descriptor.input_channels}-channel images; ptg_refine handles "
            "1 (gray) or 3 (RGB) channels."
        )


def as_base(descriptor: Any) -> SpandrelBase:
    """Wrap a spandrel ``ImageModelDescriptor`` for :func:`ptg_refine.refine`.

    Args:
        descriptor: From ``spandrel.ModelLoader().load_from_file(...)`` or
            ``.load_from_state_dict(...)``.

    Returns:
        A :class:`SpandrelBase` module.

    Raises:
        MissingDependencyError: spandrel is not installed.
        ConfigError: not an image descriptor, ``scale != 1`` (super-resolution), or input and
            output channels differ or are not 1 or 3.
    """
    return SpandrelBase(descriptor)
