"""Reading and writing images as ``(C, H, W)`` float tensors in ``[0, 1]``.

Supported formats: PNG (8 and 16 bit, grayscale / RGB / with alpha), JPEG, TIFF (8, 16 and 32 bit
integer or float, through :mod:`tifffile` when it is installed, Pillow otherwise) and BMP.

* Grayscale files give ``(1, H, W)``, colour files ``(3, H, W)``; an alpha channel is dropped.
* Integer data is scaled by its type's maximum (``255`` for 8 bit, ``65535`` for 16 bit), floating
  point TIFF data is taken as already in ``[0, 1]`` and clamped.
* The format is recognised from the file's content (magic bytes), so a mislabelled file still reads;
  the extension must be one of :data:`IMAGE_EXTENSIONS`.
* EXIF orientation tags are ignored: pixels come in stored order, the same for a degraded image and
  its ground truth.

Pillow reduces 16-bit colour PNGs to 8 bit and cannot write them, so this module carries a small,
vectorised PNG codec for exactly that case (non-interlaced 16-bit RGB / RGBA / gray+alpha).

Example:
    >>> import torch, tempfile, pathlib
    >>> from ptg_refine.io import read_image, write_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.png"
    >>> write_image(path, torch.full((3, 4, 5), 0.5), bit_depth=16)
    >>> read_image(path).shape
    torch.Size([3, 4, 5])
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DataError, DTypeError, MissingDependencyError, ShapeError

__all__ = [
    "IMAGE_EXTENSIONS",
    "image_size",
    "list_images",
    "read_image",
    "to_channels",
    "write_image",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case, with the dot) that :func:`list_images` picks up and
#: :func:`read_image` / :func:`write_image` accept.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BT601 = (0.299, 0.587, 0.114)
_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _tifffile() -> Any:
    """Return the :mod:`tifffile` module, or ``None`` when it is not installed."""
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


def _check_extension(path: Path, action: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(
            f"Cannot {action} {str(path)!r}: unsupported file extension {path.suffix!r}. "
            f"Expected one of {', '.join(IMAGE_EXTENSIONS)}. Hint: convert the file to PNG "
            "(lossless) or TIFF."
        )
    return suffix


def _unreadable(path: Path, reason: object) -> DataError:
    return DataError(
        f"Cannot read image {str(path)!r}: {reason}. The file is corrupt, truncated or not an "
        "image. Hint: open it in an image viewer; re-export it as PNG, or remove it from the "
        "folder."
    )


def _sniff(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(33)
    except FileNotFoundError:
        raise DataError(
            f"Image file {str(path)!r} does not exist. Hint: check the path (relative paths are "
            f"resolved from the working directory {os.getcwd()!r})."
        ) from None
    except IsADirectoryError:
        raise DataError(f"{str(path)!r} is a directory, not an image file.") from None
    except OSError as e:
        raise _unreadable(path, e) from e


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer data divided by its type's maximum; floats clamped to [0, 1]; returns float32."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = arr.astype(np.float64) / float(info.max)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)


def _hwc_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, S) array, already float in [0, 1], to (1|3, H, W) tensor (alpha dropped)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    s = arr.shape[2]
    if s == 2:  # gray + alpha
        arr = arr[:, :, :1]
    elif s >= 3:  # RGB, RGBA, or extra samples
        arr = arr[:, :, :3]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def to_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert an image between grayscale and RGB.

    RGB to gray uses the BT.601 luma weights ``0.299 R + 0.587 G + 0.114 B``; gray to RGB replicates
    the channel. Works on ``(C, H, W)`` and ``(B, C, H, W)`` (channel axis ``-3``).

    Args:
        x: Image tensor with 1 or 3 channels on axis ``-3``.
        channels: ``1``, ``3``, or ``None`` (return ``x`` unchanged).

    Returns:
        The image with ``channels`` channels.

    Raises:
        ConfigError: ``channels`` is not ``None``, ``1`` or ``3``.
        ShapeError: ``x`` does not have 1 or 3 channels.
    """
    if channels is None:
        return x
    if channels not in (1, 3):
        raise ConfigError(f"channels must be None, 1 (gray) or 3 (RGB), got {channels!r}.")
    if x.ndim < 3 or x.shape[-3] not in (1, 3):
        raise ShapeError(
            f"Expected an image with 1 or 3 channels on axis -3, got shape {tuple(x.shape)}."
        )
    c = x.shape[-3]
    if c == channels:
        return x
    if channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    w = torch.tensor(_BT601, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3, keepdim=True)


