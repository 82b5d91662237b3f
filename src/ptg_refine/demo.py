"""The offline end-to-end demo behind ``ptg-refine demo``.

On the photographs bundled with scikit-image it synthesizes degradations, trains a small base network
briefly (standing in for the user's own), trains PTG-RM on top of it with the ``stats`` encoder (no
download), and evaluates base and refined outputs on photographs not used in training.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import atomic_write
from .errors import MissingDependencyError

__all__ = ["TEST_IMAGES", "TRAIN_IMAGES", "load_photos", "run_demo"]

logger = logging.getLogger(__name__)

# scikit-image's bundled photographs (no download needed). Test images are never trained on.
TRAIN_IMAGES = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "clock",
    "moon",
    "cell",
)
TEST_IMAGES = ("coffee", "chelsea")

# steps, crop, batch for (base, refiner); quick mode is a smoke test only
_SCHEDULE = {
    False: {"base_steps": 300, "refiner_steps": 400, "crop": 64, "batch": 8},
    True: {"base_steps": 40, "refiner_steps": 60, "crop": 48, "batch": 4},
}
_TASK_KW: dict[str, dict[str, Any]] = {
    "denoise": {"sigma": 25.0},
    "derain": {},
    "lowlight": {},
    "deblur": {},
}


def load_photos(
    names: tuple[str, ...], *, channels: int = 3, max_side: int = 512
) -> list[torch.Tensor]:
    """Bundled scikit-image photographs as (C, H, W) float tensors in [0, 1]."""
    try:
        import skimage.data
    except ImportError as err:
        raise MissingDependencyError(
            'The demo uses scikit-image\'s bundled photographs: pip install "ptg_refine[demo]"'
        ) from err
    images = []
    for name in names:
        arr = torch.from_numpy(getattr(skimage.data, name)().copy())
        x = arr.float() / 255.0
        x = x[None] if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
        if x.shape[0] != channels:
            if channels == 3:
                x = x.expand(3, -1, -1).contiguous()
            else:
                x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        scale = max_side / max(x.shape[-2:])
        if scale < 1:
            size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = nn.functional.interpolate(x[None], size=size, mode="area")[0]
        images.append(x.contiguous())
    return images


def _train_base(base: nn.Module, data, *, steps: int, batch: int, seed: int) -> None:
    """Briefly train the stand-in base network (plain L1, Adam)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(base.parameters(), lr=1e-3)
    base.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen).tolist()
        items = [data[i] for i in idx]
        lq = torch.stack([it["lq"] for it in items])
        gt = torch.stack([it["gt"] for it in items])
        loss = (base(lq) - gt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    base.eval()


def run_demo(
    out_dir: str | Path = "demo-out",
    *,
    task: str = "denoise",
    seed: int = 0,
    quick: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the demo and write ``report.json`` and ``comparison.png`` into ``out_dir``.

    Returns:
        The report: task, base_psnr, refined_psnr (mean over test photographs, dB), gain_db, SSIMs,
        train_images, test_images, steps, seconds.
    """
    from .base_models import TinyRestorer
    from .evaluate import evaluate
    from .refiner import PTGRefiner
    from .train import SyntheticPairs, fit
    from .wrap import refine

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sched = _SCHEDULE[bool(quick)]
    kw = _TASK_KW.get(task, {})
    train_imgs = load_photos(TRAIN_IMAGES)
    test_imgs = load_photos(TEST_IMAGES)
    train = SyntheticPairs(
        train_imgs, task, crop=sched["crop"], augment=True, seed=seed, names=TRAIN_IMAGES, **kw
    )
    test = SyntheticPairs(
        test_imgs,
        task,
        crop=None,
        augment=False,
        seed=seed + 10_000,
        fixed=True,
        names=TEST_IMAGES,
        **kw,
    )

    base = TinyRestorer(channels=3)
    _train_base(base, train, steps=sched["base_steps"], batch=sched["batch"], seed=seed)
    t_base = time.perf_counter() - t0

    refiner = PTGRefiner(encoder="stats", embed_dim=None, in_channels=3)
    model = refine(base, refiner)
    fit(
        model,
        train,
        steps=sched["refiner_steps"],
        batch_size=sched["batch"],
        lr=1e-3,
        seed=seed,
        out_dir=out / "train",
        checkpoint_every=max(sched["refiner_steps"] // 4, 1),
        progress=progress,
    )
    model.eval()
    result = evaluate(model, test, out_dir=out / "eval", save_grids=True)
    means = result.means
    report = {
        "task": task,
        "base_psnr": means["psnr_base"],
        "refined_psnr": means["psnr_refined"],
        "gain_db": means["psnr_refined"] - means["psnr_base"],
        "degraded_psnr": means["psnr_input"],
        "base_ssim": means["ssim_base"],
        "refined_ssim": means["ssim_refined"],
        "per_image": [
            {k: r[k] for k in ("name", "psnr_input", "psnr_base", "psnr_refined")}
            for r in result.rows
        ],
        "train_images": list(TRAIN_IMAGES),
        "test_images": list(TEST_IMAGES),
        "base_steps": sched["base_steps"],
        "refiner_steps": sched["refiner_steps"],
        "crop": sched["crop"],
        "batch_size": sched["batch"],
        "encoder": "stats",
        "refiner_parameters": refiner.num_parameters,
        "seed": seed,
        "quick": bool(quick),
        "seconds_base_training": round(t_base, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "refiner_dir": str(out / "train" / "refiner"),
    }
    _write_comparison(model, test, out / "comparison.png")
    text = json.dumps(report, indent=2)
    atomic_write(out / "report.json", lambda p: Path(p).write_text(text))
    return report


def _write_comparison(model, test, path: Path) -> None:
    """One row per test photograph: degraded | base | refined | ground truth."""
    from .io import write_image

    rows = []
    with torch.inference_mode():
        for i in range(len(test)):
            item = test[i]
            lq = item["lq"][None]
            res = model.forward_all(lq)
            tiles = [lq[0], res.restored[0], res.refined[0], item["gt"]]
            h = min(t.shape[-2] for t in tiles)
            rows.append(torch.cat([t[..., :h, :].clamp(0, 1) for t in tiles], dim=-1))
    width = min(r.shape[-1] for r in rows)
    grid = torch.cat([r[..., :width] for r in rows], dim=-2)
    write_image(path, grid)
