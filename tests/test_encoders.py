"""Tests of ptg_refine.encoders (offline, CPU, random weights and the built-in 'stats')."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptg_refine.encoders import (
    Encoder,
    ModuleEncoder,
    StatsEncoder,
    create_encoder,
    encoder_dim,
    list_encoders,
    register_encoder,
)
from ptg_refine.encoders import registry as registry_mod
from ptg_refine.encoders.stats import (
    STATS_DIM,
    STATS_FEATURE_NAMES,
    estimate_noise_sigma,
    stats_features,
)
from ptg_refine.errors import (
    CheckpointError,
    DTypeError,
    EncoderError,
    EncoderWeightsUnavailableError,
    MissingDependencyError,
    ShapeError,
    UnknownEncoderError,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# one buildable-offline spec per registered name; a new registered encoder must be added here
SPECS = {
    "stats": "stats",
    "open_clip": "open_clip:ViT-B-32@random",
    "timm": "timm:test_vit@random",
    "student": "student:<a tiny distilled student saved by the test>",
}


def _spec(name: str) -> str:
    """The spec to build; the student's folder is written on first use."""
    if name == "student" and "<" in SPECS["student"]:
        import tempfile

        from ptg_refine.distill import StudentEncoder

        folder = tempfile.mkdtemp(prefix="ptg-student-")
        StudentEncoder(dim=8, input_size=32, widths=(8, 16), hidden=16).save_pretrained(folder)
        SPECS["student"] = f"student:{folder}"
    return SPECS[name]


@pytest.fixture(scope="module")
def built() -> dict[str, Encoder]:
    """Each spec built once for the whole module (the ViT-B/32 takes a couple of seconds)."""
    return {}


def get_encoder(built: dict[str, Encoder], name: str) -> Encoder:
    if name not in built:
        pytest.importorskip({"open_clip": "open_clip", "timm": "timm"}.get(name, "torch"))
        built[name] = create_encoder(_spec(name))
    return built[name]


@pytest.fixture(params=sorted(SPECS))
def encoder(request: pytest.FixtureRequest, built: dict[str, Encoder]) -> Encoder:
    return get_encoder(built, request.param)


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth colour image with edges and a little texture, (1, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.3 + 0.4 * xx, 0.25 + 0.5 * yy, 0.6 - 0.3 * xx * yy])[None]
    img[..., h // 5 : 3 * h // 5, w // 4 : 2 * w // 3] *= 0.5
    img[..., 5::7, :] += 0.08
    img = img + 0.04 * torch.sin(xx * 37.0 + yy * 11.0)[None, None]
    img = img + 0.01 * torch.rand(img.shape, generator=g)
    return img.clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    k = int(3 * sigma) * 2 + 1
    r = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (k // 2,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


# ------------------------------------------------------------------ registry
def test_every_registered_encoder_has_a_test_spec() -> None:
    assert list_encoders() == sorted(list_encoders())
    assert set(SPECS) == set(list_encoders())


def test_unknown_name_lists_registered_names() -> None:
    with pytest.raises(UnknownEncoderError) as info:
        create_encoder("clipp:ViT-B-32@openai")
    assert isinstance(info.value, KeyError)
    for name in list_encoders():
        assert name in str(info.value)
    with pytest.raises(UnknownEncoderError):
        encoder_dim("nope")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        ":ViT-B-32",
        "stats:",
        "sta ts",
        "stats:extra",
        "open_clip",
        "open_clip:",
        "open_clip:ViT-B-32",  # no weights tag: random init is never silent
        "open_clip:ViT-B-32@",
        "open_clip:@openai",
        "open_clip:ViT-B-32@not_a_tag",
        "open_clip:NoSuchModel-B-32@random",
        "timm",
        "timm:no_such_model_xyz@random",
        "timm:test_vit@not_a_file_or_random",
        "open_clip:ViT-B-32@/no/such/file.safetensors",
    ],
)
def test_malformed_specs_raise_encoder_error(spec: str) -> None:
    if spec.startswith("open_clip:") and len(spec) > len("open_clip:"):
        pytest.importorskip("open_clip")
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    with pytest.raises(EncoderError) as info:
        create_encoder(spec)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_malformed_spec_message_names_the_valid_names() -> None:
    with pytest.raises(EncoderError, match="stats") as info:
        create_encoder(":x")
    assert "open_clip" in str(info.value)


