"""The first straightforward PTG-RM forward (commit e180c32), kept for benchmarking only.

This is a functional copy of ``PTGRefiner._body`` and of the layer forwards of ``layers.py`` as they
were before the speed work (issue 5). It reads the parameters of a current :class:`PTGRefiner`, so
``baseline_forward(refiner, ...)`` and ``refiner(...)`` compute the same function with the same
weights: the benchmark compares their speed and memory, and ``tests/test_speed_paths.py`` their
outputs. Not part of the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

_SLOPE = 0.1
_DOWNSCALE = 4


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


def _layer_norm(m, x):
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    x = (x - mu) * torch.rsqrt(var + m.eps)
    return x * m.weight[:, None, None] + m.bias[:, None, None]


def _attention(m, x):
    h, w = x.shape[-2:]
    q, k, v = m.qkv_dw(m.qkv(x)).chunk(3, dim=1)
    q, k, v = (rearrange(t, "b (n c) h w -> b n c (h w)", n=m.heads) for t in (q, k, v))
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1)) * m.temperature
    out = attn.softmax(dim=-1) @ v
    out = rearrange(out, "b n c (h w) -> b (n c) h w", h=h, w=w)
    return m.proj(out)


def _ffn(m, x):
    gate, value = m.dwconv(m.project_in(x)).chunk(2, dim=1)
    return m.project_out(F.gelu(gate) * value)


def _transformer(m, x):
    x = x + _attention(m.attn, _layer_norm(m.norm1, x))
    return x + _ffn(m.ffn, _layer_norm(m.norm2, x))


def _residual(m, x):
    return x + m.conv2(F.relu(m.conv1(x)))


def _position(m, batch, height, width, like):
    ys = torch.linspace(-1.0, 1.0, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]
    emb = m.conv2(_lrelu(m.conv1(grid)))
    return emb.expand(batch, -1, -1, -1)


def _prior(m, g):
    return m.fc2(_lrelu(m.fc1(g)))


def _per_pixel_conv(x, kernels, kernel_size):
    b, c, h, w = x.shape
    k = kernel_size
    kernels = kernels.view(b, c, k * k, h, w)
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    out = None
    for i in range(k):
        for j in range(k):
            term = kernels[:, :, i * k + j] * xp[:, :, i : i + h, j : j + w]
            out = term if out is None else out + term
    return out


def _pad_to_multiple(x, multiple):
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _body(r, x, g):
    k = r.config.kernel_size
    f = r.enc_conv1(x)
    f = _lrelu(r.enc_norm1(f))
    f = r.enc_norm2(r.enc_conv2(f))
    f = r.enc_conv3(f)
    b, _, fh, fw = f.shape

    prior_m = _prior(r.prior_sve, g)[:, :, None, None].expand(-1, -1, fh, fw)
    pos_m = _position(r.pos_sve, b, fh, fw, like=f)
    range_map = torch.sigmoid(
        r.range_conv2(_lrelu(r.range_conv1(torch.cat([f, prior_m, pos_m], dim=1))))
    )
    long = f
    for block in r.long_range:
        long = _transformer(block, long)
    f_hat = torch.lerp(long, _residual(r.short_range, f), range_map)

    prior_c = _prior(r.prior_csa, g)
    pooled = torch.cat([f_hat.mean(dim=(2, 3)), prior_c], dim=1)
    channel = torch.sigmoid(r.channel_fc2(_lrelu(r.channel_fc1(pooled))))
    f_c = f_hat * channel[:, :, None, None]

    pos_c = _position(r.pos_csa, b, fh, fw, like=f)
    kp_in = torch.cat([f_hat, prior_c[:, :, None, None].expand(-1, -1, fh, fw), pos_c], dim=1)
    kernels = r.kernel_conv2(_lrelu(r.kernel_conv1(kp_in)))
    attn = _per_pixel_conv(f_hat, kernels, k)
    spatial = torch.sigmoid(r.spatial_conv(_lrelu(attn)))
    f_s = f_hat * spatial

    f_bar = r.fuse(torch.cat([f_c, f_s], dim=1)) + f_hat
    y = _lrelu(F.pixel_shuffle(r.up1(f_bar), 2))
    y = _lrelu(F.pixel_shuffle(r.up2(y), 2))
    return r.head(_lrelu(r.dec_conv(y)))


def baseline_forward(
    refiner, restored: torch.Tensor, degraded: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """The unoptimized refiner forward (no input validation) with ``refiner``'s weights."""
    h, w = restored.shape[-2:]
    x = _pad_to_multiple(torch.cat([restored, degraded], dim=1), _DOWNSCALE)
    g = features.to(dtype=x.dtype) if not torch.is_autocast_enabled(x.device.type) else features
    out = _body(refiner, x, g)
    mask_logit, residual = out[..., :h, :w].chunk(2, dim=1)
    return restored + (restored - degraded) * torch.tanh(mask_logit) + residual
