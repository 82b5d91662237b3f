"""explain(): the refiner's range map and attention maps, at image size, in [0, 1]."""

from __future__ import annotations

import pytest
import torch

from ptg_refine import PTGRefiner
from ptg_refine.explain import explain, overlay


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 30, 18)])
def test_maps_have_image_size_and_range(shape):
    torch.manual_seed(0)
    refiner = PTGRefiner(embed_dim=8, width=8, num_blocks=1, prior_hidden=16, in_channels=shape[1])
    with torch.no_grad():
        refiner.head.weight.normal_(0, 0.05)
    x, d, g = torch.rand(shape), torch.rand(shape), torch.randn(shape[0], 8)
    ex = explain(refiner, x, d, g)
    b, _, h, w = shape
    for m in (ex.range_map, ex.spatial_attention):
        assert m.shape == (b, 1, h, w)
        assert m.min() >= 0 and m.max() <= 1
    assert ex.channel_attention.shape == (b, 8)
    assert ex.mask.shape == shape and ex.mask.min() >= 0 and ex.mask.max() <= 2
    torch.testing.assert_close(ex.refined, refiner(x, d, g), rtol=1e-5, atol=1e-5)
    assert overlay(x[0], ex.range_map[0]).shape == (3, h, w)


def test_untrained_refiner_mask_is_one():
    refiner = PTGRefiner(embed_dim=8, width=8, num_blocks=1, prior_hidden=16)
    x = torch.rand(1, 3, 16, 16)
    ex = explain(refiner, x, torch.rand(1, 3, 16, 16), torch.randn(1, 8))
    assert torch.equal(ex.mask, torch.ones_like(ex.mask))
    assert torch.equal(ex.residual, torch.zeros_like(ex.residual))
