"""Seeded synthetic degradations for the four restoration tasks.

Every function takes a clean image ``(C, H, W)`` or batch ``(B, C, H, W)`` of floats in ``[0, 1]``
and returns a degraded tensor of the same shape, dtype and device. Randomness comes only from the
``generator`` argument (a :class:`torch.Generator`, an ``int`` seed, or ``None`` for torch's global
RNG), and random numbers are drawn on the generator's device, so the result for a given seed is the
same whether ``x`` lives on the CPU or a GPU. Parameters written as ``(lo, hi)`` ranges are sampled
uniformly *per image*; a plain number fixes them.

===========  ===================  =============================================================
task         function             output range
===========  ===================  =============================================================
denoise      add_gaussian_noise   **not** clamped by default (``clip=False``): the Gaussian
                                  denoising benchmarks (Set12, CBSD68, ...) add noise of std
                                  ``sigma / 255`` to the clean image and feed it to the network
                                  as is. ``clip=True`` clamps to ``[0, 1]``.
derain       add_rain             clamped to ``[0, 1]``
lowlight     darken               clamped to ``[0, 1]`` (and quantised to 8 bit by default)
deblur       motion_blur          clamped to ``[0, 1]``
===========  ===================  =============================================================

Example:
    >>> import torch
    >>> from ptg_refine.train.degradations import degrade
    >>> clean = torch.rand(3, 64, 64)
    >>> rainy = degrade("derain", clean, generator=0)
    >>> rainy.shape
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import check_image
from ..errors import ConfigError, ShapeError

__all__ = [
    "DEGRADATIONS",
    "TASKS",
    "add_gaussian_noise",
    "add_rain",
    "darken",
    "degrade",
    "motion_blur",
    "random_motion_kernel",
    "resolve_task",
]

Range = float | tuple[float, float]
GeneratorLike = torch.Generator | int | None


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _as_generator(generator: GeneratorLike) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise ConfigError(
        f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}."
    )


def _gen_device(g: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if g is None else g.device


def _rand(shape: tuple[int, ...], g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=_gen_device(g))


def _randn(shape: tuple[int, ...], g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=_gen_device(g))


def _sample(
    spec: Range, n: int, g: torch.Generator | None, name: str, *, minimum: float | None = 0.0
) -> torch.Tensor:
    """``n`` values on the CPU: ``spec`` repeated, or uniform in ``spec = (lo, hi)``."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ConfigError(f"{name} must be a number or a (lo, hi) pair, got {spec!r}.")
        lo, hi = float(spec[0]), float(spec[1])
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        lo = hi = float(spec)
    else:
        raise ConfigError(f"{name} must be a number or a (lo, hi) pair, got {spec!r}.")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"{name} range must be finite with lo <= hi, got {spec!r}.")
    if minimum is not None and lo < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {spec!r}.")
    u = _rand((n,), g).cpu().double()
    return lo + (hi - lo) * u


def _as_batch(x: object, name: str = "image") -> tuple[torch.Tensor, bool]:
    """Return ``x`` as ``(B, C, H, W)`` and whether it was ``(C, H, W)``."""
    if isinstance(x, torch.Tensor) and x.ndim == 3:
        return check_image(x.unsqueeze(0), name, channels=None), True
    if isinstance(x, torch.Tensor) and x.ndim != 4:
        raise ShapeError(
            f"{name} must have shape (C, H, W) or (B, C, H, W), got {tuple(x.shape)}. "
            "Hint: a gray (H, W) image needs x[None]."
        )
    return check_image(x, name, channels=None), False


def _finish(out: torch.Tensor, like: torch.Tensor, unbatched: bool, clip: bool) -> torch.Tensor:
    if clip:
        out = out.clamp(0.0, 1.0)
    out = out.to(like.dtype)
    return out[0] if unbatched else out


