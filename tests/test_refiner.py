"""PTGRefiner: shapes, identity at init, gradients, configuration."""

from __future__ import annotations

import pytest
import torch

from ptg_refine import PTGRefiner, RefinerConfig
from ptg_refine.errors import ConfigError, DeviceMismatchError, DTypeError, ShapeError
from ptg_refine.refiner import REFERENCE_PARAMETERS

TINY = dict(embed_dim=8, width=8, num_blocks=1, prior_hidden=16)


def perturb_head(refiner: PTGRefiner, scale: float = 0.05, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        refiner.head.weight.copy_(torch.randn(refiner.head.weight.shape, generator=gen) * scale)
        refiner.head.bias.copy_(torch.randn(refiner.head.bias.shape, generator=gen) * scale)


def test_reference_size_under_one_million():
    refiner = PTGRefiner(embed_dim=512)
    # 672,764 = reference layout (671,735 published) + a mask head of C extra output channels.
    assert refiner.num_parameters == 672_764
    assert refiner.num_parameters < 1_000_000
    assert abs(refiner.num_parameters - REFERENCE_PARAMETERS) < 0.01 * REFERENCE_PARAMETERS


@pytest.mark.parametrize(
    "shape", [(2, 3, 64, 64), (2, 3, 37, 53), (2, 1, 31, 29), (1, 3, 1, 1), (1, 1, 2, 7)]
)
def test_identity_at_init(shape):
    torch.manual_seed(0)
    refiner = PTGRefiner(embed_dim=512, in_channels=shape[1])
    restored, degraded = torch.rand(shape), torch.rand(shape)
    out = refiner(restored, degraded, torch.randn(shape[0], 512))
    assert out.shape == shape
    assert torch.equal(out, restored)


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 30, 18), (3, 3, 8, 12)])
def test_trained_refiner_keeps_shape_and_changes_output(shape):
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY, in_channels=shape[1])
    perturb_head(refiner)
    restored, degraded = torch.rand(shape), torch.rand(shape)
    out = refiner(restored, degraded, torch.randn(shape[0], 8))
    assert out.shape == shape
    assert torch.isfinite(out).all()
    assert not torch.equal(out, restored)


def test_eq1_mask_and_residual():
    """refined = degraded + (restored - degraded) * mask + residual with mask = 1 + tanh(logit)."""
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY)
    perturb_head(refiner, 0.2)
    restored, degraded, g = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 16, 20), torch.randn(1, 8)
    logit, residual = refiner._predict(restored, degraded, g)
    expected = degraded + (restored - degraded) * (1 + torch.tanh(logit)) + residual
    torch.testing.assert_close(refiner(restored, degraded, g), expected, rtol=1e-5, atol=1e-6)


def test_prior_changes_output():
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY)
    perturb_head(refiner, 0.2)
    x, d = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    a = refiner(x, d, torch.randn(1, 8))
    b = refiner(x, d, torch.randn(1, 8))
    assert not torch.allclose(a, b)


def test_batch_items_are_independent():
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY).eval()
    perturb_head(refiner)
    x, d, g = torch.rand(3, 3, 20, 12), torch.rand(3, 3, 20, 12), torch.randn(3, 8)
    full = refiner(x, d, g)
    single = refiner(x[1:2], d[1:2], g[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-6)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY, num_heads=2)
    perturb_head(refiner)
    x, d = torch.rand(2, 3, 23, 17), torch.rand(2, 3, 23, 17)
    g = torch.randn(2, 8)
    refiner(x, d, g).square().mean().backward()
    no_grad = [
        n for n, p in refiner.named_parameters() if p.grad is None or p.grad.abs().sum() == 0
    ]
    assert no_grad == []


def test_gradcheck_float64():
    torch.manual_seed(0)
    refiner = PTGRefiner(embed_dim=4, width=4, num_blocks=1, prior_hidden=8, in_channels=1).double()
    perturb_head(refiner, 0.3)
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    d = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    g = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: refiner(a, d, b), (x, g), eps=1e-6, atol=1e-5)


def test_config_roundtrip_and_validation():
    cfg = PTGRefiner(**TINY, encoder=None).config
    assert RefinerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="in_channels"):
        PTGRefiner(embed_dim=8, in_channels=0)
    with pytest.raises(ConfigError, match="kernel_size"):
        PTGRefiner(embed_dim=8, kernel_size=4)
    with pytest.raises(ConfigError, match="num_heads"):
        PTGRefiner(embed_dim=8, width=16, num_heads=3)
    assert PTGRefiner(embed_dim=None, width=8, num_blocks=1).embed_dim == 512
    with pytest.raises(ConfigError, match="Unknown refiner config keys"):
        RefinerConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_encoder_spec_infers_embed_dim():
    from ptg_refine import create_encoder

    refiner = PTGRefiner(encoder="stats")
    enc = create_encoder("stats")
    assert refiner.embed_dim == enc.dim
    assert refiner.config.encoder_config["dim"] == enc.dim
    with pytest.raises(ConfigError, match="does not match encoder"):
        PTGRefiner(embed_dim=enc.dim + 1, encoder="stats")


def test_bad_inputs_raise_documented_errors():
    refiner = PTGRefiner(**TINY)
    x = torch.rand(1, 3, 8, 8)
    g = torch.randn(1, 8)
    with pytest.raises(ShapeError, match="4 dimensions"):
        refiner(x[0], x[0], g)
    with pytest.raises(DTypeError, match="floating-point"):
        refiner((x * 255).to(torch.uint8), x, g)
    with pytest.raises(ShapeError, match="channels"):
        refiner(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), g)
    with pytest.raises(ShapeError, match="same shape"):
        refiner(x, torch.rand(1, 3, 8, 9), g)
    with pytest.raises(ShapeError, match=r"\(B=1, D=8\)"):
        refiner(x, x, torch.randn(1, 9))
    with pytest.raises(ShapeError, match=r"\(B=1, D=8\)"):
        refiner(x, x, torch.randn(2, 8))
    with pytest.raises(DTypeError):
        refiner(x, x, [0.0] * 8)
    # ValueError / TypeError compatibility for callers who do not know ptg_refine errors
    with pytest.raises(ValueError):
        refiner(x, x, torch.randn(1, 9))


def test_device_mismatch_raises():
    refiner = PTGRefiner(**TINY).to("meta")
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(DeviceMismatchError, match="meta"):
        refiner(x, x, torch.randn(1, 8))


def test_bf16_autocast_cpu():
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY)
    perturb_head(refiner)
    x, d, g = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.randn(1, 8)
    ref = refiner(x, d, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = refiner(x, d, g)
    assert out.shape == x.shape
    assert (out.float() - ref).abs().max() < 0.05