# --------------------------------------------------------------------------------------------------
# 16-bit colour PNG codec (Pillow cannot read or write these without losing the low byte)
# --------------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _encode_png16(arr: np.ndarray, filters: np.ndarray | None = None) -> bytes:
    """Encode a uint16 ``(H, W, S)`` array (S = 1, 2, 3, 4) as a 16-bit PNG.

    ``filters`` gives the PNG filter type (0-4) of every row; the default uses "Sub" (1), which
    compresses smooth images well. All filters are computed vectorised from the original bytes.
    """
    h, w, s = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[s]
    bpp = 2 * s
    raw = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w, bpp).astype(np.int32)
    left = np.zeros_like(raw)
    left[:, 1:] = raw[:, :-1]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upleft = np.zeros_like(raw)
    upleft[1:, 1:] = raw[:-1, :-1]
    predictors = np.stack(
        [np.zeros_like(raw), left, up, (left + up) // 2, _paeth(left, up, upleft)]
    )
    if filters is None:
        filters = np.ones(h, dtype=np.int64)
    filters = np.asarray(filters, dtype=np.int64)
    pred = predictors[filters, np.arange(h)]
    filtered = ((raw - pred) & 0xFF).astype(np.uint8).reshape(h, w * bpp)
    rows = np.concatenate([filters.astype(np.uint8)[:, None], filtered], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def _decode_png16(data: bytes, path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit PNG into a uint16 ``(H, W, S)`` array.

    Unfiltering runs along anti-diagonals (a pixel depends on its left, upper and upper-left
    neighbours only), so it takes ``H + W`` vectorised steps instead of ``H * W`` scalar ones.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise _unreadable(path, "not a PNG file")
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while True:
        if pos + 8 > len(data):
            raise _unreadable(path, "PNG data ends before the IEND chunk (truncated file)")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise _unreadable(path, "PNG chunk is cut short (truncated file)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise _unreadable(path, f"PNG chunk {kind!r} fails its CRC check")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise _unreadable(path, "PNG file has no IHDR or IDAT chunk")
    w, h, depth, color_type, _, _, interlace = header
    if depth != 16 or color_type not in (0, 2, 4, 6):
        raise _unreadable(path, f"unexpected PNG bit depth {depth} / colour type {color_type}")
    if interlace:
        raise DataError(
            f"Cannot read {str(path)!r}: Adam7-interlaced 16-bit colour PNGs are not supported. "
            "Hint: re-save it without interlacing, or as a 16-bit TIFF."
        )
    s = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    bpp = 2 * s
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise _unreadable(path, f"PNG image data is corrupt ({e})") from e
    if len(raw) != h * (w * bpp + 1):
        raise _unreadable(path, "PNG image data has the wrong length (truncated or corrupt)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, w * bpp + 1)
    ftype = rows[:, 0].astype(np.int64)
    if np.any(ftype > 4):
        raise _unreadable(path, "PNG row has an invalid filter type")
    filt = rows[:, 1:].reshape(h, w, bpp).astype(np.int32)
    out = np.zeros((h + 1, w + 1, bpp), dtype=np.int32)  # zero row on top, zero column on the left
    for d in range(h + w - 1):
        r = np.arange(max(0, d - w + 1), min(d, h - 1) + 1)
        c = d - r
        a, b, cc = out[r + 1, c], out[r, c + 1], out[r, c]
        ft = ftype[r][:, None]
        pred = np.select(
            [ft == 1, ft == 2, ft == 3, ft == 4],
            [a, b, (a + b) // 2, _paeth(a, b, cc)],
            default=0,
        )
        out[r + 1, c + 1] = (filt[r, c] + pred) & 0xFF
    pix = out[1:, 1:].astype(np.uint16).reshape(h, w, s, 2)
    return (pix[..., 0] << 8) | pix[..., 1]


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16"):
                arr = np.asarray(im).astype(np.uint16)
            elif mode == "I":  # 32-bit integer: Pillow's container for 16-bit data
                arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            elif mode in ("1", "L", "LA", "La"):
                arr = np.asarray(im.convert("L"))
            elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
                arr = np.asarray(im.convert("RGB") if mode != "RGB" else im)
            else:  # P, PA, CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from e
    return _scale_to_unit(arr)


def _read_tiff(path: Path) -> np.ndarray:
    tifffile = _tifffile()
    if tifffile is not None:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                photometric = int(page.photometric)
                if photometric in (1, 2):  # MINISBLACK, RGB; others via Pillow
                    arr, axes = page.asarray(), page.axes
                    if "S" in axes and axes.index("S") < axes.index("Y"):
                        arr = np.moveaxis(arr, axes.index("S"), -1)
                        axes = axes.replace("S", "") + "S"
                    keep = [i for i, ax in enumerate(axes) if ax in "YXS"]
                    drop = tuple(i for i in range(arr.ndim) if i not in keep)
                    if all(arr.shape[i] == 1 for i in drop):
                        return _scale_to_unit(np.squeeze(arr, axis=drop) if drop else arr)
        except Exception as e:  # a codec tifffile lacks (LZW, JPEG, ...): let Pillow try
            logger.debug("tifffile could not read %s (%s); trying Pillow", path, e)
    return _read_pillow(path)


def read_image(path: str | os.PathLike, *, channels: int | None = None) -> torch.Tensor:
    """Read an image file as a float32 tensor ``(C, H, W)`` with values in ``[0, 1]``.

    Args:
        path: PNG, JPEG, TIFF or BMP file.
        channels: ``None`` keeps the file's layout (gray: 1 channel, colour: 3, alpha dropped);
            ``1`` converts to gray with BT.601 luma weights; ``3`` converts to RGB (gray is
            replicated).

    Returns:
        Tensor of shape ``(C, H, W)``, dtype float32, values in ``[0, 1]``. 8-bit data is divided
        by 255, 16-bit data by 65535.

    Raises:
        DataError: the file does not exist, has an unsupported extension, or cannot be decoded.
        ConfigError: ``channels`` is not ``None``, ``1`` or ``3``.

    Example:
        >>> img = read_image("photo.png", channels=3)  # doctest: +SKIP
    """
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be None, 1 (gray) or 3 (RGB), got {channels!r}.")
    path = Path(path)
    _check_extension(path, "read")
    head = _sniff(path)
    if head.startswith(_TIFF_MAGIC):
        arr = _read_tiff(path)
    elif head.startswith(_PNG_SIGNATURE) and len(head) >= 26 and head[24] == 16 and head[25] != 0:
        # 16-bit colour / gray+alpha PNG: Pillow would keep only the high byte
        arr = _scale_to_unit(_decode_png16(path.read_bytes(), path))
    else:
        arr = _read_pillow(path)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _unreadable(path, f"decoded to an array of unexpected shape {arr.shape}")
    return to_channels(_hwc_to_tensor(arr), channels)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(height, width)`` of an image from its header, without decoding the pixels.

    Cheap enough to check a whole dataset up front: Pillow's ``verify()`` (which checks PNG chunk
    CRCs) or TIFF header parsing, no decompression.

    Raises:
        DataError: the file does not exist, has an unsupported extension, or is not a readable
            image.
    """
    path = Path(path)
    _check_extension(path, "read")
    head = _sniff(path)
    if head.startswith(_TIFF_MAGIC) and (tifffile := _tifffile()) is not None:
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except Exception as e:
            raise _unreadable(path, e) from e
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from e
    return int(h), int(w)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """List the image files directly inside ``folder``, sorted by file name.

    Only files whose extension (any case) is in :data:`IMAGE_EXTENSIONS` are listed; hidden files
    (name starting with ``.``, e.g. macOS ``._x.png`` resource forks or temporary files of
    :func:`write_image`) are skipped. Sub-folders are not searched.

    Raises:
        DataError: ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise DataError(
            f"Image folder {str(folder)!r} {what}. Hint: pass the directory that holds the image "
            "files (sub-folders are not searched)."
        )
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: p.name)


# --------------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------------


def _to_hwc(tensor: object, bit_depth: int) -> np.ndarray:
    if not isinstance(tensor, torch.Tensor):
        raise DTypeError(
            f"write_image expects a torch.Tensor (C, H, W) with values in [0, 1], got "
            f"{type(tensor).__name__}."
        )
    x = tensor.detach()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ShapeError(
                f"write_image writes one image; got a batch of shape {tuple(x.shape)}. "
                "Hint: write each item, e.g. write_image(path, x[i])."
            )
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3) or x.shape[1] == 0 or x.shape[2] == 0:
        raise ShapeError(
            f"write_image expects shape (C, H, W) or (1, C, H, W) with C = 1 or 3, got "
            f"{tuple(tensor.shape)}. Hint: channels-last arrays need x.permute(2, 0, 1)."
        )
    if not x.is_floating_point():
        raise DTypeError(
            f"write_image expects a floating-point tensor in [0, 1], got dtype {x.dtype}. "
            "Hint: for uint8 data use x.float() / 255."
        )
    maxv = 255.0 if bit_depth == 8 else 65535.0
    x = torch.nan_to_num(x.float().cpu(), nan=0.0).clamp(0.0, 1.0)
    x = torch.round(x * maxv)
    arr = x.permute(1, 2, 0).numpy()
    return np.ascontiguousarray(arr, dtype=np.uint8 if bit_depth == 8 else np.uint16)


def _encode(f: Any, arr: np.ndarray, fmt: str, bit_depth: int, quality: int) -> None:
    from PIL import Image

    gray = arr.shape[2] == 1
    if fmt == "TIFF" and (tifffile := _tifffile()) is not None:
        tifffile.imwrite(
            f, arr[:, :, 0] if gray else arr, photometric="minisblack" if gray else "rgb"
        )
        return
    if bit_depth == 16 and not gray:
        if fmt == "PNG":
            f.write(_encode_png16(arr))
            return
        raise MissingDependencyError(
            "Writing a 16-bit RGB TIFF needs the tifffile package. "
            'Hint: pip install "ptg_refine[train]" (or pip install tifffile).'
        )
    im = Image.fromarray(arr[:, :, 0] if gray else arr)  # L, I;16 or RGB
    if fmt == "JPEG":
        im.save(f, format="JPEG", quality=quality, subsampling=0)
    else:
        im.save(f, format=fmt)


def write_image(
    path: str | os.PathLike,
    tensor: torch.Tensor,
    *,
    bit_depth: int = 8,
    quality: int = 95,
) -> None:
    """Write a ``(C, H, W)`` or ``(1, C, H, W)`` tensor with values in ``[0, 1]`` to an image file.

    The format follows the extension (PNG, JPEG, TIFF, BMP). Values are clamped to ``[0, 1]`` (NaN
    becomes 0), scaled to ``2**bit_depth - 1`` and rounded to the nearest integer. The write is
    atomic: the data goes to a temporary file in the same directory, which then replaces ``path``
    (:func:`os.replace`), so readers never see a half-written image. Missing parent directories
    are created.

    Args:
        path: Destination file; its extension picks the format.
        tensor: Float image with 1 (gray) or 3 (RGB) channels.
        bit_depth: ``8`` or ``16`` (16 only for PNG and TIFF).
        quality: JPEG quality (1-95); chroma is not subsampled (4:4:4).

    Raises:
        DataError: unsupported extension.
        ConfigError: invalid ``bit_depth`` for the format, or invalid ``quality``.
        ShapeError / DTypeError: ``tensor`` is not a float image of a supported shape.
        MissingDependencyError: a 16-bit RGB TIFF without tifffile installed.
    """
    path = Path(path)
    suffix = _check_extension(path, "write")
    fmt = _FORMATS[suffix]
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth!r}.")
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise ConfigError(
            f"{fmt} files are 8-bit only, got bit_depth=16 for {str(path)!r}. "
            "Hint: use a .png or .tif file name for 16-bit output."
        )
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"quality must be in [1, 100], got {quality!r}.")
    arr = _to_hwc(tensor, bit_depth)
    buf = io.BytesIO()
    _encode(buf, arr, fmt, bit_depth, int(quality))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, like open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