def test_open_clip_without_tag_explains_the_choices() -> None:
    with pytest.raises(EncoderError) as info:
        create_encoder("open_clip:ViT-B-32")
    msg = str(info.value)
    assert "@openai" in msg and "@random" in msg and "/path/to" in msg


def test_bad_spec_types_and_overrides() -> None:
    with pytest.raises(EncoderError):
        create_encoder(42)  # type: ignore[arg-type]
    with pytest.raises(EncoderError):
        create_encoder("stats", input_size=0)
    with pytest.raises(EncoderError):
        create_encoder("stats", std=(1.0, 0.0, 1.0))
    with pytest.raises(EncoderError):
        create_encoder("stats", mean=(0.1, 0.2))
    with pytest.raises(EncoderError):
        create_encoder("stats", dim=STATS_DIM + 1)


def test_duplicate_registration_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))
    with pytest.raises(EncoderError, match="already registered"):
        register_encoder("stats")(lambda arg, **kw: StatsEncoder(**kw))

    @register_encoder("test-custom")
    def _make(arg: str | None, **overrides: object) -> Encoder:
        return StatsEncoder(**overrides)  # type: ignore[arg-type]

    assert "test-custom" in list_encoders()
    enc = create_encoder("test-custom", input_size=32)
    assert enc.spec == "stats" and enc.input_size == 32
    with pytest.raises(EncoderError):
        register_encoder("test-custom")(_make)
    with pytest.raises(EncoderError):
        register_encoder("bad:name")
    monkeypatch.undo()
    assert "test-custom" not in list_encoders()


# ------------------------------------------------------------------ the Encoder contract
@pytest.mark.parametrize("shape", [(2, 3, 50, 70), (1, 1, 37, 53)])
def test_output_contract(encoder: Encoder, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    g = encoder(x)
    assert g.shape == (shape[0], encoder.dim)
    assert g.dtype == torch.float32
    assert not g.requires_grad
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.norm(dim=1), torch.ones(shape[0]), atol=1e-5, rtol=0)


def test_frozen_and_always_eval(encoder: Encoder) -> None:
    assert all(not p.requires_grad for p in encoder.parameters())
    assert not encoder.training
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    wrapper = nn.ModuleDict({"enc": encoder, "lin": nn.Linear(2, 2)})
    wrapper.train(True)
    assert not encoder.training and wrapper["lin"].training
    assert isinstance(encoder.spec, str)
    assert isinstance(encoder.mean, tuple) and len(encoder.mean) == 3
    assert isinstance(encoder.std, tuple) and len(encoder.std) == 3


