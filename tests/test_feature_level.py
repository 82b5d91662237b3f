"""Feature-level refinement: ``refine(model, refiner, at="<module name>")`` (the paper's "-f")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptg_refine import PTGRefiner, refine
from ptg_refine.errors import ConfigError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")


class UnderExposer(nn.Module):
    """A tiny 'restoration network' that returns 0.7 x its input: copy to 8 channels, average."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 8, 1, bias=False)
        self.act = nn.Identity()
        self.tail = nn.Conv2d(8, 1, 1, bias=False)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.tail.weight.fill_(0.7 / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.act(self.head(x)))


class Pairs(torch.utils.data.Dataset):
    """Random smooth gray images; the target is the input (the base under-exposes it)."""

    def __init__(self, n: int = 16, size: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        small = torch.rand(n, 1, size // 4, size // 4, generator=g)
        self.images = nn.functional.interpolate(small, size=(size, size), mode="bilinear")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"lq": self.images[i], "gt": self.images[i], "name": f"im{i}"}


def _refiner(channels: int = 8) -> PTGRefiner:
    torch.manual_seed(0)
    return PTGRefiner(encoder="stats", in_channels=channels, width=8, num_blocks=1)


def test_untrained_feature_refiner_is_the_identity():
    base = UnderExposer()
    model = refine(base, _refiner(), at="head")
    x = torch.rand(2, 1, 19, 23)
    with torch.no_grad():
        out = model.forward_all(x)
        assert torch.equal(model(x), base(x))
    assert torch.equal(out.refined, base(x)) and torch.equal(out.restored, base(x))
    assert out.features.shape == (2, model.refiner.embed_dim)
    # no hook is left behind on the base network
    assert not base.head._forward_hooks


def test_feature_refinement_trains_with_fit_and_beats_the_base(tmp_path):
    from ptg_refine.evaluate import evaluate
    from ptg_refine.train import fit

    base = UnderExposer()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = refine(base, _refiner(), at="act")
    result = fit(
        model, Pairs(), steps=60, batch_size=4, lr=3e-3, log_every=10, progress=False,
        out_dir=tmp_path, checkpoint_every=30,
    )  # fmt: skip
    assert result.completed
    scores = evaluate(model, [(im, im, f"{i}") for i, im in enumerate(Pairs(4, 32).images)])
    assert scores.means["psnr_refined"] > scores.means["psnr_base"] + 3.0
    # the frozen base did not change; the saved refiner reloads and refines the same way
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    loaded = PTGRefiner.from_pretrained(result.refiner_dir)
    assert loaded.in_channels == 8
    x = Pairs(2, 16).images
    again = refine(UnderExposer(), loaded, at="act")
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-6)


def test_wrong_module_name_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        refine(UnderExposer(), _refiner(), at="haed")
    msg = str(err.value)
    assert "'haed'" in msg and "head, act, tail" in msg and "Did you mean 'head'" in msg
    with pytest.raises(ConfigError, match="no submodules"):
        refine(nn.Identity(), _refiner(), at="x")


def test_channel_mismatch_and_non_feature_outputs_fail_clearly():
    model = refine(UnderExposer(), _refiner(channels=4), at="head")
    with pytest.raises(ShapeError, match=r"outputs 8 channels .* in_channels=4.*in_channels=8"):
        model(torch.rand(1, 1, 16, 16))

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.Flatten()

        def forward(self, x):
            return x + 0 * self.pool(x).sum()

    with pytest.raises(ShapeError, match="not a float feature map"):
        refine(Pooled(), _refiner(), at="pool")(torch.rand(1, 3, 8, 8))


def test_module_that_runs_twice_or_never_is_refused():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.unused = nn.Conv2d(8, 8, 1)
            self.inp = nn.Conv2d(1, 8, 1)
            self.out = nn.Conv2d(8, 1, 1)

        def forward(self, x):
            return self.out(self.conv(self.conv(self.inp(x))))

    x = torch.rand(1, 1, 12, 12)
    with pytest.raises(ConfigError, match="more than once"):
        refine(Twice(), _refiner(), at="conv")(x)
    with pytest.raises(ConfigError, match="did not run"):
        refine(Twice(), _refiner(), at="unused")(x)


def test_tiling_is_refused_with_feature_level_refinement():
    with pytest.raises(ConfigError, match="not available with feature-level"):
        refine(UnderExposer(), _refiner(), at="head", tile=64)


def test_in_channels_accepts_feature_widths_but_not_nonsense():
    assert PTGRefiner(in_channels=64, embed_dim=8).in_channels == 64
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="in_channels"):
            PTGRefiner(in_channels=bad, embed_dim=8)
