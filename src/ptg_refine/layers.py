"""Building blocks of PTG-RM (torch + einops only; no encoders, no training).

Notation follows ``PAPER.md``: ``c`` is the refiner width, ``D`` the prior (OSF) length, ``k`` the size
of the predicted per-pixel kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "GatedDConvFeedForward",
    "LayerNorm2d",
    "PositionEmbedding",
    "PriorMapping",
    "ResidualBlock",
    "TransformerBlock",
    "TransposedAttention",
    "per_pixel_conv",
]

_SLOPE = 0.1  # LeakyReLU negative slope used throughout the paper's module


def lrelu(x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """LeakyReLU with the paper's slope; ``inplace`` only on fresh tensors nothing else reads."""
    return F.leaky_relu(x, _SLOPE, inplace=inplace)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, with weight and bias.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis; for a channels_last input the permutes are views
        # and the result is channels_last too.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class TransposedAttention(nn.Module):
    """Multi-Dconv-head transposed attention (MDTA): attention across channels, not pixels.

    Cost is linear in the number of pixels, so it runs at any resolution. The attention matrix only
    needs pixel sums (:meth:`gram`), so a large map can be processed in bands: accumulate
    :meth:`gram` over the bands, then :meth:`attention` once and :meth:`apply` band by band.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, heads: int = 1, bias: bool = False) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(
            channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias
        )
        self.proj = nn.Conv2d(channels, channels, 1, bias=bias)

    def qkv_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value maps, each (B, C, H, W)."""
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        return q, k, v

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b (n c) h w -> b n c (h w)", n=self.heads)

    def gram(
        self, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixel sums ``(q k^T, |q|^2, |k|^2)`` per head: (B, n, c, c), (B, n, c), (B, n, c)."""
        q, k = self._split_heads(q), self._split_heads(k)
        q_sq = torch.linalg.vector_norm(q, dim=-1).square()
        k_sq = torch.linalg.vector_norm(k, dim=-1).square()
        return q @ k.transpose(-2, -1), q_sq, k_sq

    def attention(self, gram: torch.Tensor, q_sq: torch.Tensor, k_sq: torch.Tensor) -> torch.Tensor:
        """Softmax attention over channels from the pixel sums of :meth:`gram`.

        Equal to ``softmax(normalize(q) @ normalize(k)^T * temperature)`` with the L2 norms taken
        over all pixels (as ``F.normalize``, norms are clamped to at least 1e-12).
        """
        eps = 1e-12
        qn = q_sq.sqrt().clamp_min(eps)
        kn = k_sq.sqrt().clamp_min(eps)
        attn = gram / (qn[..., :, None] * kn[..., None, :]) * self.temperature
        return attn.softmax(dim=-1)

    def apply(self, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``proj(attn @ v)``; the result keeps ``v``'s memory layout when there is one head."""
        h, w = v.shape[-2:]
        vt = self._split_heads(v).transpose(-2, -1)  # (B, n, hw, c): a view, no copy
        out = vt @ attn.transpose(-2, -1)  # (B, n, hw, c), pixels-major
        out = rearrange(out, "b n (h w) c -> b h w (n c)", h=h, w=w).permute(0, 3, 1, 2)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_maps(x)
        return self.apply(self.attention(*self.gram(q, k)), v)


class GatedDConvFeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, expansion: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        gated = F.gelu(gate)
        # The GELU output is a fresh tensor; autograd needs it for value's gradient, so only
        # multiply in place when no graph is recorded.
        gated = gated.mul_(value) if not _recording(gated, value) else gated * value
        return self.project_out(gated)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x)).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int, *, heads: int = 1, expansion: float = 2.66) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = TransposedAttention(channels, heads=heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedDConvFeedForward(channels, expansion=expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = add_fresh(self.attn(self.norm1(x)), x)
        return add_fresh(self.ffn(self.norm2(x)), x)


class ResidualBlock(nn.Module):
    """Short-range branch: x + conv(relu(conv(x))).

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_fresh(self.conv2(F.relu(self.conv1(x), inplace=True)), x)


class PositionEmbedding(nn.Module):
    """Learnable embedding of a fixed [-1, 1] coordinate grid (S_m / S_c in the paper).

    The embedding depends only on the grid size, not on the batch: it is computed once and expanded.
    ``region=(y0, y1, x0, x1)`` returns the window of the embedding of the full ``height x width``
    grid (computed from the grid window plus a one-pixel margin, so it equals the crop exactly).

    Shape:
        forward(b, h, w) -> (b, C, h, w); with ``region``: (b, C, y1 - y0, x1 - x0)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(
        self,
        batch: int,
        height: int,
        width: int,
        like: torch.Tensor,
        region: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        ys, xs = _coordinates(height, like), _coordinates(width, like)
        if region is not None:
            y0, y1, x0, x1 = region
            ya, yb, xa, xb = max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)
            ys, xs = ys[ya:yb], xs[xa:xb]
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]
        grid = grid.contiguous(memory_format=torch.channels_last)
        emb = self.conv2(F.leaky_relu(self.conv1(grid), _SLOPE, inplace=True))
        if region is not None:
            emb = emb[:, :, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        return emb.expand(batch, -1, -1, -1)


class PriorMapping(nn.Module):
    """MLP mapping the 1-D prior g (B, D) to (B, out) (T_m / T_c in the paper), no biases.

    Shape:
        g: (B, D) -> (B, out)
    """

    def __init__(self, dim: int, out: int, *, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out, bias=False)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.fc2(lrelu(self.fc1(g)))


def per_pixel_conv(
    x: torch.Tensor, kernels: torch.Tensor, kernel_size: int, *, tap_major: bool = False
) -> torch.Tensor:
    """Depthwise convolution with a separate k x k kernel at every pixel and channel.

    Accumulates the k^2 shifted views of the zero-padded input in place (``addcmul_``) instead of
    materializing an unfolded (B, C, k^2, H, W) copy: one output buffer, no temporaries.

    Args:
        x: the map to filter.
        kernels: the kernels, channel ``c * k^2 + t`` holding tap ``t`` (row-major) of channel ``c``;
            with ``tap_major`` the order is ``t * C + c`` instead (contiguous taps for
            channels_last maps).
        kernel_size: k (odd).
        tap_major: channel order of ``kernels``, see above.

    Shape:
        x: (B, C, H, W), kernels: (B, C * k * k, H, W) -> (B, C, H, W)
    """
    if _recording(x, kernels) and not is_tracing():
        return _PerPixelConv.apply(x, kernels, kernel_size, tap_major)
    return _per_pixel_conv(x, kernels, kernel_size, tap_major)


def _tap_views(kernels: torch.Tensor, c: int, k: int, tap_major: bool) -> torch.Tensor:
    """(B, C * k^2, H, W) kernels as a (B, C, k^2, H, W) view in either channel order."""
    if tap_major:
        return kernels.unflatten(1, (k * k, c)).transpose(1, 2)
    return kernels.unflatten(1, (c, k * k))


def _per_pixel_conv(
    x: torch.Tensor, kernels: torch.Tensor, k: int, tap_major: bool
) -> torch.Tensor:
    c, h, w = x.shape[1:]
    taps = _tap_views(kernels, c, k, tap_major)
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    out = taps[:, :, 0] * xp[:, :, 0:h, 0:w]
    for t in range(1, k * k):
        i, j = divmod(t, k)
        # autograd needs only the two factors of each product, never the running sum
        out = out.addcmul_(taps[:, :, t], xp[:, :, i : i + h, j : j + w])
    return out


class _PerPixelConv(torch.autograd.Function):
    """:func:`per_pixel_conv` with a backward that writes each tap's gradient in place.

    Autograd's own backward of the k^2 tap slices would allocate and zero a kernels-sized
    gradient per tap and sum them; here the kernels' gradient is one buffer written tap by tap.
    """

    @staticmethod
    def forward(ctx, x, kernels, k, tap_major):  # type: ignore[override]
        ctx.save_for_backward(x, kernels)
        ctx.k, ctx.tap_major = k, tap_major
        return _per_pixel_conv(x, kernels, k, tap_major)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, kernels = ctx.saved_tensors
        k, pad = ctx.k, ctx.k // 2
        c, h, w = x.shape[1:]
        grad_x = grad_kernels = None
        if ctx.needs_input_grad[1]:
            grad_kernels = torch.empty_like(kernels)
            gtaps = _tap_views(grad_kernels, c, k, ctx.tap_major)
            xp = F.pad(x, (pad, pad, pad, pad))
            for t in range(k * k):
                i, j = divmod(t, k)
                product = grad * xp[:, :, i : i + h, j : j + w]
                gtaps[:, :, t] = product  # (cast to the kernels' dtype under autocast)
        if ctx.needs_input_grad[0]:
            taps = _tap_views(kernels, c, k, ctx.tap_major)
            dtype = torch.promote_types(grad.dtype, kernels.dtype)
            gxp = F.pad(torch.zeros_like(x, dtype=dtype), (pad, pad, pad, pad))
            for t in range(k * k):
                i, j = divmod(t, k)
                gxp[:, :, i : i + h, j : j + w].addcmul_(grad, taps[:, :, t])
            grad_x = gxp[:, :, pad : pad + h, pad : pad + w].to(x.dtype)
        return grad_x, grad_kernels, None, None


def _coordinates(n: int, like: torch.Tensor) -> torch.Tensor:
    """``n`` evenly spaced values from -1 to 1 (``[-1]`` when ``n == 1``), as ``torch.linspace``."""
    if is_tracing():  # linspace would pin a symbolic size to its example value
        step = 2.0 / torch.sym_max(n - 1, 1)
        return torch.arange(n, device=like.device, dtype=like.dtype) * step - 1.0
    return torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)


def is_tracing() -> bool:
    """True under torch.compile, torch.export (hence ONNX export) and TorchScript tracing."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        if compiler.is_compiling():
            return True
        is_exporting = getattr(compiler, "is_exporting", None)
        if is_exporting is not None and is_exporting():
            return True
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def add_fresh(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` when that keeps the result's dtype.

    ``fresh`` must be a new tensor (e.g. a convolution's output) that no backward formula reads:
    then the in-place update is safe under autograd too. Under autocast the sum may need a wider
    dtype than ``fresh`` (a bf16 branch added to a float32 residual stream): then it is out of place.
    """
    if fresh.dtype == other.dtype and fresh.shape == torch.broadcast_shapes(
        fresh.shape, other.shape
    ):
        return fresh.add_(other)
    return fresh + other


def _recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on ``tensors`` (in-place updates must then be safe)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
