"""Image-quality metrics following the evaluation protocol of the image-restoration field.

PSNR and SSIM are computed per image, in float64, on the 0-255 scale, as in ``PAPER.md``
("Evaluation protocol used by the field"):

* deraining sets are scored on the Y channel of BT.601 YCbCr (``y_channel=True``), other tasks on RGB;
* SSIM uses an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, L = 255, and only the *valid*
  region (no padding), averaged over channels and pixels;
* a dataset score is the mean of the per-image scores (e.g. ``psnr(pred, target).mean()``).

Inputs are used as given: they are **not** quantized / rounded to ``uint8`` before measuring. Papers
that save results as 8-bit PNGs first may therefore report slightly different numbers; round yourself
(``(x * 255).round() / 255``) to reproduce that convention.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_image, check_same_shape
from .errors import ConfigError, DeviceMismatchError, ShapeError

__all__ = ["psnr", "rgb_to_y", "ssim"]

_PEAK = 255.0
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB batch, on the 0-255 scale.

    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in [0, 1], so the result lies in
    [16, 235] (the convention of MATLAB's ``rgb2ycbcr`` used to score deraining benchmarks). The
    input is not clamped or quantized.

    Args:
        x: RGB images with values in [0, 1], any floating dtype.

    Returns:
        The Y channel, same dtype and device as ``x``.

    Shape:
        x: (B, 3, H, W) -> (B, 1, H, W)

    Raises:
        DTypeError: ``x`` is not a floating-point tensor.
        ShapeError: ``x`` is not 4-D or does not have 3 channels.

    Example:
        >>> import torch
        >>> rgb_to_y(torch.ones(1, 3, 2, 2)).flatten().tolist()
        [235.0, 235.0, 235.0, 235.0]
    """
    check_image(x, "x", channels=3)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _prepare(
    pred: object,
    target: object,
    crop_border: int,
    y_channel: bool,
    data_range: float,
    min_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, move to float64, convert to the 0-255 scale (Y or all channels) and crop."""
    pred = check_image(pred, "pred")
    target = check_image(target, "target")
    check_same_shape(pred, target, ("pred", "target"))
    if pred.device != target.device:
        raise DeviceMismatchError(
            f"pred is on {pred.device} but target is on {target.device}. "
            "Hint: move one of them, e.g. pred = pred.to(target.device)."
        )
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ConfigError(f"crop_border must be a non-negative int, got {crop_border!r}.")
    if not (isinstance(data_range, int | float) and math.isfinite(data_range) and data_range > 0):
        raise ConfigError(f"data_range must be a positive finite number, got {data_range!r}.")

    h, w = pred.shape[-2:]
    h_c, w_c = h - 2 * crop_border, w - 2 * crop_border
    if h_c < min_size or w_c < min_size:
        after = f" (after crop_border={crop_border}: {h_c}×{w_c})" if crop_border else ""
        raise ShapeError(
            f"images of size {h}×{w}{after} are too small: at least {min_size}×{min_size} is "
            "needed. Hint: use larger images"
            + (" or a smaller crop_border." if crop_border else ".")
        )

    # float64 is unavailable on MPS; compute on the CPU there.
    device = pred.device if pred.device.type != "mps" else torch.device("cpu")
    a = pred.to(device=device, dtype=torch.float64)
    b = target.to(device=device, dtype=torch.float64)
    if data_range != 1.0:
        a, b = a / data_range, b / data_range
    if y_channel and a.shape[1] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    else:
        a, b = a * _PEAK, b * _PEAK
    if crop_border:
        a = a[..., crop_border : h - crop_border, crop_border : w - crop_border]
        b = b[..., crop_border : h - crop_border, crop_border : w - crop_border]
    return a, b


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB.

    Both images are mapped to the 0-255 scale (their Y channel if ``y_channel`` and they are RGB,
    else all channels), cropped by ``crop_border`` pixels on each side, and scored as
    ``10 * log10(255**2 / MSE)`` with the MSE taken over all remaining pixels and channels of the
    image. Identical images give ``+inf``. Computed in float64; inputs are not quantized.

    Args:
        pred: restored images, values in ``[0, data_range]``, any floating dtype.
        target: ground-truth images, same shape as ``pred``.
        crop_border: pixels removed from each side before measuring.
        y_channel: score RGB inputs on the BT.601 Y channel (see :func:`rgb_to_y`). Ignored for
            single-channel inputs, which are scored as they are.
        data_range: the value of white in the inputs (1.0 for [0, 1] images, 255.0 for [0, 255]).

    Returns:
        One PSNR per image, float64. Average it for a dataset score.

    Shape:
        pred, target: (B, C, H, W) with C in {1, 3} -> (B,)

    Raises:
        DTypeError: an input is not a floating-point tensor.
        ShapeError: wrong number of dimensions or channels, shapes differ, or nothing is left after
            cropping.
        DeviceMismatchError: ``pred`` and ``target`` are on different devices.
        ConfigError: ``crop_border`` or ``data_range`` is invalid.

    Example:
        >>> import torch
        >>> target = torch.full((1, 3, 8, 8), 0.5)
        >>> psnr(target + 1 / 255, target).round(decimals=4).tolist()  # MSE 1 on the 0-255 scale
        [48.1308]
        >>> psnr(target, target).tolist()
        [inf]
    """
    a, b = _prepare(pred, target, crop_border, y_channel, data_range, min_size=1)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(_PEAK**2 / mse)


def _gaussian_taps() -> list[float]:
    """The normalized 1-D Gaussian (σ = 1.5) of the 11×11 SSIM window (its outer product)."""
    coords = torch.arange(_SSIM_WIN, dtype=torch.float64) - (_SSIM_WIN - 1) / 2
    g = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    return (g / g.sum()).tolist()


def _gaussian_filter_valid(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable 'valid' filtering of (..., H, W) with the outer product of ``taps`` with itself.

    Weighted sums of shifted views (rows, then columns): 2 × 11 multiply-adds per pixel instead
    of a dense 11×11 float64 convolution (121), which is several times slower on the CPU.
    """
    k = len(taps)
    h, w = x.shape[-2:]
    rows = x[..., 0 : h - k + 1, :] * taps[0]
    for i in range(1, k):
        rows.add_(x[..., i : h - k + 1 + i, :], alpha=taps[i])
    out = rows[..., 0 : w - k + 1] * taps[0]
    for j in range(1, k):
        out.add_(rows[..., j : w - k + 1 + j], alpha=taps[j])
    return out


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
) -> torch.Tensor:
    """Structural similarity index of each image (Wang et al. 2004, field protocol).

    Both images are mapped to the 0-255 scale (their Y channel if ``y_channel`` and they are RGB,
    else all channels) and cropped by ``crop_border`` pixels on each side. Local statistics use an
    11×11 Gaussian window (σ = 1.5) over the *valid* region only (no padding), with
    ``C1 = (0.01 * 255)**2`` and ``C2 = (0.03 * 255)**2``. The SSIM map is computed per channel and
    averaged over channels and pixels. Identical images give 1. Computed in float64; inputs (values
    in [0, 1]) are not quantized.

    Args:
        pred: restored images, values in [0, 1], any floating dtype.
        target: ground-truth images, same shape as ``pred``.
        crop_border: pixels removed from each side before measuring.
        y_channel: score RGB inputs on the BT.601 Y channel (see :func:`rgb_to_y`). Ignored for
            single-channel inputs, which are scored as they are.

    Returns:
        One SSIM per image, float64. Average it for a dataset score.

    Shape:
        pred, target: (B, C, H, W) with C in {1, 3}, H and W at least ``11 + 2 * crop_border``
        -> (B,)

    Raises:
        DTypeError: an input is not a floating-point tensor.
        ShapeError: wrong number of dimensions or channels, shapes differ, or the images are
            smaller than 11×11 after cropping.
        DeviceMismatchError: ``pred`` and ``target`` are on different devices.
        ConfigError: ``crop_border`` is invalid.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x).tolist()
        [1.0, 1.0]
    """
    a, b = _prepare(pred, target, crop_border, y_channel, 1.0, min_size=_SSIM_WIN)
    n, c, h, w = a.shape
    a = a.reshape(n * c, 1, h, w)
    b = b.reshape(n * c, 1, h, w)

    # The five local moments E[a], E[b], E[a²], E[b²], E[ab] in one separable filtering.
    stats = _gaussian_filter_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), _gaussian_taps())
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.unbind(1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b

    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    ssim_map = num / den  # (n * c, h - 10, w - 10)
    return ssim_map.reshape(n, -1).mean(1)
