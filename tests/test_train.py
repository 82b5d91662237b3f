"""ptg_refine.train: losses, the fit loop (Eq. 8), checkpoints and resume, logs, the OSF cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ptg_refine import PTGRefiner, refine
from ptg_refine.errors import CheckpointError, ConfigError, DataError, ShapeError
from ptg_refine.metrics import psnr
from ptg_refine.train import FeatureCache, FitResult, fit, get_loss, list_losses
from ptg_refine.train.losses import charbonnier, l1, mse, zero_dce

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ data


def _clean_images(n: int = 4, size: int = 32) -> list[torch.Tensor]:
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255
    img = nn.functional.interpolate(img[None], size=(4 * size, 4 * size), mode="area")[0]
    return [img[:, i * size : (i + 1) * size, i * size : (i + 1) * size] for i in range(n)]


class PairSet(torch.utils.data.Dataset):
    """Fixed noisy / clean pairs; records set_epoch calls."""

    def __init__(self, n: int = 8, size: int = 16, *, gt: bool = True, sigma: float = 0.1) -> None:
        g = torch.Generator().manual_seed(123)
        self.gt = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.2
        self.lq = (self.gt + sigma * torch.randn(self.gt.shape, generator=g)).clamp(0, 1)
        self.with_gt = gt
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.gt)

    def __getitem__(self, i: int) -> dict:
        item = {"lq": self.lq[i], "name": f"im{i}"}
        if self.with_gt:
            item["gt"] = self.gt[i]
        return item

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def _blur_base() -> nn.Module:
    """A 3x3 box blur: a plausible, imperfect denoiser."""
    conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = 1 / 9
    return conv


def _model(*, joint: bool = False, base: nn.Module | None = None, seed: int = 0):
    torch.manual_seed(seed)
    if base is None:
        base = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )
    refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8, num_blocks=1, prior_hidden=16)
    return refine(base, refiner, freeze_base=not joint)


FAST = {"batch_size": 4, "lr": 1e-3, "progress": False, "log_every": 2}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ losses


def test_supervised_losses():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.5
    assert float(l1(y, x)) == pytest.approx(0.5)
    assert float(mse(y, x, None)) == pytest.approx(0.25)
    assert float(charbonnier(x, x, eps=1e-3)) == pytest.approx(1e-3)
    assert float(charbonnier(y, x, x)) == pytest.approx((0.25 + 1e-6) ** 0.5)
    assert get_loss("L2") is mse and get_loss("Charbonnier") is charbonnier
    fn = lambda p, t, d: (p - t).abs().mean()  # noqa: E731
    assert get_loss(fn) is fn
    with pytest.raises(ConfigError, match="charbonnier.*l1.*mse") as err:
        get_loss("perceptual")
    assert "zero_dce" in str(err.value)
    with pytest.raises(ConfigError, match="ground truth"):
        charbonnier(y, None, x)
    with pytest.raises(ShapeError):
        l1(y, x[:, :1])
    assert {"charbonnier", "l1", "mse", "zero_dce"} <= set(list_losses())


def test_zero_dce_loss_terms():
    dark = torch.full((2, 3, 32, 32), 0.1)
    well = torch.full((2, 3, 32, 32), 0.6)
    # flat, well exposed, gray-world output of a flat input: every term is 0
    assert float(zero_dce(well, None, dark)) == pytest.approx(0.0, abs=1e-6)
    # exposure term: |0.1 - 0.6|
    assert float(zero_dce(dark, None, dark)) == pytest.approx(0.5, abs=1e-6)
    # colour constancy: channel means 0.6, 0.6, 0.3 -> 2 * 0.3**2 weighted by 0.5
    cast = well.clone()
    cast[:, 2] = 0.3
    expected_exp = abs(cast.mean(1).mean().item() - 0.6)
    assert float(zero_dce(cast, None, dark)) == pytest.approx(expected_exp + 0.5 * 0.18, abs=1e-5)
    # spatial consistency: a contrast the input does not have costs
    edged = well.clone()
    edged[..., :, 16:] = 0.7
    no_spa = float(zero_dce(edged, None, dark, spa_weight=0.0))
    assert float(zero_dce(edged, None, dark)) > no_spa
    # gray images, TV term, gradients
    gray = torch.rand(1, 1, 20, 20, requires_grad=True)
    value = zero_dce(gray, None, torch.rand(1, 1, 20, 20), tv_weight=1.0)
    value.backward()
    assert gray.grad is not None and torch.isfinite(gray.grad).all()
    with pytest.raises(ConfigError, match="degraded"):
        zero_dce(well, well, None)


# ------------------------------------------------------------------------------------------ fit


def test_frozen_base_training_improves_over_base(tmp_path):
    from ptg_refine.evaluate import evaluate
    from ptg_refine.train import SyntheticPairs

    data = SyntheticPairs(_clean_images(), "denoise", crop=32, sigma=25, length=16, fixed=True)
    base = _blur_base()
    base_before = {k: v.clone() for k, v in base.state_dict().items()}
    model = _model(base=base)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.eval()
    result = fit(model, data, steps=40, batch_size=4, lr=2e-3, log_every=5, progress=False)

    assert isinstance(result, FitResult) and result.steps == 40 and result.completed
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["psnr"] > result.history[-1]["base_psnr"]
    scores = evaluate(model, data)
    assert scores.means["psnr_refined"] > scores.means["psnr_base"] + 0.5
    # the frozen base got no gradient and did not change; the encoder did not change
    assert all(p.grad is None and not p.requires_grad for p in base.parameters())
    assert all(torch.equal(base_before[k], v) for k, v in base.state_dict().items())
    assert all(torch.equal(encoder_before[k], v) for k, v in model.encoder.state_dict().items())
    assert result.out_dir is None and result.checkpoint_path is None
    assert not model.training  # fit restores the mode the model had


def test_joint_training_changes_base_and_saves_it(tmp_path):
    model = _model(joint=True)
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    result = fit(model, PairSet(), steps=6, out_dir=tmp_path, **FAST)
    assert any(not torch.equal(base_before[k], v) for k, v in model.base.state_dict().items())
    assert result.base_path == tmp_path / "base.safetensors" and result.base_path.is_file()
    from safetensors.torch import load_file

    saved = load_file(result.base_path)
    assert all(torch.equal(saved[k], v) for k, v in model.base.state_dict().items())
    loaded = PTGRefiner.from_pretrained(result.refiner_dir)
    assert _same_weights(loaded, model.refiner)


def test_joint_settings():
    with pytest.raises(ConfigError, match="freeze_base=False"):
        fit(_model(), PairSet(), steps=1, joint=True, **FAST)
    # joint=False with a trainable base: only the refiner trains, the base's flags come back
    model = _model(joint=True)
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    fit(model, PairSet(), steps=2, joint=False, **FAST)
    assert all(torch.equal(base_before[k], v) for k, v in model.base.state_dict().items())
    assert not model.freeze_base and all(p.requires_grad for p in model.base.parameters())


def test_unsupervised_loss_without_ground_truth():
    data = PairSet(gt=False)
    result = fit(_model(), data, steps=4, loss="zero_dce", **FAST)
    assert result.steps == 4 and result.final_loss is not None
    assert result.history[-1]["psnr"] is None
    seen = []

    def my_loss(pred, target, degraded):
        seen.append(target)
        return (pred - 0.5).abs().mean()

    fit(_model(), data, steps=1, loss=my_loss, **FAST)
    assert seen == [None]
    with pytest.raises(ConfigError, match="ground truth"):
        fit(_model(), data, steps=1, loss="l1", **FAST)


def test_bf16_autocast_runs():
    result = fit(_model(joint=True), PairSet(), steps=2, amp="bf16", optimizer="adamw", **FAST)
    assert result.steps == 2 and result.final_loss is not None


def test_epochs_permutations_and_set_epoch():
    data = PairSet(n=8)
    fit(_model(), data, steps=9, batch_size=4, progress=False)  # 2 batches per epoch
    assert data.epochs == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"steps": 0}, ConfigError),
        ({"batch_size": 100}, DataError),
        ({"optimizer": "sgd"}, ConfigError),
        ({"amp": "int8"}, ConfigError),
        ({"min_lr": 1.0}, ConfigError),
        ({"loss": "nope"}, ConfigError),
        ({"resume": True}, ConfigError),  # no out_dir
    ],
)
def test_invalid_settings(kwargs, error):
    with pytest.raises(error):
        fit(_model(), PairSet(), **{**FAST, "steps": 2, **kwargs})
    with pytest.raises(ConfigError, match="RefinedModel"):
        fit(nn.Identity(), PairSet())


# ------------------------------------------------------------------------------------------ resume


def test_resume_in_parts_equals_uninterrupted(tmp_path):
    kw = {**FAST, "steps": 10, "checkpoint_every": 3, "optimizer": "adamw", "weight_decay": 0.01}
    full = _model(joint=True)
    fit(full, PairSet(), out_dir=tmp_path / "a", **kw)

    parts = _model(joint=True)
    first = fit(parts, PairSet(), out_dir=tmp_path / "b", max_steps_this_call=5, **kw)
    assert not first.completed and first.steps == 5 and first.refiner_dir is None
    resumed = _model(joint=True, seed=99)  # other initial weights: all come from the checkpoint
    second = fit(resumed, PairSet(), out_dir=tmp_path / "b", resume=True, **kw)
    assert second.resumed_from == 5 and second.steps == 10 and second.completed
    assert _same_weights(resumed.refiner, full.refiner)
    assert _same_weights(resumed.base, full.base)
    # the log has every logged step exactly once, with the losses of the uninterrupted run
    log_a = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").open()]
    log_b = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").open()]
    assert [r["step"] for r in log_b] == [2, 4, 6, 8, 10]
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]
    assert [h["step"] for h in second.history] == [r["step"] for r in log_b]


def test_resume_with_random_synthetic_crops_equals_uninterrupted(tmp_path):
    """Non-fixed SyntheticPairs (new random crops and noise every epoch) resume exactly too."""
    from ptg_refine.train import SyntheticPairs

    def data():
        return SyntheticPairs(_clean_images(2, 24), "denoise", crop=16, sigma=25, seed=3, length=6)

    kw = {**FAST, "steps": 8, "checkpoint_every": 3}
    full = _model()
    fit(full, data(), out_dir=tmp_path / "a", **kw)
    parts = _model()
    fit(parts, data(), out_dir=tmp_path / "b", max_steps_this_call=3, **kw)
    resumed = _model()  # the same frozen base (frozen weights are the user's, not checkpointed)
    with torch.no_grad():
        for p in resumed.refiner.parameters():
            p.add_(1.0)  # the refiner's weights must all come from the checkpoint
    fit(resumed, data(), out_dir=tmp_path / "b", resume=True, **kw)
    assert _same_weights(resumed.refiner, full.refiner)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from ptg_refine import PTGRefiner, refine
    from ptg_refine.train import fit

    out, mode = sys.argv[1], sys.argv[2]
    g = torch.Generator().manual_seed(5)
    gt = torch.rand(8, 3, 16, 16, generator=g)
    data = [{"lq": (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1), "gt": x} for x in gt]

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    torch.manual_seed(0)
    base = nn.Conv2d(3, 3, 3, padding=1)
    refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8, num_blocks=1, prior_hidden=16)
    model = refine(base, refiner)
    slow = (lambda info: time.sleep(0.3)) if mode == "slow" else None
    fit(model, Data(), steps=12, batch_size=4, lr=1e-3, checkpoint_every=3, log_every=1,
        out_dir=out, resume=mode != "fresh", progress=False, callback=slow)
    """
)


