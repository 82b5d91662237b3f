"""Tests of ptg_refine.metrics against independent references (scikit-image, numpy/scipy)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from ptg_refine import metrics
from ptg_refine.errors import ConfigError, DTypeError, PTGError, ShapeError
from ptg_refine.metrics import psnr, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")


# --------------------------------------------------------------------------- independent references


def _to_255_hwc(x: torch.Tensor, y_channel: bool, crop: int) -> np.ndarray:
    """One image (C, H, W) in [0, 1] -> float64 (H, W, C') on the 0-255 scale, cropped.

    The Y conversion uses scikit-image's ``rgb2ycbcr`` (same BT.601 convention, independent code).
    """
    arr = x.detach().double().permute(1, 2, 0).numpy()
    if y_channel and arr.shape[-1] == 3:
        arr = skimage_color.rgb2ycbcr(arr)[..., :1]
    else:
        arr = arr * 255.0
    if crop:
        arr = arr[crop:-crop, crop:-crop]
    return arr


def _ref_psnr(pred: torch.Tensor, target: torch.Tensor, y_channel: bool, crop: int) -> np.ndarray:
    out = []
    for p, t in zip(pred, target):
        a, b = _to_255_hwc(p, y_channel, crop), _to_255_hwc(t, y_channel, crop)
        out.append(skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255))
    return np.array(out)


def _gauss_window_np(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _ref_ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Straightforward Wang et al. SSIM on one 2-D float64 channel, valid region, L = 255."""
    w = _gauss_window_np()

    def filt(z: np.ndarray) -> np.ndarray:
        return convolve2d(z, w, mode="valid")  # window is symmetric: convolution == correlation

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return float(m.mean())


def _ref_ssim(pred: torch.Tensor, target: torch.Tensor, y_channel: bool, crop: int) -> np.ndarray:
    out = []
    for p, t in zip(pred, target):
        a, b = _to_255_hwc(p, y_channel, crop), _to_255_hwc(t, y_channel, crop)
        out.append(np.mean([_ref_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[-1])]))
    return np.array(out)


def _skimage_ssim(
    pred: torch.Tensor, target: torch.Tensor, y_channel: bool, crop: int
) -> np.ndarray:
    out = []
    for p, t in zip(pred, target):
        a, b = _to_255_hwc(p, y_channel, crop), _to_255_hwc(t, y_channel, crop)
        out.append(
            skimage_metrics.structural_similarity(
                b,
                a,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
                channel_axis=-1,
            )
        )
    return np.array(out)


