"""Prior distillation on the real-data benchmark: can a small student replace the pre-trained prior?

The teacher is the benchmark's real pre-trained prior (the ImageNet MobileNet v1 embedding
extractor, :mod:`benchmarks.priors`). A :class:`ptg_refine.distill.StudentEncoder` is distilled
from it on the benchmark's *training* split only (CBSD68[:48], darkened with the low-light
degradation, crops of 320 px so that the student sees whole-image-like views, since the
benchmark's prior is computed from whole images). Then, on the low-light task of
``benchmarks/quality.py`` (Zero-DCE base, real LOL eval15 pairs):

1. feature cosine student vs teacher on the real LOL low-light images (whole images);
2. refiners trained with the teacher's features are evaluated with the teacher and with the
   student in its place (encoder-free inference: the PSNR change), for each seed;
3. refiners trained and evaluated with the student (no teacher at all);
4. the time of the encoder and of the whole pipeline (Zero-DCE + encoder + refiner) on one
   600x400 LOL image, teacher vs student, measured back to back in this process.

Usage::

    python benchmarks/distill_real.py --data ../shared/evaldata          # about 20-30 min
    python benchmarks/distill_real.py --data ../shared/evaldata --quick  # a few minutes

Writes ``benchmarks/results/distill_real.json`` (``distill_real_quick.json``) and the student to
``benchmarks/results/mobilenet_student/`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality
from benchmarks.bases import EvalDataMissing, load_base
from benchmarks.bases.images import read_pairs, resolve_data_dir
from benchmarks.distill import median_seconds
from benchmarks.priors import cached_encoder, mobilenet_encoder

RESULTS = quality.RESULTS


def time_pipeline(data: Path, teacher: Any, student: Any, repeats: int) -> dict[str, Any]:
    """Encoder and whole-pipeline (Zero-DCE + encoder + refiner) time on one LOL image.

    Teacher and student, back to back in this process; also a CLIP ViT-B/32 (random weights: the
    cost of the paper's default prior) when open_clip is installed.
    """
    from ptg_refine import PTGRefiner, create_encoder, refine

    lol = read_pairs(data / "LOL-v1-eval15" / "low", data / "LOL-v1-eval15" / "high")
    x = lol[0][1]
    base = load_base("zerodce", data).eval()
    encoders = {"teacher": teacher, "student": student}
    try:
        torch.manual_seed(0)
        encoders["clip_vitb32"] = create_encoder("open_clip:ViT-B-32@random")
    except Exception as exc:  # open_clip missing: no CLIP row
        quality.log(f"no CLIP timing: {exc}")
    timing: dict[str, Any] = {
        "image": f"LOL eval15 {lol[0][0]} {tuple(x.shape)}",
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
    }
    with torch.inference_mode():
        for name, enc in encoders.items():
            refiner = PTGRefiner(embed_dim=enc.dim).eval()
            model = refine(base, refiner, encoder=enc).eval()
            timing[f"{name}_encoder_ms"] = round(median_seconds(enc, x, repeats) * 1e3, 1)
            timing[f"{name}_pipeline_ms"] = round(median_seconds(model, x, repeats) * 1e3, 1)
    for name in encoders:
        if name != "student":
            timing[f"{name}_vs_student_encoder_speedup"] = round(
                timing[f"{name}_encoder_ms"] / timing["student_encoder_ms"], 2
            )
            timing[f"{name}_vs_student_pipeline_speedup"] = round(
                timing[f"{name}_pipeline_ms"] / timing["student_pipeline_ms"], 2
            )
    quality.log(f"timing: {timing}")
    return timing


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Distill, measure and return the report (see the module docstring)."""
    from ptg_refine.distill import distill_encoder

    data = resolve_data_dir(args.data)
    mode = "quick" if args.quick else "full"
    cfg = dict(quality.PRESETS[mode])
    cfg["seeds"] = args.seeds if args.seeds is not None else cfg["seeds"]
    if args.refiner_steps is not None:
        cfg["steps"] = args.refiner_steps
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "mode": mode,
        "command": "python benchmarks/distill_real.py " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": quality._machine(),
        "teacher": "MobileNet v1 1.0 224 int8 TFLite embedding extractor (1024-d), ai-edge-litert",
    }

    # 1. distil on the training split -------------------------------------------------------------
    files = quality._cbsd(data)[: min(quality.N_TRAIN, cfg["train_images"])]
    clean = [quality.read_image(f)[0] for f in files]
    teacher = mobilenet_encoder(data)
    out_dir = None if args.quick else RESULTS / "mobilenet_student"
    res = distill_encoder(
        teacher,
        clean,
        task="lowlight",
        steps=args.steps,
        batch_size=32,
        crop=320,
        num_crops=args.num_crops,
        num_val_crops=64,
        seed=0,
        out_dir=out_dir,
    )
    student = res.student
    quality.log(
        f"distilled: {res.steps} steps, val cosine {res.initial_val_cosine:.3f} -> "
        f"{res.val_cosine:.3f}, {res.seconds:.0f} s (teacher {res.teacher_seconds:.0f} s)"
    )
    report["distill"] = {
        **res.summary(),
        "train_images": [f"CBSD68/{f.name}" for f in files],
        "degradation": "lowlight (ptg_refine darken, random strengths), 20% left clean",
        "crop": 320,
        "student": None if out_dir is None else str(out_dir.relative_to(quality.REPO_ROOT)),
    }

    # 2. cosine on the real low-light images ------------------------------------------------------
    lol = read_pairs(data / "LOL-v1-eval15" / "low", data / "LOL-v1-eval15" / "high")
    cos = []
    with torch.no_grad():
        for _, lo, _ in lol:
            cos.append(float((student(lo) * teacher(lo)).sum()))
    report["lol_cosine"] = {
        "mean": round(statistics.mean(cos), 4),
        "min": round(min(cos), 4),
        "per_image": [round(c, 4) for c in cos],
    }
    quality.log(
        f"cosine student vs teacher on LOL eval15 (whole low images): {statistics.mean(cos):.3f}"
    )

    # 3. speed of the encoder and the whole pipeline on one LOL image ------------------------------
    report["timing"] = time_pipeline(data, teacher, student, args.repeats)

    # 4. the low-light task of the quality benchmark ----------------------------------------------
    task = quality.build_task("lowlight", data, cfg)
    t_enc, t_cache = quality.make_prior("mobilenet", data)
    s_enc, s_cache = cached_encoder(student)
    for enc, cache in ((t_enc, t_cache), (s_enc, s_cache)):
        quality.share_priors(task, enc, cache)
    report["base"] = quality.base_scores(task)
    report["budget"] = {k: cfg[k] for k in ("seeds", "steps", "batch_size", "crop", "crops")}
    runs = []
    for seed in cfg["seeds"]:
        r = quality.run_one(task, "mobilenet", t_enc, seed, cfg, swap_encoders={"student": s_enc})
        runs.append(r)
        t = r["tests"]["lol_eval15"]
        quality.log(
            f"seed {seed}: trained with teacher: {t['psnr_refined']:.2f} dB with teacher, "
            f"{t['psnr_refined_with_student']:.2f} dB with the student in its place"
        )
        r = quality.run_one(task, "student", s_enc, seed, cfg)
        runs.append(r)
        quality.log(
            f"seed {seed}: trained with student: {r['tests']['lol_eval15']['psnr_refined']:.2f} dB"
        )
    report["runs"] = runs
    base_psnr = report["base"]["lol_eval15"]["psnr_base"]
    teach = [r["tests"]["lol_eval15"]["psnr_refined"] for r in runs if r["prior"] == "mobilenet"]
    swap = [
        r["tests"]["lol_eval15"]["psnr_refined_with_student"]
        for r in runs
        if r["prior"] == "mobilenet"
    ]
    own = [r["tests"]["lol_eval15"]["psnr_refined"] for r in runs if r["prior"] == "student"]
    report["summary"] = {
        "psnr_base": base_psnr,
        "psnr_teacher_mean": round(statistics.mean(teach), 4),
        "psnr_student_swapped_in_mean": round(statistics.mean(swap), 4),
        "psnr_student_trained_mean": round(statistics.mean(own), 4),
        "swap_change_per_seed_db": [round(b - a, 4) for a, b in zip(teach, swap, strict=True)],
        "swap_change_mean_db": round(
            statistics.mean(b - a for a, b in zip(teach, swap, strict=True)), 4
        ),
        "goal_within_0_1_db": all(abs(b - a) <= 0.1 for a, b in zip(teach, swap, strict=True)),
    }
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    quality.log(f"summary: {report['summary']}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", default=None, help="evaluation-data folder (default ../shared/evaldata)"
    )
    ap.add_argument("--steps", type=int, default=800, help="distillation steps")
    ap.add_argument("--num-crops", type=int, default=768, help="cached teacher crops")
    ap.add_argument("--refiner-steps", type=int, default=None, help="override the refiner budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="only re-time the pipeline with the saved student; updates 'timing' in the JSON",
    )
    args = ap.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.steps, args.num_crops = min(args.steps, 20), min(args.num_crops, 64)
    torch.set_num_threads(args.threads)
    out = args.out or RESULTS / ("distill_real_quick.json" if args.quick else "distill_real.json")
    if args.timing_only:
        from ptg_refine.distill import StudentEncoder

        data = resolve_data_dir(args.data)
        report = json.loads(out.read_text())
        student = StudentEncoder.from_pretrained(RESULTS / "mobilenet_student")
        report["timing"] = time_pipeline(data, mobilenet_encoder(data), student, args.repeats)
        report["timing_command"] = "python benchmarks/distill_real.py " + " ".join(argv)
        _write(report, out)
        return 0
    try:
        report = run(args)
    except EvalDataMissing as exc:
        print(f"skipped: evaluation data missing: {exc}")
        return 0
    _write(report, out)
    return 0


def _write(report: dict[str, Any], out: Path) -> None:
    quality._save(report, out)
    quality.log(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
