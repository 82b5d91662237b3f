"""Tests of the benchmark base networks (``benchmarks/bases``).

Tests marked by the ``evaldata`` fixture need the shared evaluation data (real weights and images,
never part of the repository) and skip with a message where it is absent; the others use random
weights or synthetic images and always run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bases import (  # noqa: E402
    BASES,
    SCI,
    DnCNN,
    EvalDataMissing,
    PReNet,
    WienerDeconv,
    ZeroDCE,
    blur,
    load_base,
)
from benchmarks.bases._metrics import load_metrics  # noqa: E402
from benchmarks.bases.images import (  # noqa: E402
    DEFAULT_DATA_DIR,
    list_images,
    read_image,
    read_pairs,
)

psnr, _ssim = load_metrics()

ODD = (37, 53)  # odd height and width


@pytest.fixture(scope="module")
def evaldata() -> Path:
    """The shared evaluation-data folder, or skip."""
    if not DEFAULT_DATA_DIR.is_dir():
        pytest.skip(
            f"shared evaluation data not found at {DEFAULT_DATA_DIR} (not part of the repository)"
        )
    return DEFAULT_DATA_DIR


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------- no data needed


@pytest.mark.parametrize(
    ("module", "channels"),
    [
        (DnCNN(), 1),
        (ZeroDCE(), 3),
        (SCI(), 3),
        (PReNet(), 3),
        (PReNet(lstm=False, recursive=True), 3),
        (WienerDeconv(np.ones((5, 3))), 3),
    ],
    ids=["dncnn", "zerodce", "sci", "prenet", "prn_r", "wiener"],
)
def test_random_init_shapes(module: torch.nn.Module, channels: int) -> None:
    x = torch.rand(2, channels, *ODD)
    with torch.no_grad():
        y = module.eval()(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_dncnn_gray_model_on_rgb_is_per_channel() -> None:
    net = DnCNN(depth=3).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        y = net(x)
        y1 = net(x[:, 1:2])
    torch.testing.assert_close(y[:, 1:2], y1)


def test_sci_state_dict_has_shared_block_under_both_names() -> None:
    keys = SCI().state_dict().keys()
    assert "enhance.conv.0.weight" in keys
    assert "enhance.blocks.0.0.weight" in keys


def test_wiener_inverts_circular_blur() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=gen)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # some smoothness
    k = np.zeros((7, 7))
    k[3, 1:6] = 1.0  # horizontal motion blur
    k[2, 4] = 0.5
    y = blur(x, k, mode="circular")
    deconv = WienerDeconv(k, nsr=1e-6, pad=0, pad_mode="circular", taper=False)
    assert psnr(deconv(y), x).item() > 45
    assert psnr(deconv(y), x).item() > psnr(y, x).item() + 10


def test_wiener_padding_handles_non_circular_blur() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 64, 64, generator=gen), 5, 1, 2)
    k = np.eye(9)
    y = blur(x, k, mode="reflect") + 0.002 * torch.randn(x.shape, generator=gen)
    padded = WienerDeconv(k, nsr=1e-3)(y)
    plain = WienerDeconv(k, nsr=1e-3, pad=0, pad_mode="circular", taper=False)(y)
    assert psnr(padded, x).item() > psnr(plain, x).item()
    assert psnr(padded, x).item() > psnr(y.clamp(0, 1), x).item()


def test_wiener_rejects_bad_kernel() -> None:
    with pytest.raises(ValueError):
        WienerDeconv(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        WienerDeconv(np.ones(3))


def test_load_base_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown base"):
        load_base("nope", tmp_path)
    with pytest.raises(EvalDataMissing, match="--data"):
        load_base("dncnn", tmp_path)


# ----------------------------------------------------------------- real weights and images


@pytest.mark.parametrize("name", sorted(BASES))
def test_real_weights_load_strictly_and_keep_shape(evaldata: Path, name: str) -> None:
    if name == "wiener":
        pytest.importorskip("h5py", reason="Levin09.mat is MATLAB v7.3 (HDF5): needs h5py")
    net = load_base(name, evaldata)  # loaders use strict=True
    c = 1 if name == "dncnn" else 3
    x = torch.rand(1, c, *ODD)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_dncnn_bsd68_sigma25(evaldata: Path) -> None:
    net = load_base("dncnn", evaldata)
    rng = np.random.RandomState(0)  # KAIR protocol: seed 0, one normal draw per image
    scores = []
    with torch.no_grad():
        for f in list_images(evaldata / "BSD68")[:3]:
            clean = read_image(f, "L")
            noisy = clean + torch.from_numpy(rng.normal(0, 25 / 255, clean.shape[-2:])).float()
            scores.append(psnr(net(noisy).clamp(0, 1), clean).item())
    assert np.mean(scores) > 28.0, scores


def test_zerodce_improves_lol(evaldata: Path) -> None:
    net = load_base("zerodce", evaldata)
    root = evaldata / "LOL-v1-eval15"
    with torch.no_grad():
        for _, low, high in read_pairs(root / "low", root / "high", limit=2):
            assert psnr(net(low), high).item() > psnr(low, high).item() + 3


def test_sci_improves_lol(evaldata: Path) -> None:
    net = load_base("sci", evaldata)
    root = evaldata / "LOL-v1-eval15"
    with torch.no_grad():
        for _, low, high in read_pairs(root / "low", root / "high", limit=2):
            assert psnr(net(low), high).item() > psnr(low, high).item() + 3


def test_prenet_improves_rain_crop(evaldata: Path) -> None:
    net = load_base("prenet", evaldata)
    root = evaldata / "Rain100L-partial-MFDNet"
    _, rainy, clean = read_pairs(root / "input", root / "target", limit=1)[0]
    h, w = rainy.shape[-2:]
    top, left = (h - 128) // 2, (w - 128) // 2
    rainy = rainy[..., top : top + 128, left : left + 128]
    clean = clean[..., top : top + 128, left : left + 128]
    with torch.no_grad():
        out = net(rainy)
    assert psnr(out, clean, y_channel=True).item() > psnr(rainy, clean, y_channel=True).item() + 1


def test_wiener_levin_improves_cbsd68_crop(evaldata: Path) -> None:
    pytest.importorskip("h5py", reason="Levin09.mat is MATLAB v7.3 (HDF5): needs h5py")
    from benchmarks.bases import load_levin_kernels

    kernels = load_levin_kernels(evaldata)
    assert len(kernels) == 8
    assert all(abs(k.sum() - 1) < 1e-9 and k.shape[0] == k.shape[1] for k in kernels)
    clean = read_image(list_images(evaldata / "CBSD68")[0])[..., :128, :160]
    gen = torch.Generator().manual_seed(0)
    deconv = WienerDeconv(kernels[0])
    y = blur(clean, kernels[0]) + 0.01 * torch.randn(clean.shape, generator=gen)
    assert psnr(deconv(y), clean).item() > psnr(y.clamp(0, 1), clean).item() + 1
