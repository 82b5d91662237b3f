"""The ptg-refine command line, driven as a user would (in-process through cli.main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ptg_refine import PTGRefiner
from ptg_refine.cli import main
from ptg_refine.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("one_thread", "offline")


def _photos(n: int = 3, size: int = 40) -> list[torch.Tensor]:
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255
    return [img[:, 100 + 50 * i : 100 + 50 * i + size, 150 : 150 + size + 8] for i in range(n)]


def _pairs(root: Path, n: int = 3) -> tuple[Path, Path]:
    lq, gt = root / "lq", root / "gt"
    g = torch.Generator().manual_seed(0)
    for i, clean in enumerate(_photos(n)):
        write_image(gt / f"im{i}.png", clean)
        write_image(
            lq / f"im{i}.png", (clean + 0.08 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
        )
    return lq, gt


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "train", "eval", "encoders", "download", "demo"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "train", "eval", "encoders", "download", "demo"])
def test_each_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as info:
        main([cmd, "--help"])
    assert info.value.code == 0
    assert "usage: ptg-refine " + cmd in capsys.readouterr().out


def test_console_script_installed():
    out = subprocess.run(
        [sys.executable, "-m", "ptg_refine.cli", "encoders"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"stats", "open_clip", "timm"} <= set(out)


def test_download_unpublished_alias_fails_clearly(capsys):
    assert main(["download", "derain"]) == 2
    err = capsys.readouterr().err
    assert "not published" in err and "Traceback" not in err


def test_download_offline_repo_fails_clearly(capsys, tmp_path):
    assert main(["download", "someone/ptg-rm", "--cache-dir", str(tmp_path)]) == 2
    assert "offline" in capsys.readouterr().err


def test_train_then_run_then_eval(tmp_path, capsys):
    lq, gt = _pairs(tmp_path)
    out = tmp_path / "run1"
    code = main(
        [
            "train", "--lq", str(lq), "--gt", str(gt), "--encoder", "stats", "--steps", "6",
            "--crop", "24", "--batch-size", "2", "--width", "8", "--out", str(out),
            "--checkpoint-every", "3",
        ]
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 6
    refiner = PTGRefiner.from_pretrained(out / "refiner")
    assert refiner.config.encoder == "stats" and refiner.config.width == 8
    assert (out / "log.jsonl").read_text().strip()

    # run on a folder, then on one file
    res = tmp_path / "restored"
    assert (
        main(
            ["run", "-i", str(lq), "-o", str(res), "--refiner", str(out / "refiner"), "--save-base"]
        )
        == 0
    )
    assert sorted(p.name for p in res.iterdir()) == sorted(
        [f"im{i}.png" for i in range(3)] + [f"im{i}_base.png" for i in range(3)]
    )
    assert read_image(res / "im0.png").shape == read_image(lq / "im0.png").shape
    single = tmp_path / "one.png"
    assert (
        main(
            ["run", "-i", str(lq / "im1.png"), "-o", str(single), "--refiner", str(out / "refiner")]
        )
        == 0
    )
    assert single.is_file()
    capsys.readouterr()

    # eval of already restored images, then eval through base + refiner
    assert main(["eval", "--pred", str(lq), "--gt", str(gt), "--crop-border", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 3
    assert (
        main(
            [
                "eval",
                "--lq",
                str(lq),
                "--gt",
                str(gt),
                "--refiner",
                str(out / "refiner"),
                "--out",
                str(tmp_path / "ev"),
                "--grids",
            ]
        )
        == 0
    )
    assert (tmp_path / "ev" / "metrics.csv").is_file() and (
        tmp_path / "ev" / "metrics.json"
    ).is_file()


def test_train_resume_flag(tmp_path, capsys):
    lq, gt = _pairs(tmp_path, 2)
    args = [
        "train", "--lq", str(lq), "--gt", str(gt), "--steps", "4", "--crop", "16", "--batch-size", "2",
        "--width", "8", "--out", str(tmp_path / "r"), "--checkpoint-every", "2",
    ]  # fmt: skip
    assert main(args) == 0
    assert main([*args[:6], "8", *args[7:], "--resume"]) == 2  # other settings: refused clearly
    assert "other training settings" in capsys.readouterr().err


def test_train_with_synthetic_pairs_and_module_base(tmp_path, capsys):
    clean = tmp_path / "clean"
    for i, img in enumerate(_photos(2)):
        write_image(clean / f"c{i}.png", img)
    weights = tmp_path / "base.pt"
    from ptg_refine.base_models import TinyRestorer

    torch.save(TinyRestorer(3).state_dict(), weights)
    code = main(
        [
            "train", "--clean", str(clean), "--task", "derain", "--steps", "2", "--crop", "24",
            "--batch-size", "2", "--width", "8", "--out", str(tmp_path / "o"),
            "--base", "ptg_refine.base_models:TinyRestorer", "--base-weights", str(weights),
        ]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "o" / "refiner" / "model.safetensors").is_file()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still supported
def test_torchscript_base(tmp_path, capsys):
    lq, _ = _pairs(tmp_path, 1)
    scripted = torch.jit.script(nn.Conv2d(3, 3, 3, padding=1))
    ts = tmp_path / "base.ts"
    torch.jit.save(scripted, ts)
    PTGRefiner(encoder="stats", width=8, num_blocks=1).save_pretrained(tmp_path / "ref")
    assert (
        main(
            [
                "run",
                "-i",
                str(lq),
                "-o",
                str(tmp_path / "o"),
                "--refiner",
                str(tmp_path / "ref"),
                "--base",
                str(ts),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--out", "x"], "--lq DIR --gt DIR"),
        (["train", "--clean", ".", "--out", "x"], "--task"),
        (["run", "-i", "/nonexistent.png", "-o", "o", "--refiner", "derain"], "does not exist"),
        (["eval", "--gt", "."], "--pred DIR"),
        (["run", "-i", ".", "-o", "o", "--refiner", "derain"], "not published"),
    ],
)
def test_usage_errors_are_clear(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_base_spec(tmp_path, capsys):
    lq, gt = _pairs(tmp_path, 2)
    assert (
        main(
            [
                "train",
                "--lq",
                str(lq),
                "--gt",
                str(gt),
                "--out",
                str(tmp_path / "o"),
                "--base",
                "no_such_mod:f",
            ]
        )
        == 2
    )
    assert "Cannot import" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("task", "base_psnr", "refined_psnr", "train_images", "test_images", "seconds"):
        assert key in report
    assert not set(report["train_images"]) & set(report["test_images"])
    assert (tmp_path / "comparison.png").is_file()


def test_torch_export_base(tmp_path, capsys):
    lq, _ = _pairs(tmp_path, 1)
    h = torch.export.Dim("h", min=8, max=4096)
    w = torch.export.Dim("w", min=8, max=4096)
    prog = torch.export.export(
        nn.Conv2d(3, 3, 3, padding=1), (torch.rand(1, 3, 32, 32),), dynamic_shapes=({2: h, 3: w},)
    )
    torch.export.save(prog, tmp_path / "base.pt2")
    PTGRefiner(encoder="stats", width=8, num_blocks=1).save_pretrained(tmp_path / "ref")
    argv = ["run", "-i", str(lq), "-o", str(tmp_path / "o"), "--refiner", str(tmp_path / "ref")]
    assert main([*argv, "--base", str(tmp_path / "base.pt2")]) == 0


def test_run_explain_saves_overlays(tmp_path, capsys):
    lq, _ = _pairs(tmp_path, 1)
    PTGRefiner(encoder="stats", width=8, num_blocks=1).save_pretrained(tmp_path / "ref")
    out = tmp_path / "o"
    assert (
        main(
            ["run", "-i", str(lq), "-o", str(out), "--refiner", str(tmp_path / "ref"), "--explain"]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["im0.png", "im0_range.png", "im0_spatial.png"]
    assert read_image(out / "im0_range.png").shape == read_image(lq / "im0.png").shape


def test_train_and_run_at_feature_level(tmp_path, capsys):
    from ptg_refine import feature_channels
    from ptg_refine.base_models import TinyRestorer

    clean = tmp_path / "clean"
    for i, img in enumerate(_photos(2)):
        write_image(clean / f"c{i}.png", img)
    weights = tmp_path / "base.pt"
    torch.save(TinyRestorer(3).state_dict(), weights)
    base = ["--base", "ptg_refine.base_models:TinyRestorer", "--base-weights", str(weights)]
    code = main(
        [
            "train", "--clean", str(clean), "--task", "denoise", "--steps", "2", "--crop", "24",
            "--batch-size", "2", "--width", "8", "--out", str(tmp_path / "o"), *base,
            "--at", "body.2",
        ]
    )  # fmt: skip
    assert code == 0
    loaded = PTGRefiner.from_pretrained(tmp_path / "o" / "refiner")
    assert loaded.in_channels == feature_channels(TinyRestorer(3), "body.2") == 32
    run = [
        "run",
        "-i",
        str(clean),
        "-o",
        str(tmp_path / "r"),
        "--refiner",
        str(tmp_path / "o" / "refiner"),
    ]
    assert main([*run, *base, "--at", "body.2"]) == 0
    assert len(list((tmp_path / "r").glob("*.png"))) == 2
    capsys.readouterr()
    assert main([*run, *base, "--at", "bdy.2"]) == 2
    err = capsys.readouterr().err
    assert "'bdy.2' is not a submodule" in err and "Did you mean 'body.2'" in err
