"""Tests of the training data: synthetic degradations, PairedFolder, SyntheticPairs, crop/augment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ptg_refine.errors import ConfigError, DataError, ShapeError
from ptg_refine.io import read_image, write_image
from ptg_refine.train.data import PairedFolder, SyntheticPairs, augment_pair, random_crop
from ptg_refine.train.degradations import (
    DEGRADATIONS,
    add_gaussian_noise,
    add_rain,
    darken,
    degrade,
    motion_blur,
    random_motion_kernel,
)

skdata = pytest.importorskip("skimage.data")
TASKS = sorted(DEGRADATIONS)


@pytest.fixture(scope="module")
def rgb() -> torch.Tensor:
    """The astronaut, 128 x 128, (3, H, W) in [0, 1]."""
    return torch.from_numpy(skdata.astronaut()[::4, ::4].copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def gray() -> torch.Tensor:
    """The cameraman, 128 x 128, (1, H, W) in [0, 1]."""
    return torch.from_numpy(skdata.camera()[::4, ::4].copy())[None].float() / 255


def _grad_energy(x: torch.Tensor) -> float:
    return float((x.diff(dim=-1) ** 2).mean() + (x.diff(dim=-2) ** 2).mean())


# ---------------------------------------------------------------------------------------------
# degradations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_degradations_deterministic_and_seed_dependent(task, rgb):
    a = degrade(task, rgb, generator=3)
    b = degrade(task, rgb, generator=torch.Generator().manual_seed(3))
    c = degrade(task, rgb, generator=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, rgb)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("channels", [1, 3])
def test_degradations_preserve_shape_dtype_and_range(task, channels, rgb, gray):
    x = rgb if channels == 3 else gray
    x = x[:, :48, :40]
    y = degrade(task, x, generator=0)
    assert y.shape == x.shape and y.dtype == x.dtype
    batch = torch.stack([x, x.flip(-1)]).double()
    yb = degrade(task, batch, generator=0)
    assert yb.shape == batch.shape and yb.dtype == torch.float64
    assert not torch.equal(yb[0], yb[1])
    if task != "denoise":
        assert yb.min() >= 0 and yb.max() <= 1


def test_gaussian_noise_std_matches_sigma():
    x = torch.full((1, 3, 128, 128), 0.5)
    for sigma in (15, 25, 50):
        noise = add_gaussian_noise(x, sigma, generator=sigma) - x
        assert abs(noise.std().item() / (sigma / 255) - 1) < 0.03
        assert abs(noise.mean().item()) < 0.003


def test_gaussian_noise_range_per_image_and_clipping():
    x = torch.zeros(4, 1, 64, 64)
    y = add_gaussian_noise(x, (5, 50), generator=1)
    stds = y.flatten(1).std(1) * 255
    assert stds.min() > 5 * 0.9 and stds.max() < 50 * 1.1
    assert stds.max() - stds.min() > 1  # sampled per image
    assert y.min() < 0  # the benchmark protocol does not clip
    yc = add_gaussian_noise(x, 25, generator=1, clip=True)
    assert yc.min() >= 0 and yc.max() <= 1


def test_darken_is_much_darker_and_quantised(rgb):
    y = darken(rgb, generator=0)
    assert y.mean() < 0.3 * rgb.mean()
    torch.testing.assert_close(y * 255, torch.round(y * 255), rtol=0, atol=1e-4)
    # noise grows with the signal (Poisson-Gaussian), and is there at all
    flat = torch.linspace(0, 1, 2)[:, None, None, None].expand(2, 1, 64, 64)
    z = darken(flat, generator=0, gamma=1.0, scale=0.5, quantize=False)
    assert 0 < z[0].std() < z[1].std()


def test_motion_blur_reduces_gradient_energy(rgb):
    y = motion_blur(rgb, generator=0, size=21)
    assert _grad_energy(y) < 0.6 * _grad_energy(rgb)
    assert abs(y.mean().item() - rgb.mean().item()) < 0.01  # kernels sum to 1


def test_motion_blur_given_kernel_is_a_true_convolution(rgb):
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1
    torch.testing.assert_close(motion_blur(rgb, kernel=delta), rgb)
    shift = torch.zeros(3, 3)
    shift[1, 2] = 1  # convolution with a delta right of the centre moves the image right
    y = motion_blur(rgb, kernel=shift)
    torch.testing.assert_close(y[..., 1:], rgb[..., :-1])
    with pytest.raises(ShapeError):
        motion_blur(rgb, kernel=torch.ones(2, 3, 3) / 9)  # 2 kernels for 1 image


def test_random_motion_kernel_is_normalised_and_centred():
    for seed in range(5):
        k = random_motion_kernel(25, generator=seed)
        assert k.shape == (25, 25) and k.min() >= 0
        assert abs(k.sum().item() - 1) < 1e-5
        t = torch.arange(25.0)
        cy, cx = (k.sum(1) * t).sum().item(), (k.sum(0) * t).sum().item()
        assert abs(cy - 12) < 1.0 and abs(cx - 12) < 1.0
    assert not torch.equal(
        random_motion_kernel(25, generator=0), random_motion_kernel(25, generator=1)
    )


def _shift_diff(d: torch.Tensor, dx: int, dy: int) -> float:
    """Mean |d(p) - d(p + (dx, dy))| over the overlap."""
    h, w = d.shape
    y0, y1, x0, x1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
    return (d[y0:y1, x0:x1] - d[y0 + dy : y1 + dy, x0 + dx : x1 + dx]).abs().mean().item()


@pytest.mark.parametrize("angle", [0.0, 30.0, -20.0])
def test_rain_adds_bright_oriented_streaks(rgb, angle):
    y = add_rain(rgb, generator=0, angle=angle, density=0.004)
    assert y.mean() > rgb.mean() + 0.01
    assert (y >= rgb - 1e-6).all()  # streaks only brighten
    d = (y - rgb).mean(0)
    assert (d > 0.05).float().mean() > 0.02  # visible structure
    # the rain layer changes little along the streak direction (sin a, cos a), a lot across it
    a = math.radians(angle)
    dx, dy = round(8 * math.sin(a)), round(8 * math.cos(a))
    along = _shift_diff(d, dx, dy)
    assert along < 0.8 * _shift_diff(d, dy, -dx)  # perpendicular
    if angle:
        assert along < 0.8 * _shift_diff(d, -dx, dy)  # mirrored angle


def test_degrade_errors():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ConfigError, match="deblur, denoise, derain, lowlight"):
        degrade("sharpen", x)
    with pytest.raises(ConfigError, match="sigma"):
        degrade("denoise", x, sigmaa=3)
    with pytest.raises(ConfigError):
        add_gaussian_noise(x, (50, 5))
    with pytest.raises(ShapeError):
        add_rain(torch.rand(8, 8))
    assert degrade("Deraining", x, generator=0).shape == x.shape  # aliases


# ---------------------------------------------------------------------------------------------
# crop / augment
# ---------------------------------------------------------------------------------------------


def test_random_crop_same_window_and_padding():
    lq = torch.rand(3, 20, 30)
    gt = 1 - lq
    g = torch.Generator().manual_seed(0)
    a, b = random_crop(lq, gt, (8, 12), g)
    assert a.shape == (3, 8, 12)
    torch.testing.assert_close(b, 1 - a)
    a, b = random_crop(lq[:, :5, :3], gt[:, :5, :3], 16, g)  # much smaller than the crop
    assert a.shape == (3, 16, 16)
    torch.testing.assert_close(b, 1 - a)
    with pytest.raises(ShapeError):
        random_crop(lq, gt[:, :10], 8)
    with pytest.raises(ConfigError):
        random_crop(lq, gt, 0)


def test_augment_pair_reaches_all_symmetries():
    lq = torch.arange(12.0).view(1, 3, 4)
    seen = set()
    for seed in range(64):
        a, b = augment_pair(lq, lq * 2, torch.Generator().manual_seed(seed))
        assert torch.equal(b, a * 2)
        seen.add((tuple(a.shape), tuple(a.flatten().tolist())))
    assert len(seen) == 8
    assert {s[0] for s in seen} == {(1, 3, 4), (1, 4, 3)}


# ---------------------------------------------------------------------------------------------
# PairedFolder
# ---------------------------------------------------------------------------------------------


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_paired_folder_matches_by_stem(tmp_path):
    for i, (a, b) in enumerate([("x.png", "x.bmp"), ("y.bmp", "y.tif"), ("z.png", "z.png")]):
        arr = _u8((10, 12, 3), i)
        _save(tmp_path / "lq" / a, arr)
        _save(tmp_path / "gt" / b, 255 - arr)
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt")
    assert len(ds) == 3 and ds.names == ["x", "y", "z"]
    item = ds[1]
    assert item["name"] == "y" and item["lq"].dtype == torch.float32
    torch.testing.assert_close(item["gt"], 1 - item["lq"])
    assert ds[-1]["name"] == "z"
    with pytest.raises(IndexError):
        ds[3]


def test_paired_folder_reports_all_problems_at_once(tmp_path):
    arr = _u8((8, 8, 3))
    for name in ("a", "b", "c", "only_lq"):
        _save(tmp_path / "lq" / f"{name}.png", arr)
    for name in ("a", "b", "c", "only_gt"):
        _save(tmp_path / "gt" / f"{name}.png", arr)
    _save(tmp_path / "gt" / "c.bmp", arr)  # same stem twice
    (tmp_path / "lq" / "b.png").write_bytes(b"corrupt")
    _save(tmp_path / "gt" / "a.png", _u8((9, 8, 3)))  # size mismatch
    with pytest.raises(DataError) as info:
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    msg = str(info.value)
    for needle in (
        "only_lq.png",
        "only_gt.png",
        "lq/b.png",
        "c.bmp",
        "c.png",
        "a (lq 8x8, gt 9x8)",
    ):
        assert needle in msg, needle
    assert "5 problem(s)" in msg


def test_paired_folder_truncates_long_lists(tmp_path):
    for i in range(25):
        _save(tmp_path / "lq" / f"img{i:02d}.png", _u8((4, 4)))
    _save(tmp_path / "gt" / "other.png", _u8((4, 4)))
    with pytest.raises(DataError, match="and 5 more"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")


def test_paired_folder_empty_or_missing(tmp_path):
    (tmp_path / "lq").mkdir()
    _save(tmp_path / "gt" / "a.png", _u8((4, 4)))
    with pytest.raises(DataError, match="No images in the lq folder"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    with pytest.raises(DataError, match="does not exist"):
        PairedFolder(tmp_path / "nope", tmp_path / "gt")


def test_paired_folder_size_check_at_read_time(tmp_path):
    _save(tmp_path / "lq" / "a.png", _u8((8, 8, 3)))
    _save(tmp_path / "gt" / "a.png", _u8((8, 8, 3)))
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt")
    _save(tmp_path / "gt" / "a.png", _u8((6, 8, 3)))  # changed after the scan
    with pytest.raises(DataError, match="same size"):
        ds[0]
    _save(tmp_path / "gt" / "a.png", _u8((8, 8)))  # gray vs colour
    with pytest.raises(DataError, match="channels="):
        ds[0]
    assert PairedFolder(tmp_path / "lq", tmp_path / "gt", channels=3)[0]["gt"].shape == (3, 8, 8)
    assert PairedFolder(tmp_path / "lq", tmp_path / "gt", channels=1)[0]["lq"].shape == (1, 8, 8)


def test_paired_folder_crop_augment_keep_alignment(tmp_path):
    for i, size in enumerate([(40, 50), (20, 12)]):  # the second is smaller than the crop
        arr = _u8((*size, 3), i)
        _save(tmp_path / "lq" / f"{i}.png", arr)
        _save(tmp_path / "gt" / f"{i}.png", 255 - arr)
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt", crop=24, augment=True, seed=1)
    for _ in range(6):
        for i in range(2):
            item = ds[i]
            assert item["lq"].shape == item["gt"].shape == (3, 24, 24)
            torch.testing.assert_close(item["gt"], 1 - item["lq"])
    assert not torch.equal(ds[0]["lq"], ds[0]["lq"])  # fresh crops on every access
    fixed = PairedFolder(tmp_path / "lq", tmp_path / "gt", crop=24, augment=True, fixed=True)
    assert torch.equal(fixed[0]["lq"], fixed[0]["lq"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["lq"].shape == (2, 3, 24, 24) and batch["name"] == ["0", "1"]


# ---------------------------------------------------------------------------------------------
# SyntheticPairs
# ---------------------------------------------------------------------------------------------


def test_synthetic_pairs_fixed_is_deterministic(rgb, gray):
    kw = {"crop": 32, "fixed": True, "seed": 5}
    a = SyntheticPairs([rgb, gray], "derain", **kw)
    b = SyntheticPairs([rgb, gray], "derain", **kw)
    for i in range(2):
        assert torch.equal(a[i]["lq"], b[i]["lq"]) and torch.equal(a[i]["gt"], b[i]["gt"])
        assert torch.equal(a[i]["lq"], a[i]["lq"])
    assert a[0]["gt"].shape == (3, 32, 32) and a[1]["gt"].shape == (1, 32, 32)
    other = SyntheticPairs([rgb, gray], "derain", crop=32, fixed=True, seed=6)
    assert not torch.equal(other[0]["lq"], a[0]["lq"])


def test_synthetic_pairs_training_mode_is_reproducible_but_varied(rgb):
    a = SyntheticPairs([rgb], "denoise", crop=16, length=3)
    b = SyntheticPairs([rgb], "denoise", crop=16, length=3)
    seq_a = [a[i % 3]["lq"] for i in range(6)]
    seq_b = [b[i % 3]["lq"] for i in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b))
    assert not torch.equal(seq_a[0], seq_a[3])  # same index, later call: different
    assert [a[i]["name"] for i in range(3)] == ["000000_0", "000000_1", "000000_2"]


def test_synthetic_pairs_crop_comes_from_the_clean_image():
    h, w = 30, 40
    yy, xx = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    clean = torch.stack([yy, xx, torch.zeros(h, w)])
    ds = SyntheticPairs([clean], "deblur", crop=(10, 12), augment=False, kernel=torch.ones(1, 1))
    for _ in range(5):
        item = ds[0]
        gt = item["gt"]
        top, left = round(gt[0, 0, 0].item() * h), round(gt[1, 0, 0].item() * w)
        assert torch.equal(gt, clean[:, top : top + 10, left : left + 12])
        torch.testing.assert_close(item["lq"], gt)  # identity kernel


def test_synthetic_pairs_from_files_with_channels(tmp_path, rgb, gray):
    write_image(tmp_path / "astronaut.png", rgb)
    write_image(tmp_path / "camera.png", gray)
    ds = SyntheticPairs(tmp_path, "lowlight", crop=24, channels=1)
    names = [ds[i]["name"] for i in range(len(ds))]
    assert names == ["astronaut", "camera"]
    item = ds[0]
    assert item["gt"].shape == item["lq"].shape == (1, 24, 24)
    assert item["lq"].mean() < item["gt"].mean()
    full = SyntheticPairs([tmp_path / "camera.png"], "denoise", sigma=25, augment=False)[0]
    assert torch.equal(full["gt"], read_image(tmp_path / "camera.png"))
    assert abs((full["lq"] - full["gt"]).std().item() * 255 - 25) < 1.5


def test_synthetic_pairs_errors(tmp_path, rgb):
    with pytest.raises(ConfigError, match="Valid tasks"):
        SyntheticPairs([rgb], "sharpen")
    with pytest.raises(ConfigError, match="Valid options"):
        SyntheticPairs([rgb], "denoise", sigmaa=3)
    with pytest.raises(ConfigError):
        SyntheticPairs([rgb], "derain", density=2.0)
    with pytest.raises(DataError):
        SyntheticPairs([], "denoise")
    (tmp_path / "bad.png").write_bytes(b"nope")
    (tmp_path / "bad2.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"2 clean image\(s\).*bad\.png.*bad2\.jpg"):
        SyntheticPairs([tmp_path / "bad.png", tmp_path / "bad2.jpg"], "denoise")
    with pytest.raises(ShapeError):
        SyntheticPairs([torch.rand(8, 8)], "denoise")
    with pytest.raises(IndexError):
        SyntheticPairs([rgb], "denoise")[1]
