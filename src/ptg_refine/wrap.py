"""``refine(model, refiner)``: wrap any restoration network with a PTG-RM refiner.

Base-network outputs
--------------------
Many restoration networks return more than one image. ``RefinedModel`` takes the restored image from
the base output by this rule, which ``output=`` overrides:

* a tensor is used as is;
* a tuple or list: its element ``0``;
* a dict: the first present key among ``"out", "output", "restored", "pred", "image"``.

``output`` may be an int (sequence index), a str (dict key) or a callable ``f(base_output) -> tensor``.

Feature-level refinement (the paper's "-f" variant)
---------------------------------------------------
``refine(model, refiner, at="body.15")`` attaches the refiner to the output of the named submodule
of ``model`` (a name from ``model.named_modules()``) through a forward hook: that feature map
``f`` (B, C_f, h, w) is replaced by ``f + f * tanh(z) + r`` (a mask and a residual on the feature,
both predicted by the refiner from ``f`` and the prior; Eq. 1 with the "degraded" term set to
zero), and the rest of the base network runs on the refined feature. Build the refiner with
``in_channels=C_f``. Gradients reach the refiner through the rest of the (frozen) base, so
``fit`` trains it like an output-level refiner; ``forward_all`` also runs the base once without
the hook to report its plain output. The named module must run exactly once per forward.

Tiled inference
---------------
``refine(model, refiner, tile=512, tile_overlap=32)`` bounds memory on large images (an 8K frame
refines in a few GB). The base network runs on ``tile`` x ``tile`` windows that overlap by
``tile_overlap`` pixels; their outputs are blended with weights that are zero on the
``tile_overlap // 4`` pixels next to an inner tile edge and ramp linearly to one across the rest of
the overlap, so a base whose receptive field reaches at most ``tile_overlap // 4`` pixels gives
exactly its untiled output, and others get seamless blends. The prior is global: it is computed
once from the whole image (downscaled so that its longer side is at most ``PRIOR_MAX_SIDE``),
never per tile. The refiner then runs tile by tile with whole-image statistics, which reproduces
its untiled output up to rounding (see :meth:`PTGRefiner.forward`). Tiled outputs carry no
gradients: train on crops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .errors import ConfigError, ShapeError
from .refiner import PTGRefiner

__all__ = [
    "DICT_OUTPUT_KEYS",
    "PRIOR_MAX_SIDE",
    "RefineOutput",
    "RefinedModel",
    "feature_channels",
    "refine",
    "select_output",
]

DICT_OUTPUT_KEYS = ("out", "output", "restored", "pred", "image")
PRIOR_MAX_SIDE = 2048  # tiled inference computes the prior from the image downscaled to this side

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


class RefineOutput(NamedTuple):
    """Everything one forward pass computes: the base output, the refined image and the prior."""

    restored: torch.Tensor
    refined: torch.Tensor
    features: torch.Tensor


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """Pick the restored image out of a base network's output (see the module docstring)."""
    if callable(output):
        picked = output(out)
    elif isinstance(out, torch.Tensor) and output is None:
        picked = out
    elif isinstance(out, Mapping):
        keys = [output] if isinstance(output, str) else list(DICT_OUTPUT_KEYS)
        found = next((k for k in keys if k in out), None)
        if found is None:
            raise ShapeError(
                f"The base network returned a dict with keys {sorted(map(str, out))}; none of "
                f"{keys} is among them. Pass output='<key>' (or a callable) to refine()."
            )
        picked = out[found]
    elif isinstance(out, Sequence) and not isinstance(out, str | bytes):
        index = 0 if output is None else output
        if not isinstance(index, int) or not -len(out) <= index < len(out):
            raise ShapeError(
                f"The base network returned a {type(out).__name__} of {len(out)} items; cannot take "
                f"item {index!r}. Pass output=<index> (or a callable) to refine()."
            )
        picked = out[index]
    else:
        raise ShapeError(
            f"Cannot take an image out of the base network's output of type {type(out).__name__} "
            f"with output={output!r}. Pass output= an index, a key or a callable to refine()."
        )
    if not isinstance(picked, torch.Tensor):
        raise ShapeError(
            f"The selected base output is a {type(picked).__name__}, not a tensor. Pass output= "
            "to refine() to select the restored image."
        )
    return picked


