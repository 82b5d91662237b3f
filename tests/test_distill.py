"""Prior distillation: StudentEncoder, its Hub I/O and registry entry, distill_encoder, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptg_refine import PTGRefiner, refine
from ptg_refine.distill import StudentEncoder, distill_encoder, feature_cosine
from ptg_refine.encoders import create_encoder, encoder_dim, list_encoders
from ptg_refine.errors import CheckpointError, ConfigError, EncoderError, HubFileMissingError

pytestmark = pytest.mark.usefixtures("one_thread", "offline")

TINY = {"input_size": 32, "widths": (8, 16), "hidden": 32}


def _images(n: int = 4, size: int = 48) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.linspace(0, 1, size)
    imgs = []
    for i in range(n):
        ramp = (base[None, :] * base[:, None] * (i + 1) / n).expand(3, -1, -1)
        imgs.append((0.7 * ramp + 0.3 * torch.rand(3, size, size, generator=gen)).contiguous())
    return imgs


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_student_is_small_frozen_and_normalized():
    enc = StudentEncoder(dim=512)
    assert enc.num_parameters <= 1_000_000
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training
    g = enc(torch.rand(2, 1, 37, 53))  # gray and odd size
    assert g.shape == (2, 512) and g.dtype == torch.float32
    torch.testing.assert_close(g.norm(dim=1), torch.ones(2))


def test_registered():
    assert "student" in list_encoders()
    with pytest.raises(EncoderError, match="student:path"):
        create_encoder("student")


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    enc = StudentEncoder(dim=71, teacher="stats", **TINY)
    enc.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "config.json").read_text())["format"] == "ptg_refine.student"
    loaded = StudentEncoder.from_pretrained(tmp_path)
    x = torch.rand(3, 3, 40, 44)
    assert torch.equal(loaded(x), enc(x)) and _same_params(loaded, enc)
    assert loaded.config == enc.config

    via_spec = create_encoder(f"student:{tmp_path}")
    assert isinstance(via_spec, StudentEncoder) and via_spec.dim == 71
    assert via_spec.spec == f"student:{tmp_path}"
    assert torch.equal(via_spec(x), enc(x))
    assert encoder_dim(f"student:{tmp_path}") == 71
    # the preprocessing a refiner records rebuilds the same encoder; another one is refused
    assert create_encoder(f"student:{tmp_path}", **enc.preprocess_config()).dim == 71
    with pytest.raises(EncoderError, match="trained with preprocessing"):
        create_encoder(f"student:{tmp_path}", input_size=64)


def test_strict_loading_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    StudentEncoder(dim=8, **TINY).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))

    extra = dict(state, bogus=torch.zeros(1))
    save_file(extra, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        StudentEncoder.from_pretrained(tmp_path)

    missing = dict(state)
    missing.pop(next(iter(missing)))
    save_file(missing, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys"):
        StudentEncoder.from_pretrained(tmp_path)

    cfg = json.loads((tmp_path / "config.json").read_text())
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, dim=9)))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        StudentEncoder.from_pretrained(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, colour="red")))
    with pytest.raises(ConfigError, match="Unknown keys"):
        StudentEncoder.from_pretrained(tmp_path)

    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="corrupt"):
        StudentEncoder.from_pretrained(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(HubFileMissingError):
        StudentEncoder.from_pretrained(tmp_path)


def test_refiner_folder_is_not_a_student(tmp_path):
    PTGRefiner(encoder="stats", width=8, num_blocks=1).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="not a ptg_refine student"):
        StudentEncoder.from_pretrained(tmp_path)


def test_distill_improves_cosine_and_is_deterministic(tmp_path):
    kw = dict(
        steps=25,
        batch_size=16,
        crop=32,
        num_crops=64,
        num_val_crops=32,
        lr=3e-3,
        student_kwargs=TINY,
        seed=3,
    )
    res = distill_encoder("stats", _images(), out_dir=tmp_path, **kw)
    assert res.student.dim == 71 and res.teacher == "stats"
    assert res.val_cosine > res.initial_val_cosine + 0.1
    assert res.train_cosine > 0.3
    assert not any(p.requires_grad for p in res.student.parameters())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_cosine"] == pytest.approx(res.val_cosine, abs=1e-4)
    loaded = StudentEncoder.from_pretrained(tmp_path)
    assert loaded.config.teacher == "stats"

    again = distill_encoder("stats", _images(), **kw)
    assert _same_params(again.student, res.student)

    # the student drives a refiner trained for the teacher (same dim)
    refiner = PTGRefiner(encoder="stats", width=8, num_blocks=1)
    model = refine(torch.nn.Identity(), refiner, encoder=f"student:{tmp_path}")
    x = torch.rand(1, 3, 29, 31)
    assert torch.equal(model(x), x)  # untrained refiner: identity on the base output
    cos = feature_cosine(res.student, create_encoder("stats"), x)
    assert cos.shape == (1,) and -1.0 <= float(cos) <= 1.0


def test_distill_options(tmp_path):
    imgs = _images(2, 40)
    res = distill_encoder(
        "stats",
        imgs,
        task="denoise",
        cache=False,
        steps=2,
        batch_size=4,
        crop=32,
        num_val_crops=4,
        student_kwargs=TINY,
    )
    assert res.steps == 2
    res = distill_encoder(
        "stats", imgs, degraded=True, steps=1, batch_size=2, crop=32, num_crops=4,
        num_val_crops=2, student_kwargs=TINY,
    )  # fmt: skip
    assert res.student.dim == 71
    with pytest.raises(ConfigError, match="Unknown task"):
        distill_encoder("stats", imgs, task="dehaze", steps=1)
    with pytest.raises(ConfigError, match="steps"):
        distill_encoder("stats", imgs, steps=-1)


def test_cli_distill(tmp_path, capsys):
    from ptg_refine.cli import main
    from ptg_refine.io import write_image

    folder = tmp_path / "clean"
    for i, img in enumerate(_images(3, 40)):
        write_image(folder / f"{i}.png", img)
    out = tmp_path / "student"
    rc = main(
        [
            "distill", "--teacher", "stats", "--images", str(folder), "--task", "derain",
            "--steps", "3", "--batch-size", "4", "--crop", "32", "--num-crops", "8",
            "--input-size", "32", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dim"] == 71 and summary["steps"] == 3
    assert create_encoder(f"student:{out}").dim == 71
    assert main(["distill", "--teacher", "nope", "--images", str(folder), "--out", str(out)]) == 2


@pytest.mark.slow
def test_distill_open_clip_teacher():
    pytest.importorskip("open_clip")
    res = distill_encoder(
        "open_clip:ViT-B-32@random",
        _images(2, 64),
        steps=5,
        batch_size=4,
        crop=48,
        num_crops=8,
        num_val_crops=4,
    )
    assert res.student.dim == 512 and res.student.num_parameters <= 1_000_000


def test_paths_are_str_or_pathlike(tmp_path):
    StudentEncoder(dim=5, **TINY).save_pretrained(Path(tmp_path) / "s")
    assert StudentEncoder.from_pretrained(str(tmp_path / "s")).dim == 5
