"""Speed-up of training with the OSF feature cache (``fit(..., cache_features=True)``).

Trains the same refiner on a data set of fixed crops (the same crops every epoch), with and without
the feature cache, and reports the cost of a training step. The encoder is CLIP ViT-B/32 with random
weights (``open_clip:ViT-B-32@random``: the cost of the pretrained model, no download).

The main figure is the **CPU time per step** of this process (``time.process_time``) with one torch
thread: unlike wall time it does not depend on what else runs on the machine. On an idle machine
with one thread, wall time per step is about the same. Wall times are reported too.

Usage::

    python benchmarks/osf_cache.py        # prints a table, writes benchmarks/results/osf_cache.json
    python benchmarks/osf_cache.py --steps 24 --crop 128 --batch-size 4 --items 16 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ptg_refine import PTGRefiner, create_encoder, refine
from ptg_refine.train import SyntheticPairs, fit


def _clean_images(n: int, size: int) -> list[torch.Tensor]:
    from skimage import data as skdata

    names = ["astronaut", "coffee", "chelsea", "rocket"]
    out = []
    for name in names[:n]:
        img = torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1).float() / 255
        out.append(nn.functional.interpolate(img[None], size=(size, size), mode="area")[0])
    return out


def _blur() -> nn.Module:
    conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = 1 / 9
    return conv


def _train(args: argparse.Namespace, data, encoder, cached: bool) -> dict:
    torch.manual_seed(0)
    model = refine(_blur(), PTGRefiner(encoder=args.encoder, embed_dim=None), encoder=encoder)
    cpu, wall = [time.process_time()], [time.perf_counter()]

    def tick(_: dict) -> None:
        cpu.append(time.process_time())
        wall.append(time.perf_counter())

    res = fit(
        model,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=1e-4,
        cache_features=cached,
        log_every=args.steps,
        progress=False,
        callback=tick,
    )
    first = args.items // args.batch_size  # steps of the first epoch (all cache misses)
    cpu_steps = [b - a for a, b in itertools.pairwise(cpu)]
    wall_steps = [b - a for a, b in itertools.pairwise(wall)]
    return {
        "cpu_s_per_step_first_epoch": statistics.median(cpu_steps[:first]),
        "cpu_s_per_step_later_epochs": statistics.median(cpu_steps[first:]),
        "cpu_s_total": sum(cpu_steps),
        "wall_s_per_step_later_epochs": statistics.median(wall_steps[first:]),
        "wall_s_total": sum(wall_steps),
        "cache_stats": res.cache_stats,
        "final_loss": res.final_loss,
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = SyntheticPairs(
        _clean_images(4, 2 * args.crop),
        "denoise",
        crop=args.crop,
        sigma=25,
        length=args.items,
        fixed=True,
        seed=0,
    )
    encoder = create_encoder(args.encoder)
    # warm-up (first-call overheads), not measured
    warm = refine(_blur(), PTGRefiner(encoder=args.encoder, embed_dim=None), encoder=encoder)
    fit(warm, data, steps=2, batch_size=args.batch_size, cache_features=False, progress=False)

    results = {"no_cache": _train(args, data, encoder, False)}
    results["cache"] = _train(args, data, encoder, True)

    x = torch.stack([data[i]["lq"] for i in range(args.batch_size)])
    t0 = time.process_time()
    for _ in range(3):
        encoder(x)
    enc_cpu = (time.process_time() - t0) / 3

    a, b = results["no_cache"], results["cache"]
    return {
        "benchmark": "osf_cache",
        "command": "python benchmarks/osf_cache.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "device": "cpu",
            "load_average_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            "encoder": args.encoder,
            "refiner": "PTGRefiner defaults (width 16, 4 blocks, D = 512)",
            "base": "frozen 3x3 box blur",
            "crop": args.crop,
            "batch_size": args.batch_size,
            "items (fixed crops)": args.items,
            "steps": args.steps,
        },
        "encoder_cpu_s_per_batch": enc_cpu,
        "results": results,
        "speedup_later_epochs_cpu": a["cpu_s_per_step_later_epochs"]
        / b["cpu_s_per_step_later_epochs"],
        "speedup_total_cpu": a["cpu_s_total"] / b["cpu_s_total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="open_clip:ViT-B-32@random")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "osf_cache.json"
    )
    args = parser.parse_args()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    r = report["results"]
    print(f"{'':>9}  {'CPU s/step, epoch 1':>19}  {'CPU s/step, later':>17}  {'CPU s total':>11}")
    for name in ("no_cache", "cache"):
        s = r[name]
        print(
            f"{name:>9}  {s['cpu_s_per_step_first_epoch']:19.3f}  "
            f"{s['cpu_s_per_step_later_epochs']:17.3f}  {s['cpu_s_total']:11.1f}"
        )
    print(f"encoder alone: {report['encoder_cpu_s_per_batch']:.3f} CPU s per batch")
    print(
        f"speed-up with the cache: {report['speedup_later_epochs_cpu']:.2f}x per step once "
        f"cached, {report['speedup_total_cpu']:.2f}x over the {args.steps} steps"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
