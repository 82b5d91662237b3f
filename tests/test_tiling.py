"""Tiled inference: refiner tiles reproduce the untiled output; the wrapper blends base tiles."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import ptg_refine.refiner as refiner_module
import ptg_refine.wrap as wrap_module
from ptg_refine import PTGRefiner, refine
from ptg_refine.errors import ConfigError

SMALL = dict(width=8, num_blocks=2, prior_hidden=16)


def scramble(refiner: PTGRefiner, scale: float = 0.2, seed: int = 0) -> PTGRefiner:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in refiner.parameters():
            spread = max(float(p.std()) if p.numel() > 1 else 1.0, 0.1)
            p.add_(torch.randn(p.shape, generator=gen) * scale * spread)
    return refiner


def cheap_encoder(dim: int = 12) -> nn.Module:
    """A prior that depends on the whole image (the stats encoder is slower to compute)."""
    torch.manual_seed(4)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, dim))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def small_base(channels: int = 3) -> nn.Module:
    """Receptive field of 3 pixels: exact under blending with tile_overlap >= 12."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, channels, 3, padding=1),
    ).eval()


@pytest.mark.parametrize(
    "shape, tile",
    [((1, 3, 50, 70), 24), ((2, 3, 37, 53), 32), ((1, 1, 61, 29), 20), ((1, 3, 9, 200), 64)],
)
def test_refiner_tiles_match_untiled(shape, tile):
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(embed_dim=12, in_channels=shape[1], **SMALL)).eval()
    gen = torch.Generator().manual_seed(1)
    x, d = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    g = torch.randn(shape[0], 12, generator=gen)
    with torch.no_grad():
        whole = refiner(x, d, g)
        tiled = refiner(x, d, g, tile=tile)
    assert (whole - x).abs().max() > 0.01
    torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-5)


def test_large_images_stream_automatically(monkeypatch):
    """Above a size, untiled no-grad inference runs in bands/tiles: same result, bounded memory."""
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(embed_dim=12, **SMALL)).eval()
    gen = torch.Generator().manual_seed(1)
    x, d = torch.rand(1, 3, 64, 80, generator=gen), torch.rand(1, 3, 64, 80, generator=gen)
    g = torch.randn(1, 12, generator=gen)
    with torch.no_grad():
        whole = refiner(x, d, g)
    calls = []
    original = PTGRefiner._forward_streamed

    def spy(self, *args):
        calls.append(args[-2:])
        return original(self, *args)

    monkeypatch.setattr(PTGRefiner, "_forward_streamed", spy)
    monkeypatch.setattr(refiner_module, "_STREAM_MIN_PIXELS", 1000)
    monkeypatch.setattr(refiner_module, "_STREAM_TILE", 32)
    with torch.no_grad():
        streamed = refiner(x, d, g)
        monkeypatch.setattr(refiner_module, "_DENSE_ENCODER_MAX_PIXELS", 1000)
        streamed_tiled_encoder = refiner(x, d, g)
    torch.testing.assert_close(streamed_tiled_encoder, whole, rtol=0, atol=2e-5)
    assert calls == [(32, True), (32, False)]
    torch.testing.assert_close(streamed, whole, rtol=0, atol=2e-5)
    # with autograd recording, the dense path runs (and no streaming)
    calls.clear()
    refiner(x, d, g)
    assert calls == []


def test_refiner_tile_needs_inference():
    refiner = PTGRefiner(embed_dim=12, **SMALL)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="inference"):
        refiner(x, x, torch.randn(1, 12), tile=16)
    with pytest.raises(ConfigError, match="tile"):
        with torch.no_grad():
            refiner(x, x, torch.randn(1, 12), tile=8)


def test_wrapper_tiled_matches_untiled():
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(embed_dim=12, **SMALL))
    base, encoder = small_base(), cheap_encoder()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 130, 171, generator=gen)
    whole = refine(base, refiner, encoder=encoder).eval()
    tiled = refine(base, refiner, encoder=encoder, tile=64, tile_overlap=16).eval()
    with torch.no_grad():
        a, b = whole.forward_all(x), tiled.forward_all(x)
    assert (a.refined - a.restored).abs().max() > 0.01
    torch.testing.assert_close(b.restored, a.restored, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.features, a.features)
    assert psnr(b.refined, a.refined) >= 45.0
    # no seams: the largest difference anywhere (tile borders included) stays at rounding level
    assert (b.refined - a.refined).abs().max() < 1e-4