class RefinedModel(nn.Module):
    """A base restoration network followed by a PTG-RM refiner guided by a frozen encoder.

    Build it with :func:`refine`. ``forward(degraded) -> refined``.

    Attributes:
        base: the user's restoration network F.
        encoder: the frozen pre-trained encoder G (``features = encoder(degraded)``).
        refiner: the :class:`~ptg_refine.PTGRefiner` R.
        freeze_base: whether F is frozen (no gradients, kept in eval mode).
        tile: tile side for tiled inference (see the module docstring), or None.
        tile_overlap: overlap of neighbouring base-network tiles, in pixels.
        at: name of the submodule of ``base`` whose output feature map is refined (feature-level
            refinement, see the module docstring), or None to refine the output image.

    Shape:
        degraded: (B, C, H, W) float in [0, 1], C = ``refiner.in_channels`` (for output-level
        refinement; with ``at`` the base network decides).
        output: (B, C, H, W).
    """

    def __init__(
        self,
        base: nn.Module,
        refiner: PTGRefiner,
        encoder: nn.Module,
        *,
        freeze_base: bool = True,
        output: OutputSelector = None,
        tile: int | None = None,
        tile_overlap: int = 32,
        at: str | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.encoder = encoder
        self.refiner = refiner
        self.freeze_base = freeze_base
        self.output = output
        self.tile, self.tile_overlap = _check_tiling(tile, tile_overlap)
        self.at = at
        if at is not None:
            _find_submodule(base, at)  # fails early, listing the valid names
            if self.tile is not None:
                raise ConfigError(
                    "Tiled inference (tile=...) is not available with feature-level refinement "
                    f"(at={at!r}). Use tile=None, or refine the output image (at=None)."
                )
        if freeze_base:
            for p in base.parameters():  # (ScriptModules lack requires_grad_)
                p.requires_grad_(False)
            base.eval()

    def train(self, mode: bool = True) -> RefinedModel:
        super().train(mode)
        if self.freeze_base:
            self.base.eval()
        self.encoder.eval()
        return self

    def forward(self, degraded: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Refined image for ``degraded``; ``features`` skips the encoder (e.g. cached)."""
        if self.at is not None:
            self._validate(degraded)
            if features is None:
                features = self.encode(degraded)
            return self._forward_feature_refined(degraded, features)
        return self.forward_all(degraded, features).refined

    def forward_all(
        self, degraded: torch.Tensor, features: torch.Tensor | None = None
    ) -> RefineOutput:
        """Base output, refined output and prior in one pass (for Eq. 8 training)."""
        self._validate(degraded)
        if self.tile is not None:
            return self._forward_tiled(degraded, features)
        restored = self.restore(degraded)
        if features is None:
            features = self.encode(degraded)
        if self.at is not None:
            refined = self._forward_feature_refined(degraded, features)
        else:
            refined = self.refiner(restored, degraded, features)
        return RefineOutput(restored, refined, features)

    def _forward_feature_refined(
        self, degraded: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """The base network with the output of submodule ``at`` refined (feature level)."""
        assert self.at is not None
        module = _find_submodule(self.base, self.at)
        calls = 0

        def hook(_module: nn.Module, _inputs: Any, out: Any) -> torch.Tensor:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise ConfigError(
                    f"Submodule {self.at!r} ran more than once in one forward of the base network; "
                    "feature-level refinement needs a module that runs exactly once (a recurrent "
                    "or shared block does not). Choose another name for at=."
                )
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or not out.is_floating_point():
                raise ShapeError(
                    f"Submodule {self.at!r} returned {_describe_output(out)}, not a float feature "
                    "map (B, C, H, W). Choose a convolutional layer or block for at=."
                )
            if out.shape[1] != self.refiner.in_channels:
                raise ShapeError(
                    f"Submodule {self.at!r} outputs {out.shape[1]} channels but the refiner has "
                    f"in_channels={self.refiner.in_channels}. Build it with "
                    f"PTGRefiner(in_channels={out.shape[1]}, ...)."
                )
            return self.refiner(out, torch.zeros_like(out), features)

        handle = module.register_forward_hook(hook)
        try:
            out = self.base(degraded)  # with autograd: the refiner's gradient flows through it
        finally:
            handle.remove()
        if calls == 0:
            raise ConfigError(
                f"Submodule {self.at!r} did not run in the base network's forward, so nothing was "
                "refined. Choose a module that the forward pass calls (TorchScript and "
                "torch.export bases run no Python hooks: pass the eager nn.Module)."
            )
        refined = select_output(out, self.output)
        if refined.shape != degraded.shape:
            raise ShapeError(
                f"The base network returned shape {tuple(refined.shape)} for input "
                f"{tuple(degraded.shape)}; refine() needs an image of the input's shape."
            )
        return refined

    def _forward_tiled(self, degraded: torch.Tensor, features: torch.Tensor | None) -> RefineOutput:
        if self.training and torch.is_grad_enabled():
            raise ConfigError(
                "Tiled inference (tile=...) runs without gradients; the model is in training "
                "mode. Call model.eval() (or use torch.no_grad()) for tiled inference, or train "
                "on crops with tile=None."
            )
        assert self.tile is not None
        with torch.no_grad():
            restored = _blend_tiles(self._restore_tile, degraded, self.tile, self.tile_overlap)
            if features is None:
                features = self.encode(_downscale(degraded, PRIOR_MAX_SIDE))
            refined = self.refiner(restored, degraded, features, tile=self.tile)
        return RefineOutput(restored, refined, features)

    def _restore_tile(self, window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.restore(window)

    def restore(self, degraded: torch.Tensor) -> torch.Tensor:
        """The base network's output F(degraded), checked to be an image of the input's shape."""
        if self.freeze_base:
            with torch.no_grad():
                out = self.base(degraded)
        else:
            out = self.base(degraded)
        restored = select_output(out, self.output)
        if restored.shape != degraded.shape:
            raise ShapeError(
                f"The base network returned shape {tuple(restored.shape)} for input "
                f"{tuple(degraded.shape)}; PTG-RM needs an image of the input's shape. If the base "
                "needs sizes divisible by some factor, pad inside it; if it returns several images, "
                "choose one with refine(..., output=...)."
            )
        return restored.to(degraded.dtype) if not restored.is_floating_point() else restored

    def encode(self, degraded: torch.Tensor) -> torch.Tensor:
        """The prior g = G(degraded), (B, D)."""
        return self.encoder(degraded)

    def _validate(self, degraded: torch.Tensor) -> None:
        channels = None if self.at is not None else self.refiner.in_channels
        _checks.check_image(degraded, "degraded", channels=channels)
        _checks.check_same_device(degraded, self.refiner, "degraded")


def refine(
    model: nn.Module,
    refiner: PTGRefiner,
    *,
    encoder: Any = None,
    freeze_base: bool = True,
    output: OutputSelector = None,
    tile: int | None = None,
    tile_overlap: int = 32,
    at: str | None = None,
) -> RefinedModel:
    """Wrap ``model`` (any ``nn.Module`` mapping degraded to restored images) with ``refiner``.

    Args:
        model: the user's restoration network.
        refiner: a :class:`PTGRefiner` (new, or from ``PTGRefiner.from_pretrained``).
        encoder: the prior's encoder: None builds it from ``refiner.config.encoder`` (and its
            recorded preprocessing); else a spec string, an ``Encoder``, or any module / callable
            mapping images to (B, D) (see :func:`ptg_refine.create_encoder`).
        freeze_base: keep ``model`` frozen (no gradients, eval mode); False trains it jointly (Eq. 8).
        output: how to take the restored image out of ``model``'s output (see module docstring).
        tile: inference only: run the base network and the refiner on windows of about
            ``tile`` x ``tile`` pixels to bound memory (see "Tiled inference" in the module
            docstring); None processes the whole image at once.
        tile_overlap: overlap in pixels of neighbouring base-network windows (blended).
        at: refine the output feature map of this submodule of ``model`` (a name from
            ``model.named_modules()``) instead of the output image: the paper's "-f" variant
            (see "Feature-level refinement" in the module docstring). The refiner needs
            ``in_channels`` equal to that feature map's channel count.

    Returns:
        A :class:`RefinedModel`; ``RefinedModel(degraded) -> refined``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from ptg_refine import PTGRefiner, refine
        >>> model = refine(nn.Conv2d(3, 3, 3, padding=1), PTGRefiner(encoder="stats"))
        >>> model(torch.rand(1, 3, 45, 61)).shape
        torch.Size([1, 3, 45, 61])
    """
    from .encoders import create_encoder
    from .interop import as_base_if_needed

    model = as_base_if_needed(model)  # a spandrel ImageModelDescriptor becomes a padded nn.Module
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise ConfigError(
                f"model must be an nn.Module or callable, got {type(model).__name__}."
            )
        model = _CallableModule(model)
    if not isinstance(refiner, PTGRefiner):
        raise ConfigError(
            f"refiner must be a PTGRefiner, got {type(refiner).__name__}. Build one with "
            "PTGRefiner(encoder='stats') or PTGRefiner.from_pretrained(...)."
        )
    cfg = refiner.config
    if encoder is None:
        if cfg.encoder is None:
            raise ConfigError(
                "The refiner's config names no encoder and refine() got none. Pass "
                "refine(model, refiner, encoder='stats' | 'open_clip:ViT-B-32@openai' | module)."
            )
        pre = {
            k: v
            for k, v in (cfg.encoder_config or {}).items()
            if k in ("input_size", "mean", "std")
        }
        encoder = create_encoder(cfg.encoder, **pre)
    else:
        encoder = create_encoder(encoder)
    dim = getattr(encoder, "dim", None)
    if dim is not None and dim != cfg.embed_dim:
        raise ConfigError(
            f"The encoder gives features of length {dim} but the refiner expects embed_dim="
            f"{cfg.embed_dim}. Build the refiner with PTGRefiner(encoder=<same spec>) or "
            f"embed_dim={dim}."
        )
    device = next(refiner.parameters()).device
    encoder = encoder.to(device)
    return RefinedModel(
        model,
        refiner,
        encoder,
        freeze_base=freeze_base,
        output=output,
        tile=tile,
        tile_overlap=tile_overlap,
        at=at,
    )


def feature_channels(model: nn.Module, at: str, in_channels: int = 3, size: int = 32) -> int:
    """Channel count of the feature map that submodule ``at`` of ``model`` outputs.

    Runs ``model`` once on a small random image (``in_channels`` x ``size`` x ``size``, no
    gradients) with a hook on ``at``. Use it to size a feature-level refiner:
    ``PTGRefiner(in_channels=feature_channels(net, "body.15"))``.

    Raises:
        ConfigError: ``at`` is not a submodule of ``model`` (the message lists the valid names)
            or did not run.
        ShapeError: its output is not a (B, C, H, W) feature map.
    """
    module = _find_submodule(model, at)
    seen: list[Any] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        param = next(iter(model.parameters()), None)
        x = torch.rand(1, in_channels, size, size)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not seen:
        raise ConfigError(f"Submodule {at!r} did not run in the model's forward pass.")
    out = seen[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ShapeError(
            f"Submodule {at!r} returned {_describe_output(out)}, not a feature map (B, C, H, W)."
        )
    return int(out.shape[1])


def _find_submodule(base: nn.Module, name: object) -> nn.Module:
    """The submodule ``name`` of ``base``, or a ConfigError listing the valid names."""
    modules = dict(base.named_modules())
    modules.pop("", None)
    if isinstance(name, str) and name in modules:
        return modules[name]
    import difflib

    names = list(modules)
    if not names:
        raise ConfigError(
            f"at={name!r}: the base network ({type(base).__name__}) has no submodules, so there is "
            "no feature map to refine. Use at=None to refine the output image."
        )
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"at={name!r} is not a submodule of the base network ({type(base).__name__}).{hint} "
        f"Valid names (from model.named_modules()): {shown}."
    )


def _describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


class _CallableModule(nn.Module):
    """Lets a plain function stand as the base network."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def _check_tiling(tile: object, overlap: object) -> tuple[int | None, int]:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 16):
        raise ConfigError(f"tile must be None or an integer of at least 16 pixels, got {tile!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"tile_overlap must be a non-negative integer, got {overlap!r}.")
    if tile is not None and 2 * overlap > tile:
        raise ConfigError(
            f"tile_overlap={overlap} is too large for tile={tile}: it must be at most half the "
            f"tile ({tile // 2})."
        )
    return tile, overlap


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering [0, size) with windows of ``tile`` overlapping by >= ``overlap``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def _ramp(length: int, start: int, stop: int, size: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of a window [start, stop) of [0, size) (see the module docstring)."""
    weight = torch.ones(length)
    if overlap == 0:
        return weight
    margin = overlap // 4
    span = overlap - 2 * margin
    d = torch.arange(length, dtype=torch.float32)
    if start > 0:
        weight = torch.minimum(weight, ((d - margin + 0.5) / span).clamp(0.0, 1.0))
    if stop < size:
        weight = torch.minimum(weight, ((length - 1 - d - margin + 0.5) / span).clamp(0.0, 1.0))
    return weight


def _blend_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int
) -> torch.Tensor:
    """``fn(x)`` computed on overlapping windows of ``x`` and blended (same shape as ``x``)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    out: torch.Tensor | None = None
    total = x.new_zeros((h, w), dtype=torch.float32)
    for y0 in _tile_starts(h, tile, overlap):
        y1 = min(y0 + tile, h)
        rows = _ramp(y1 - y0, y0, y1, h, overlap)
        for x0 in _tile_starts(w, tile, overlap):
            x1 = min(x0 + tile, w)
            weight = rows[:, None] * _ramp(x1 - x0, x0, x1, w, overlap)[None, :]
            weight = weight.to(x.device)
            part = fn(x[:, :, y0:y1, x0:x1])
            if out is None:
                out = torch.zeros(x.shape, dtype=part.dtype, device=part.device)
            out[:, :, y0:y1, x0:x1].add_(part * weight.to(part.dtype))
            total[y0:y1, x0:x1] += weight
    assert out is not None
    return out.div_(total.to(out.dtype))


def _downscale(x: torch.Tensor, max_side: int) -> torch.Tensor:
    """``x`` resized (antialiased) so that its longer side is at most ``max_side``."""
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
