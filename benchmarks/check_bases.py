"""Check that the benchmark base networks reproduce their published quality on real test data.

Each base of :mod:`benchmarks.bases` is loaded (real pretrained weights, strict) and scored on the
shared evaluation images with ``ptg_refine.metrics`` (PSNR / SSIM per image, averaged). Outputs are
quantized to 8 bits before scoring (``round(clamp(x) * 255) / 255``), as the reference test
scripts save 8-bit images; this changes no score by more than 0.01 dB here.

Protocols (no image is used to train anything; these are pure evaluations):

* **DnCNN**, BSD68 gray, σ = 25: KAIR's protocol — ``np.random.seed(0)`` once, then for each image
  in lexicographic order ``img / 255 + np.random.normal(0, 25 / 255, img.shape)`` in float, no
  clipping or rounding of the noisy input; PSNR on all pixels (no border crop). Mean over the first
  20 images (≈ 29.45 dB per the data README) and over all 68 (29.23 dB in the DnCNN paper). Other
  noise draws measured on the first 20 (float output): re-seeding 0 for every image 29.458;
  ``torch.manual_seed(0)`` + ``randn`` 29.452; noise on the 0-255 scale with the noisy input clipped
  and rounded to uint8 29.124 (that convention costs 0.33 dB).
* **Zero-DCE**, **SCI**: LOL-v1 eval15, ``low/`` → ``high/``, RGB, full 600×400 images.
  Zero-DCE's published LOL score is 14.86 dB; SCI has no LOL-v1 eval15 number in its paper (PTG-RM's
  20.28 dB is on LOL-real, another set), so all three released SCI files are just reported.
* **PReNet**: the 3 "Rain100L" pairs, PSNR / SSIM on the BT.601 Y channel. A smoke test only: the
  published 37.48 dB is on the full 100-image Rain100L test set, and these 3 pairs are *not* from
  it (that set is built on 481×321 BSD images with light streaks; these are 512×384 /
  384×512 / 320×480 with dense streaks, input 17.5-25.5 dB), so the Rain100L weights gain only
  ≈ 1.4 dB and their later stages lose a little; the Rain100H weights are run too as a diagnostic.
* **Wiener**: CBSD68 images 1-10 (lexicographic), each blurred (true convolution, reflect
  boundary) with each of the 8 Levin et al. 2009 motion kernels plus Gaussian noise σ = 0.01
  (``torch.Generator().manual_seed(0)``, not clipped); 80 cases, scored on RGB. The blurred input
  is clamped to [0, 1] for scoring it. Needs ``h5py`` to read ``Levin09.mat`` (MATLAB v7.3).

Usage::

    python benchmarks/check_bases.py --data /work/shared/evaldata
    python benchmarks/check_bases.py --quick          # DnCNN on 20 images, no diagnostics

Writes ``benchmarks/results/bases_check.json`` (``--out``). Rows whose data is missing are skipped
with a message; the script exits 0 unless a check fails to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bases import (
    EvalDataMissing,
    blur,
    load_base,
    load_levin_kernels,
    read_image,
)
from benchmarks.bases._metrics import load_metrics
from benchmarks.bases.images import (
    REPO_ROOT,
    list_images,
    read_pairs,
    require_data,
    resolve_data_dir,
    to_uint8,
)
from benchmarks.bases.wiener import WienerDeconv

psnr, ssim = load_metrics()

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "bases_check.json"


def _row(
    network: str,
    weights: str,
    data: str,
    images: int,
    published: float | None,
    psnr_in: float | None,
    psnr_out: float,
    ssim_out: float | None,
    seconds: float,
    notes: str = "",
    psnr_float: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    row = {
        "network": network,
        "weights": weights,
        "data": data,
        "images": images,
        "published_psnr": published,
        "input_psnr": None if psnr_in is None else round(psnr_in, 4),
        "psnr": round(psnr_out, 4),
        "ssim": None if ssim_out is None else round(ssim_out, 4),
        "psnr_unquantized": None if psnr_float is None else round(psnr_float, 4),
        "seconds": round(seconds, 1),
        "notes": notes,
    }
    row.update(extra)
    return row


def _score(
    pred: torch.Tensor, target: torch.Tensor, *, y_channel: bool = False
) -> tuple[float, float, float]:
    """PSNR and SSIM of the 8-bit-quantized prediction, and PSNR of the clamped float one."""
    p_float = psnr(pred.clamp(0, 1), target, y_channel=y_channel).item()
    pred = to_uint8(pred)
    p = psnr(pred, target, y_channel=y_channel).item()
    s = ssim(pred, target, y_channel=y_channel).item()
    return p, s, p_float


def check_dncnn(data_dir: Path, n_images: int) -> list[dict[str, Any]]:
    """DnCNN σ = 25 on BSD68 (KAIR noise protocol); rows for the first 20 and all images."""
    model = load_base("dncnn", data_dir)
    files = list_images(require_data(data_dir, "BSD68"))[:n_images]
    # Same stream as KAIR's np.random.seed(0) followed by np.random.normal(...) per image.
    rng = np.random.RandomState(0)
    p_in, p_out, s_out, p_float = [], [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for f in files:
            clean = read_image(f, "L")
            noise = rng.normal(0, 25 / 255.0, clean.shape[-2:])
            noisy = clean + torch.from_numpy(noise).float()[None, None]
            out = model(noisy)
            p_in.append(psnr(noisy, clean).item())
            p, s, pf = _score(out, clean)
            p_out.append(p)
            p_float.append(pf)
            s_out.append(s)
    secs = time.perf_counter() - t0
    total = len(files)
    spans = [(20, 29.45, "published = data README value for this exact protocol")]
    if total > 20:
        paper = total == 68
        spans.append(
            (total, 29.23 if paper else None, "published = DnCNN paper, all 68" if paper else "")
        )
    rows = []
    for n, pub, note in spans:
        n = min(n, total)
        rows.append(
            _row(
                "DnCNN σ=25 (gray)",
                "DnCNN-KAIR/dncnn_25.pth",
                f"BSD68 first {n}, σ=25, seed 0",
                n,
                pub if n in (20, 68) else None,
                float(np.mean(p_in[:n])),
                float(np.mean(p_out[:n])),
                float(np.mean(s_out[:n])),
                secs * n / total,
                note,
                psnr_float=float(np.mean(p_float[:n])),
            )
        )
    return rows


def _lol_row(
    data_dir: Path, label: str, weights: str, model: Callable, published: float | None, notes: str
) -> dict[str, Any]:
    pairs = read_pairs(
        require_data(data_dir, "LOL-v1-eval15", "low"),
        require_data(data_dir, "LOL-v1-eval15", "high"),
    )
    p_in, p_out, s_out, p_float = [], [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for _, low, high in pairs:
            p_in.append(psnr(low, high).item())
            p, s, pf = _score(model(low), high)
            p_out.append(p)
            p_float.append(pf)
            s_out.append(s)
    return _row(
        label,
        weights,
        "LOL-v1 eval15 (RGB)",
        len(pairs),
        published,
        float(np.mean(p_in)),
        float(np.mean(p_out)),
        float(np.mean(s_out)),
        time.perf_counter() - t0,
        notes,
        psnr_float=float(np.mean(p_float)),
    )


def check_zerodce(data_dir: Path) -> list[dict[str, Any]]:
    """Zero-DCE on LOL-v1 eval15."""
    model = load_base("zerodce", data_dir)
    return [
        _lol_row(
            data_dir,
            "Zero-DCE",
            "Zero-DCE/Epoch99.pth",
            model,
            14.86,
            "published = reported LOL-v1 eval15 PSNR of these released weights",
        )
    ]


def check_sci(data_dir: Path) -> list[dict[str, Any]]:
    """The three released SCI files on LOL-v1 eval15."""
    rows = []
    for variant in ("medium", "easy", "difficult"):
        model = load_base("sci", data_dir, variant=variant)
        rows.append(
            _lol_row(
                data_dir,
                f"SCI ({variant})",
                f"SCI/{variant}.pt (enhance.* only)",
                model,
                None,
                "no published LOL-v1 eval15 number (PTG-RM quotes 20.28 dB on LOL-real)",
            )
        )
    return rows


def check_prenet(data_dir: Path, diagnostics: bool) -> list[dict[str, Any]]:
    """PReNet6 (Rain100L weights) on the 3 Rain100L pairs, Y channel."""
    pairs = read_pairs(
        require_data(data_dir, "Rain100L-partial-MFDNet", "input"),
        require_data(data_dir, "Rain100L-partial-MFDNet", "target"),
    )
    configs = [("Rain100L", "PReNet6", 37.48)]
    if diagnostics:
        configs.append(("Rain100H", "PReNet6", None))
    rows = []
    for dataset, variant, published in configs:
        model = load_base("prenet", data_dir, variant=variant, dataset=dataset)
        p_in, p_out, s_out, stages, p_float = [], [], [], [], []
        t0 = time.perf_counter()
        with torch.no_grad():
            for _, rainy, clean in pairs:
                p_in.append(psnr(rainy, clean, y_channel=True).item())
                outs = model.forward_stages(rainy)
                p, s, pf = _score(outs[-1], clean, y_channel=True)
                p_out.append(p)
                p_float.append(pf)
                s_out.append(s)
                stages.append([psnr(o.clamp(0, 1), clean, y_channel=True).item() for o in outs])
        note = (
            "smoke test: published = full 100-image Rain100L (PReNet paper); these 3 pairs "
            "are dense-streak images of other sizes, not from that test set"
            if published
            else "diagnostic: Rain100H weights on the same pairs"
        )
        rows.append(
            _row(
                f"{variant} ({dataset} weights)",
                f"PReNet/logs/{dataset}/{variant}/net_latest.pth",
                "Rain100L-partial (3 pairs, Y)",
                len(pairs),
                published,
                float(np.mean(p_in)),
                float(np.mean(p_out)),
                float(np.mean(s_out)),
                time.perf_counter() - t0,
                note,
                psnr_float=float(np.mean(p_float)),
                per_image_psnr=[round(v, 3) for v in p_out],
                per_image_input_psnr=[round(v, 3) for v in p_in],
                per_stage_psnr=[round(v, 3) for v in np.mean(stages, axis=0).tolist()],
            )
        )
    return rows


def check_wiener(data_dir: Path, n_images: int = 10, sigma: float = 0.01) -> list[dict[str, Any]]:
    """Wiener deconvolution on CBSD68 images blurred with the 8 Levin kernels plus noise."""
    kernels = load_levin_kernels(data_dir)
    files = list_images(require_data(data_dir, "CBSD68"))[:n_images]
    deconv = WienerDeconv(kernels[0])
    gen = torch.Generator().manual_seed(0)
    p_in, p_out, s_out, p_float = [], [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for f in files:
            clean = read_image(f, "RGB")
            for k in kernels:
                noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64)
                blurred = (blur(clean.double(), k) + sigma * noise).float()
                p_in.append(psnr(blurred.clamp(0, 1), clean).item())
                p, s, pf = _score(deconv(blurred, kernel=k), clean)
                p_out.append(p)
                p_float.append(pf)
                s_out.append(s)
    return [
        _row(
            f"Wiener (nsr={deconv.nsr:g}, {deconv.pad_mode} pad + taper)",
            "none (classical); kernels blur-kernels-KAIR/Levin09.mat",
            f"CBSD68 first {len(files)} × 8 Levin kernels, σ={sigma}",
            len(p_out),
            None,
            float(np.mean(p_in)),
            float(np.mean(p_out)),
            float(np.mean(s_out)),
            time.perf_counter() - t0,
            "no published number; input_psnr is the blurred, noisy input",
            psnr_float=float(np.mean(p_float)),
        )
    ]


def _fmt(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the rows as a plain-text table."""
    head = ("network", "data", "published", "input", "PSNR", "SSIM", "imgs", "sec")
    body = [
        (
            r["network"],
            r["data"],
            _fmt(r["published_psnr"]),
            _fmt(r["input_psnr"]),
            _fmt(r["psnr"]),
            _fmt(r["ssim"], 4),
            str(r["images"]),
            f"{r['seconds']:.1f}",
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)))


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the table and write the JSON report.

    Args:
        argv: command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The process exit code (0 on success, also when data is missing and checks are skipped).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", default=None, help="evaluation-data folder (default ../shared/evaldata)"
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON report path")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=["dncnn", "zerodce", "sci", "prenet", "wiener"],
        help="run only these checks",
    )
    ap.add_argument("--dncnn-images", type=int, default=68, help="BSD68 images for DnCNN (≤ 68)")
    ap.add_argument("--quick", action="store_true", help="DnCNN on 20 images; no diagnostics")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data)
    if not data_dir.is_dir():
        print(
            f"SKIP: evaluation data not found at {data_dir} (not part of the repository; "
            "pass --data).",
            file=sys.stderr,
        )
        return 0
    n_dn = 20 if args.quick else max(1, min(args.dncnn_images, 68))
    checks: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "dncnn": lambda: check_dncnn(data_dir, n_dn),
        "zerodce": lambda: check_zerodce(data_dir),
        "sci": lambda: check_sci(data_dir),
        "prenet": lambda: check_prenet(data_dir, diagnostics=not args.quick),
        "wiener": lambda: check_wiener(data_dir),
    }
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name, fn in checks.items():
        if args.only and name not in args.only:
            continue
        print(f"[{name}] running…", file=sys.stderr, flush=True)
        try:
            rows += fn()
        except EvalDataMissing as exc:
            skipped[name] = str(exc)
            print(f"[{name}] SKIP: {exc}", file=sys.stderr)
    print_table(rows)
    report = {
        "rows": rows,
        "skipped": skipped,
        "data_dir": str(data_dir),
        "command": "python benchmarks/check_bases.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "scoring": "ptg_refine.metrics psnr/ssim, outputs quantized to 8 bits, mean over images",
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "machine": platform.machine(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