def test_wrapper_tiles_blend_wide_receptive_fields():
    """A base that sees further than the blending margin still gives >= 45 dB, seamlessly."""
    torch.manual_seed(0)
    refiner = scramble(PTGRefiner(embed_dim=12, **SMALL))
    encoder = cheap_encoder()
    torch.manual_seed(5)
    layers: list[nn.Module] = []
    for i in range(8):  # receptive field of 16 pixels
        layers += [nn.Conv2d(3 if i == 0 else 4, 4, 5, padding=2), nn.Tanh()]
    base = nn.Sequential(*layers, nn.Conv2d(4, 3, 1)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 128, 128, generator=gen)
    with torch.no_grad():
        a = refine(base, refiner, encoder=encoder).eval()(x)
        b = refine(base, refiner, encoder=encoder, tile=64, tile_overlap=24).eval()(x)
    assert psnr(b, a) >= 45.0


def test_wrapper_prior_is_global_and_computed_once(monkeypatch):
    refiner = PTGRefiner(embed_dim=12, **SMALL)
    model = refine(nn.Identity(), refiner, encoder=cheap_encoder(), tile=64, tile_overlap=8).eval()
    seen = []
    original = model.encoder.forward

    def spy(images):
        seen.append(tuple(images.shape))
        return original(images)

    monkeypatch.setattr(model.encoder, "forward", spy)
    x = torch.rand(2, 3, 100, 70)
    with torch.no_grad():
        model(x)
    assert seen == [(2, 3, 100, 70)]
    seen.clear()
    monkeypatch.setattr(wrap_module, "PRIOR_MAX_SIDE", 50)
    with torch.no_grad():
        model(x)
    assert seen == [(2, 3, 50, 35)]  # downscaled whole image, never a tile


def test_wrapper_tile_arguments():
    refiner = PTGRefiner(encoder="stats", **SMALL)
    with pytest.raises(ConfigError, match="tile"):
        refine(nn.Identity(), refiner, tile=8)
    with pytest.raises(ConfigError, match="tile_overlap"):
        refine(nn.Identity(), refiner, tile=64, tile_overlap=33)
    with pytest.raises(ConfigError, match="tile_overlap"):
        refine(nn.Identity(), refiner, tile=64, tile_overlap=-1)
    model = refine(nn.Identity(), refiner, tile=64)
    assert (model.tile, model.tile_overlap) == (64, 32)
    model.train()
    with pytest.raises(ConfigError, match="training"):
        model(torch.rand(1, 3, 80, 80))


def test_wrapper_tiled_identity_at_init_and_shapes():
    refiner = PTGRefiner(embed_dim=12, in_channels=1, **SMALL)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 12))
    model = refine(nn.Identity(), refiner, encoder=encoder, tile=32, tile_overlap=8).eval()
    x = torch.rand(3, 1, 45, 77)
    with torch.no_grad():
        out = model.forward_all(x)
    assert out.refined.shape == x.shape
    assert torch.equal(out.refined, out.restored)  # an untrained refiner is the identity
    torch.testing.assert_close(out.restored, x)  # blended identity tiles


def test_blend_weights_cover_every_pixel():
    for size, tile, overlap in [(100, 32, 8), (64, 64, 16), (65, 64, 16), (300, 128, 0)]:
        starts = wrap_module._tile_starts(size, tile, overlap)
        total = torch.zeros(size)
        for s in starts:
            stop = min(s + tile, size)
            total[s:stop] += wrap_module._ramp(stop - s, s, stop, size, overlap)
        assert starts[0] == 0 and min(starts[-1] + tile, size) == size
        assert total.min() > 0


EIGHT_K = textwrap.dedent(
    """
    import resource, torch
    from torch import nn
    from ptg_refine import PTGRefiner, refine
    torch.set_num_threads(2)
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
    model = refine(base, PTGRefiner(encoder="stats"), tile=512, tile_overlap=32).eval()
    x = torch.rand(1, 3, 4320, 7680)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """
)


@pytest.mark.slow
def test_8k_image_refines_within_4_gb():
    out = subprocess.run(
        [sys.executable, "-c", EIGHT_K], capture_output=True, text=True, timeout=1800, check=True
    )
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 4096, f"peak RSS {peak_mb:.0f} MB"
