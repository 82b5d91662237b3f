"""The optimized refiner computes what the first straightforward version computed (issue 5).

``benchmarks/_baseline_refiner.py`` keeps the forward of commit e180c32; every fast path of the
library (channels_last, the prior folded into the convolutions, tap-major per-pixel kernels, the
channels-last instance norm, in-place updates, the streaming engine) must agree with it on the same
weights up to floating-point reordering, in values and in gradients, and must keep the state dict.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ptg_refine import PTGRefiner
from ptg_refine.layers import LayerNorm2d, TransposedAttention, per_pixel_conv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _baseline_refiner import baseline_forward

SMALL = dict(embed_dim=24, width=8, num_blocks=2, prior_hidden=16)


def scramble(refiner: PTGRefiner, scale: float = 0.2, seed: int = 0) -> PTGRefiner:
    """Move every parameter away from its initialization (norms, temperature, head included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in refiner.parameters():
            spread = max(float(p.std()) if p.numel() > 1 else 1.0, 0.1)
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale * spread)
    return refiner


def inputs(shape, dim, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=dtype)
    d = (x + 0.1 * torch.randn(shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return x, d, torch.randn(shape[0], dim, generator=gen, dtype=dtype)


@pytest.mark.parametrize(
    "shape, heads",
    [((1, 3, 48, 40), 1), ((2, 3, 37, 53), 2), ((3, 1, 30, 18), 1), ((1, 3, 5, 9), 1)],
)
def test_forward_matches_baseline(shape, heads):
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL, num_heads=heads, in_channels=shape[1])).eval()
    x, d, g = inputs(shape, SMALL["embed_dim"])
    with torch.no_grad():
        expected = baseline_forward(refiner, x, d, g)
        got = refiner(x, d, g)
    assert (expected - x).abs().max() > 0.01  # the refiner really does something
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_reference_configuration_matches_baseline():
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(embed_dim=512), scale=0.05).eval()
    x, d, g = inputs((1, 3, 64, 64), 512)
    with torch.no_grad():
        torch.testing.assert_close(
            refiner(x, d, g), baseline_forward(refiner, x, d, g), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("batch", [1, 3])
def test_gradients_match_baseline(batch):
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL, num_heads=2)).train()
    x, d, g = inputs((batch, 3, 29, 34), SMALL["embed_dim"])
    grads = []
    for fn in (baseline_forward, lambda r, *a: r(*a)):
        refiner.zero_grad(set_to_none=True)
        xr, gr = x.clone().requires_grad_(), g.clone().requires_grad_()
        fn(refiner, xr, d, gr).square().mean().backward()
        grads.append([xr.grad, gr.grad] + [p.grad for p in refiner.parameters()])
    names = ["restored", "features"] + [n for n, _ in refiner.named_parameters()]
    for name, a, b in zip(names, *grads):
        # biases feeding an instance norm have an exactly zero gradient: both sides are rounding
        scale = max(float(a.abs().max()), 1e-2)
        assert float((a - b).abs().max()) <= 1e-4 * scale + 1e-6, name


def test_gradcheck_batched_paths():
    """Double precision gradcheck through the batched prior fold and channels-last norm."""
    torch.manual_seed(0)
    refiner = scramble(
        PTGRefiner(embed_dim=4, width=4, num_blocks=1, prior_hidden=8, in_channels=1).double()
    )
    x = torch.rand(2, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    d = torch.rand(2, 1, 6, 7, dtype=torch.float64)
    g = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: refiner(a, d, b), (x, g), eps=1e-6, atol=1e-5, fast_mode=True
    )


def test_state_dict_keys_and_shapes_unchanged():
    """Saved refiners keep loading: same keys, order, shapes and dtypes as commit e180c32."""

    def digest(**kw):
        sd = PTGRefiner(**kw).state_dict()
        text = "\n".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in sd.items())
        return hashlib.sha256(text.encode()).hexdigest()

    assert digest(embed_dim=512) == (
        "29bc51867a64457f3903d41c0513bd4be6b9e00cb1aac8f8b647dadd8b98279c"
    )
    assert digest(
        embed_dim=8, width=8, num_blocks=1, num_heads=2, prior_hidden=16, in_channels=1
    ) == ("d37d3987fe55a5b0058461c42bc1d379d0945be2f0aef504be4c20ba3c277dc5")


