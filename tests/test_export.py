"""ONNX export of the refiner (optional ``export`` extra): dynamic sizes, same numbers."""

from __future__ import annotations

import pytest
import torch

from ptg_refine import PTGRefiner
from ptg_refine.errors import ConfigError
from ptg_refine.export import ONNX_INPUT_NAMES, export_onnx


def scrambled_refiner(**kw) -> PTGRefiner:
    torch.manual_seed(0)
    refiner = PTGRefiner(**kw)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in refiner.parameters():
            spread = max(float(p.std()) if p.numel() > 1 else 1.0, 0.1)
            p.add_(torch.randn(p.shape, generator=gen) * 0.2 * spread)
    return refiner.eval()


def test_export_argument_errors(tmp_path):
    refiner = PTGRefiner(embed_dim=8, width=4, num_blocks=1, prior_hidden=8)
    with pytest.raises(ConfigError, match="PTGRefiner"):
        export_onnx(torch.nn.Identity(), tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(refiner, tmp_path / "x.onnx", opset=13)
    with pytest.raises(ConfigError, match="example_size"):
        export_onnx(refiner, tmp_path / "x.onnx", example_size=(4, 64))


def test_onnx_matches_pytorch_with_dynamic_sizes(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    refiner = scrambled_refiner(embed_dim=16, width=8, num_blocks=1, prior_hidden=16)
    path = export_onnx(refiner, tmp_path / "refiner.onnx", example_size=32)
    assert path.is_file()
    assert refiner.training is False
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(ONNX_INPUT_NAMES)
    gen = torch.Generator().manual_seed(1)
    for b, h, w in [(1, 32, 32), (2, 37, 53), (1, 4, 5), (1, 130, 66)]:
        x, d = torch.rand(b, 3, h, w, generator=gen), torch.rand(b, 3, h, w, generator=gen)
        g = torch.randn(b, 16, generator=gen)
        with torch.no_grad():
            expected = refiner(x, d, g).numpy()
        feed = {"restored": x.numpy(), "degraded": d.numpy(), "features": g.numpy()}
        got = session.run(None, feed)[0]
        assert got.shape == (b, 3, h, w)
        assert abs(expected - x.numpy()).max() > 0.01  # the refiner changes the image
        assert abs(got - expected).max() < 1e-4, (b, h, w)