def _run(script: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, **kwargs)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train.py"
    script.write_text(_KILL_SCRIPT)
    reference = _run(script, str(tmp_path / "ref"), "fresh")
    victim = _run(script, str(tmp_path / "run"), "slow")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "the training subprocess wrote no checkpoint"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 3 <= killed_at < 12
    assert reference.wait(timeout=180) == 0
    assert _run(script, str(tmp_path / "run"), "resume").wait(timeout=180) == 0

    a = load_file(tmp_path / "ref" / "refiner" / "model.safetensors")
    b = load_file(tmp_path / "run" / "refiner" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").open()]
    assert steps == list(range(1, 13))
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def flaky_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint dies half-way through writing
            Path(f).write_bytes(b"PK\x03\x04 partial")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), PairSet(), steps=6, checkpoint_every=2, out_dir=tmp_path, **FAST)
    monkeypatch.setattr(torch, "save", real_save)
    assert all(Path(f).parent == tmp_path and Path(f).name != "checkpoint.pt" for f in calls)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # the first one, intact
    assert state["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.jsonl"]


def test_checkpoint_contents_load_weights_only(tmp_path):
    fit(_model(), PairSet(), steps=2, out_dir=tmp_path, amp="bf16", **FAST)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["epoch"] == 1 and state["position_in_epoch"] == 0
    assert state["base"] is None  # frozen base: not stored
    assert {"refiner", "optimizer", "scheduler", "rng", "settings"} <= set(state)
    assert set(state["rng"][0]) == {"torch", "numpy", "python", "cuda"}
    assert state["settings"]["lr"] == FAST["lr"] and state["settings"]["amp"] == "bf16"


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="[Dd]elete it"):
        fit(_model(), PairSet(), steps=2, out_dir=tmp_path, resume=True, **FAST)
    with pytest.raises(CheckpointError, match="does not exist"):
        fit(_model(), PairSet(), steps=2, resume=tmp_path / "missing.pt", **FAST)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ptg_refine training checkpoint"):
        fit(_model(), PairSet(), steps=2, resume=tmp_path / "other.pt", **FAST)