def test_parameters_keep_their_layout():
    refiner = PTGRefiner(**SMALL)
    refiner(*inputs((1, 3, 16, 16), SMALL["embed_dim"]))
    assert all(p.is_contiguous() for p in refiner.parameters())


def test_identity_at_init_on_every_path():
    torch.manual_seed(0)
    refiner = PTGRefiner(**SMALL).eval()
    for shape in [(1, 3, 40, 36), (2, 3, 40, 36)]:
        x, d, g = inputs(shape, SMALL["embed_dim"])
        with torch.no_grad():
            assert torch.equal(refiner(x, d, g), x)
            assert torch.equal(refiner(x, d, g, tile=16), x)


def test_per_pixel_conv_layouts_agree():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 9, generator=gen)
    kernels = torch.randn(2, 4 * 9, 7, 9, generator=gen)
    unfolded = F.unfold(x, 3, padding=1).view(2, 4, 9, 7, 9)
    expected = (unfolded * kernels.view(2, 4, 9, 7, 9)).sum(2)
    torch.testing.assert_close(per_pixel_conv(x, kernels, 3), expected)
    tap_major = kernels.view(2, 4, 9, 7, 9).transpose(1, 2).reshape(2, 36, 7, 9)
    xc = x.contiguous(memory_format=torch.channels_last)
    tc = tap_major.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(per_pixel_conv(xc, tc, 3, tap_major=True), expected)


def test_layer_norm_and_attention_layouts_agree():
    torch.manual_seed(0)
    norm, attn = LayerNorm2d(8), TransposedAttention(8, heads=2)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        attn.temperature.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 6, 5)
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    expected = (x - mu) / torch.sqrt(var + 1e-5) * norm.weight[:, None, None] + norm.bias[
        :, None, None
    ]
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(xc), expected)
    torch.testing.assert_close(attn(xc), attn(x))
    # the attention matrix only needs pixel sums: two halves give the whole
    q, k, _ = attn.qkv_maps(x)
    halves = [attn.gram(q[..., :3, :], k[..., :3, :]), attn.gram(q[..., 3:, :], k[..., 3:, :])]
    summed = [a + b for a, b in zip(*halves)]
    torch.testing.assert_close(attn.attention(*summed), attn.attention(*attn.gram(q, k)))


def test_bf16_autocast_cpu_all_paths():
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL), scale=0.05).eval()
    for shape in [(1, 3, 32, 32), (2, 3, 24, 20)]:
        x, d, g = inputs(shape, SMALL["embed_dim"])
        with torch.no_grad():
            ref = refiner(x, d, g)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = refiner(x, d, g)
                tiled = refiner(x, d, g, tile=16)
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert (out - ref).abs().max() < 0.05
        assert (tiled.float() - ref).abs().max() < 0.05


def test_bf16_autocast_cpu_training_step():
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL), scale=0.05).train()
    x, d, g = inputs((2, 3, 24, 24), SMALL["embed_dim"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = refiner(x, d, g)
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in refiner.parameters())


def test_torch_compile_captures_one_graph():
    """fullgraph=True fails on any graph break; the eager backend keeps this test fast."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL)).eval()
    compiled = torch.compile(refiner, fullgraph=True, backend="eager")
    x, d, g = inputs((1, 3, 24, 20), SMALL["embed_dim"])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, d, g), refiner(x, d, g), rtol=0, atol=1e-5)
    refiner.train()
    compiled(x, d, g).square().mean().backward()
    assert refiner.head.weight.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor_fullgraph():
    """Inductor (needs a C++ compiler on CPU): inference and a training step, no graph breaks."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(**SMALL)).eval()
    compiled = torch.compile(refiner, fullgraph=True)
    x, d, g = inputs((1, 3, 32, 32), SMALL["embed_dim"])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, d, g), refiner(x, d, g), rtol=0, atol=1e-4)
    refiner.train()
    compiled(x, d, g).square().mean().backward()
    assert all(p.grad is not None for p in refiner.parameters())