def _pair(b: int, c: int, h: int, w: int, *, noise: float, seed: int, dtype=torch.float32):
    """A smooth-ish target and a noisy prediction of it, both clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, c, h // 4 + 1, w // 4 + 1, generator=g)
    target = torch.nn.functional.interpolate(
        base, size=(h, w), mode="bilinear", align_corners=False
    )
    pred = (target + noise * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return pred.to(dtype), target.to(dtype)


CASES = [
    pytest.param(3, False, 0, id="rgb"),
    pytest.param(3, False, 4, id="rgb-crop4"),
    pytest.param(3, True, 0, id="y"),
    pytest.param(3, True, 4, id="y-crop4"),
    pytest.param(1, False, 0, id="gray"),
    pytest.param(1, True, 3, id="gray-y-ignored-crop3"),
]


# --------------------------------------------------------------------------- agreement with references


@pytest.mark.parametrize(("c", "y_channel", "crop"), CASES)
@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_psnr_matches_skimage(c: int, y_channel: bool, crop: int, noise: float) -> None:
    pred, target = _pair(3, c, 29, 37, noise=noise, seed=c + crop + int(100 * noise))
    got = psnr(pred, target, crop_border=crop, y_channel=y_channel)
    ref = _ref_psnr(pred, target, y_channel, crop)
    assert got.shape == (3,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("c", "y_channel", "crop"), CASES)
@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_ssim_matches_numpy_valid_reference(
    c: int, y_channel: bool, crop: int, noise: float
) -> None:
    pred, target = _pair(3, c, 29, 37, noise=noise, seed=7 + c + crop + int(100 * noise))
    got = ssim(pred, target, crop_border=crop, y_channel=y_channel)
    ref = _ref_ssim(pred, target, y_channel, crop)
    assert got.shape == (3,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("c", "y_channel", "crop"), CASES)
def test_ssim_matches_skimage(c: int, y_channel: bool, crop: int) -> None:
    # skimage filters the whole image (mode="reflect") and then averages the SSIM map with a
    # (win_size - 1) // 2 = 5 pixel strip removed on each side. With sigma=1.5 and its default
    # truncate=3.5 the Gaussian radius is int(3.5 * 1.5 + 0.5) = 5, i.e. an 11×11 window, so every
    # kept pixel's window lies fully inside the image: the retained map *is* the valid-region map
    # and the scores agree to floating-point rounding, not just approximately.
    pred, target = _pair(2, c, 33, 30, noise=0.1, seed=11 + c + crop)
    got = ssim(pred, target, crop_border=crop, y_channel=y_channel)
    ref = _skimage_ssim(pred, target, y_channel, crop)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-8)


def test_independent_random_pairs() -> None:
    # Unrelated uniform noise images: low SSIM, ~7.7 dB PSNR; still matches both references.
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 24, 26, generator=g), torch.rand(2, 3, 24, 26, generator=g)
    np.testing.assert_allclose(
        psnr(pred, target).numpy(), _ref_psnr(pred, target, False, 0), atol=1e-4
    )
    np.testing.assert_allclose(
        ssim(pred, target).numpy(), _ref_ssim(pred, target, False, 0), atol=1e-5
    )
    assert (ssim(pred, target) < 0.1).all()


def test_rgb_to_y_matches_skimage_and_range() -> None:
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    y = rgb_to_y(x)
    assert y.shape == (2, 1, 5, 6) and y.dtype == torch.float64
    ref = np.stack([skimage_color.rgb2ycbcr(img.permute(1, 2, 0).numpy())[..., 0] for img in x])
    np.testing.assert_allclose(y[:, 0].numpy(), ref, atol=1e-10)
    corners = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert rgb_to_y(corners).flatten().tolist() == pytest.approx([16.0, 235.0])
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1
    assert rgb_to_y(red).item() == pytest.approx(16 + 65.481, abs=1e-4)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("y_channel", [False, True])
def test_identical_images(c: int, y_channel: bool) -> None:
    x = torch.rand(4, c, 16, 20)
    p = psnr(x, x.clone(), y_channel=y_channel, crop_border=2)
    s = ssim(x, x.clone(), y_channel=y_channel, crop_border=2)
    assert p.shape == s.shape == (4,)
    assert torch.isinf(p).all() and (p > 0).all()
    torch.testing.assert_close(s, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_batch_is_per_image() -> None:
    pred, target = _pair(5, 3, 20, 22, noise=0.1, seed=3)
    target[2] = pred[2]  # one perfect image in the batch must not affect the others
    p, s = psnr(pred, target), ssim(pred, target)
    assert p.shape == s.shape == (5,)
    assert math.isinf(p[2].item()) and s[2].item() == pytest.approx(1.0)
    for i in range(5):
        assert p[i].item() == psnr(pred[i : i + 1], target[i : i + 1]).item()
        assert s[i].item() == pytest.approx(
            ssim(pred[i : i + 1], target[i : i + 1]).item(), abs=1e-14
        )


def test_known_psnr_value_and_no_quantization() -> None:
    t = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    assert psnr(t + 1 / 255, t).item() == pytest.approx(10 * math.log10(255**2), abs=1e-9)
    # an offset of 0.1 gray level would vanish if the inputs were rounded to uint8
    assert psnr(t + 0.1 / 255, t).item() == pytest.approx(10 * math.log10(255**2 / 0.01), abs=1e-6)
    assert ssim(t + torch.rand_like(t) * 0.2 / 255, t).item() < 1.0


def test_data_range() -> None:
    pred, target = _pair(2, 3, 16, 16, noise=0.1, seed=5, dtype=torch.float64)
    torch.testing.assert_close(psnr(pred * 255, target * 255, data_range=255.0), psnr(pred, target))
    torch.testing.assert_close(
        psnr(pred * 255, target * 255, data_range=255, y_channel=True),
        psnr(pred, target, y_channel=True),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_float_dtypes_give_float64(dtype: torch.dtype) -> None:
    pred, target = _pair(2, 3, 16, 16, noise=0.1, seed=9, dtype=dtype)
    assert psnr(pred, target).dtype == torch.float64
    assert ssim(pred, target).dtype == torch.float64
    # the metric is computed on the given (already low-precision) values, in float64
    np.testing.assert_allclose(
        ssim(pred, target).numpy(), _ref_ssim(pred, target, False, 0), atol=1e-5
    )


def test_y_channel_ignored_for_gray() -> None:
    pred, target = _pair(2, 1, 16, 16, noise=0.1, seed=4)
    torch.testing.assert_close(psnr(pred, target, y_channel=True), psnr(pred, target))
    torch.testing.assert_close(ssim(pred, target, y_channel=True), ssim(pred, target))


def test_crop_border_changes_region() -> None:
    pred, target = _pair(1, 3, 24, 24, noise=0.05, seed=8)
    pred[..., :3, :] = 1 - target[..., :3, :]  # damage only the top border
    assert psnr(pred, target, crop_border=3).item() > psnr(pred, target).item() + 3
    assert ssim(pred, target, crop_border=3).item() > ssim(pred, target).item()


def test_inputs_not_modified_and_silent(capsys: pytest.CaptureFixture[str]) -> None:
    pred, target = _pair(1, 3, 16, 16, noise=0.1, seed=2)
    p0, t0 = pred.clone(), target.clone()
    psnr(pred, target, y_channel=True, crop_border=1)
    ssim(pred, target, y_channel=True, crop_border=1)
    assert torch.equal(pred, p0) and torch.equal(target, t0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_public_api() -> None:
    assert sorted(metrics.__all__) == ["psnr", "rgb_to_y", "ssim"]


def test_doctests() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_shape_mismatch(fn) -> None:
    with pytest.raises(ShapeError, match="same shape"):
        fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_wrong_ndim(fn) -> None:
    with pytest.raises(ShapeError, match="4 dimensions"):
        fn(torch.rand(3, 16, 16), torch.rand(3, 16, 16))


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_wrong_channels(fn) -> None:
    with pytest.raises(ShapeError, match="channels"):
        fn(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_integer_dtype(fn) -> None:
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(DTypeError, match="floating-point"):
        fn(x, x)
    with pytest.raises(TypeError):  # DTypeError is also a TypeError
        fn(torch.rand(1, 3, 16, 16), x)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_not_a_tensor(fn) -> None:
    with pytest.raises(DTypeError):
        fn(np.zeros((1, 3, 16, 16), np.float32), torch.rand(1, 3, 16, 16))


def test_ssim_too_small() -> None:
    x = torch.rand(1, 3, 10, 30)
    with pytest.raises(ShapeError, match="too small"):
        ssim(x, x)
    x = torch.rand(1, 3, 20, 20)
    ssim(x, x, crop_border=4)  # 12×12 left: fine
    with pytest.raises(ShapeError, match="too small"):
        ssim(x, x, crop_border=5)  # 10×10 left
    with pytest.raises(ValueError):  # ShapeError is also a ValueError
        ssim(x, x, crop_border=5)


def test_psnr_crop_too_large() -> None:
    x = torch.rand(1, 3, 8, 8)
    psnr(x, x + 0.1, crop_border=3)  # 2×2 left: fine
    with pytest.raises(ShapeError, match="too small"):
        psnr(x, x, crop_border=4)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_crop_border(bad) -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="crop_border"):
        psnr(x, x, crop_border=bad)
    with pytest.raises(PTGError):
        ssim(x, x, crop_border=bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_bad_data_range(bad) -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="data_range"):
        psnr(x, x, data_range=bad)


def test_rgb_to_y_errors() -> None:
    with pytest.raises(ShapeError):
        rgb_to_y(torch.rand(1, 1, 4, 4))
    with pytest.raises(ShapeError):
        rgb_to_y(torch.rand(3, 4, 4))
    with pytest.raises(DTypeError):
        rgb_to_y(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