def test_resume_with_other_settings_fails(tmp_path):
    fit(_model(), PairSet(), steps=4, out_dir=tmp_path, max_steps_this_call=2, **FAST)
    with pytest.raises(ConfigError, match=r"lr: checkpoint 0\.001, now 0\.002"):
        fit(_model(), PairSet(), steps=4, out_dir=tmp_path, resume=True, **{**FAST, "lr": 2e-3})
    with pytest.raises(ConfigError, match="batch_size"):
        fit(
            _model(), PairSet(), steps=4, out_dir=tmp_path, resume=True, **{**FAST, "batch_size": 2}
        )
    # another base network (other weights, same architecture) is refused too
    other = _model()
    with torch.no_grad():
        other.base[0].weight.add_(0.01)
    with pytest.raises(ConfigError, match="base network: its weights differ"):
        fit(other, PairSet(), steps=4, out_dir=tmp_path, resume=True, **FAST)
    # resume=True without a checkpoint starts fresh
    result = fit(_model(), PairSet(), steps=2, out_dir=tmp_path / "new", resume=True, **FAST)
    assert result.resumed_from is None and result.completed


def test_log_jsonl_and_outputs(tmp_path, capsys):
    val = PairSet(n=2, size=24)
    model = _model()
    result = fit(model, PairSet(), val, steps=6, val_every=3, out_dir=tmp_path, **FAST)
    assert capsys.readouterr().out == ""  # the library never prints
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").open()]
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for r in records:
        assert {"step", "epoch", "loss", "psnr", "base_psnr", "lr", "steps_per_s"} <= set(r)
        assert r["loss"] > 0 and r["steps_per_s"] > 0 and r["lr"] <= FAST["lr"]
    assert [r["step"] for r in records if "val" in r] == [3, 6]
    assert set(records[-1]["val"]) >= {"psnr_refined", "ssim_refined", "psnr_base", "psnr_input"}
    assert result.val_metrics == pytest.approx(records[-1]["val"])
    assert records == result.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.jsonl", "refiner"]
    loaded = PTGRefiner.from_pretrained(result.refiner_dir)
    assert loaded.config == model.refiner.config and _same_weights(loaded, model.refiner)


