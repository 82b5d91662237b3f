"""ptg_refine.evaluate: per-image scores of input / base / refined, reports, grids, folders."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from ptg_refine import PTGRefiner, refine
from ptg_refine.errors import ConfigError, DataError
from ptg_refine.evaluate import EvalResult, evaluate, evaluate_folders
from ptg_refine.io import read_image, write_image
from ptg_refine.metrics import psnr, ssim
from ptg_refine.train import FeatureCache

pytestmark = pytest.mark.usefixtures("one_thread")


COLUMNS = ("psnr_input", "ssim_input", "psnr_base", "ssim_base", "psnr_refined", "ssim_refined")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8, num_blocks=1, prior_hidden=16)
    with torch.no_grad():  # a refiner that is not the identity
        refiner.head.weight.normal_(0, 0.05)
    base = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        base.weight.zero_()
        for c in range(3):
            base.weight[c, c] = 1 / 9
    return refine(base, refiner)


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(3)
    items = []
    for i, (h, w) in enumerate([(24, 30), (33, 21), (16, 16)]):  # full-size, different sizes
        gt = torch.rand(3, h, w, generator=g)
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        items.append({"lq": lq, "gt": gt, "name": f"img/{i}"})
    return items


def _expected(model, item, **kw):
    with torch.no_grad():
        out = model.forward_all(item["lq"][None])
    t = item["gt"][None]
    imgs = {"input": item["lq"][None], "base": out.restored, "refined": out.refined}
    row = {}
    for label, x in imgs.items():
        x = x.clamp(0, 1)
        row[f"psnr_{label}"] = float(psnr(x, t, **kw)[0])
        row[f"ssim_{label}"] = float(ssim(x, t, **kw)[0])
    return row


def test_scores_match_metrics(model, pairs):
    result = evaluate(model, pairs, y_channel=True, crop_border=2)
    assert isinstance(result, EvalResult) and len(result) == 3
    assert result.columns == COLUMNS
    for item, row in zip(pairs, result.rows):
        assert row["name"] == item["name"]
        assert (row["height"], row["width"]) == tuple(item["gt"].shape[-2:])
        expected = _expected(model, item, y_channel=True, crop_border=2)
        assert {c: row[c] for c in COLUMNS} == pytest.approx(expected, abs=1e-9)
    for c in COLUMNS:
        assert result.means[c] == pytest.approx(sum(r[c] for r in result.rows) / 3)
    assert result.settings == {"y_channel": True, "crop_border": 2, "quantize": False}
    assert result.files == {}
    assert result.means["psnr_refined"] != result.means["psnr_base"]


def test_identity_refiner_scores_like_base(pairs):
    refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8, num_blocks=1, prior_hidden=16)
    result = evaluate(refine(nn.Identity(), refiner), pairs, quantize=True)
    for row in result.rows:
        assert row["psnr_refined"] == row["psnr_base"] == row["psnr_input"]


def test_reports_and_grids(model, pairs, tmp_path):
    model.train()
    result = evaluate(model, pairs, out_dir=tmp_path, save_grids=True, max_grids=2)
    assert model.training  # mode restored
    assert result.files["csv"] == tmp_path / "metrics.csv"
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "height", "width", *COLUMNS]
    assert [r[0] for r in rows[1:]] == ["img/0", "img/1", "img/2", "mean"]
    assert float(rows[-1][3 + COLUMNS.index("psnr_refined")]) == pytest.approx(
        result.means["psnr_refined"], abs=1e-5
    )
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["count"] == 3 and report["means"] == pytest.approx(result.means)
    assert report["settings"]["crop_border"] == 0 and len(report["images"]) == 3

    grids = sorted((tmp_path / "grids").iterdir())
    assert len(grids) == 2 and grids == sorted(result.files["grids"])
    first = result.rows[0]
    assert grids[0].name == (
        f"0000_img_0_base{first['psnr_base']:.2f}_ref{first['psnr_refined']:.2f}.png"
    )
    grid = read_image(grids[0])
    assert grid.shape == (3, 24, 4 * 30 + 3 * 4)  # degraded | base | refined | gt, 4-px gaps
    gt_panel = grid[:, :, -30:]
    assert torch.allclose(gt_panel, pairs[0]["gt"], atol=1 / 255)
    assert not list(tmp_path.glob(".*tmp*"))
    summary = json.loads(json.dumps(result.summary()))
    assert summary["count"] == 3 and summary["files"]["csv"] == str(tmp_path / "metrics.csv")
    assert summary["means"] == pytest.approx(result.means)


def test_features_options(model, pairs):
    plain = evaluate(model, pairs)
    cache = FeatureCache()
    cached = evaluate(model, pairs, features=cache)
    again = evaluate(model, pairs, features=cache)
    assert cache.misses == 3 and cache.hits == 3
    stacked = torch.cat([model.encode(p["lq"][None]) for p in pairs])
    by_tensor = evaluate(model, pairs, features=stacked)
    by_name = evaluate(model, pairs, features={p["name"]: f for p, f in zip(pairs, stacked)})
    for r in (cached, again, by_tensor, by_name):
        assert r.rows == plain.rows
    with pytest.raises(ConfigError):
        evaluate(model, pairs, features="clip")


def test_tuples_and_errors(model, pairs):
    result = evaluate(model, [(p["lq"], p["gt"]) for p in pairs[:1]])
    assert result.rows[0]["name"] == "000000"
    with pytest.raises(DataError, match="ground truth"):
        evaluate(model, [{"lq": pairs[0]["lq"], "name": "x"}])
    with pytest.raises(DataError):
        evaluate(model, [{"lq": pairs[0]["lq"], "gt": pairs[1]["gt"]}])
    with pytest.raises(DataError):
        evaluate(model, [])
    with pytest.raises(ConfigError, match="RefinedModel"):
        evaluate(nn.Identity(), pairs)
    with pytest.raises(ConfigError):
        evaluate(model, pairs, crop_border=-1)


def test_evaluate_folders(tmp_path):
    g = torch.Generator().manual_seed(1)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    images = {}
    for name in ("b", "a"):
        gt = torch.rand(3, 20, 24, generator=g)
        pred = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        write_image(pred_dir / f"{name}.png", pred)
        write_image(gt_dir / f"{name}.bmp", gt)
        images[name] = (read_image(pred_dir / f"{name}.png"), read_image(gt_dir / f"{name}.bmp"))
    write_image(gt_dir / "unused.png", torch.rand(3, 20, 24))

    result = evaluate_folders(pred_dir, gt_dir, y_channel=True, out_dir=tmp_path / "report")
    assert [r["name"] for r in result.rows] == ["a", "b"] and result.columns == ("psnr", "ssim")
    for row in result.rows:
        p, t = images[row["name"]]
        assert row["psnr"] == pytest.approx(float(psnr(p[None], t[None], y_channel=True)[0]))
        assert row["ssim"] == pytest.approx(float(ssim(p[None], t[None], y_channel=True)[0]))
    assert result.means["psnr"] == pytest.approx(
        (result.rows[0]["psnr"] + result.rows[1]["psnr"]) / 2
    )
    assert (tmp_path / "report" / "metrics.csv").is_file()
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["count"] == 2

    write_image(pred_dir / "c.png", torch.rand(3, 20, 24))
    with pytest.raises(DataError, match="no ground truth.*c"):
        evaluate_folders(pred_dir, gt_dir)
    write_image(gt_dir / "c.png", torch.rand(3, 20, 20))
    with pytest.raises(DataError, match="same size"):
        evaluate_folders(pred_dir, gt_dir)
