"""Classical non-blind deblurring base: Wiener deconvolution in the Fourier domain.

Model: ``y = k ∗ x + n`` with a known blur kernel ``k`` (true convolution, kernel centre at index
``(kh // 2, kw // 2)``) and white noise ``n``. With ``K`` the transfer function of ``k`` and a
scalar noise-to-signal power ratio ``nsr``, the Wiener estimate is::

    X̂ = conj(K) · Y / (|K|² + nsr)

The FFT assumes a periodic image, which real (non-circular) blur is not. To avoid ringing from the
wrap-around the input is first extended by ``pad`` pixels on every side (edge replication by
default), then
*edge-tapered*: within the extension it is blended, with a raised-cosine weight that is 1 at the
original image and 0 at the outer border, into its own circularly blurred version, so that the
periodic extension is smooth and consistent with the blur model. The result is cropped back.

Defaults (``nsr = 0.02``, replicate padding by the kernel size, tapering) were chosen on CBSD68
images 11-20 (lexicographic order) blurred with the 8 Levin kernels, reflect boundary, plus
Gaussian noise σ = 0.01 (mean PSNR: nsr 1e-3 → 20.4 dB, 1e-2 → 25.8, 2e-2 → 26.5, 3e-2 → 26.4,
5e-2 → 25.6; replicate 26.64 vs reflect 26.52 dB; no tapering 26.33; plain periodic filter 23.35).
``benchmarks/check_bases.py`` evaluates on images 1-10, which took no part in that choice.

Also provides :func:`blur` (the forward model used to synthesize test inputs) and
:func:`load_levin_kernels` (the 8 motion kernels of Levin et al. 2009 from ``Levin09.mat``,
a MATLAB v7.3 / HDF5 file: reading it needs ``h5py``).

Channel convention: any number of channels; every channel is deconvolved with the same kernel.
Images in [0, 1], shape (B, C, H, W), any H, W; the output is clamped to [0, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .images import EvalDataMissing, require_data

__all__ = ["KERNELS", "WienerDeconv", "blur", "load_levin_kernels", "load_wiener"]

KERNELS = ("blur-kernels-KAIR", "Levin09.mat")
"""Location of the Levin et al. motion kernels below the evaluation-data folder."""


def _as_kernel(kernel: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validate a 2-D blur kernel and normalize it to unit sum (float32)."""
    k = torch.as_tensor(np.asarray(kernel) if not torch.is_tensor(kernel) else kernel)
    if k.ndim != 2 or min(k.shape) < 1:
        raise ValueError(f"kernel must be a 2-D array, got shape {tuple(k.shape)}")
    k = k.to(torch.float32)
    s = k.sum()
    if not torch.isfinite(s) or s <= 0:
        raise ValueError("kernel must have a positive, finite sum")
    return k / s


def _pad_mode_ok(x: torch.Tensor, ph: int, pw: int, mode: str) -> str:
    """Reflection needs the pad to be smaller than the image; fall back to replication."""
    if mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        return "replicate"
    return mode


def blur(x: torch.Tensor, kernel: torch.Tensor | np.ndarray, mode: str = "reflect") -> torch.Tensor:
    """Blur images with a kernel (true convolution, "same" size).

    Args:
        x: images, shape (B, C, H, W).
        kernel: 2-D kernel (normalized to unit sum here), centre at ``(kh // 2, kw // 2)``.
        mode: boundary handling: ``"reflect"``, ``"replicate"`` or ``"circular"``.

    Returns:
        The blurred images, same shape and dtype as ``x``.
    """
    k = _as_kernel(kernel).to(device=x.device, dtype=x.dtype)
    kh, kw = k.shape
    top, left = kh // 2, kw // 2
    bottom, right = kh - 1 - top, kw - 1 - left
    c = x.shape[1]
    mode = _pad_mode_ok(x, max(top, bottom), max(left, right), mode)
    xp = F.pad(x, (left, right, top, bottom), mode=mode)
    weight = torch.flip(k, (0, 1)).expand(c, 1, kh, kw)  # conv2d correlates: flip for convolution
    return F.conv2d(xp, weight, groups=c)


