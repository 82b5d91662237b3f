"""Tests of ptg_refine.io: image reading / writing round trips, errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ptg_refine import io as pio
from ptg_refine.errors import ConfigError, DataError, DTypeError, ShapeError
from ptg_refine.io import IMAGE_EXTENSIONS, image_size, list_images, read_image, write_image

tifffile = pytest.importorskip("tifffile")
skdata = pytest.importorskip("skimage.data")

RNG = np.random.default_rng(0)


def _u8(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _u16(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


def _expected(arr: np.ndarray, maxv: float) -> torch.Tensor:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy((arr.astype(np.float64) / maxv).transpose(2, 0, 1)).float()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[::4, ::4])  # 128 x 128 x 3, uint8


# ---------------------------------------------------------------------------------------------
# reading files written by other libraries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_read_8bit_pillow_files_exact(tmp_path, ext, mode):
    arr = _u8((13, 17) if mode == "L" else (13, 17, 3))
    path = tmp_path / f"x{ext}"
    Image.fromarray(arr, mode=mode).save(path)
    img = read_image(path)
    assert img.dtype == torch.float32
    assert img.shape == ((1 if mode == "L" else 3), 13, 17)
    torch.testing.assert_close(img, _expected(arr, 255), rtol=0, atol=1e-7)


def test_read_rgba_and_la_drop_alpha(tmp_path):
    rgba = _u8((9, 11, 4))
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    torch.testing.assert_close(img, _expected(rgba[:, :, :3], 255), rtol=0, atol=1e-7)
    la = _u8((9, 11, 2))
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (1, 9, 11)


def test_read_16bit_gray_png_from_pillow(tmp_path):
    arr = _u16((21, 15))
    Image.fromarray(arr).save(tmp_path / "g16.png")  # mode I;16
    img = read_image(tmp_path / "g16.png")
    torch.testing.assert_close(img, _expected(arr, 65535), rtol=0, atol=1e-7)
    assert img.max() > 0.99  # scaled by 65535, not 255 (which would be clamped to 1 everywhere)


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 3), (12, 10, 4)])
def test_read_16bit_tiff_from_tifffile(tmp_path, shape):
    arr = _u16(shape)
    kw = {"photometric": "rgb"} if len(shape) == 3 else {}
    tifffile.imwrite(tmp_path / "t.tif", arr, **kw)
    img = read_image(tmp_path / "t.tif")
    ref = arr if len(shape) == 2 else arr[:, :, :3]
    torch.testing.assert_close(img, _expected(ref, 65535), rtol=0, atol=1e-7)


def test_read_planar_and_float_tiff(tmp_path):
    arr = _u16((12, 10, 3))
    tifffile.imwrite(
        tmp_path / "p.tiff", arr.transpose(2, 0, 1), photometric="rgb", planarconfig="separate"
    )
    torch.testing.assert_close(
        read_image(tmp_path / "p.tiff"), _expected(arr, 65535), rtol=0, atol=1e-7
    )
    f = np.linspace(-0.5, 1.5, 60, dtype=np.float32).reshape(6, 10)
    tifffile.imwrite(tmp_path / "f.tif", f)
    img = read_image(tmp_path / "f.tif")
    torch.testing.assert_close(img[0], torch.from_numpy(np.clip(f, 0, 1)))


def test_read_lzw_tiff_falls_back_to_pillow(tmp_path):
    # tifffile needs imagecodecs for LZW; Pillow decodes it
    arr = _u8((14, 9, 3))
    Image.fromarray(arr).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    torch.testing.assert_close(
        read_image(tmp_path / "lzw.tif"), _expected(arr, 255), rtol=0, atol=1e-7
    )


def test_content_not_extension_decides_the_decoder(tmp_path):
    arr = _u8((8, 8, 3))
    Image.fromarray(arr).save(tmp_path / "really_png.jpg", format="PNG")
    torch.testing.assert_close(
        read_image(tmp_path / "really_png.jpg"), _expected(arr, 255), rtol=0, atol=1e-7
    )


# ---------------------------------------------------------------------------------------------
# the 16-bit colour PNG codec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_png16_codec_all_filter_types(s):
    arr = _u16((23, 31, s))
    filters = RNG.integers(0, 5, 23)
    filters[:5] = [0, 1, 2, 3, 4]
    data = pio._encode_png16(arr, filters)
    np.testing.assert_array_equal(pio._decode_png16(data, Path("x.png")), arr)


def test_png16_decoder_matches_pillow_on_adaptive_filters(tmp_path):
    # Pillow's encoder picks filters adaptively per row: a real-world stream for the decoder
    y, x = np.mgrid[0:40, 0:37]
    arr = ((np.sin(x / 5.0) * np.cos(y / 7.0) + 1) * 30000).astype(np.uint16)
    arr[::7] = _u16((6, 37))
    Image.fromarray(arr).save(tmp_path / "g.png")
    dec = pio._decode_png16((tmp_path / "g.png").read_bytes(), tmp_path / "g.png")
    np.testing.assert_array_equal(dec[:, :, 0], np.asarray(Image.open(tmp_path / "g.png")))


def test_png16_corrupt_crc_is_a_data_error(tmp_path):
    data = bytearray(pio._encode_png16(_u16((5, 5, 3))))
    data[-20] ^= 0xFF  # inside IDAT
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(DataError, match="bad.png"):
        read_image(tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------
# round trips through write_image
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".bmp"])
@pytest.mark.parametrize("c", [1, 3])
def test_write_read_8bit_exact(tmp_path, ext, c):
    arr = _u8((10, 12, c))
    x = _expected(arr, 255).contiguous()
    write_image(tmp_path / f"o{ext}", x)
    torch.testing.assert_close(read_image(tmp_path / f"o{ext}"), x, rtol=0, atol=1e-7)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("c", [1, 3])
def test_write_read_16bit_exact(tmp_path, ext, c):
    arr = _u16((10, 12, c))
    x = _expected(arr, 65535).contiguous()  # (C, H, W) memory layout, as networks return
    write_image(tmp_path / f"o{ext}", x, bit_depth=16)
    torch.testing.assert_close(read_image(tmp_path / f"o{ext}"), x, rtol=0, atol=1e-7)
    # other readers agree on the stored values
    if ext == ".tif":
        stored = tifffile.imread(tmp_path / f"o{ext}")
        np.testing.assert_array_equal(stored, arr[:, :, 0] if c == 1 else arr)
    elif c == 1:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), arr[:, :, 0])
    else:  # Pillow reads 16-bit RGB PNGs as 8-bit: the high bytes
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), arr >> 8)


def test_write_read_jpeg_approx(tmp_path, astronaut):
    x = _expected(astronaut, 255)
    write_image(tmp_path / "a.jpg", x)
    y = read_image(tmp_path / "a.jpg")
    assert y.shape == x.shape
    assert (y - x).abs().mean() < 0.02


def test_write_accepts_batch_of_one_and_clamps_and_rounds(tmp_path):
    x = torch.tensor([-0.5, 1.5, 100.4 / 255, 100.6 / 255, float("nan")]).view(1, 1, 1, 5)
    write_image(tmp_path / "r.png", x)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "r.png"))[0], [0, 255, 100, 101, 0]
    )


def test_write_bad_inputs(tmp_path):
    x = torch.rand(3, 4, 4)
    with pytest.raises(ShapeError):
        write_image(tmp_path / "a.png", torch.rand(2, 3, 4, 4))
    with pytest.raises(ShapeError):
        write_image(tmp_path / "a.png", torch.rand(4, 4, 3))
    with pytest.raises(DTypeError):
        write_image(tmp_path / "a.png", (x * 255).to(torch.uint8))
    with pytest.raises(ConfigError, match="8-bit only"):
        write_image(tmp_path / "a.jpg", x, bit_depth=16)
    with pytest.raises(ConfigError):
        write_image(tmp_path / "a.png", x, bit_depth=12)
    with pytest.raises(DataError, match=r"\.gif"):
        write_image(tmp_path / "a.gif", x)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "out.png"
    write_image(target, torch.zeros(3, 5, 5))  # creates the parent folder
    write_image(target, torch.ones(3, 5, 5))  # replaces
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    assert read_image(target).min() == 1.0

    def boom(*args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(pio.os, "fsync", boom)  # fail after the temporary file is written
    with pytest.raises(RuntimeError, match="encoder failed"):
        write_image(target, torch.zeros(3, 5, 5))
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    assert read_image(target).min() == 1.0  # the old file is intact


# ---------------------------------------------------------------------------------------------
# channels
# ---------------------------------------------------------------------------------------------


def test_channels_conversion(tmp_path, astronaut):
    write_image(tmp_path / "rgb.png", _expected(astronaut, 255))
    rgb = read_image(tmp_path / "rgb.png")
    gray = read_image(tmp_path / "rgb.png", channels=1)
    assert gray.shape == (1, 128, 128)
    ref = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    torch.testing.assert_close(gray[0], ref)
    Image.fromarray(skdata.camera()[::8, ::8]).save(tmp_path / "cam.png")
    cam = read_image(tmp_path / "cam.png")
    cam3 = read_image(tmp_path / "cam.png", channels=3)
    assert cam.shape == (1, 64, 64) and cam3.shape == (3, 64, 64)
    assert torch.equal(cam3, cam.expand(3, -1, -1))
    assert torch.equal(read_image(tmp_path / "rgb.png", channels=3), rgb)
    with pytest.raises(ConfigError):
        read_image(tmp_path / "rgb.png", channels=2)


# ---------------------------------------------------------------------------------------------
# errors and listing
# ---------------------------------------------------------------------------------------------


def test_unreadable_files_raise_data_error_naming_the_path(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    good = tmp_path / "good.png"
    Image.fromarray(_u8((64, 64, 3))).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for name in ("junk.png", "trunc.png"):
        with pytest.raises(DataError, match=name) as info:
            read_image(tmp_path / name)
        assert "Hint" in str(info.value)
        assert isinstance(info.value, ValueError)
        with pytest.raises(DataError, match=name):
            image_size(tmp_path / name)
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "x.gif").write_bytes(good.read_bytes())
    with pytest.raises(DataError, match="unsupported file extension"):
        read_image(tmp_path / "x.gif")
    assert image_size(good) == (64, 64)


def test_image_size_reads_headers(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", _u16((7, 9, 3)), photometric="rgb")
    Image.fromarray(_u8((5, 6))).save(tmp_path / "b.bmp")
    assert image_size(tmp_path / "t.tif") == (7, 9)
    assert image_size(tmp_path / "b.bmp") == (5, 6)


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.tiff", ".hidden.png", "notes.txt", "z.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    assert ".png" in IMAGE_EXTENSIONS and ".jpeg" in IMAGE_EXTENSIONS
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
