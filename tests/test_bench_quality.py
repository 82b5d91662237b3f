"""Tests of the quality benchmark (``benchmarks/quality.py``) and its prior encoders.

The end-to-end test runs the quick path on a tiny budget for one task and checks the JSON schema;
it needs the shared evaluation data (never part of the repository) and skips where it is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bases.images import DEFAULT_DATA_DIR  # noqa: E402
from benchmarks.priors import MOBILENET_FILE, cached_encoder, zero_prior  # noqa: E402

DATA = Path(DEFAULT_DATA_DIR)


def _need_data() -> Path:
    if not (DATA / "CBSD68").is_dir() or not (DATA / "LOL-v1-eval15").is_dir():
        pytest.skip(f"evaluation data not found at {DATA}")
    return DATA


def test_zero_prior_stays_zero_after_normalization() -> None:
    enc = zero_prior(16)
    g = enc(torch.rand(3, 1, 20, 24))
    assert g.shape == (3, 16)
    assert torch.equal(g, torch.zeros(3, 16))


def test_cached_encoder_matches_inner_and_caches() -> None:
    from ptg_refine import create_encoder

    inner = create_encoder("stats")
    enc, cache = cached_encoder(inner)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(enc(x), inner(x), atol=1e-6)
    enc(x)
    assert (cache.misses, cache.hits) == (2, 2)


def test_share_global_gives_crops_the_whole_image_features() -> None:
    from ptg_refine import create_encoder

    inner = create_encoder("stats")
    enc, cache = cached_encoder(inner)
    img = torch.rand(3, 40, 48)
    crops = torch.stack([img[:, :16, :16], img[:, 20:36, 8:24]])
    cache.share_global(enc, img, crops)
    whole = enc(img[None])
    got = enc(crops)
    assert torch.allclose(got, whole.expand(2, -1))
    assert not torch.allclose(got[0], inner(crops[:1])[0], atol=1e-3)
    # a gray crop is looked up as the registry hands it over (expanded to 3 channels)
    g = torch.rand(1, 30, 30)
    cache.share_global(enc, g, g[None, :, :10, :10])
    assert torch.allclose(enc(g[None, :, :10, :10]), enc(g[None]))


def test_mobilenet_embedding_is_sensible() -> None:
    data = _need_data()
    if not (data / MOBILENET_FILE).exists():
        pytest.skip("MobileNet TFLite file not found")
    pytest.importorskip("ai_edge_litert")
    from benchmarks.quality import mobilenet_check

    check = mobilenet_check(data)
    assert check["sensible"], check


def test_quick_path_writes_schema(tmp_path: Path) -> None:
    data = _need_data()
    pytest.importorskip("matplotlib")  # the benchmark extra (grids and plots)
    from benchmarks.quality import main

    out = tmp_path / "q.json"
    argv = ["--data", str(data), "--quick", "--task", "lowlight", "--priors", "none,stats"]
    argv += ["--steps", "2", "--crops", "8", "--out", str(out), "--no-docs"]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "quick"
    assert {"budget", "machine", "split", "base_checks", "prior_checks", "summary"} <= set(res)
    assert len(res["split"]["cbsd68_train"]) == 48 and len(res["split"]["cbsd68_test"]) == 20
    task = res["tasks"]["lowlight"]
    base = task["bases"]["zerodce"]["lol_eval15"]
    assert {"psnr_base", "ssim_base", "psnr_input", "images"} <= set(base)
    assert {(r["prior"], r["seed"]) for r in task["runs"]} == {("none", 0), ("stats", 0)}
    for r in task["runs"]:
        t = r["tests"]["lol_eval15"]
        assert {"psnr_refined", "ssim_refined"} <= set(t)
        assert r["steps"] == 2
    rows = [r for r in res["summary"] if r["task"] == "lowlight"]
    assert {r["prior"] for r in rows} == {"none", "stats"}
    assert all("gain_psnr_mean" in r and "gain_psnr_std" in r for r in rows)