def _otf(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Transfer function (rfft2) of a kernel centred at ``(kh // 2, kw // 2)`` for ``shape``."""
    kh, kw = kernel.shape
    big = kernel.new_zeros(shape)
    big[:kh, :kw] = kernel
    big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.rfft2(big)


def _taper_weight(h: int, w: int, ph: int, pw: int, device: torch.device) -> torch.Tensor:
    """Weight 1 on the central ``(h - 2ph) × (w - 2pw)`` region, raised-cosine to 0 at the border."""

    def ramp(n: int, p: int) -> torch.Tensor:
        r = torch.ones(n, device=device)
        if p > 0:
            t = (torch.arange(p, device=device, dtype=torch.float32) + 0.5) / p
            edge = 0.5 - 0.5 * torch.cos(math.pi * t)  # 0 → 1
            r[:p] = edge
            r[n - p :] = edge.flip(0)
        return r

    return torch.outer(ramp(h, ph), ramp(w, pw))


class WienerDeconv(nn.Module):
    """Wiener deconvolution with a known kernel and a scalar noise-to-signal ratio.

    Args:
        kernel: 2-D blur kernel (normalized to unit sum), centre at ``(kh // 2, kw // 2)``.
        nsr: noise-to-signal power ratio (regularization weight); larger is smoother.
        pad: extension on each side before the FFT; ``None`` uses the kernel size.
        pad_mode: ``"reflect"``, ``"replicate"`` or ``"circular"`` (``"circular"`` with
            ``pad=0`` is the plain periodic Wiener filter, exact for circularly blurred inputs).
        taper: blend the extension into its blurred version (edge tapering).

    Shape:
        (B, C, H, W) in [0, 1] → (B, C, H, W) in [0, 1].
    """

    def __init__(
        self,
        kernel: torch.Tensor | np.ndarray,
        nsr: float = 2e-2,
        *,
        pad: int | None = None,
        pad_mode: str = "replicate",
        taper: bool = True,
    ) -> None:
        super().__init__()
        if not (nsr >= 0 and math.isfinite(nsr)):
            raise ValueError(f"nsr must be a non-negative finite number, got {nsr!r}")
        if pad_mode not in ("reflect", "replicate", "circular"):
            raise ValueError(f"pad_mode must be reflect, replicate or circular, got {pad_mode!r}")
        self.register_buffer("kernel", _as_kernel(kernel))
        self.nsr = float(nsr)
        self.pad = pad
        self.pad_mode = pad_mode
        self.taper = taper

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return (
            f"kernel={tuple(self.kernel.shape)}, nsr={self.nsr:g}, pad={self.pad}, "
            f"pad_mode={self.pad_mode!r}, taper={self.taper}"
        )

    def forward(
        self, x: torch.Tensor, kernel: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Deblur ``x``.

        Args:
            x: blurred images in [0, 1], shape (B, C, H, W).
            kernel: optional kernel overriding the stored one for this call.

        Returns:
            The deblurred images, clamped to [0, 1], same shape.
        """
        k = self.kernel if kernel is None else _as_kernel(kernel).to(x.device)
        k = k.to(torch.float64)
        h, w = x.shape[-2:]
        kh, kw = k.shape
        ph = kh if self.pad is None else self.pad
        pw = kw if self.pad is None else self.pad
        xd = x.to(torch.float64)
        if ph or pw:
            xd = F.pad(xd, (pw, pw, ph, ph), mode=_pad_mode_ok(xd, ph, pw, self.pad_mode))
        hp, wp = xd.shape[-2:]
        otf = _otf(k, (hp, wp))
        if self.taper and (ph or pw):
            blurred = torch.fft.irfft2(torch.fft.rfft2(xd) * otf, s=(hp, wp))
            wgt = _taper_weight(hp, wp, ph, pw, xd.device).to(torch.float64)
            xd = wgt * xd + (1 - wgt) * blurred
        num = torch.fft.rfft2(xd) * otf.conj()
        est = torch.fft.irfft2(num / (otf.abs().pow(2) + self.nsr), s=(hp, wp))
        est = est[..., ph : ph + h, pw : pw + w]
        return est.clamp(0, 1).to(x.dtype)


def load_levin_kernels(data_dir: str | Path | None = None) -> list[np.ndarray]:
    """Read the 8 motion-blur kernels of Levin et al. (2009) from ``Levin09.mat``.

    The file is MATLAB v7.3 (HDF5), which ``scipy.io.loadmat`` cannot read: it holds one cell
    array ``kernels`` (8 × 1) of references to ``float64`` arrays (13×13 to 27×27, unit sum).
    HDF5 stores MATLAB arrays transposed; they are transposed back here.

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).

    Returns:
        8 kernels as ``float64`` arrays in MATLAB orientation, each normalized to unit sum.

    Raises:
        EvalDataMissing: the file is absent, or ``h5py`` (needed to read it) is not installed.
    """
    path = require_data(data_dir, *KERNELS)
    try:
        import h5py
    except ImportError as exc:
        raise EvalDataMissing(
            f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py)."
        ) from exc
    with h5py.File(path, "r") as f:
        refs = np.asarray(f["kernels"]).ravel()
        kernels = [np.asarray(f[r], dtype=np.float64).T for r in refs]
    return [k / k.sum() for k in kernels]


def load_wiener(
    data_dir: str | Path | None = None, kernel_index: int = 0, nsr: float = 2e-2
) -> WienerDeconv:
    """Build a :class:`WienerDeconv` holding Levin kernel ``kernel_index`` (0-7).

    Args:
        data_dir: the evaluation-data folder (``None`` for the default).
        kernel_index: which of the 8 Levin kernels to store (others can be passed per call).
        nsr: noise-to-signal ratio.

    Returns:
        The module (no learnable parameters), in eval mode.

    Raises:
        EvalDataMissing: ``Levin09.mat`` is absent or ``h5py`` is missing.
        IndexError: ``kernel_index`` is out of range.
    """
    kernels = load_levin_kernels(data_dir)
    return WienerDeconv(kernels[kernel_index], nsr=nsr).eval()
