"""Deployment: export a :class:`~ptg_refine.PTGRefiner` to ONNX.

The exported graph takes ``restored`` and ``degraded`` images (B, C, H, W) and the prior
``features`` (B, D), and returns the refined image, exactly like ``refiner(restored, degraded,
features)``. Batch, height and width are dynamic. Heights and widths must be at least 4 (PyTorch
pads smaller sides by replication, the graph always reflects). The prior encoder is not part of
the graph: compute the features with the same encoder as in PyTorch (or export it separately).

Needs the ``export`` extra: ``pip install "ptg_refine[export]"`` (onnx, onnxscript; onnxruntime to
run the result).

Example:
    >>> from ptg_refine import PTGRefiner
    >>> from ptg_refine.export import export_onnx
    >>> export_onnx(PTGRefiner(encoder="stats"), "refiner.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .errors import ConfigError, MissingDependencyError
from .refiner import PTGRefiner

__all__ = ["ONNX_INPUT_NAMES", "ONNX_OUTPUT_NAMES", "export_onnx"]

logger = logging.getLogger(__name__)

ONNX_INPUT_NAMES = ("restored", "degraded", "features")
ONNX_OUTPUT_NAMES = ("refined",)


def export_onnx(
    refiner: PTGRefiner,
    path: str | os.PathLike,
    *,
    opset: int = 18,
    example_size: int | tuple[int, int] = (64, 64),
    dynamic_batch: bool = True,
) -> Path:
    """Export ``refiner`` to an ONNX file with dynamic batch, height and width.

    Args:
        refiner: the refiner to export (its weights are embedded in the file).
        path: where to write the ``.onnx`` file (parent folders are created).
        opset: ONNX opset version (at least 17, for LayerNormalization).
        example_size: (height, width) of the example inputs used for tracing, or one int for a
            square. Any size of at least 8 gives the same graph.
        dynamic_batch: keep the batch dimension dynamic; False fixes it to 1.

    Returns:
        The path written.

    Raises:
        ConfigError: bad arguments.
        MissingDependencyError: onnx / onnxscript are not installed.
    """
    if not isinstance(refiner, PTGRefiner):
        raise ConfigError(f"export_onnx needs a PTGRefiner, got {type(refiner).__name__}.")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ConfigError(f"opset must be an integer >= 17 (LayerNormalization), got {opset!r}.")
    if isinstance(example_size, int):
        example_size = (example_size, example_size)
    if (
        not isinstance(example_size, tuple | list)
        or len(example_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in example_size)
    ):
        raise ConfigError(
            f"example_size must be an int or a (height, width) pair of ints >= 8, "
            f"got {example_size!r}."
        )
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as err:
            raise MissingDependencyError(
                f"ONNX export needs the '{module}' package. Install the extra with "
                'pip install "ptg_refine[export]".'
            ) from err

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    param = next(refiner.parameters())
    height, width = example_size
    cimg, dim = refiner.in_channels, refiner.embed_dim
    gen = torch.Generator().manual_seed(0)
    batch = 2 if dynamic_batch else 1  # an example batch of 1 would pin a dynamic batch to 1
    shape = (batch, cimg, height, width)
    example = (
        torch.rand(shape, generator=gen).to(param),
        torch.rand(shape, generator=gen).to(param),
        torch.randn(batch, dim, generator=gen).to(param),
    )
    auto = torch.export.Dim.DYNAMIC
    batch_dim = {0: auto} if dynamic_batch else {}
    image_dims = {**batch_dim, 2: auto, 3: auto}
    dynamic_shapes = {"restored": image_dims, "degraded": image_dims, "features": batch_dim}

    was_training = refiner.training
    refiner.eval()
    try:
        with torch.no_grad():
            # torch.export first (non-strict): it fails loudly if a size would be specialized,
            # where the ONNX exporter would fall back to a static graph.
            program = torch.export.export(
                refiner, example, dynamic_shapes=dynamic_shapes, strict=False
            )
            onnx_program = torch.onnx.export(
                program,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=list(ONNX_INPUT_NAMES),
                output_names=list(ONNX_OUTPUT_NAMES),
                verbose=False,
            )
        onnx_program.save(str(path))
    finally:
        refiner.train(was_training)
    logger.info("exported %s (opset %d, dynamic batch/height/width)", path, opset)
    return path
