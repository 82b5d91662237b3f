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
from .errors import CheckpointError, ConfigError
from .layers import (
    PositionEmbedding,
    PriorMapping,
    ResidualBlock,
    TransformerBlock,
    lrelu,
    per_pixel_conv,
)

__all__ = ["CONFIG_NAME", "REFERENCE_PARAMETERS", "WEIGHTS_NAME", "PTGRefiner", "RefinerConfig"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
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
        in_channels: image channels (1 or 3).
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
        if self.in_channels not in (1, 3):
            raise bad("in_channels", self.in_channels, "1 (gray) or 3 (RGB)")
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
model = refine(my_restoration_net, refiner)   # degraded (B, C, H, W) in [0, 1] -> refined
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
        embed_dim: prior length D; None infers it from ``encoder`` (builds no weights for ``stats``).
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
        embed_dim: int | None = 512,
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
        if encoder is not None and isinstance(encoder, str) and (
            embed_dim is None or encoder_config is None
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
            raise ConfigError("embed_dim is required when no encoder spec is given.")
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
        self, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Refine ``restored`` (see the class docstring for shapes)."""
        self._validate(restored, degraded, features)
        mask_logit, residual = self._predict(restored, degraded, features)
        return restored + (restored - degraded) * torch.tanh(mask_logit) + residual

    def _validate(self, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor) -> None:
        ch = self.config.in_channels
        _checks.check_image(restored, "restored", channels=ch)
        _checks.check_image(degraded, "degraded", channels=ch)
        _checks.check_same_shape(restored, degraded, ("restored", "degraded"))
        _checks.check_features(features, restored.shape[0], self.config.embed_dim)
        _checks.check_same_device(restored, self, "restored")

    def _predict(
        self, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits and residual at the input's size (both (B, C, H, W))."""
        h, w = restored.shape[-2:]
        x = _pad_to_multiple(torch.cat([restored, degraded], dim=1), _DOWNSCALE)
        g = features.to(dtype=x.dtype) if not torch.is_autocast_enabled(x.device.type) else features
        out = self._body(x, g)
        mask_logit, residual = out[..., :h, :w].chunk(2, dim=1)
        return mask_logit, residual

    def _body(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        k = self.config.kernel_size
        f = self.enc_conv1(x)
        f = lrelu(self.enc_norm1(f))
        f = self.enc_norm2(self.enc_conv2(f))
        f = self.enc_conv3(f)
        b, _, fh, fw = f.shape

        # PTG-SVE (Eqs. 2-3)
        prior_m = self.prior_sve(g)[:, :, None, None].expand(-1, -1, fh, fw)
        pos_m = self.pos_sve(b, fh, fw, like=f)
        range_map = torch.sigmoid(
            self.range_conv2(lrelu(self.range_conv1(torch.cat([f, prior_m, pos_m], dim=1))))
        )
        f_hat = torch.lerp(self.long_range(f), self.short_range(f), range_map)

        # PTG-CSA, channel attention (Eq. 4)
        prior_c = self.prior_csa(g)
        pooled = torch.cat([f_hat.mean(dim=(2, 3)), prior_c], dim=1)
        channel = torch.sigmoid(self.channel_fc2(lrelu(self.channel_fc1(pooled))))
        f_c = f_hat * channel[:, :, None, None]

        # PTG-CSA, spatial attention from per-pixel kernels (Eqs. 5-6)
        pos_c = self.pos_csa(b, fh, fw, like=f)
        kp_in = torch.cat([f_hat, prior_c[:, :, None, None].expand(-1, -1, fh, fw), pos_c], dim=1)
        kernels = self.kernel_conv2(lrelu(self.kernel_conv1(kp_in)))
        attn = per_pixel_conv(f_hat, kernels, k)
        spatial = torch.sigmoid(self.spatial_conv(lrelu(attn)))
        f_s = f_hat * spatial

        # Fusion (Eq. 7) and decoder
        f_bar = self.fuse(torch.cat([f_c, f_s], dim=1)) + f_hat
        y = lrelu(F.pixel_shuffle(self.up1(f_bar), 2))
        y = lrelu(F.pixel_shuffle(self.up2(y), 2))
        return self.head(lrelu(self.dec_conv(y)))

    # ------------------------------------------------------------------ Hub I/O
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "library": "ptg_refine"}
        atomic_write(save_directory / WEIGHTS_NAME, lambda p: save_file(state, p, metadata=metadata))
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
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"Cannot read refiner config {path}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"Refiner config {path} must hold a JSON object, got {type(data).__name__}.")
        cfg = RefinerConfig.from_dict(data)
        return cls(**cfg.to_dict())

    def load_weights(self, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> None:
        """Load ``model.safetensors`` strictly (keys, shapes and dtypes must match)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"Cannot read weights file {path}: {err}. The file is corrupt or not safetensors; "
                "re-download it (force_download=True) or re-save it with save_pretrained()."
            ) from err
        self.load_state_dict_strict(state, source=str(path))

    def load_state_dict_strict(self, state: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
        """Like ``load_state_dict(strict=True)`` with one readable error for every mismatch."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state))
            if state[k].shape != own[k].shape
        ]
        problems = []
        if missing:
            problems.append(f"missing keys {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_short(unexpected)}")
        if wrong:
            problems.append(f"wrong shapes {_short(wrong)}")
        non_float = [k for k in state if k in own and not state[k].is_floating_point()]
        if non_float:
            problems.append(f"non-float tensors {_short(non_float)}")
        if problems:
            raise CheckpointError(
                f"Weights in {source} do not match this refiner ({'; '.join(problems)}). "
                f"The config says {self.config.to_dict()}; make sure config.json and "
                "model.safetensors come from the same save_pretrained() call."
            )
        bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"Weights in {source} contain NaN or Inf values in {_short(bad)}.")
        self.load_state_dict(state, strict=True)


def _short(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... and {len(items) - limit} more' if len(items) > limit else ''}]"


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