def _pad_for_conv(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` so a ``kh x kw`` correlation gives back ``H x W`` (reflect if possible).

    The split puts the kernel's centre at index ``k // 2``, which makes correlation with the flipped
    kernel a true convolution centred on that tap.
    """
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2
    pad = (left, kw - 1 - left, top, kh - 1 - top)
    h, w = x.shape[-2:]
    mode = "reflect" if max(pad[0], pad[1]) < w and max(pad[2], pad[3]) < h else "replicate"
    return F.pad(x, pad, mode=mode)


def _convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """True 2-D convolution of every channel of ``x`` (B, C, H, W) with ``kernel`` (kh, kw)."""
    c = x.shape[1]
    kh, kw = kernel.shape
    weight = kernel.flip(0, 1).to(x).expand(c, 1, kh, kw)
    return F.conv2d(_pad_for_conv(x, kh, kw), weight, groups=c)


def _gaussian_kernel1d(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


# --------------------------------------------------------------------------------------------------
# denoising
# --------------------------------------------------------------------------------------------------


def add_gaussian_noise(
    x: torch.Tensor,
    sigma: Range = 25.0,
    *,
    generator: GeneratorLike = None,
    clip: bool = False,
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma / 255``.

    Follows the protocol of the Gaussian denoising benchmarks: independent noise per pixel and
    channel, added to the clean image, and **no clamping** by default (values may leave ``[0, 1]``).

    Args:
        x: Clean image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``.
        sigma: Noise level on the 0-255 scale (e.g. 15, 25, 50), or a ``(lo, hi)`` range sampled
            uniformly per image (blind denoising).
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        clip: Clamp the result to ``[0, 1]`` (e.g. to mimic saving the noisy image to 8-bit files).

    Returns:
        Noisy tensor with the shape and dtype of ``x``.
    """
    g = _as_generator(generator)
    xb, unbatched = _as_batch(x)
    b = xb.shape[0]
    std = (_sample(sigma, b, g, "sigma") / 255.0).float().view(b, 1, 1, 1)
    noise = _randn(tuple(xb.shape), g).to(xb.device) * std.to(xb.device)
    return _finish(xb.float() + noise, x, unbatched, clip)


# --------------------------------------------------------------------------------------------------
# deraining
# --------------------------------------------------------------------------------------------------


def _streak_kernels(
    lengths: list[float], angle_deg: float, width: float, blur: float, device: torch.device
) -> torch.Tensor:
    """Anti-aliased line kernels (one per length) at one angle, blurred, each with peak 1."""
    theta = math.radians(angle_deg)
    dx, dy = math.sin(theta), math.cos(theta)  # direction in image coordinates (x right, y down)
    radius = math.ceil(max(lengths) / 2 + 3 * blur + width + 1)
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    along = xx * dx + yy * dy
    perp = (yy * dx - xx * dy).abs()
    across = (1.0 - (perp - width / 2 + 0.5).clamp(min=0.0)).clamp(min=0.0)
    half = torch.tensor(lengths, device=device, dtype=torch.float32).view(-1, 1, 1) / 2
    inside = (half + 0.5 - along.abs()).clamp(0.0, 1.0)
    taper = (1.0 - 0.6 * (along / half).clamp(-1.0, 1.0) ** 2).clamp(min=0.0)  # thinner ends
    k = across * inside * taper  # (L, K, K)
    if blur > 0:
        g1 = _gaussian_kernel1d(blur, device)
        r = g1.numel() // 2
        k = F.conv2d(F.pad(k[:, None], (r, r, r, r)), g1.view(1, 1, 1, -1))
        k = F.conv2d(k, g1.view(1, 1, -1, 1))[:, 0]
    return k / k.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-8)


def _fft_convolve_sum(seeds: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``sum_i seeds[i] * kernels[i]`` (same-size, zero padded), via FFT: ``(1, 1, H, W)``.

    Streak kernels are large (up to ~50 px), where FFT is ~10x faster than direct convolution.
    """
    _, h, w = seeds.shape
    k = kernels.shape[-1]
    r = k // 2
    fh, fw = h + k - 1, w + k - 1
    spec = torch.fft.rfft2(seeds, s=(fh, fw)) * torch.fft.rfft2(kernels, s=(fh, fw))
    full = torch.fft.irfft2(spec.sum(0), s=(fh, fw))
    return full[r : r + h, r : r + w][None, None]


def add_rain(
    x: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    density: Range = (0.001, 0.005),
    angle: Range = (-25.0, 25.0),
    length: Range = (15.0, 45.0),
    width: Range = (0.8, 1.6),
    blur: Range = (0.4, 1.0),
    intensity: Range = (0.55, 0.9),
) -> torch.Tensor:
    """Add synthetic rain streaks (light rain, in the style of Rain100L).

    Per image: sparse random seed points (a fraction ``density`` of the pixels, each with its own
    brightness) are smeared along one direction with anti-aliased, tapered line kernels of three
    lengths (60-100 % of ``length``), softened by a Gaussian ``blur``, and screen-blended onto the
    image: ``out = x + intensity * s * (1 - x)`` with ``s`` the streak map in ``[0, 1]``. Streaks
    are neutral (same on every channel) and only ever brighten the image.

    Args:
        x: Clean image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``.
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        density: Fraction of pixels that start a streak.
        angle: Streak angle in degrees from vertical; positive leans like ``\\`` (top-left to
            bottom-right). One angle per image, as wind gives.
        length: Streak length in pixels.
        width: Streak width in pixels (before blur).
        blur: Standard deviation (pixels) of the Gaussian blur applied to the streaks.
        intensity: Opacity of the brightest streaks, in ``[0, 1]``.

    Returns:
        Rainy tensor, clamped to ``[0, 1]``, with the shape and dtype of ``x``.
    """
    g = _as_generator(generator)
    xb, unbatched = _as_batch(x)
    b, _, h, w = xb.shape
    dens = _sample(density, b, g, "density")
    ang = _sample(angle, b, g, "angle", minimum=None)
    lens = _sample(length, b, g, "length", minimum=1.0)
    wid = _sample(width, b, g, "width", minimum=0.1)
    blr = _sample(blur, b, g, "blur")
    alpha = _sample(intensity, b, g, "intensity")
    if float(dens.max()) > 1.0 or float(alpha.max()) > 1.0:
        raise ConfigError(
            f"density and intensity must be in [0, 1], got {density!r}, {intensity!r}."
        )
    dev = xb.device
    out = []
    for i in range(b):
        u = _rand((3, h, w), g).to(dev)  # seed selection, brightness, length group
        seeds = (u[0] < dens[i]).float() * (0.5 + 0.5 * u[1])
        group = (u[2] * 3).long().clamp(max=2)
        seeds = F.one_hot(group, 3).permute(2, 0, 1).float() * seeds  # (3, H, W)
        lengths = [float(lens[i]) * f for f in (0.6, 0.8, 1.0)]
        k = _streak_kernels(lengths, float(ang[i]), float(wid[i]), float(blr[i]), dev)
        s = _fft_convolve_sum(seeds, k).clamp(0.0, 1.0) * float(alpha[i])
        xi = xb[i : i + 1].float()
        out.append(xi + s * (1.0 - xi))
    return _finish(torch.cat(out), x, unbatched, clip=True)


# --------------------------------------------------------------------------------------------------
# low light
# --------------------------------------------------------------------------------------------------


def darken(
    x: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    gamma: Range = (2.0, 3.5),
    scale: Range = (0.1, 0.5),
    shot_noise: Range = (1e-4, 2e-3),
    read_noise: Range = (1e-3, 8e-3),
    quantize: bool = True,
) -> torch.Tensor:
    """Simulate a low-light capture: ``y = scale * x ** gamma`` plus Poisson-Gaussian noise.

    The noise is signal dependent, variance ``shot_noise * y + read_noise ** 2`` (the Gaussian
    approximation of photon shot noise plus sensor read noise), drawn independently per pixel and
    channel. Low-light benchmarks (LOL) store 8-bit images, so the result is quantised to multiples
    of 1/255 by default.

    Args:
        x: Clean (normally exposed) image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``.
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        gamma: Exponent (> 1 darkens shadows more than highlights).
        scale: Exposure factor applied after the gamma.
        shot_noise: Shot-noise gain (variance per unit of signal, in ``[0, 1]`` units).
        read_noise: Standard deviation of the signal-independent read noise.
        quantize: Round to 8-bit levels.

    Returns:
        Dark, noisy tensor, clamped to ``[0, 1]``, with the shape and dtype of ``x``.
    """
    g = _as_generator(generator)
    xb, unbatched = _as_batch(x)
    b = xb.shape[0]
    view = (b, 1, 1, 1)
    gam = _sample(gamma, b, g, "gamma", minimum=1e-3).float().view(view).to(xb.device)
    sc = _sample(scale, b, g, "scale").float().view(view).to(xb.device)
    shot = _sample(shot_noise, b, g, "shot_noise").float().view(view).to(xb.device)
    read = _sample(read_noise, b, g, "read_noise").float().view(view).to(xb.device)
    y = sc * xb.float().clamp(0.0, 1.0) ** gam
    std = torch.sqrt(shot * y + read**2)
    y = y + std * _randn(tuple(xb.shape), g).to(xb.device)
    y = y.clamp(0.0, 1.0)
    if quantize:
        y = torch.round(y * 255.0) / 255.0
    return _finish(y, x, unbatched, clip=True)


# --------------------------------------------------------------------------------------------------
# motion blur
# --------------------------------------------------------------------------------------------------


def random_motion_kernel(
    size: int = 21,
    *,
    generator: GeneratorLike = None,
    extent: Range = (0.4, 1.0),
    curvature: Range = (0.0, 1.5),
) -> torch.Tensor:
    """A random camera-shake kernel: a smooth random trajectory rasterised onto ``size x size``.

    The trajectory is a random walk of the velocity direction (its total turning has standard
    deviation ``curvature`` radians) with jittered speed. It is centred on its centre of mass (so
    the blurred image is not shifted), scaled to span ``extent`` of the kernel, and splatted
    bilinearly. The kernel is non-negative and sums to 1.

    Args:
        size: Kernel side in pixels (odd sizes keep the centre on a pixel).
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        extent: Fraction of the kernel's half-size covered by the trajectory.
        curvature: Standard deviation (radians) of the direction change over the whole
            trajectory; 0 gives straight (linear) motion.

    Returns:
        Tensor ``(size, size)``, float32, on the generator's device.
    """
    g = _as_generator(generator)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"kernel size must be a positive int, got {size!r}.")
    ext = float(_sample(extent, 1, g, "extent")[0])
    curv = float(_sample(curvature, 1, g, "curvature")[0])
    dev = _gen_device(g)
    n = 4 * size + 16
    phi0 = float(_rand((1,), g)[0]) * 2 * math.pi
    phi = phi0 + torch.cumsum(_randn((n,), g) * (curv / math.sqrt(n)), 0)
    speed = (1.0 + 0.3 * _randn((n,), g)).clamp(min=0.2)
    pts = torch.cumsum(torch.stack([torch.cos(phi), torch.sin(phi)], 1) * speed[:, None], 0)
    pts = pts - pts.mean(0)
    half = (size - 1) / 2
    reach = pts.abs().max().clamp(min=1e-6)
    pts = pts * (ext * half / reach) + half  # (n, 2) as (x, y), inside [0, size - 1]
    base = pts.floor().clamp(0, max(size - 2, 0))
    frac = (pts - base).clamp(0.0, 1.0)
    k = torch.zeros(size * size, device=dev)
    bx, by = base[:, 0].long(), base[:, 1].long()
    fx, fy = frac[:, 0], frac[:, 1]
    for ox, oy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        ix, iy = (bx + ox).clamp(max=size - 1), (by + oy).clamp(max=size - 1)
        k.scatter_add_(0, iy * size + ix, wgt)
    k = k.view(size, size)
    return k / k.sum()


def motion_blur(
    x: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    kernel: torch.Tensor | None = None,
    size: int | tuple[int, int] = (9, 31),
    noise: Range = 0.0,
) -> torch.Tensor:
    """Blur with a (random or given) motion kernel, with reflect padding; optionally add noise.

    Args:
        x: Sharp image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``.
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        kernel: ``(k, k)`` kernel used for every image, or ``(B, k, k)`` one per image; it should
            be non-negative and sum to 1 (it is used as given). ``None`` draws a
            :func:`random_motion_kernel` per image.
        size: Side of the random kernels: an int, or an ``(lo, hi)`` range of ints sampled per
            image (rounded up to odd).
        noise: Standard deviation (``[0, 1]`` units) of additive Gaussian noise after blurring,
            or a ``(lo, hi)`` range; e.g. ``1 / 255`` mimics sensor noise.

    Returns:
        Blurred tensor, clamped to ``[0, 1]``, with the shape and dtype of ``x``. The kernel is
        applied as a true convolution centred on tap ``k // 2``.
    """
    g = _as_generator(generator)
    xb, unbatched = _as_batch(x)
    b = xb.shape[0]
    if kernel is not None:
        if not isinstance(kernel, torch.Tensor) or kernel.ndim not in (2, 3):
            raise ShapeError(
                f"kernel must be a tensor (k, k) or (B, k, k), got "
                f"{tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else type(kernel).__name__}."
            )
        kernels = kernel.float().expand(b, *kernel.shape[-2:]) if kernel.ndim == 2 else kernel
        if kernels.shape[0] != b:
            raise ShapeError(f"kernel has {kernels.shape[0]} kernels for a batch of {b} images.")
        kernels = list(kernels.float())
    else:
        lo, hi = (size, size) if isinstance(size, int) else size
        if int(lo) < 1 or int(lo) > int(hi):
            raise ConfigError(f"size must be a positive int or (lo, hi) range, got {size!r}.")
        sides = (_sample((int(lo), int(hi) + 1), b, g, "size").floor().clamp(max=int(hi))).long()
        kernels = [random_motion_kernel(int(s) | 1, generator=g) for s in sides]
    out = torch.cat([_convolve(xb[i : i + 1].float(), kernels[i].to(xb.device)) for i in range(b)])
    std = _sample(noise, b, g, "noise").float().view(b, 1, 1, 1).to(xb.device)
    if float(std.max()) > 0:
        out = out + std * _randn(tuple(xb.shape), g).to(xb.device)
    return _finish(out, x, unbatched, clip=True)


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

#: Task name -> degradation function.
DEGRADATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "denoise": add_gaussian_noise,
    "derain": add_rain,
    "lowlight": darken,
    "deblur": motion_blur,
}

#: The task names, sorted.
TASKS: tuple[str, ...] = tuple(sorted(DEGRADATIONS))

_ALIASES = {
    "denoising": "denoise",
    "noise": "denoise",
    "deraining": "derain",
    "rain": "derain",
    "low-light": "lowlight",
    "low_light": "lowlight",
    "enhance": "lowlight",
    "deblurring": "deblur",
    "blur": "deblur",
}


def resolve_task(task: str) -> str:
    """Return the canonical task name (``"denoise"``, ``"derain"``, ``"lowlight"``, ``"deblur"``).

    Accepts a few spellings (``"deraining"``, ``"low-light"``, ...), case-insensitively.

    Raises:
        ConfigError: unknown task; the message lists the valid ones.
    """
    key = task.strip().lower() if isinstance(task, str) else task
    key = _ALIASES.get(key, key)
    if key not in DEGRADATIONS:
        raise ConfigError(
            f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)}. Hint: register a custom "
            "degradation by adding it to ptg_refine.train.degradations.DEGRADATIONS."
        )
    return key


def _check_kwargs(task: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n in params if n not in ("x", "generator")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {', '.join(unknown)} for task {task!r} ({fn.__name__}). "
            f"Valid options: {', '.join(allowed)}."
        )


def degrade(
    task: str, x: torch.Tensor, *, generator: GeneratorLike = None, **kwargs: Any
) -> torch.Tensor:
    """Apply the synthetic degradation of ``task`` to a clean image or batch.

    Args:
        task: ``"denoise"``, ``"derain"``, ``"lowlight"`` or ``"deblur"`` (see :func:`resolve_task`
            for accepted spellings).
        x: Clean image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``.
        generator: Generator or int seed; ``None`` uses torch's global RNG.
        **kwargs: Options of the task's function (e.g. ``sigma=50`` for denoising).

    Returns:
        The degraded tensor (see the module table for clamping).

    Raises:
        ConfigError: unknown task or unknown option.
    """
    key = resolve_task(task)
    fn = DEGRADATIONS[key]
    _check_kwargs(key, fn, kwargs)
    return fn(x, generator=generator, **kwargs)