# ------------------------------------------------------------------------------------------ cache


def test_feature_cache_unit():
    calls = []

    def encoder(x):
        calls.append(x.shape[0])
        return x.mean(dim=(2, 3))

    cache = FeatureCache(max_entries=3)
    x = torch.rand(2, 3, 8, 8)
    a = cache.features(encoder, x, ["a", "b"])
    b = cache.features(encoder, x, ["a", "b"])
    assert calls == [2] and (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(a, b) and torch.equal(a, encoder(x))
    # content hashing: equal tensors share an entry, different tensors do not
    c = cache.features(encoder, x.clone())
    assert (cache.hits, cache.misses) == (2, 4)
    cache.features(encoder, x.clone())
    assert cache.hits == 4
    assert len(cache) == 3 and cache.evictions == 1  # bounded, least recently used dropped
    assert torch.equal(c, a)
    assert cache.stats()["hit_rate"] == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        FeatureCache(max_entries=0)


def test_cache_gives_the_same_training_as_no_cache():
    with_cache, without = _model(), _model()
    r1 = fit(with_cache, PairSet(), steps=8, cache_features=True, **FAST)
    r2 = fit(without, PairSet(), steps=8, cache_features=False, **FAST)
    assert r1.cache_stats["misses"] == 8 and r1.cache_stats["hits"] == 24
    assert r2.cache_stats is None
    assert _same_weights(with_cache.refiner, without.refiner)


def test_cache_uses_item_keys():
    class Keyed(PairSet):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "key": ("crop", i % 2)}

    result = fit(_model(), Keyed(), steps=2, **FAST)
    assert result.cache_stats["entries"] == 2 and result.cache_stats["hits"] == 6


