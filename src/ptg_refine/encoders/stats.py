"""The ``stats`` encoder: hand-crafted degradation statistics, no weights, no download.

The vector describes *how* an image is degraded (noise level, blur, darkness, haze, colour cast,
clipping, streaks, JPEG blocking), which is what PTG-RM needs from its prior. It is deterministic,
cheap, works on any device, any ``H, W >= 1``, and each image's vector is independent of the rest
of the batch.

Groups (``STATS_FEATURE_NAMES`` lists every entry in order; ``s0, s1, s2`` are scales obtained by
2x area downsampling, ``Y`` is BT.601 luminance ``0.299 R + 0.587 G + 0.114 B``):

====================  =====  =================================================================
group                 count  entries
====================  =====  =================================================================
luminance moments     10     mean; per scale: log std, skewness, log kurtosis
colour                6      R, G, B means; R, G, B log stds
saturation / chroma   5      HSV saturation mean, std; chroma (max - min) mean, std;
                             Hasler-Suesstrunk colourfulness
luminance histogram   10     quantiles 1, 5, 10, 25, 50, 75, 90, 95, 99 %; normalized entropy
sharpness (blur)      12     per scale: log Sobel gradient energy, log Laplacian energy,
                             gradient sparsity (mean |g| / rms |g|), log mean local (7x7) contrast
noise                 7      log sigma: mean of per-channel MAD estimates (calibrated, see
                             :func:`estimate_noise_sigma`), Y by MAD, Y by Immerkaer's mean
                             absolute value, chroma (opponent channels) by MAD, Y at s1 by MAD,
                             Y at s2 by MAD; log of the 10th percentile of 8x8 block stds
dark / bright channel 6      dark channel (15x15 min of min(R, G, B)) mean, median, 90th pct;
                             bright channel (15x15 max of max(R, G, B)) mean, 10th pct, median
clipping fractions    4      sqrt of the fraction of pixels with Y < 0.02, Y < 0.1,
                             max(R, G, B) > 0.98, min(R, G, B) > 0.98
anisotropy            9      per scale: doubled-angle orientation of the global structure
                             tensor (cos 2t, sin 2t, times coherence), energy-weighted local
                             (7x7) coherence
JPEG blockiness       2      log ratio of horizontal / vertical differences across 8-pixel
                             block borders to those inside blocks
====================  =====  =================================================================

Each raw statistic (already log / sqrt transformed as listed) is then mapped with a fixed affine
map ``z = (v - center) / scale`` and softly bounded with ``3 tanh(z / 3)``, so typical values lie in
about [-2, 2], no entry is constant at a large value, and no single statistic can dominate the
L2-normalized vector. The constants were fixed once from the median and spread of each statistic
over scikit-image's sample photographs under synthetic degradations (noise, blur, darkening, haze,
rain streaks, JPEG, downscaling); they are part of the format: changing them changes every
``stats`` vector, so they must not change for the spec ``"stats"``.

Images larger than 1024 pixels on a side have their local statistics (sharpness, noise,
anisotropy, blockiness) computed on a centered 512 x 512 crop (no resampling; the crop is aligned
to the 8-pixel JPEG grid) to bound the cost; the global ones use every pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_image
from ..errors import EncoderError
from .base import Encoder
from .registry import register_encoder

__all__ = [
    "STATS_DIM",
    "STATS_FEATURE_NAMES",
    "StatsEncoder",
    "estimate_noise_sigma",
    "stats_features",
]

_LUMA = (0.299, 0.587, 0.114)
_QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
_BINS = 256
_LARGE_SIDE = 1024  # above this, local statistics use a centered crop
_CROP = 512
_DARK_PATCH = 15
_BOX = 7
_MAD_TO_SIGMA = 1.0 / (0.6744897501960817 * 6.0)  # Immerkaer kernel has L2 norm 6
_IMMERKAER = math.sqrt(math.pi / 2.0) / 6.0


# (name, center, scale) of every entry, in order. ``center`` / ``scale``: the fixed affine map of
# the module doc (median and half the 16-84 % spread over the calibration set, with floors).
_TABLE: tuple[tuple[str, float, float], ...] = (
    ("lum_mean", 0.458, 0.282),
    ("lum_logstd_s0", -2.135, 0.892),
    ("lum_skew_s0", -0.097, 1.05),
    ("lum_logkurt_s0", 1.056, 0.729),
    ("lum_logstd_s1", -2.186, 0.847),
    ("lum_skew_s1", -0.149, 1.05),
    ("lum_logkurt_s1", 1.047, 0.838),
    ("lum_logstd_s2", -2.252, 0.833),
    ("lum_skew_s2", -0.078, 1.15),
    ("lum_logkurt_s2", 1.041, 0.853),
    ("r_mean", 0.49, 0.293),
    ("g_mean", 0.44, 0.277),
    ("b_mean", 0.437, 0.244),
    ("r_logstd", -2.068, 0.952),
    ("g_logstd", -2.204, 0.963),
    ("b_logstd", -2.13, 0.881),
    ("sat_mean", 0.291, 0.336),
    ("sat_std", 0.161, 0.137),
    ("chroma_mean", 0.08, 0.154),
    ("chroma_std", 0.046, 0.106),
    ("colourfulness", 0.079, 0.159),
    ("lum_q01", 0.094, 0.173),
    ("lum_q05", 0.192, 0.198),
    ("lum_q10", 0.259, 0.208),
    ("lum_q25", 0.372, 0.225),
    ("lum_q50", 0.461, 0.298),
    ("lum_q75", 0.536, 0.338),
    ("lum_q90", 0.618, 0.37),
    ("lum_q95", 0.662, 0.366),
    ("lum_q99", 0.737, 0.358),
    ("lum_entropy", 0.766, 0.191),
    ("log_grad_energy_s0", -7.267, 2.37),
    ("log_lap_energy_s0", -5.857, 3.86),
    ("grad_sparsity_s0", 0.702, 0.183),
    ("log_local_contrast_s0", -3.514, 1.3),
    ("log_grad_energy_s1", -6.815, 2.01),
    ("log_lap_energy_s1", -5.462, 2.82),
    ("grad_sparsity_s1", 0.711, 0.187),
    ("log_local_contrast_s1", -3.253, 1.05),
    ("log_grad_energy_s2", -6.462, 1.82),
    ("log_lap_energy_s2", -4.754, 2.19),
    ("grad_sparsity_s2", 0.737, 0.191),
    ("log_local_contrast_s2", -3.043, 0.992),
    ("log_noise_sigma", -5.83, 2.05),
    ("log_noise_y_mad", -5.837, 1.86),
    ("log_noise_y_immerkaer", -5.406, 2.02),
    ("log_noise_chroma_mad", -6.885, 2.04),
    ("log_noise_y_mad_s1", -5.242, 1.74),
    ("log_noise_y_mad_s2", -5.039, 1.5),
    ("log_noise_flat_blocks", -4.712, 1.92),
    ("dark_mean", 0.15, 0.207),
    ("dark_q50", 0.11, 0.219),
    ("dark_q90", 0.286, 0.336),
    ("bright_mean", 0.655, 0.351),
    ("bright_q10", 0.492, 0.35),
    ("bright_q50", 0.694, 0.398),
    ("sqrt_frac_y_lt_002", 0.016, 0.179),
    ("sqrt_frac_y_lt_010", 0.105, 0.441),
    ("sqrt_frac_max_gt_098", 0.0, 0.118),
    ("sqrt_frac_min_gt_098", 0.0, 0.05),
    ("orient_cos2_s0", 0.0, 0.309),
    ("orient_sin2_s0", 0.0, 0.114),
    ("local_coherence_s0", 0.702, 0.256),
    ("orient_cos2_s1", 0.0, 0.334),
    ("orient_sin2_s1", 0.0, 0.126),
    ("local_coherence_s1", 0.662, 0.236),
    ("orient_cos2_s2", 0.0, 0.455),
    ("orient_sin2_s2", 0.0, 0.122),
    ("local_coherence_s2", 0.632, 0.25),
    ("log_blockiness_h", 0.01, 0.1),
    ("log_blockiness_v", 0.009, 0.1),
)

STATS_FEATURE_NAMES: tuple[str, ...] = tuple(row[0] for row in _TABLE)
STATS_DIM: int = len(_TABLE)
_CENTER: tuple[float, ...] = tuple(row[1] for row in _TABLE)
_SCALE: tuple[float, ...] = tuple(row[2] for row in _TABLE)


# ---------------------------------------------------------------------------------------------
# small vectorized helpers; every reduction is per image (dim >= 1), so images never interact
# ---------------------------------------------------------------------------------------------
def _downsample2(x: torch.Tensor) -> torch.Tensor:
    """2x area downsampling (drops an odd last row / column); sides of 1 stay 1."""
    h, w = x.shape[-2:]
    kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
    if kh == kw == 1:
        return x
    return F.avg_pool2d(x[..., : h - h % kh, : w - w % kw], (kh, kw))


def _conv3(x: torch.Tensor, kernel: Sequence[Sequence[float]], *, pad: bool = True) -> torch.Tensor:
    """Depthwise 3x3 convolution (replicate padding, or 'valid' with ``pad=False``)."""
    c = x.shape[1]
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    if pad or x.shape[-2] < 3 or x.shape[-1] < 3:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k, groups=c)


def _box(x: torch.Tensor, k: int = _BOX) -> torch.Tensor:
    """k x k mean filter over the valid pixels (separable; same size as ``x``)."""
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)


def _flat_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def _log(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.log(x.clamp_min(0.0) + eps)


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def _moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image mean, std, skewness and kurtosis of a (B, 1, H, W) map."""
    v = y.flatten(1)
    mean = v.mean(1)
    d = v - mean[:, None]
    d2 = d * d
    std = d2.mean(1).sqrt()
    s = std.clamp_min(1e-3)
    skew = (d2 * d).mean(1) / s.pow(3)
    kurt = (d2 * d2).mean(1) / s.pow(4)
    return mean, std, skew, kurt


