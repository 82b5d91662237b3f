"""Prior distillation benchmark (issue 1): student vs teacher encoder.

Distills a teacher encoder (default ``open_clip:ViT-B-32@random``: real ViT-B/32 cost, random
weights, since pretrained weights cannot be downloaded here) into a :class:`StudentEncoder` on
scikit-image photographs with synthetic degradations (all four tasks + clean), then reports:

- feature cosine to the teacher on held-out photographs (crops, and whole degraded images per task);
- encoder time per image, teacher vs student, and the whole pipeline (base + encoder + refiner) at
  256^2, measured back to back in the same run;
- PSNR of a small refiner trained with teacher features on a denoising toy set (sigma 25),
  evaluated on held-out photographs with teacher features vs student features.

Usage::

    python benchmarks/distill.py                     # about 10-15 minutes on 2 shared cores
    python benchmarks/distill.py --teacher stats --quick

Results go to ``benchmarks/results/distill.json`` (and the student to
``benchmarks/results/distill_student/``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ptg_refine import PTGRefiner, refine
from ptg_refine.demo import TEST_IMAGES, TRAIN_IMAGES, load_photos
from ptg_refine.distill import distill_encoder
from ptg_refine.encoders import create_encoder
from ptg_refine.metrics import psnr
from ptg_refine.train import SyntheticPairs, fit
from ptg_refine.train.degradations import degrade

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distill.json"
EXTRA_TEST = ("astronaut",)  # never in the distillation pool (removed below), only for evaluation


def median_seconds(fn, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of ``fn(x)`` over ``repeats`` runs after one warm-up, in inference mode."""
    with torch.inference_mode():
        fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


class _SmallDenoiser(nn.Module):
    """A stand-in base network (3 convs), trained briefly."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="open_clip:ViT-B-32@random")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--num-crops", type=int, default=768)
    ap.add_argument("--refiner-steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.num_crops, args.refiner_steps = 40, 64, 10

    train_names = tuple(n for n in TRAIN_IMAGES if n not in EXTRA_TEST)
    test_names = TEST_IMAGES + EXTRA_TEST
    train_imgs = load_photos(train_names, max_side=384)
    test_imgs = load_photos(test_names, max_side=384)

    report: dict = {
        "machine": f"{platform.machine()}, {args.threads} threads (2-core shared CPU, no GPU)",
        "torch": torch.__version__,
        "teacher": args.teacher,
        "train_images": list(train_names),
        "test_images": list(test_names),
    }

    # 1. distillation ---------------------------------------------------------------------------
    res = distill_encoder(
        args.teacher,
        train_imgs,
        val_images=test_imgs,
        steps=args.steps,
        batch_size=32,
        crop=192,
        num_crops=args.num_crops,
        num_val_crops=96,
        seed=0,
        out_dir=HERE / "results" / "distill_student",
    )
    student = res.student
    teacher = create_encoder(args.teacher)
    report["distill"] = res.summary()

    # 2. cosine on whole held-out degraded images, per task ----------------------------------
    per_task = {}
    for task in ("clean", "denoise", "derain", "lowlight", "deblur"):
        cos = []
        for i, x in enumerate(test_imgs):
            y = x if task == "clean" else degrade(task, x, generator=100 + i)
            cos.append(float((student(y[None]) * teacher(y[None])).sum()))
        per_task[task] = round(statistics.mean(cos), 4)
    report["whole_image_cosine"] = per_task

    # 3. timings ----------------------------------------------------------------------------
    timings = {}
    for side in (256, 512):
        x = torch.rand(1, 3, side, side)
        tt = median_seconds(teacher, x, 5)
        ts = median_seconds(student, x, 20)
        timings[f"encoder_{side}"] = {
            "teacher_ms": round(tt * 1e3, 1),
            "student_ms": round(ts * 1e3, 1),
            "speedup": round(tt / ts, 1),
        }

    # 4. refiner trained with teacher features, evaluated with teacher vs student ------------
    torch.manual_seed(0)
    base = _SmallDenoiser()
    pairs = SyntheticPairs(train_imgs, "denoise", crop=64, length=4096, seed=0, sigma=25.0)
    opt = torch.optim.Adam(base.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(0 if args.quick else 150):
        items = [pairs[int(i)] for i in torch.randint(len(pairs), (8,), generator=gen)]
        lq, gt = torch.stack([it["lq"] for it in items]), torch.stack([it["gt"] for it in items])
        loss = (base(lq) - gt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    base.eval()
    refiner = PTGRefiner(encoder=args.teacher, width=16, num_blocks=2)
    model = refine(base, refiner, encoder=teacher)
    t0 = time.perf_counter()
    fit(
        model,
        pairs,
        steps=args.refiner_steps,
        batch_size=8,
        lr=5e-4,
        progress=False,
        checkpoint_every=None,
        seed=0,
    )
    refiner_train_s = time.perf_counter() - t0
    refiner.eval()
    with_teacher = refine(base, refiner, encoder=teacher).eval()
    with_student = refine(base, refiner, encoder=student).eval()
    rows = []
    with torch.inference_mode():
        for i, (name, gt) in enumerate(zip(test_names, test_imgs)):
            lq = degrade("denoise", gt, generator=200 + i, sigma=25.0)[None]
            out_t = with_teacher.forward_all(lq)
            out_s = with_student.forward_all(lq)
            rows.append(
                {
                    "image": name,
                    "base": float(psnr(out_t.restored.clamp(0, 1), gt[None])),
                    "teacher": float(psnr(out_t.refined.clamp(0, 1), gt[None])),
                    "student": float(psnr(out_s.refined.clamp(0, 1), gt[None])),
                }
            )
    mean = {
        k: round(statistics.mean(r[k] for r in rows), 3) for k in ("base", "teacher", "student")
    }
    report["refiner_psnr_denoise25"] = {
        "refiner_steps": args.refiner_steps,
        "refiner_train_seconds": round(refiner_train_s, 1),
        "per_image": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        ],
        "mean": mean,
        "student_minus_teacher_db": round(mean["student"] - mean["teacher"], 3),
    }

    x = torch.rand(1, 3, 256, 256)
    pt = median_seconds(with_teacher, x, 5)
    ps = median_seconds(with_student, x, 5)
    timings["pipeline_256"] = {
        "teacher_ms": round(pt * 1e3, 1),
        "student_ms": round(ps * 1e3, 1),
        "speedup": round(pt / ps, 2),
    }
    report["timings"] = timings
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
