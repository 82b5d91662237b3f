"""PTG-RM: the Pre-Train-Guided Refinement Module (``PAPER.md``), with strict Hub I/O.

``PTGRefiner(restored, degraded, features) -> refined`` refines the output ``restored`` of any
restoration network, guided by a 1-D feature vector of a frozen pre-trained encoder computed from the
``degraded`` input.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from . import _checks
from ._atomic import atomic_write
from ._weights import load_state_dict_strict, read_config_json, read_safetensors
from .errors import ConfigError
from .layers import (
    PositionEmbedding,
    PriorMapping,
    ResidualBlock,
    TransformerBlock,
    _recording,
    add_fresh,
    is_tracing,
    lrelu,
    per_pixel_conv,
)

__all__ = ["CONFIG_NAME", "REFERENCE_PARAMETERS", "WEIGHTS_NAME", "PTGRefiner", "RefinerConfig"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_EMBED_DIM = 512  # CLIP ViT-B/32, the paper's default prior
REFERENCE_PARAMETERS = 671_735  # published reference implementation at D = 512 (paper: "+0.67M")
_DOWNSCALE = 4  # the encoder R_e works at 1/4 resolution; inputs are padded to a multiple of it


@dataclass
class RefinerConfig:
    """Everything needed to rebuild a :class:`PTGRefiner` (stored as ``config.json``).

    Attributes:
        embed_dim: length D of the prior vector g (512 for CLIP ViT-B/32).
        width: refiner width c.
        num_blocks: transformer blocks in the long-range branch of PTG-SVE.
        num_heads: attention heads of those blocks (must divide ``width``).
        ffn_expansion: hidden expansion of the gated feed-forward network.
        kernel_size: size k of the per-pixel kernels predicted by PTG-CSA (odd).
        prior_hidden: hidden width of the prior mappings T_m and T_c.
        in_channels: image channels (1 or 3), or the channel count of the feature map a
            feature-level refiner refines (``refine(model, refiner, at=...)``).
        encoder: spec of the encoder that produces g (e.g. ``"stats"``,
            ``"open_clip:ViT-B-32@openai"``), or None when the caller supplies features.
        encoder_config: the encoder's preprocessing (input size, mean, std, dim), recorded so a
            saved refiner rebuilds its encoder exactly.
    """

    embed_dim: int = 512
    width: int = 16
    num_blocks: int = 4
    num_heads: int = 1
    ffn_expansion: float = 2.66
    kernel_size: int = 3
    prior_hidden: int = 256
    in_channels: int = 3
    encoder: str | None = None
    encoder_config: dict[str, Any] | None = field(default=None)

    def validate(self) -> None:
        def bad(name: str, value: object, expected: str) -> ConfigError:
            return ConfigError(f"Invalid refiner config: {name}={value!r}; expected {expected}.")

        for name in ("embed_dim", "width", "num_blocks", "num_heads", "prior_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, value, "a positive integer")
        if (
            isinstance(self.in_channels, bool)
            or not isinstance(self.in_channels, int)
            or self.in_channels < 1
        ):
            raise bad(
                "in_channels",
                self.in_channels,
                "a positive integer: 1 (gray) or 3 (RGB) for images, the feature map's channel "
                "count for feature-level refinement (refine(..., at=...))",
            )
        if (
            isinstance(self.kernel_size, bool)
            or not isinstance(self.kernel_size, int)
            or self.kernel_size < 1
            or self.kernel_size % 2 == 0
        ):
            raise bad("kernel_size", self.kernel_size, "a positive odd integer")
        if self.width % self.num_heads:
            raise bad("num_heads", self.num_heads, f"a divisor of width={self.width}")
        if not isinstance(self.ffn_expansion, int | float) or not self.ffn_expansion > 0:
            raise bad("ffn_expansion", self.ffn_expansion, "a positive number")
        if self.encoder is not None and not isinstance(self.encoder, str):
            raise bad(
                "encoder",
                self.encoder,
                "a spec string such as 'stats' or 'open_clip:ViT-B-32@openai', or None "
                "(pass encoder modules to refine(..., encoder=...) instead)",
            )
        if self.encoder_config is not None and not isinstance(self.encoder_config, dict):
            raise bad("encoder_config", self.encoder_config, "a dict or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown refiner config keys {unknown}; known keys are {sorted(known)}. "
                "Hint: the file may come from a newer ptg_refine; upgrade with pip install -U ptg_refine."
            )
        cfg = cls(**data)
        cfg.validate()
        return cfg


_MODEL_CARD = """---
{{ card_data }}
---

# PTG-RM refiner (ptg_refine)

A Pre-Train-Guided Refinement Module ({{ num_parameters }} parameters) that refines the output of an
image-restoration network using a frozen pre-trained encoder's feature vector as guidance
(Xu et al., "Boosting Image Restoration via Priors from Pre-trained Models", CVPR 2024).

- Encoder (prior): `{{ encoder }}`
- Image channels: {{ in_channels }}, prior length D = {{ embed_dim }}, width {{ width }}

## Use