def _hist_quantiles(
    v: torch.Tensor, qs: Sequence[float], *, entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Quantiles of each row of ``v`` (B, N) in [0, 1] from a 256-bin histogram (linear in-bin).

    O(N) per image (no sort), so it works at any resolution.
    """
    b, n = v.shape
    dtype = torch.float32 if v.device.type == "mps" else torch.float64
    idx = (v.clamp(0.0, 1.0) * _BINS).long().clamp_(0, _BINS - 1)
    hist = torch.zeros(b, _BINS, dtype=dtype, device=v.device)
    hist.scatter_add_(1, idx, torch.ones(1, 1, dtype=dtype, device=v.device).expand(b, n))
    p = hist / n
    cdf = p.cumsum(1)
    q = torch.tensor(qs, dtype=dtype, device=v.device)
    k = (cdf[:, None, :] < q[None, :, None] - 1e-12).sum(-1).clamp_(max=_BINS - 1)  # (B, Q)
    prev = torch.where(k > 0, cdf.gather(1, (k - 1).clamp(min=0)), torch.zeros_like(q)[None])
    pk = p.gather(1, k)
    frac = ((q[None] - prev) / pk.clamp_min(1e-12)).clamp(0.0, 1.0)
    values = ((k.to(dtype) + frac) / _BINS).to(v.dtype)
    ent = None
    if entropy:
        ent = (-(p * torch.log(p.clamp_min(1e-30))).sum(1) / math.log(_BINS)).to(v.dtype)
    return values, ent


def _center_crop(x: torch.Tensor) -> torch.Tensor:
    """Centered crop of at most 512 x 512 (8-aligned) when a side exceeds 1024 pixels."""
    h, w = x.shape[-2:]
    if max(h, w) <= _LARGE_SIDE:
        return x
    ch, cw = min(h, _CROP), min(w, _CROP)
    top = ((h - ch) // 2) // 8 * 8
    left = ((w - cw) // 2) // 8 * 8
    return x[..., top : top + ch, left : left + cw]


def _mad_sigma(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel noise sigma: median |Immerkaer high-pass| / (0.6745 * 6). (B, C)."""
    hp = _conv3(x, ((1, -2, 1), (-2, 4, -2), (1, -2, 1)), pad=False)
    return hp.abs().flatten(2).median(dim=2).values * _MAD_TO_SIGMA


def _immerkaer_sigma(y: torch.Tensor) -> torch.Tensor:
    hp = _conv3(y, ((1, -2, 1), (-2, 4, -2), (1, -2, 1)), pad=False)
    return _flat_mean(hp.abs()) * _IMMERKAER


def _max_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, k // 2))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(k // 2, 0))


def _blockiness(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log ratio of mean |difference| across 8-pixel block borders to inside blocks (h, v)."""
    out = []
    for dim in (-1, -2):
        n = y.shape[dim]
        if n < 16:
            out.append(torch.zeros(y.shape[0], dtype=y.dtype, device=y.device))
            continue
        d = y.diff(dim=dim).abs()
        border = (torch.arange(n - 1, device=y.device) % 8) == 7
        if dim == -1:
            a, b = d[..., border], d[..., ~border]
        else:
            a, b = d[..., border, :], d[..., ~border, :]
        out.append(torch.log((_flat_mean(a) + 1e-4) / (_flat_mean(b) + 1e-4)))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
def _raw_features(x: torch.Tensor) -> torch.Tensor:
    """Raw (log / sqrt transformed, not yet rescaled) statistics, (B, 3, H, W) -> (B, STATS_DIM)."""
    feats: list[torch.Tensor] = []
    y = _luma(x)

    # luminance moments, 3 scales (global)
    ys = [y]
    for _ in range(2):
        ys.append(_downsample2(ys[-1]))
    feats.append(_flat_mean(y))
    for yi in ys:
        _, std, skew, kurt = _moments(yi)
        feats += [_log(std, 1e-3), skew, torch.log(kurt.clamp_min(1.0))]

    # colour
    flat = x.flatten(2)
    feats += list(flat.mean(2).unbind(1))
    feats += list(_log(flat.std(2, correction=0), 1e-3).unbind(1))

    # saturation / chroma
    mx, mn = x.max(1).values, x.min(1).values
    chroma = (mx - mn).flatten(1)
    sat = chroma / mx.flatten(1).clamp_min(1e-2)
    rg = (x[:, 0] - x[:, 1]).flatten(1)
    yb = (0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]).flatten(1)
    colourful = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt() + 0.3 * (
        rg.mean(1).pow(2) + yb.mean(1).pow(2)
    ).sqrt()
    feats += [sat.mean(1), sat.std(1, correction=0), chroma.mean(1), chroma.std(1, correction=0)]
    feats.append(colourful)

    # luminance histogram
    q, ent = _hist_quantiles(y.flatten(1), _QUANTILES, entropy=True)
    feats += [*q.unbind(1), ent]

    # sharpness per scale (local: crop for large images)
    xc = _center_crop(x)
    yc = _luma(xc)
    ycs = [yc]
    for _ in range(2):
        ycs.append(_downsample2(ycs[-1]))
    grads = []
    for yi in ycs:
        gx = _conv3(yi, ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))) / 8.0
        gy = _conv3(yi, ((-1, -2, -1), (0, 0, 0), (1, 2, 1))) / 8.0
        lap = _conv3(yi, ((0, 1, 0), (1, -4, 1), (0, 1, 0)))
        g2 = gx.pow(2) + gy.pow(2)
        energy = _flat_mean(g2)
        sparsity = _flat_mean(g2.sqrt()) / (energy + 1e-12).sqrt()
        local_var = (_box(yi.pow(2)) - _box(yi).pow(2)).clamp_min(0.0)
        feats += [
            _log(energy, 1e-7),
            _log(_flat_mean(lap.pow(2)), 1e-7),
            sparsity,
            _log(_flat_mean(local_var.sqrt()), 1e-4),
        ]
        grads.append((gx, gy))

    # noise (local)
    opp = torch.cat(
        [
            (xc[:, 0:1] - xc[:, 1:2]) / math.sqrt(2.0),
            (xc[:, 0:1] + xc[:, 1:2] - 2.0 * xc[:, 2:3]) / math.sqrt(6.0),
        ],
        dim=1,
    )
    sig = _mad_sigma(torch.cat([xc, yc, opp], dim=1))  # (B, 6): R, G, B, Y, opp1, opp2
    sig_y1 = _mad_sigma(ycs[1])[:, 0]
    sig_y2 = _mad_sigma(ycs[2])[:, 0]
    feats += [
        _log(sig[:, :3].mean(1), 1e-3),
        _log(sig[:, 3], 1e-3),
        _log(_immerkaer_sigma(yc), 1e-3),
        _log(sig[:, 4:].mean(1), 1e-3),
        _log(sig_y1, 1e-3),
        _log(sig_y2, 1e-3),
    ]
    h8, w8 = yc.shape[-2] // 8 * 8, yc.shape[-1] // 8 * 8
    if h8 and w8:
        blk = yc[..., :h8, :w8]
        bvar = (F.avg_pool2d(blk.pow(2), 8) - F.avg_pool2d(blk, 8).pow(2)).clamp_min(0.0)
        bstd = bvar.sqrt().flatten(1)
        kth = max(1, math.ceil(0.1 * bstd.shape[1]))
        flat_noise = bstd.kthvalue(kth, dim=1).values
    else:
        flat_noise = _moments(yc)[1]
    feats.append(_log(flat_noise, 1e-3))

    # dark / bright channel (global)
    both = _max_filter(torch.cat([-x.min(1, keepdim=True).values, mx[:, None]], dim=1), _DARK_PATCH)
    dark, bright = (-both[:, 0]).flatten(1), both[:, 1].flatten(1)
    dq, _ = _hist_quantiles(dark, (0.5, 0.9))
    bq, _ = _hist_quantiles(bright, (0.1, 0.5))
    feats += [dark.mean(1), dq[:, 0], dq[:, 1], bright.mean(1), bq[:, 0], bq[:, 1]]

    # clipping fractions (global)
    yf = y.flatten(1)
    feats += [
        (yf < 0.02).float().mean(1).sqrt(),
        (yf < 0.10).float().mean(1).sqrt(),
        (mx.flatten(1) > 0.98).float().mean(1).sqrt(),
        (mn.flatten(1) > 0.98).float().mean(1).sqrt(),
    ]

    # anisotropy per scale (local)
    for gx, gy in grads:
        jxx, jyy, jxy = _flat_mean(gx * gx), _flat_mean(gy * gy), _flat_mean(gx * gy)
        tr = jxx + jyy + 1e-10
        lxx, lyy, lxy = _box(gx * gx), _box(gy * gy), _box(gx * gy)
        coh = ((lxx - lyy).pow(2) + 4.0 * lxy.pow(2)).sqrt()
        local = coh.flatten(1).sum(1) / ((lxx + lyy).flatten(1).sum(1) + 1e-10)
        feats += [(jxx - jyy) / tr, 2.0 * jxy / tr, local]

    # JPEG blockiness (local)
    feats += list(_blockiness(yc))

    return torch.stack(feats, dim=1)


def _rescale(raw: torch.Tensor) -> torch.Tensor:
    """Fixed affine map to a common range, then a soft bound at +-3 (see module doc)."""
    center = torch.tensor(_CENTER, dtype=raw.dtype, device=raw.device)
    scale = torch.tensor(_SCALE, dtype=raw.dtype, device=raw.device)
    return 3.0 * torch.tanh((raw - center) / scale / 3.0)


def stats_features(images: torch.Tensor) -> torch.Tensor:
    """Rescaled degradation statistics (before L2 normalization).

    Args:
        images: (B, C, H, W) float, C in {1, 3}, values in [0, 1] (clamped).

    Returns:
        (B, STATS_DIM) float32, entries roughly in [-2, 2] and bounded by +-3; entry ``i`` is the
        statistic ``STATS_FEATURE_NAMES[i]``.
    """
    check_image(images, "images")
    x = images.float().clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return _rescale(_raw_features(x))


def estimate_noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Robust per-image estimate of additive white Gaussian noise std (in [0, 1] units).

    Median absolute value of Immerkaer's Laplacian-difference high-pass, per channel, divided by
    ``0.6745 * 6``, averaged over channels. Accurate on smooth content; texture biases it upward.
    Uses the same centered crop as the ``stats`` encoder for images larger than 1024 pixels.

    Args:
        images: (B, C, H, W) float, C in {1, 3}, values in [0, 1].

    Returns:
        (B,) float32 sigma estimates.
    """
    check_image(images, "images")
    x = _center_crop(images.float().clamp(0.0, 1.0))
    return _mad_sigma(x).mean(1)


class StatsEncoder(Encoder):
    """Built-in prior from hand-crafted degradation statistics (spec ``"stats"``).

    No weights and no download: a drop-in prior for tests, offline use and tiny deployments. See
    the module documentation for the statistics. Native resolution (``input_size=None``) and
    identity normalization (mean 0, std 1) by default.

    Args:
        input_size: Optional square side to resize to first (default ``None``: native resolution).
        mean: Normalization mean (default 0: images stay in [0, 1]).
        std: Normalization std (default 1).

    Shape:
        images: (B, C, H, W), C in {1, 3}, values in [0, 1], any H, W >= 1 -> (B, STATS_DIM).

    Example:
        >>> import torch
        >>> enc = StatsEncoder()
        >>> enc(torch.rand(3, 1, 17, 9)).shape == (3, STATS_DIM)
        True
    """

    def __init__(
        self,
        *,
        input_size: int | None = None,
        mean: Sequence[float] | float = (0.0, 0.0, 0.0),
        std: Sequence[float] | float = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__(dim=STATS_DIM, input_size=input_size, mean=mean, std=std, spec="stats")
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return _rescale(_raw_features(x.float()))


def _stats_dim(arg: str | None) -> int:
    if arg is not None:
        raise EncoderError(
            f"The 'stats' encoder takes no argument, got 'stats:{arg}'. Use 'stats'."
        )
    return STATS_DIM


@register_encoder("stats", dim=_stats_dim)
def _make_stats(arg: str | None, **overrides: object) -> StatsEncoder:
    _stats_dim(arg)
    return StatsEncoder(**overrides)  # type: ignore[arg-type]