def test_grayscale_equals_replicated_rgb(encoder: Encoder) -> None:
    gray = torch.rand(2, 1, 33, 41, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(encoder(gray), encoder(gray.expand(-1, 3, -1, -1)))


def test_inputs_are_clamped(built: dict[str, Encoder]) -> None:
    enc = get_encoder(built, "stats")
    x = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.3
    torch.testing.assert_close(enc(x), enc(x.clamp(0, 1)))


def test_bad_images_raise(built: dict[str, Encoder]) -> None:
    enc = get_encoder(built, "stats")
    with pytest.raises(ShapeError):
        enc(torch.rand(1, 2, 8, 8))
    with pytest.raises(ShapeError):
        enc(torch.rand(3, 8, 8))
    with pytest.raises(DTypeError):
        enc(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_preprocess_config_json_roundtrip(encoder: Encoder) -> None:
    cfg = json.loads(json.dumps(encoder.preprocess_config()))
    assert set(cfg) == {"input_size", "mean", "std", "dim"}
    assert cfg["dim"] == encoder.dim
    rebuilt = create_encoder(encoder.spec, **cfg)
    assert rebuilt.preprocess_config() == cfg
    x = torch.rand(2, 3, 45, 31, generator=torch.Generator().manual_seed(4))
    assert torch.equal(rebuilt(x), encoder(x))


def test_encoder_dim_matches(encoder: Encoder) -> None:
    assert encoder_dim(encoder.spec) == encoder.dim
    assert encoder_dim(encoder) == encoder.dim


def test_overrides_take_precedence() -> None:
    enc = create_encoder("stats", input_size=40, mean=0.5, std=(0.5, 0.5, 0.5))
    assert enc.input_size == 40 and enc.mean == (0.5,) * 3 and enc.std == (0.5,) * 3
    pytest.importorskip("timm")
    t = create_encoder("timm:test_vit@random", mean=(0.1, 0.2, 0.3))
    assert t.mean == (0.1, 0.2, 0.3) and t.input_size == 160 and t.std == (0.5, 0.5, 0.5)


def test_encoder_instance_is_returned_as_is(built: dict[str, Encoder]) -> None:
    enc = get_encoder(built, "stats")
    assert create_encoder(enc) is enc
    assert create_encoder(enc, **enc.preprocess_config()) is enc
    with pytest.raises(EncoderError, match="input_size"):
        create_encoder(enc, input_size=64)


def test_device_follows_module(built: dict[str, Encoder]) -> None:
    enc = create_encoder("stats", device="cpu")
    assert enc(torch.rand(1, 3, 9, 9)).device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        enc_cuda = create_encoder("stats", device="cuda")
        x = torch.rand(2, 3, 64, 64)
        assert enc_cuda(x.cuda()).device.type == "cuda"
        torch.testing.assert_close(enc_cuda(x.cuda()).cpu(), enc(x), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ stats
def test_stats_layout() -> None:
    assert len(STATS_FEATURE_NAMES) == STATS_DIM == len(set(STATS_FEATURE_NAMES))
    assert 64 <= STATS_DIM <= 128
    enc = create_encoder("stats")
    assert enc.dim == STATS_DIM and enc.input_size is None
    assert enc.mean == (0.0, 0.0, 0.0) and enc.std == (1.0, 1.0, 1.0)
    assert encoder_dim("stats") == STATS_DIM


def test_stats_batch_independent() -> None:
    enc = create_encoder("stats")
    a, b = _scene(seed=0), torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    both = enc(torch.cat([a, b, a * 0.2]))
    torch.testing.assert_close(both[0], enc(a)[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both[1], enc(b)[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both[2], enc(a * 0.2)[0], atol=1e-6, rtol=1e-5)


def test_stats_deterministic() -> None:
    x = _scene()
    assert torch.equal(create_encoder("stats")(x), create_encoder("stats")(x))


@pytest.mark.parametrize(
    "shape", [(1, 3, 1, 1), (2, 3, 1, 7), (1, 1, 2, 3), (1, 3, 5, 1), (1, 3, 15, 17)]
)
def test_stats_tiny_images(shape: tuple[int, ...]) -> None:
    g = create_encoder("stats")(torch.rand(shape, generator=torch.Generator().manual_seed(6)))
    assert g.shape == (shape[0], STATS_DIM) and torch.isfinite(g).all()


def test_stats_large_image_uses_crop() -> None:
    x = torch.rand(1, 3, 1100, 40, generator=torch.Generator().manual_seed(7))
    f = stats_features(x)
    assert f.shape == (1, STATS_DIM) and torch.isfinite(f).all()


def test_stats_features_bounded() -> None:
    x = torch.cat([_scene(), torch.zeros(1, 3, 96, 128), torch.ones(1, 3, 96, 128)])
    f = stats_features(x)
    assert torch.isfinite(f).all() and f.abs().max() <= 3.0


def test_stats_noise_estimate_tracks_sigma() -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    smooth = torch.stack([0.3 + 0.4 * xx, 0.25 + 0.5 * yy, 0.6 - 0.3 * xx * yy])[None]
    gen = torch.Generator().manual_seed(8)
    sigmas = [5, 10, 15, 25, 35, 50]
    noisy = torch.cat(
        [(smooth + torch.randn(smooth.shape, generator=gen) * s / 255).clamp(0, 1) for s in sigmas]
    )
    est = estimate_noise_sigma(noisy)
    for s, e in zip(sigmas, est.tolist()):
        assert abs(e - s / 255) < 0.15 * s / 255, (s, e * 255)
    assert estimate_noise_sigma(smooth).item() < 1 / 255
    entry = stats_features(noisy)[:, STATS_FEATURE_NAMES.index("log_noise_sigma")]
    assert (entry.diff() > 0).all()


def test_stats_distinguishes_degradations() -> None:
    enc = create_encoder("stats")
    clean = _scene()
    gen = torch.Generator().manual_seed(9)
    versions = {
        "clean": clean,
        "noisy": (clean + torch.randn(clean.shape, generator=gen) * 25 / 255).clamp(0, 1),
        "dark": clean * 0.15,
        "blurred": _blur(clean, 2.0),
        "hazy": clean * 0.5 + 0.45,
    }
    g = enc(torch.cat(list(versions.values())))
    cos = g @ g.T
    names = list(versions)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert cos[i, j] < 0.9, (names[i], names[j], cos[i, j].item())
    # the matching group moves in the expected direction
    f = stats_features(torch.cat(list(versions.values())))

    def col(name: str) -> torch.Tensor:
        return f[:, STATS_FEATURE_NAMES.index(name)]

    assert col("log_noise_sigma")[1] > col("log_noise_sigma")[0] + 1.0
    assert col("lum_mean")[2] < col("lum_mean")[0] - 1.0
    assert col("log_grad_energy_s0")[3] < col("log_grad_energy_s0")[0] - 0.5
    assert col("dark_mean")[4] > col("dark_mean")[0] + 1.0


def test_stats_resizes_when_input_size_set() -> None:
    enc = create_encoder("stats", input_size=32)
    a = enc(_scene(96, 128))
    b = enc(_scene(48, 64))
    assert a.shape == b.shape == (1, STATS_DIM)


# ------------------------------------------------------------------ ModuleEncoder
def test_module_encoder_wraps_sequential() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    enc = create_encoder(net, input_size=32)
    assert isinstance(enc, ModuleEncoder) and enc.spec is None
    assert enc.dim == 8 and enc.input_size == 32
    assert enc.mean == pytest.approx((0.485, 0.456, 0.406)) and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    g = enc(torch.rand(3, 1, 20, 50))
    assert g.shape == (3, 8) and g.dtype == torch.float32
    torch.testing.assert_close(g.norm(dim=1), torch.ones(3))
    enc.train()
    assert not net.training
    assert encoder_dim(net) == 8


def test_module_encoder_wraps_function() -> None:
    enc = create_encoder(lambda x: x.mean(dim=(2, 3)))
    assert enc.dim == 3 and enc.input_size == 224
    assert enc(torch.rand(2, 3, 10, 10)).shape == (2, 3)
    enc2 = create_encoder(lambda x: x.flatten(1)[:, :5], dim=5, input_size=8, mean=0.0, std=1.0)
    assert enc2.dim == 5 and enc2.preprocess_config()["mean"] == [0.0, 0.0, 0.0]
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(enc2(x), F.normalize(x.flatten(1)[:, :5]))


def test_module_encoder_errors() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(EncoderError, match="dim="):
        create_encoder(broken)
    enc = create_encoder(lambda x: x.mean(dim=(2, 3)), dim=4)  # wrong declared dim
    with pytest.raises(ShapeError, match="length 3"):
        enc(torch.rand(1, 3, 8, 8))


# ------------------------------------------------------------------ pretrained weights, offline
@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Make every Hub download fail fast, with an empty cache, whatever the machine."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))


def test_open_clip_pretrained_offline_raises_clear_error(offline_hub: None) -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(EncoderWeightsUnavailableError) as info:
        create_encoder("open_clip:ViT-B-32@openai")
    msg = str(info.value)
    assert "open_clip:ViT-B-32@/path/to/weights.bin" in msg
    assert "'stats'" in msg and "open_clip:ViT-B-32@random" in msg
    assert isinstance(info.value, RuntimeError)


def test_timm_pretrained_offline_raises_clear_error(offline_hub: None) -> None:
    pytest.importorskip("timm")
    with pytest.raises(EncoderWeightsUnavailableError) as info:
        create_encoder("timm:test_vit")
    msg = str(info.value)
    assert "timm:test_vit@/path/to/" in msg and "'stats'" in msg and "@random" in msg


def test_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(MissingDependencyError, match=r"ptg_refine\[clip\]"):
        create_encoder("open_clip:ViT-B-32@random")
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(MissingDependencyError, match=r"ptg_refine\[timm\]"):
        create_encoder("timm:test_vit@random")


# ------------------------------------------------------------------ local weight files
def test_open_clip_local_weights_roundtrip(built: dict[str, Encoder], tmp_path: object) -> None:
    from safetensors.torch import save_file

    ref = get_encoder(built, "open_clip")
    gen = torch.Generator().manual_seed(10)
    sd = {
        k: (v + 0.01 * torch.randn(v.shape, generator=gen)).contiguous()
        for k, v in ref.visual.state_dict().items()
    }
    full = {f"visual.{k}": v for k, v in sd.items()}
    full["logit_scale"] = torch.tensor(4.6)  # non-visual keys of a full CLIP checkpoint are ignored
    path = tmp_path / "clip.safetensors"  # type: ignore[operator]
    save_file(full, str(path))
    enc = create_encoder(f"open_clip:ViT-B-32@{path}")
    assert enc.spec == f"open_clip:ViT-B-32@{path}"
    loaded = enc.visual.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    x = torch.rand(1, 3, 64, 64, generator=gen)
    expected = torch.func.functional_call(ref.visual, sd, (ref.preprocess(x),))
    got = enc(x)
    torch.testing.assert_close(got, F.normalize(expected), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, ref(x))


def test_timm_local_weights_roundtrip(tmp_path: object) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = create_encoder("timm:test_vit@random")
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in src.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    path = tmp_path / "test_vit.safetensors"  # type: ignore[operator]
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    enc = create_encoder(f"timm:test_vit@{path}")
    x = torch.rand(2, 3, 40, 52, generator=gen)
    assert torch.equal(enc(x), src(x))
    assert not torch.allclose(enc(x), create_encoder("timm:test_vit@random")(x))

    # a torch-format checkpoint of a classifier (with head) loads too: the head is dropped
    torch.manual_seed(0)
    clf = timm.create_model("test_vit", pretrained=False, num_classes=7)
    pt = tmp_path / "clf.pt"  # type: ignore[operator]
    torch.save({"state_dict": clf.state_dict()}, str(pt))
    enc_pt = create_encoder(f"timm:test_vit@{pt}")
    assert enc_pt.dim == 64 and enc_pt(x).shape == (2, 64)

    wrong = tmp_path / "wrong.safetensors"  # type: ignore[operator]
    save_file({"foo": torch.zeros(2)}, str(wrong))
    with pytest.raises(CheckpointError, match="do not match this encoder"):
        create_encoder(f"timm:test_vit@{wrong}")
    junk = tmp_path / "junk.pt"  # type: ignore[operator]
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        create_encoder(f"timm:test_vit@{junk}")


# ------------------------------------------------------------------ no printing
def test_building_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    handlers = list(logging.getLogger().handlers)
    create_encoder("timm:test_vit@random")
    create_encoder("stats")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert logging.getLogger().handlers == handlers


def test_random_weights_are_reproducible() -> None:
    pytest.importorskip("timm")
    state = torch.random.get_rng_state()
    a = create_encoder("timm:test_vit@random")
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    b = create_encoder("timm:test_vit@random")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert math.isclose(float(a(x).norm()), 1.0, rel_tol=1e-5)


@pytest.mark.slow
def test_open_clip_local_weights_strict(built: dict[str, Encoder], tmp_path: object) -> None:
    from safetensors.torch import save_file

    ref = get_encoder(built, "open_clip")
    sd = {k: v.contiguous() for k, v in ref.visual.state_dict().items()}
    sd.pop(next(iter(sd)))
    path = tmp_path / "visual_only.safetensors"  # type: ignore[operator]
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match="missing"):
        create_encoder(f"open_clip:ViT-B-32@{path}")
