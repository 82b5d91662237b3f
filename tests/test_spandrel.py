"""spandrel interop: a spandrel ImageModelDescriptor as the base network of refine()."""

from __future__ import annotations

import pytest
import torch

spandrel = pytest.importorskip("spandrel")

from ptg_refine import PTGRefiner, refine  # noqa: E402
from ptg_refine.errors import ConfigError, ShapeError  # noqa: E402
from ptg_refine.interop import as_base_if_needed, is_spandrel_descriptor  # noqa: E402
from ptg_refine.interop.spandrel import SpandrelBase, as_base  # noqa: E402


@pytest.fixture
def drunet():
    """A randomly initialized DRUNet (scale 1, size multiple of 8, extra noise-map channel)."""
    from spandrel.architectures.DRUNet import DRUNet

    torch.manual_seed(0)
    net = DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2)
    desc = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    assert desc.architecture.name == "DRUNet" and desc.scale == 1
    assert desc.size_requirements.multiple_of == 8
    return desc


def test_identity_at_init_on_odd_size(drunet):
    base = as_base(drunet)
    assert isinstance(base, SpandrelBase) and base.descriptor is drunet
    model = refine(base, PTGRefiner(encoder="stats", width=8, num_blocks=1))
    x = torch.rand(1, 3, 37, 53)
    with torch.inference_mode():
        y = model(x)
        expected = drunet(x.clone())
    assert y.shape == x.shape
    assert torch.equal(y, expected)


def test_batches_and_gradients(drunet):
    base = as_base(drunet)
    x = torch.rand(2, 3, 21, 19)
    with torch.no_grad():
        y = base(x)
        assert torch.equal(y[1:], base(x[1:]))
    model = refine(base, PTGRefiner(encoder="stats", width=8, num_blocks=1), freeze_base=False)
    model(x).mean().backward()  # joint training reaches the spandrel model (no inference_mode)
    assert all(p.grad is not None for p in drunet.model.parameters())
    with pytest.raises(ShapeError, match="expects"):
        base(torch.rand(1, 1, 16, 16))


def test_hook_passthrough(drunet):
    net = torch.nn.Identity()
    assert as_base_if_needed(net) is net
    assert not is_spandrel_descriptor(net)
    assert is_spandrel_descriptor(drunet)
    assert isinstance(as_base_if_needed(drunet), SpandrelBase)


def test_super_resolution_is_refused():
    from spandrel.architectures.Compact import Compact

    sr = Compact(num_feat=8, num_conv=2, upscale=2)
    desc = spandrel.ModelLoader().load_from_state_dict(sr.state_dict())
    assert desc.scale == 2
    with pytest.raises(ConfigError, match="x2 super-resolution"):
        as_base(desc)
    with pytest.raises(ConfigError, match="same-size restoration"):
        as_base_if_needed(desc)


def test_size_requirements_padding():
    from ptg_refine.interop.spandrel import _padding

    req = spandrel.SizeRequirements(minimum=16, multiple_of=8, square=True)
    assert _padding(req, 5, 20) == (19, 4)
    assert _padding(spandrel.SizeRequirements(), 7, 9) == (0, 0)
