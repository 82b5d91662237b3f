"""refine() and RefinedModel: wrapping user networks, output rules, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptg_refine import PTGRefiner, RefinedModel, create_encoder, refine
from ptg_refine.errors import ConfigError, DeviceMismatchError, DTypeError, ShapeError


@pytest.fixture(scope="module")
def stats_refiner() -> PTGRefiner:
    torch.manual_seed(0)
    return PTGRefiner(encoder="stats", width=8, num_blocks=1, prior_hidden=16)


def test_three_line_wrap_is_identity_at_init(stats_refiner):
    base = nn.Conv2d(3, 3, 3, padding=1)
    model = refine(base, stats_refiner)
    assert isinstance(model, RefinedModel)
    assert model.base is base and model.refiner is stats_refiner
    x = torch.rand(1, 3, 45, 61)
    out = model(x)
    assert out.shape == x.shape
    assert torch.equal(out, base(x).detach())


def test_encoder_built_from_config(stats_refiner):
    model = refine(nn.Identity(), stats_refiner)
    assert model.encoder.spec == "stats"
    assert model.encoder.dim == stats_refiner.embed_dim
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_freeze_base_default_and_joint():
    refiner = PTGRefiner(encoder="stats", width=8, num_blocks=1, prior_hidden=16)
    with torch.no_grad():
        refiner.head.weight.normal_(0, 0.05)
    base = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
    frozen = refine(base, refiner)
    frozen.train()
    assert not base.training and not any(p.requires_grad for p in base.parameters())
    x = torch.rand(2, 3, 16, 16)
    frozen(x).mean().backward()
    assert all(p.grad is None for p in base.parameters())
    assert refiner.head.weight.grad is not None

    base2 = nn.Conv2d(3, 3, 3, padding=1)
    joint = refine(base2, refiner, freeze_base=False)
    joint.train()
    out = joint.forward_all(x)
    (out.restored.mean() + out.refined.mean()).backward()
    assert base2.weight.grad is not None and base2.weight.grad.abs().sum() > 0


def test_features_can_be_supplied(stats_refiner):
    model = refine(nn.Identity(), stats_refiner)
    x = torch.rand(2, 3, 20, 20)
    feats = model.encode(x)
    assert feats.shape == (2, stats_refiner.embed_dim)
    assert torch.equal(model(x, features=feats), model(x))


class TupleNet(nn.Module):
    def forward(self, x):
        return x * 0.5, x * 0.25


class DictNet(nn.Module):
    def forward(self, x):
        return {"aux": x * 0.1, "restored": x * 0.5}


@pytest.mark.parametrize(
    "net, output, factor",
    [
        (TupleNet(), None, 0.5),
        (TupleNet(), 1, 0.25),
        (TupleNet(), lambda out: out[1], 0.25),
        (DictNet(), None, 0.5),
        (DictNet(), "aux", 0.1),
    ],
)
def test_output_rules(stats_refiner, net, output, factor):
    model = refine(net, stats_refiner, output=output)
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(model(x), x * factor)


def test_output_rule_errors(stats_refiner):
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(ShapeError, match="keys"):
        refine(DictNet(), stats_refiner, output="missing")(x)
    with pytest.raises(ShapeError, match="item 5"):
        refine(TupleNet(), stats_refiner, output=5)(x)
    with pytest.raises(ShapeError, match="input's shape"):
        refine(nn.Conv2d(3, 3, 3), stats_refiner)(x)  # no padding: shrinks the image


def test_plain_function_as_base(stats_refiner):
    model = refine(lambda x: x.clamp(0.1, 0.9), stats_refiner)
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(model(x), x.clamp(0.1, 0.9))


def test_gray_model():
    refiner = PTGRefiner(encoder="stats", in_channels=1, width=8, num_blocks=1, prior_hidden=16)
    model = refine(nn.Identity(), refiner)
    x = torch.rand(2, 1, 31, 29)
    assert torch.equal(model(x), x)


def test_validation_errors(stats_refiner):
    model = refine(nn.Identity(), stats_refiner)
    with pytest.raises(ShapeError, match="4 dimensions"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(DTypeError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="3 channels"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(DeviceMismatchError):
        model(torch.rand(1, 3, 16, 16, device="meta"))


def test_refine_argument_errors(stats_refiner):
    with pytest.raises(ConfigError, match="PTGRefiner"):
        refine(nn.Identity(), nn.Identity())
    with pytest.raises(ConfigError, match="names no encoder"):
        refine(nn.Identity(), PTGRefiner(embed_dim=8, width=8, num_blocks=1))
    with pytest.raises(ConfigError, match="embed_dim"):
        refine(nn.Identity(), PTGRefiner(embed_dim=7, width=8, num_blocks=1), encoder="stats")


def test_custom_encoder_module():
    refiner = PTGRefiner(embed_dim=5, width=8, num_blocks=1, prior_hidden=16)
    user_encoder = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))
    model = refine(nn.Identity(), refiner, encoder=user_encoder)
    x = torch.rand(2, 3, 40, 30)
    assert torch.equal(model(x), x)
    assert model.encode(x).shape == (2, 5)
    assert create_encoder(model.encoder) is model.encoder
