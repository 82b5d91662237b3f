"""``ptg-refine``: the command-line interface (thin: parses arguments, calls the library)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import PTGError

__all__ = ["main"]

log = logging.getLogger("ptg_refine.cli")

_TASKS = ("denoise", "derain", "lowlight", "deblur")


def _add_base_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--base",
        default=None if required else "identity",
        required=required,
        metavar="SPEC",
        help="base network: 'identity', a TorchScript file, or 'package.module:factory' "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--base-weights",
        default=None,
        metavar="FILE",
        help="weights for a 'module:factory' base (safetensors or a torch state dict)",
    )
    p.add_argument(
        "--output-index", type=int, default=None, help="take item N of a base that returns a tuple"
    )
    p.add_argument(
        "--at",
        default=None,
        metavar="MODULE",
        help="feature-level refinement: refine the output of this submodule of the base "
        "(a name from model.named_modules()) instead of the output image",
    )


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptg-refine",
        description="Boost image-restoration networks with PTG-RM, a tiny refiner guided by "
        "priors from pre-trained models.",
    )
    parser.add_argument("--version", action="version", version=f"ptg_refine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="refine an image or a folder of images")
    p.add_argument("-i", "--input", required=True, help="image file or folder of degraded images")
    p.add_argument("-o", "--output", required=True, help="output file (for one image) or folder")
    p.add_argument(
        "--refiner", required=True, metavar="SPEC", help="alias, Hub repo 'org/name' or folder"
    )
    p.add_argument("--encoder", default=None, metavar="SPEC", help="override the refiner's encoder")
    _add_base_args(p)
    _add_device(p)
    p.add_argument(
        "--tile", type=int, default=None, help="process in tiles of this size (bounded memory)"
    )
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in pixels")
    p.add_argument("--save-base", action="store_true", help="also save the base network's output")
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="read images as gray (1) or RGB (3); default: the refiner's (3 with --at)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="also save overlays of the refiner's range map and spatial attention",
    )
    p.add_argument("--local-files-only", action="store_true", help="never touch the network")

    p = sub.add_parser("train", help="train a refiner for your network on your data")
    data = p.add_argument_group("data (either paired folders or clean images + a task)")
    data.add_argument("--lq", help="folder of degraded images")
    data.add_argument("--gt", help="folder of ground-truth images (same file names)")
    data.add_argument("--clean", help="folder of clean images to degrade synthetically")
    data.add_argument("--task", choices=_TASKS, help="synthetic degradation for --clean")
    data.add_argument("--val-lq", help="validation degraded folder")
    data.add_argument("--val-gt", help="validation ground-truth folder")
    data.add_argument(
        "--channels", type=int, choices=(1, 3), default=3, help="image channels (default 3)"
    )
    _add_base_args(p)
    p.add_argument(
        "--encoder", default="stats", metavar="SPEC", help="prior encoder (default: stats)"
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--loss", default="charbonnier", help="charbonnier, l1, mse, ...")
    p.add_argument("--joint", action="store_true", help="train the base jointly (Eq. 8)")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="mixed precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=16, help="refiner width c (default 16)")
    p.add_argument(
        "--out", required=True, help="output folder (refiner/, checkpoint.pt, log.jsonl)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--keep-best",
        action="store_true",
        help="keep the weights with the best validation PSNR (needs --val-lq/--val-gt)",
    )
    p.add_argument("--val-every", type=int, default=None, help="validate every N steps")
    p.add_argument("--checkpoint-every", type=int, default=200)
    _add_device(p)

    p = sub.add_parser("eval", help="measure PSNR/SSIM (field protocol)")
    p.add_argument("--pred", help="folder of restored images (compare with --gt)")
    p.add_argument("--gt", required=True, help="folder of ground-truth images")
    p.add_argument("--lq", help="folder of degraded images (run --base/--refiner on them)")
    p.add_argument("--refiner", metavar="SPEC", help="refiner alias, repo or folder (with --lq)")
    _add_base_args(p)
    p.add_argument(
        "--y-channel", action="store_true", help="measure on BT.601 Y (deraining protocol)"
    )
    p.add_argument("--crop-border", type=int, default=0)
    p.add_argument("--channels", type=int, choices=(1, 3), default=None)
    p.add_argument("--out", default=None, help="folder for metrics.csv / metrics.json / grids")
    p.add_argument("--grids", action="store_true", help="save degraded|base|refined|gt grids")
    _add_device(p)

    sub.add_parser("encoders", help="list the registered prior encoders")

    p = sub.add_parser("download", help="fetch a refiner into the Hugging Face cache")
    p.add_argument("name", help="alias or Hub repo 'org/name'")
    p.add_argument("--revision", default=None)
    p.add_argument("--cache-dir", default=None)

    p = sub.add_parser("demo", help="offline end-to-end demo on scikit-image photographs")
    p.add_argument("--out", default="demo-out", help="output folder (default: %(default)s)")
    p.add_argument("--task", choices=_TASKS, default="denoise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="fewer steps (a smoke test, under a minute)"
    )

    p = sub.add_parser("distill", help="distill an encoder into a small, fast student CNN")
    p.add_argument("--teacher", required=True, metavar="SPEC", help="encoder spec to imitate")
    p.add_argument(
        "--images", required=True, help="folder of clean (or, --degraded, degraded) images"
    )
    p.add_argument(
        "--task",
        choices=_TASKS,
        action="append",
        default=None,
        help="degradation (repeatable; default: a mix of all tasks)",
    )
    p.add_argument("--degraded", action="store_true", help="images are degraded already")
    p.add_argument("--val-images", default=None, help="folder of held-out images")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--num-crops", type=int, default=1024, help="cached training crops")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--input-size", type=int, default=128, help="student input side (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (student + metrics.json)")
    _add_device(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _COMMANDS[args.command](args)
    except PTGError as err:
        print(f"ptg-refine {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------- commands
def _load_model(args: argparse.Namespace, refiner_spec: str, encoder: str | None = None):
    import torch

    from .base_models import load_base
    from .refiner import PTGRefiner
    from .wrap import refine

    refiner = PTGRefiner.from_pretrained(
        refiner_spec, local_files_only=getattr(args, "local_files_only", False)
    )
    base = load_base(args.base, weights=args.base_weights)
    model = refine(
        base,
        refiner,
        encoder=encoder,
        output=args.output_index,
        at=args.at,
        **(
            {"tile": args.tile, "tile_overlap": args.tile_overlap}
            if getattr(args, "tile", None)
            else {}
        ),
    )
    return model.to(torch.device(args.device)).eval()


def _cmd_run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .errors import DataError
    from .io import list_images, read_image, write_image

    src, dst = Path(args.input), Path(args.output)
    if src.is_dir():
        files = list_images(src)
        if not files:
            raise DataError(f"No images found in {src}.")
        outputs = [dst / f.with_suffix(".png").name for f in files]
    elif src.is_file():
        files = [src]
        outputs = [dst / (src.stem + ".png") if dst.is_dir() or not dst.suffix else dst]
    else:
        raise DataError(f"Input {src} does not exist.")
    if args.at and args.explain:
        raise _usage("--explain shows image-level maps; it cannot be combined with --at")
    model = _load_model(args, args.refiner, args.encoder)
    channels = args.channels or (3 if args.at else model.refiner.in_channels)
    device = torch.device(args.device)
    with torch.inference_mode():
        for f, out in zip(
            tqdm(files, unit="image", desc="refine", disable=len(files) < 2), outputs
        ):
            x = read_image(f, channels=channels)[None].to(device)
            res = model.forward_all(x)
            write_image(out, res.refined[0].clamp(0, 1).cpu())
            if args.save_base:
                write_image(
                    out.with_name(out.stem + "_base.png"), res.restored[0].clamp(0, 1).cpu()
                )
            if args.explain:
                from .explain import explain, overlay

                ex = explain(model.refiner, res.restored, x, res.features)
                for name, heat in (("range", ex.range_map), ("spatial", ex.spatial_attention)):
                    picture = overlay(x[0].cpu(), heat[0].cpu())
                    write_image(out.with_name(f"{out.stem}_{name}.png"), picture)
    print(f"wrote {len(files)} image(s) to {dst}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .base_models import load_base
    from .refiner import PTGRefiner
    from .train import PairedFolder, SyntheticPairs, fit
    from .wrap import refine

    if args.clean:
        if not args.task:
            raise _usage("--clean needs --task (one of " + ", ".join(_TASKS) + ")")
        train = SyntheticPairs(
            args.clean,
            args.task,
            crop=args.crop,
            augment=True,
            seed=args.seed,
            channels=args.channels,
        )
    elif args.lq and args.gt:
        train = PairedFolder(
            args.lq, args.gt, crop=args.crop, augment=True, seed=args.seed, channels=args.channels
        )
    else:
        raise _usage("give --lq DIR --gt DIR, or --clean DIR --task TASK")
    val = None
    if args.val_lq and args.val_gt:
        val = PairedFolder(args.val_lq, args.val_gt, channels=args.channels)
    base = load_base(args.base, weights=args.base_weights)
    in_channels = args.channels or 3
    if args.at:
        from .wrap import feature_channels

        in_channels = feature_channels(base, args.at, in_channels)
    refiner = PTGRefiner(
        encoder=args.encoder, embed_dim=None, in_channels=in_channels, width=args.width
    )
    model = refine(
        base, refiner, freeze_base=not args.joint, output=args.output_index, at=args.at
    ).to(torch.device(args.device))
    result = fit(
        model,
        train,
        val,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        amp=args.amp,
        out_dir=args.out,
        resume=args.resume,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        val_every=args.val_every,
        keep_best=args.keep_best,
        device=args.device,
    )
    print(
        json.dumps(
            {"out": str(args.out), "steps": result.steps, "seconds": round(result.seconds, 1)}
        )
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, evaluate_folders

    if args.pred:
        res = evaluate_folders(
            args.pred,
            args.gt,
            y_channel=args.y_channel,
            crop_border=args.crop_border,
            out_dir=args.out,
        )
    elif args.lq and args.refiner:
        from .train import PairedFolder

        model = _load_model(args, args.refiner)
        channels = args.channels or (3 if args.at else model.refiner.in_channels)
        data = PairedFolder(args.lq, args.gt, channels=channels)
        res = evaluate(
            model,
            data,
            y_channel=args.y_channel,
            crop_border=args.crop_border,
            out_dir=args.out,
            save_grids=args.grids,
            device=args.device,
            progress=True,
        )
    else:
        raise _usage("give --pred DIR --gt DIR, or --lq DIR --gt DIR --refiner SPEC [--base SPEC]")
    print(json.dumps(res.summary(), indent=2))
    return 0


def _cmd_encoders(args: argparse.Namespace) -> int:
    from .encoders import list_encoders

    for name in list_encoders():
        print(name)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .hub import download

    folder = download(args.name, revision=args.revision, cache_dir=args.cache_dir)
    print(folder)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(args.out, task=args.task, seed=args.seed, quick=args.quick, progress=True)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distill import distill_encoder

    result = distill_encoder(
        args.teacher,
        args.images,
        task=args.task,
        degraded=args.degraded,
        val_images=args.val_images,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        num_crops=args.num_crops,
        lr=args.lr,
        student_kwargs={"input_size": args.input_size},
        seed=args.seed,
        out_dir=args.out,
        progress=True,
        device=args.device,
    )
    print(json.dumps({"out": str(args.out), **result.summary()}, indent=2))
    return 0


def _usage(message: str) -> PTGError:
    from .errors import ConfigError

    return ConfigError(message)


_COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "encoders": _cmd_encoders,
    "download": _cmd_download,
    "demo": _cmd_demo,
    "distill": _cmd_distill,
}

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