```python
from ptg_refine import PTGRefiner, refine

refiner = PTGRefiner.from_pretrained("{{ repo_id }}")
model = refine(my_restoration_net, refiner)  # degraded (B, C, H, W) in [0, 1] -> refined
```

{{ notes }}
"""


class PTGRefiner(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ptg_refine",
    tags=["image-restoration", "ptg-rm", "ptg_refine"],
    pipeline_tag="image-to-image",
    paper_url="https://arxiv.org/abs/2403.06793",
    model_card_template=_MODEL_CARD,
):
    """PTG-RM refiner: ``refined = R(restored, degraded, features)`` (Eq. 1 of the paper).

    ``refined = degraded + (restored - degraded) * mask + residual`` where ``mask`` (initialized to 1)
    rescales the base network's change per pixel and ``residual`` (initialized to 0) adds a
    correction. Computed as ``restored + (restored - degraded) * (mask - 1) + residual`` so that an
    untrained refiner returns ``restored`` bit for bit.

    Args:
        embed_dim: prior length D. None: inferred from ``encoder`` when one is named, else 512
            (CLIP ViT-B/32, the paper's default).
        width, num_blocks, num_heads, ffn_expansion, kernel_size, prior_hidden, in_channels:
            see :class:`RefinerConfig`.
        encoder: encoder spec string recorded in the config (see ``ptg_refine.list_encoders()``).
        encoder_config: the encoder's preprocessing; filled from the encoder when None.

    Shape:
        restored, degraded: (B, C, H, W) float in [0, 1], C = ``in_channels``, any H and W.
        features: (B, D).
        output: (B, C, H, W).

    Example:
        >>> import torch
        >>> from ptg_refine import PTGRefiner
        >>> refiner = PTGRefiner(embed_dim=8, in_channels=1)
        >>> x = torch.rand(1, 1, 13, 17)
        >>> torch.equal(refiner(x, x.flip(-1), torch.randn(1, 8)), x)  # identity before training
        True
    """

    def __init__(
        self,
        *,
        embed_dim: int | None = None,
        width: int = 16,
        num_blocks: int = 4,
        num_heads: int = 1,
        ffn_expansion: float = 2.66,
        kernel_size: int = 3,
        prior_hidden: int = 256,
        in_channels: int = 3,
        encoder: str | None = None,
        encoder_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if (
            encoder is not None
            and isinstance(encoder, str)
            and (embed_dim is None or encoder_config is None)
        ):
            from .encoders import describe_encoder  # lazy: keeps refiner.py free of encoder imports

            described = describe_encoder(encoder)
            if encoder_config is None:
                encoder_config = described
            if embed_dim is None:
                embed_dim = int(described["dim"])
            elif embed_dim != int(described["dim"]):
                raise ConfigError(
                    f"embed_dim={embed_dim} does not match encoder {encoder!r}, whose features have "
                    f"length {described['dim']}. Hint: leave embed_dim unset to infer it."
                )
        if embed_dim is None:
            embed_dim = DEFAULT_EMBED_DIM
        cfg = RefinerConfig(
            embed_dim=embed_dim,
            width=width,
            num_blocks=num_blocks,
            num_heads=num_heads,
            ffn_expansion=ffn_expansion,
            kernel_size=kernel_size,
            prior_hidden=prior_hidden,
            in_channels=in_channels,
            encoder=encoder,
            encoder_config=encoder_config,
        )
        cfg.validate()
        self.config = cfg
        self._hub_mixin_config = cfg.to_dict()

        c, k, cimg = width, kernel_size, in_channels
        # Encoder R_e: restored ⊕ degraded -> f at 1/4 resolution.
        self.enc_conv1 = nn.Conv2d(2 * cimg, c, 3, padding=1)
        self.enc_norm1 = nn.InstanceNorm2d(c, affine=True)
        self.enc_conv2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.enc_norm2 = nn.InstanceNorm2d(c, affine=True)
        self.enc_conv3 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        # Position embeddings and prior mappings, one pair for each of PTG-SVE and PTG-CSA.
        self.pos_sve = PositionEmbedding(c)
        self.pos_csa = PositionEmbedding(c)
        self.prior_sve = PriorMapping(embed_dim, 4 * c, hidden=prior_hidden)
        self.prior_csa = PriorMapping(embed_dim, 4 * c, hidden=prior_hidden)
        # PTG-SVE: range map choosing between a short- and a long-range branch.
        self.range_conv1 = nn.Conv2d(6 * c, c, 3, padding=1)
        self.range_conv2 = nn.Conv2d(c, 1, 3, padding=1)
        self.short_range = ResidualBlock(c)
        self.long_range = nn.Sequential(
            *(
                TransformerBlock(c, heads=num_heads, expansion=ffn_expansion)
                for _ in range(num_blocks)
            )
        )
        # PTG-CSA: channel attention from pooled features + prior ...
        self.channel_fc1 = nn.Linear(5 * c, c)
        self.channel_fc2 = nn.Linear(c, c)
        # ... and spatial attention from per-pixel predicted kernels.
        self.kernel_conv1 = nn.Conv2d(6 * c, c * k * k, 3, padding=1)
        self.kernel_conv2 = nn.Conv2d(c * k * k, c * k * k, 3, padding=1)
        self.spatial_conv = nn.Conv2d(c, 1, 3, padding=1)
        # Fusion R_f and decoder R_d.
        self.fuse = nn.Conv2d(2 * c, c, 1)
        self.up1 = nn.Conv2d(c, 4 * c, 3, padding=1)
        self.up2 = nn.Conv2d(c, 4 * c, 3, padding=1)
        self.dec_conv = nn.Conv2d(c, c, 3, padding=1)
        self.head = nn.Conv2d(c, 2 * cimg, 3, padding=1)  # mask logits ⊕ residual
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ properties
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        restored: torch.Tensor,
        degraded: torch.Tensor,
        features: torch.Tensor,
        *,
        tile: int | None = None,
    ) -> torch.Tensor:
        """Refine ``restored`` (see the class docstring for shapes).

        Args:
            restored: the base network's output.
            degraded: the base network's input.
            features: the prior g, (B, D).
            tile: inference only: process the image in tiles of about ``tile`` x ``tile`` pixels
                (at least 16) to bound memory. The result equals the untiled one up to
                floating-point rounding (statistics that span the image, such as the instance
                norms and the channel attention, are accumulated over all tiles first; tiles
                overlap by the receptive field, so there are no seams). None: untiled, except
                that large images are processed in bands when no gradient is recorded.
        """
        self._validate(restored, degraded, features)
        if tile is not None:
            tile = _check_tile(tile)
        if self._streamable(restored, features):
            pixels = restored.shape[0] * restored.shape[-2] * restored.shape[-1]
            if tile is None and pixels > _STREAM_MIN_PIXELS:
                dense_encoder = pixels <= _DENSE_ENCODER_MAX_PIXELS
                return self._forward_streamed(
                    restored, degraded, features, _STREAM_TILE, dense_encoder
                )
            if tile is not None:
                return self._forward_streamed(restored, degraded, features, tile, False)
        elif tile is not None:
            raise ConfigError(
                "tile= is for inference: it got inputs or parameters that record gradients. "
                "Call it under torch.no_grad() (or torch.inference_mode()), or train on crops."
            )
        mask_logit, residual = self._predict(restored, degraded, features)
        return _combine(restored, degraded, mask_logit, residual)

    def _validate(
        self, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
    ) -> None:
        ch = self.config.in_channels
        _checks.check_image(restored, "restored", channels=ch)
        _checks.check_image(degraded, "degraded", channels=ch)
        _checks.check_same_shape(restored, degraded, ("restored", "degraded"))
        _checks.check_features(features, restored.shape[0], self.config.embed_dim)
        _checks.check_same_device(restored, self, "restored")

    def _streamable(self, restored: torch.Tensor, features: torch.Tensor) -> bool:
        """Whether the band/tile engine may run: eager mode and no autograd graph to record."""
        if is_tracing():
            return False
        if not torch.is_grad_enabled():
            return True
        return not (
            restored.requires_grad
            or features.requires_grad
            or any(p.requires_grad for p in self.parameters())
        )

    def _predict(
        self, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits and residual at the input's size (both (B, C, H, W))."""
        h, w = restored.shape[-2:]
        x = _model_input(restored, degraded)
        out = self._body(x, self._prior_input(features, x))
        mask_logit, residual = out[..., :h, :w].chunk(2, dim=1)
        return mask_logit, residual

    @staticmethod
    def _prior_input(features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return features if torch.is_autocast_enabled(x.device.type) else features.to(x.dtype)

    def _body(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The whole module at the padded size: (B, 2 C_img, H, W) -> (B, 2 C_img, H, W)."""
        f = self._encode(x)
        prior_m, prior_c = self.prior_sve(g), self.prior_csa(g)
        size = (f.shape[-2], f.shape[-1])

        # PTG-SVE (Eqs. 2-3)
        range_map = self._range_map(f, prior_m, size, None)
        f_hat = torch.lerp(self.long_range(f), self.short_range(f), range_map)

        # PTG-CSA (Eqs. 4-6) and fusion (Eq. 7)
        channel = self._channel_gate(f_hat, prior_c)
        f_bar = self._csa(f_hat, channel, prior_c, size, None)
        return self._decode(f_bar)

    # The stages below work on a whole map (region None) or on a window of it: ``region`` is
    # (y0, y1, x0, x1) in 1/4-resolution coordinates of the whole map of size ``size``, and only
    # the position embeddings need it. Values within the receptive field of a window's inner edges
    # are wrong (zero padding there); the streaming engine crops them away.
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder R_e: (B, 2 C_img, H, W) -> f (B, c, H/4, W/4), channels_last."""
        return self._encode_rest(self.enc_conv1(x.contiguous(memory_format=torch.channels_last)))

    def _encode_rest(self, y: torch.Tensor, stats: _EncoderStats | None = None) -> torch.Tensor:
        """The encoder after its first convolution (``y`` is that convolution's fresh output)."""
        if stats is None:
            stats = _EncoderStats()
        y = lrelu(_instance_norm(y, self.enc_norm1, stats.first), inplace=True)
        y = self.enc_conv2(y)
        return self.enc_conv3(_instance_norm(y, self.enc_norm2, stats.second))

    def _range_map(
        self,
        f: torch.Tensor,
        prior: torch.Tensor,
        size: tuple[int, int],
        region: tuple[int, int, int, int] | None,
    ) -> torch.Tensor:
        """M = sigmoid(R_m(f ⊕ T_m(g) ⊕ S_m)), (B, 1, h, w)."""
        pos = self.pos_sve(1, size[0], size[1], like=f, region=region)
        hidden = _conv_with_prior(self.range_conv1, f, prior, pos)
        return torch.sigmoid(self.range_conv2(lrelu(hidden, inplace=True)))

    def _channel_gate(self, f_hat: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """M_c = sigmoid(MLP(avgpool(f̂) ⊕ T_c(g))), (B, c)."""
        pooled = torch.cat([f_hat.mean(dim=(2, 3)), prior], dim=1)
        return torch.sigmoid(self.channel_fc2(lrelu(self.channel_fc1(pooled))))

    def _csa(
        self,
        f_hat: torch.Tensor,
        channel: torch.Tensor,
        prior: torch.Tensor,
        size: tuple[int, int],
        region: tuple[int, int, int, int] | None,
    ) -> torch.Tensor:
        """PTG-CSA and fusion: f̄ = R_f(f̂·M_c ⊕ f̂·M_s) + f̂, (B, c, h, w)."""
        pos = self.pos_csa(1, size[0], size[1], like=f_hat, region=region)
        # Training: oneDNN's backward of the wide kernel-predictor convolutions is about twice
        # as fast in the planar layout, so this block runs planar when a graph is recorded.
        planar = _recording(f_hat, self.kernel_conv2.weight) and not is_tracing()
        if planar:
            f_hat, pos = f_hat.contiguous(), pos.contiguous()
        hidden = _conv_with_prior(self.kernel_conv1, f_hat, prior, pos, channels_last=not planar)
        hidden = lrelu(hidden, inplace=True)
        k = self.config.kernel_size
        if is_tracing() or hidden.is_contiguous():
            kernels = self.kernel_conv2(hidden)
            attn = per_pixel_conv(f_hat, kernels, k)
        else:
            # channels_last: predict the kernels tap-major (output channels reordered from
            # (channel, tap) to (tap, channel)) so that each tap's kernels are contiguous per pixel.
            kernels = F.conv2d(
                hidden,
                _tap_major(self.kernel_conv2.weight, k),
                _tap_major(self.kernel_conv2.bias, k),
                padding=1,
            )
            attn = per_pixel_conv(f_hat, kernels, k, tap_major=True)
        del hidden, kernels
        spatial = torch.sigmoid(self.spatial_conv(lrelu(attn, inplace=True)))
        fused = torch.cat([f_hat * channel[:, :, None, None], f_hat * spatial], dim=1)
        f_bar = add_fresh(self.fuse(fused), f_hat)
        return f_bar.contiguous(memory_format=torch.channels_last) if planar else f_bar

    def _decode(self, f_bar: torch.Tensor) -> torch.Tensor:
        """Decoder R_d: (B, c, h, w) -> mask logits ⊕ residual (B, 2 C_img, 4h, 4w)."""
        # LeakyReLU commutes with PixelShuffle (a permutation): apply it in place before.
        y = F.pixel_shuffle(lrelu(self.up1(f_bar), inplace=True), 2)
        y = F.pixel_shuffle(lrelu(self.up2(y), inplace=True), 2)
        # Back to the images' planar layout: Eq. 1 then runs on contiguous channels.
        return self.head(lrelu(self.dec_conv(y), inplace=True)).contiguous()

    # ------------------------------------------------------------------ streaming (inference)
    def _forward_streamed(
        self,
        restored: torch.Tensor,
        degraded: torch.Tensor,
        features: torch.Tensor,
        tile: int,
        dense_encoder: bool,
    ) -> torch.Tensor:
        """The same function as the dense path, computed tile by tile with bounded memory.

        Global quantities are accumulated over all tiles before they are used: the instance-norm
        statistics of the encoder, the attention matrices of the transformer blocks (MDTA) and the
        average pooling of the channel attention. Every local stage reads its input with a margin
        that covers its receptive field, so the result matches the dense path up to rounding.
        """
        with torch.no_grad():
            reader = _PaddedPair(restored, degraded, _DOWNSCALE)
            fh, fw = reader.height // _DOWNSCALE, reader.width // _DOWNSCALE
            size = (fh, fw)
            tq = max(tile // _DOWNSCALE, 4)  # tile side at 1/4 resolution
            g = self._prior_input(features, restored)
            prior_m, prior_c = self.prior_sve(g), self.prior_csa(g)

            if dense_encoder:
                # (the input copy is released as soon as the first convolution has read it)
                f = self._encode_rest(
                    self.enc_conv1(reader.read(0, reader.height, 0, reader.width))
                )
            else:
                f = self._encode_tiled(reader, tq)

            # PTG-SVE in row bands at 1/4 resolution; the long-range branch block by block.
            band = max(8, -(-4 * tq * tq // fw))
            bands = _spans(fh, band)
            long = self._long_range_banded(f, bands)
            f_hat = torch.empty_like(long)
            for a, b in bands:
                lo, hi = max(a - 2, 0), min(b + 2, fh)  # two 3x3 convolutions in each branch
                part = f[:, :, lo:hi]
                range_map = self._range_map(part, prior_m, size, (lo, hi, 0, fw))
                short = self.short_range(part)
                crop = slice(a - lo, b - lo)
                f_hat[:, :, a:b] = torch.lerp(
                    long[:, :, a:b], short[:, :, crop], range_map[:, :, crop]
                )
            del f, long

            channel = self._channel_gate(f_hat, prior_c)
            out = torch.empty_like(restored)
            height, width = restored.shape[-2:]
            for y0, y1 in _spans(fh, tq):
                for x0, x1 in _spans(fw, tq):
                    # f̄ needs f̂ within 3 pixels (kernel predictor, per-pixel and spatial
                    # convolutions), the decoder f̄ within 2 (at 1/4 resolution).
                    r5 = _grow((y0, y1, x0, x1), 5, size)
                    part = f_hat[:, :, r5[0] : r5[1], r5[2] : r5[3]]
                    f_bar = self._csa(part, channel, prior_c, size, r5)
                    r2 = _grow((y0, y1, x0, x1), 2, size)
                    f_bar = f_bar[
                        :, :, r2[0] - r5[0] : r2[1] - r5[0], r2[2] - r5[2] : r2[3] - r5[2]
                    ]
                    y = self._decode(f_bar)
                    s = _DOWNSCALE
                    ya, yb = s * y0, min(s * y1, height)
                    xa, xb = s * x0, min(s * x1, width)
                    if ya >= yb or xa >= xb:
                        continue
                    oy, ox = ya - s * r2[0], xa - s * r2[2]
                    y = y[:, :, oy : oy + yb - ya, ox : ox + xb - xa]
                    mask_logit, residual = y.chunk(2, dim=1)
                    out[:, :, ya:yb, xa:xb] = _combine(
                        restored[:, :, ya:yb, xa:xb],
                        degraded[:, :, ya:yb, xa:xb],
                        mask_logit,
                        residual,
                    )
            return out

    def _encode_tiled(self, reader: _PaddedPair, tq: int) -> torch.Tensor:
        """Encoder R_e tile by tile, with the instance-norm statistics of the whole image."""
        s = _DOWNSCALE
        fh, fw = reader.height // s, reader.width // s
        tiles = [(y0, y1, x0, x1) for y0, y1 in _spans(fh, tq) for x0, x1 in _spans(fw, tq)]
        if len(tiles) == 1:
            return self._encode_rest(self.enc_conv1(reader.read(0, reader.height, 0, reader.width)))

        # Pass 1: statistics of the first convolution's output (full resolution).
        acc = _MomentAccumulator()
        for y0, y1, x0, x1 in tiles:
            ya, yb = max(s * y0 - 1, 0), min(s * y1 + 1, reader.height)
            xa, xb = max(s * x0 - 1, 0), min(s * x1 + 1, reader.width)
            y = self.enc_conv1(reader.read(ya, yb, xa, xb))
            acc.add(y[:, :, s * y0 - ya : s * y1 - ya, s * x0 - xa : s * x1 - xa])
        stats = _EncoderStats(first=acc.result())

        def stem(tile: tuple[int, int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
            # Window of 2 pixels at 1/4 resolution around the tile: its first row and column fall
            # on multiples of 4, so the strided convolutions sample the same pixels as on the
            # whole image, and the corrupted margin (3 full-resolution pixels) stays outside.
            r = _grow(tile, 2, (fh, fw))
            x = reader.read(s * r[0], s * r[1], s * r[2], s * r[3])
            y = lrelu(_instance_norm(self.enc_conv1(x), self.enc_norm1, stats.first), inplace=True)
            return self.enc_conv2(y), r

        # Pass 2: statistics of the second convolution's output (1/2 resolution).
        acc = _MomentAccumulator()
        for tile in tiles:
            y, r = stem(tile)
            y0, y1, x0, x1 = (2 * (t - o) for t, o in zip(tile, (r[0], r[0], r[2], r[2])))
            acc.add(y[:, :, y0:y1, x0:x1])
        stats = _EncoderStats(first=stats.first, second=acc.result())

        # Pass 3: f itself.
        f = None
        for tile in tiles:
            y, r = stem(tile)
            y = self.enc_conv3(_instance_norm(y, self.enc_norm2, stats.second))
            if f is None:
                b, c = y.shape[:2]
                f = torch.empty(
                    (b, c, fh, fw),
                    dtype=y.dtype,
                    device=y.device,
                    memory_format=torch.channels_last,
                )
            y0, y1, x0, x1 = tile
            f[:, :, y0:y1, x0:x1] = y[:, :, y0 - r[0] : y1 - r[0], x0 - r[2] : x1 - r[2]]
        return f

    def _long_range_banded(self, f: torch.Tensor, bands: list[tuple[int, int]]) -> torch.Tensor:
        """Long-range branch R_l in row bands; each block's attention matrix spans all bands."""
        if len(bands) == 1:
            return self.long_range(f)
        fh = f.shape[-2]
        x = f
        for block in self.long_range:
            attn_mod = block.attn
            sums = None
            for a, b in bands:  # pass 1: pixel sums of the attention (q, k need 1 pixel margin)
                lo, hi = max(a - 1, 0), min(b + 1, fh)
                q, k, _ = attn_mod.qkv_maps(block.norm1(x[:, :, lo:hi]))
                part = attn_mod.gram(q[:, :, a - lo : b - lo], k[:, :, a - lo : b - lo])
                part = [t.double() for t in part]
                sums = part if sums is None else [s_ + p for s_, p in zip(sums, part)]
            attn = attn_mod.attention(*(t.to(x.dtype) for t in sums))
            y = torch.empty_like(x)
            for a, b in bands:  # pass 2: the block (v needs 1 pixel margin, the GDFN 1 more)
                lo, hi = max(a - 2, 0), min(b + 2, fh)
                part = x[:, :, lo:hi]
                _, _, v = attn_mod.qkv_maps(block.norm1(part))
                z = add_fresh(attn_mod.apply(attn, v), part)
                z = add_fresh(block.ffn(block.norm2(z)), z)
                y[:, :, a:b] = z[:, :, a - lo : b - lo]
            x = y
        return x

    # ------------------------------------------------------------------ Hub I/O
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "library": "ptg_refine"}
        atomic_write(
            save_directory / WEIGHTS_NAME, lambda p: save_file(state, p, metadata=metadata)
        )
        text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        atomic_write(save_directory / CONFIG_NAME, lambda p: Path(p).write_text(text))

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        cfg = self.config
        values = {
            "num_parameters": f"{self.num_parameters:,}",
            "encoder": cfg.encoder or "features supplied by the caller",
            "in_channels": cfg.in_channels,
            "embed_dim": cfg.embed_dim,
            "width": cfg.width,
            "repo_id": kwargs.pop("repo_id", "path/to/this/folder"),
            "notes": kwargs.pop("notes", ""),
        }
        values.update(kwargs)
        return super().generate_model_card(*args, **values)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        map_location: str | torch.device = "cpu",
        **_: Any,
    ) -> PTGRefiner:
        """Load a refiner from an alias (``"derain"``...), a Hub repo ``"org/name"`` or a folder.

        Loading is strict: missing or unexpected keys, wrong shapes or a corrupt file raise
        :class:`~ptg_refine.errors.CheckpointError`. Hub failures raise the matching
        :class:`~ptg_refine.errors.HubError` subclass with what to do.
        """
        if _:
            raise ConfigError(
                f"Unexpected keyword arguments {sorted(_)} for PTGRefiner.from_pretrained; "
                "config values come from config.json."
            )
        from .hub import resolve_files

        config_file, weights_file = resolve_files(
            str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
        )
        model = cls.from_config_file(config_file)
        model.load_weights(weights_file, map_location=map_location)
        model.eval()
        return model

    @classmethod
    def from_config_file(cls, path: str | os.PathLike) -> PTGRefiner:
        """Build an untrained refiner from a ``config.json``."""
        return cls(**RefinerConfig.from_dict(read_config_json(path, "refiner")).to_dict())

    def load_weights(
        self, path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
    ) -> None:
        """Load ``model.safetensors`` strictly (keys, shapes and dtypes must match)."""
        self.load_state_dict_strict(
            read_safetensors(path, map_location=map_location), source=str(path)
        )

    def load_state_dict_strict(
        self, state: dict[str, torch.Tensor], *, source: str = "state dict"
    ) -> None:
        """Like ``load_state_dict(strict=True)`` with one readable error for every mismatch."""
        load_state_dict_strict(
            self,
            state,
            source=source,
            what="refiner",
            hint=f"The config says {self.config.to_dict()}; make sure config.json and "
            "model.safetensors come from the same save_pretrained() call.",
        )


# ---------------------------------------------------------------------- forward helpers
_STREAM_MIN_PIXELS = 1536 * 1536  # untiled inference above this many pixels (whole batch) streams
_STREAM_TILE = 1024  # the tile used then
_DENSE_ENCODER_MAX_PIXELS = 2048 * 2048  # up to this size the encoder still runs on the whole image


def _check_tile(tile: object) -> int:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16:
        raise ConfigError(f"tile must be an integer of at least 16 pixels (or None), got {tile!r}.")
    return tile


def _combine(
    restored: torch.Tensor, degraded: torch.Tensor, mask_logit: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """Eq. 1: ``restored + (restored - degraded) * tanh(mask_logit) + residual``."""
    out = torch.addcmul(restored, restored - degraded, torch.tanh(mask_logit))
    return add_fresh(out, residual)


def _model_input(restored: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """restored ⊕ degraded, padded to a multiple of 4 (reflect, or replicate for tiny inputs)."""
    if is_tracing():
        # Branch-free for symbolic sizes (export needs H, W >= 4: then reflect always applies).
        x = torch.cat([restored, degraded], dim=1)
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % _DOWNSCALE, 0, (-h) % _DOWNSCALE), mode="reflect")
    pair = _PaddedPair(restored, degraded, _DOWNSCALE)
    return pair.read(0, pair.height, 0, pair.width)


def _conv_with_prior(
    conv: nn.Conv2d,
    f: torch.Tensor,
    prior: torch.Tensor,
    pos: torch.Tensor,
    *,
    channels_last: bool = True,
) -> torch.Tensor:
    """``conv(f ⊕ broadcast(prior) ⊕ pos)`` without materializing the broadcast prior.

    The prior part of the input is constant over the map, so its contribution is, for every sample,
    a 3x3 convolution of a map of ones with the taps ``sum_i W[:, i] * prior[i]`` (zero padding
    removes the taps that fall outside the map, exactly as in the convolution of the constant map).
    For one sample those taps join the convolution as one more input channel; for several, the
    contribution is added. ``pos`` (1, c_pos, h, w) is shared by all samples.
    """
    b, c, h, w = f.shape
    n = prior.shape[1]
    weight = conv.weight
    taps = torch.einsum("oiyx,bi->boyx", weight[:, c : c + n], prior.to(weight.dtype))
    main = [weight[:, :c], weight[:, c + n :]]
    ones = f.new_ones((1, 1, h, w))
    pos = pos.to(f.dtype)
    cat = _cat_channels_last if channels_last else torch.cat
    if b == 1 and not is_tracing():
        x = cat([f, pos, ones], dim=1)
        return F.conv2d(x, torch.cat([*main, taps.transpose(0, 1)], dim=1), conv.bias, padding=1)
    # Several samples: the position term is the same for all of them, so convolve it once.
    out = F.conv2d(f, main[0], conv.bias, padding=1)
    out = add_fresh(out, F.conv2d(pos[:1], main[1], None, padding=1))
    # The prior's contribution at (y, x) sums the taps whose input pixel lies inside the map:
    # valid_rows[y, dy] * valid_cols[x, dx] * taps[b, :, dy, dx], built in the layout of ``out``.
    k = taps.shape[-1]
    offsets = torch.arange(k, device=f.device) - k // 2
    rows = torch.arange(h, device=f.device)[:, None] + offsets
    cols = torch.arange(w, device=f.device)[:, None] + offsets
    valid_rows = ((rows >= 0) & (rows < h)).to(taps.dtype)
    valid_cols = ((cols >= 0) & (cols < w)).to(taps.dtype)
    if not channels_last:
        return add_fresh(out, torch.einsum("yi,xj,boij->boyx", valid_rows, valid_cols, taps))
    const = torch.einsum("yi,xj,boij->byxo", valid_rows, valid_cols, taps)
    return add_fresh(out, const.permute(0, 3, 1, 2))


def _cat_channels_last(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` of (B, C, H, W) maps straight into a channels_last result (one copy each)."""
    if is_tracing():
        return torch.cat(tensors, dim=dim)
    shape = list(tensors[0].shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    t0 = tensors[0]
    out = torch.empty(shape, dtype=t0.dtype, device=t0.device, memory_format=torch.channels_last)
    start = 0
    for t in tensors:
        out.narrow(dim, start, t.shape[dim]).copy_(t)
        start += t.shape[dim]
    return out


@dataclass
class _EncoderStats:
    """Instance-norm (mean, var) of the encoder's two norms, each (B, C, 1, 1); None: from the map."""

    first: tuple[torch.Tensor, torch.Tensor] | None = None
    second: tuple[torch.Tensor, torch.Tensor] | None = None


def _instance_norm(
    x: torch.Tensor, norm: nn.InstanceNorm2d, stats: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Affine instance norm of ``x`` (statistics from ``x``, or the given (mean, var)).

    ``x`` must be a fresh map that nothing else reads: without autograd it is normalized in place.
    """
    if stats is not None:
        mean, var = stats
        scale = torch.rsqrt(var + norm.eps) * norm.weight[:, None, None]
        shift = norm.bias[:, None, None] - mean * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
    if is_tracing() or not x.is_contiguous(memory_format=torch.channels_last):
        return F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    if _recording(x, norm.weight, norm.bias) or x.device.type != "cpu":
        return _InstanceNormChannelsLast.apply(x, norm.weight, norm.bias, norm.eps)
    # No graph: normalize the fresh map in place, one sample (= one instance) at a time. The
    # batch-norm kernel reduces the whole input before it writes any output element.
    b, c = x.shape[:2]
    stat_dtype = norm.weight.dtype if norm.weight is not None else x.dtype
    mean, invstd = x.new_empty((c,), dtype=stat_dtype), x.new_empty((c,), dtype=stat_dtype)
    for i in range(b):
        sample = x[i : i + 1]
        torch.ops.aten.native_batch_norm.out(
            sample, norm.weight, norm.bias, None, None, True, 0.0, norm.eps,
            out=sample, save_mean=mean, save_invstd=invstd,
        )  # fmt: skip
    return x


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Affine instance norm of a channels_last map that stays channels_last.

    ``F.instance_norm`` copies its input to the planar layout; here each sample goes through the
    channels-last batch-norm kernel instead (one sample = one instance), and the backward reduces
    over pixels with matrix products on the (B, pixels, C) view.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        b, c = x.shape[:2]
        out = torch.empty_like(x, memory_format=torch.channels_last)
        stat_dtype = weight.dtype if weight is not None else x.dtype
        mean = x.new_empty((b, c), dtype=stat_dtype)
        invstd = x.new_empty((b, c), dtype=stat_dtype)
        for i in range(b):  # one sample at a time, written straight into its slice of ``out``
            torch.ops.aten.native_batch_norm.out(
                x[i : i + 1], weight, bias, None, None, True, 0.0, eps,
                out=out[i : i + 1], save_mean=mean[i], save_invstd=invstd[i],
            )  # fmt: skip
        ctx.save_for_backward(x, weight, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        b, c, h, w = x.shape
        n = h * w
        g = grad.permute(0, 2, 3, 1).reshape(b, n, c)  # a view for channels_last grads
        xs = x.permute(0, 2, 3, 1).reshape(b, n, c)
        ones = g.new_ones((b, 1, n))
        g_sum = (ones @ g).view(b, c)  # sum over pixels
        gx_sum = (ones @ (g * xs)).view(b, c)
        mean_, invstd_ = mean.to(x.dtype), invstd.to(x.dtype)
        gxhat_sum = (gx_sum - mean_ * g_sum) * invstd_  # sum over pixels of grad * x_hat
        grad_weight = gxhat_sum.sum(0) if ctx.needs_input_grad[1] else None
        grad_bias = g_sum.sum(0) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            scale = (weight * invstd_)[:, None, :]  # (B, 1, C)
            # grad_x = scale * (g - mean(g) - x_hat * mean(g * x_hat))
            coef = (gxhat_sum * invstd_ / n)[:, None, :]
            shift = (g_sum / n)[:, None, :] - coef * mean_[:, None, :]
            grad_x = torch.addcmul(shift, xs, coef).neg_().add_(g).mul_(scale)
            grad_x = grad_x.view(b, h, w, c).permute(0, 3, 1, 2)
        return grad_x, grad_weight, grad_bias, None


class _MomentAccumulator:
    """Per-(sample, channel) mean and variance of a map seen in pieces (float64 sums)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | float = 0.0
        self.sum_sq: torch.Tensor | float = 0.0

    def add(self, x: torch.Tensor) -> None:
        self.count += x.shape[-2] * x.shape[-1]
        self.sum = self.sum + x.sum(dim=(2, 3), keepdim=True, dtype=torch.float64)
        self.sum_sq = self.sum_sq + x.square().sum(dim=(2, 3), keepdim=True, dtype=torch.float64)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(self.sum, torch.Tensor) and isinstance(self.sum_sq, torch.Tensor)
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(0.0)
        return mean.float(), var.float()


class _PaddedPair:
    """Windows of ``restored ⊕ degraded`` padded to a multiple (as ``_pad_to_multiple`` pads)."""

    def __init__(self, restored: torch.Tensor, degraded: torch.Tensor, multiple: int) -> None:
        self.restored, self.degraded = restored, degraded
        h, w = restored.shape[-2:]
        self.height, self.width = h + (-h) % multiple, w + (-w) % multiple
        self.reflect = self.height - h < h and self.width - w < w

    def _index(self, start: int, stop: int, size: int, device: torch.device) -> torch.Tensor:
        idx = torch.arange(start, stop, device=device)
        if self.reflect:
            return torch.where(idx < size, idx, 2 * (size - 1) - idx)
        return idx.clamp_max(size - 1)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Window rows [y0, y1), columns [x0, x1) of the padded pair, (B, 2C, h, w) channels_last."""
        r, d = self.restored, self.degraded
        h, w = r.shape[-2:]
        b, c = r.shape[:2]
        shape = (b, 2 * c, y1 - y0, x1 - x0)
        out = torch.empty(shape, dtype=r.dtype, device=r.device, memory_format=torch.channels_last)
        for i, img in enumerate((r, d)):
            if y1 <= h and x1 <= w:
                part = img[:, :, y0:y1, x0:x1]
            else:
                part = img.index_select(2, self._index(y0, y1, h, img.device))
                part = part.index_select(3, self._index(x0, x1, w, img.device))
            out[:, i * c : (i + 1) * c] = part
        return out


def _tap_major(t: torch.Tensor, k: int) -> torch.Tensor:
    """Reorder output channels (channel, tap) -> (tap, channel) of a kernel predictor's weight/bias."""
    return t.unflatten(0, (-1, k * k)).transpose(0, 1).flatten(0, 1)


def _spans(size: int, step: int) -> list[tuple[int, int]]:
    """[0, size) cut into consecutive spans of at most ``step`` (the last one may be shorter)."""
    return [(a, min(a + step, size)) for a in range(0, size, step)]


def _grow(
    region: tuple[int, int, int, int], margin: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = region
    return (
        max(y0 - margin, 0),
        min(y1 + margin, size[0]),
        max(x0 - margin, 0),
        min(x1 + margin, size[1]),
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
