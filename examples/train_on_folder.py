"""Train a refiner for your network on a folder of paired images, then save, reload and evaluate it.

Run: python examples/train_on_folder.py [LQ_DIR GT_DIR]

Without arguments it first writes a tiny folder of noisy/clean pairs from scikit-image's photographs
(``pip install "ptg_refine[demo]"``) into ``example-data/`` so that it runs anywhere, offline.
"""

import sys
from pathlib import Path

import torch

from ptg_refine import PTGRefiner, refine
from ptg_refine.base_models import TinyRestorer
from ptg_refine.evaluate import evaluate
from ptg_refine.train import PairedFolder, fit


def make_example_pairs(root: Path) -> tuple[Path, Path]:
    import skimage.data

    from ptg_refine.io import write_image
    from ptg_refine.train.degradations import add_gaussian_noise

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        clean = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        clean = clean[:, :192, :192]
        noisy = add_gaussian_noise(clean, 25, generator=0, clip=True)
        write_image(root / "gt" / f"{name}.png", clean)
        write_image(root / "lq" / f"{name}.png", noisy)
    return root / "lq", root / "gt"


def main() -> None:
    lq, gt = (
        (Path(sys.argv[1]), Path(sys.argv[2]))
        if len(sys.argv) == 3
        else make_example_pairs(Path("example-data"))
    )
    base = TinyRestorer(channels=3)  # stands in for your trained network (load its weights here)
    model = refine(
        base, PTGRefiner(encoder="stats")
    )  # base frozen; refine(..., freeze_base=False) trains both

    train = PairedFolder(lq, gt, crop=64, augment=True)
    result = fit(
        model, train, steps=60, batch_size=4, lr=5e-4, out_dir="example-run", progress=True
    )
    print(
        f"trained {result.steps} steps in {result.seconds:.0f} s; refiner saved to {result.refiner_dir}"
    )

    reloaded = refine(base, PTGRefiner.from_pretrained(result.refiner_dir))
    report = evaluate(reloaded, PairedFolder(lq, gt))
    m = report.means
    print(
        f"PSNR input {m['psnr_input']:.2f} dB | base {m['psnr_base']:.2f} dB | refined {m['psnr_refined']:.2f} dB"
    )


if __name__ == "__main__":
    main()