def test_batch_psnr_in_log_matches_metric():
    model = _model()
    data = PairSet(n=4)
    result = fit(
        model, data, steps=1, lr=1e-12, min_lr=0.0, batch_size=4, progress=False, log_every=1
    )
    # lr ~ 0: the refiner is still the identity, so the batch PSNR is the base output's
    with torch.no_grad():
        out = model.base(data.lq).clamp(0, 1)
    assert result.history[0]["psnr"] == pytest.approx(float(psnr(out, data.gt).mean()), abs=1e-4)


# ------------------------------------------------------------------------------------- keep_best
class _Misleading(PairSet):
    """Training targets that pull away from the truth: the negative of the clean image."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["gt"] = 1 - item["gt"]
        return item


def test_keep_best_needs_validation_data():
    with pytest.raises(ConfigError, match="keep_best=True .* needs val_data"):
        fit(_model(), PairSet(), steps=2, keep_best=True, **FAST)


def test_keep_best_falls_back_to_the_untrained_refiner_when_training_hurts(tmp_path):
    model = _model(base=_blur_base())
    val = [(PairSet().lq[i], PairSet().gt[i], f"v{i}") for i in range(3)]
    x = PairSet().lq[:2]
    with torch.no_grad():
        before = model(x)
    result = fit(
        model, _Misleading(), val, steps=8, val_every=4, keep_best=True, out_dir=tmp_path,
        **{**FAST, "lr": 5e-3},
    )  # fmt: skip
    assert result.best_step == 0
    scores = [r["val"]["psnr_refined"] for r in result.history if "val" in r]
    assert scores and max(scores) < result.best_val_psnr  # training made validation worse
    with torch.no_grad():
        assert torch.equal(model(x), before)  # the untrained refiner (the identity) was kept
    saved = PTGRefiner.from_pretrained(result.refiner_dir)
    assert _same_weights(saved, model.refiner)


def test_keep_best_keeps_the_best_validated_step_and_survives_resume(tmp_path):
    from ptg_refine.train import SyntheticPairs

    def run(out, **kw):
        data = SyntheticPairs(_clean_images(), "denoise", crop=32, sigma=25, length=16, fixed=True)
        val = SyntheticPairs(_clean_images(2), "denoise", crop=32, sigma=25, length=2, fixed=True)
        model = _model(base=_blur_base())
        result = fit(
            model, data, val, steps=12, val_every=4, keep_best=True, out_dir=out,
            checkpoint_every=4, **{**FAST, "lr": 2e-3}, **kw,
        )  # fmt: skip
        return model, result

    full_model, full = run(tmp_path / "a")
    scores = {0: None, **{r["step"]: r["val"]["psnr_refined"] for r in full.history if "val" in r}}
    assert full.best_step in scores and full.best_step > 0
    assert full.best_val_psnr == max(v for v in scores.values() if v is not None)
    # interrupted after 6 steps, then resumed: the same weights are kept
    run(tmp_path / "b", max_steps_this_call=6)
    part_model, part = run(tmp_path / "b", resume=True)
    assert part.best_step == full.best_step and part.best_val_psnr == full.best_val_psnr
    assert _same_weights(part_model.refiner, full_model.refiner)
