"""Benchmark-only prior encoders for the quality benchmark (``benchmarks/quality.py``).

Not part of the ``ptg_refine`` package: they plug into it through the encoder registry's support
for user callables (:func:`ptg_refine.create_encoder`).

* :class:`MobileNetTFLite`: the ImageNet-trained MobileNet v1 1.0 224 *embedding extractor*
  (int8 TFLite, 1024-d global-average-pooled features) from the shared evaluation data, run with
  ``ai_edge_litert``. It is the real pre-trained prior available offline on these machines (no CLIP,
  BLIP-2 or Stable Diffusion weights can be had here).
* :func:`zero_prior`: features that are all zero (the "no prior" ablation). The refiner's prior
  MLPs have no bias, so a zero vector contributes nothing; ``F.normalize`` keeps zeros at zero.
* :class:`CachedPrior`: a content-hash cache in front of any encoder, shared by every run of the
  benchmark (features of a crop are computed once, whatever the seed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ptg_refine import create_encoder
from ptg_refine.encoders import Encoder
from ptg_refine.encoders.module import ModuleEncoder

__all__ = [
    "MOBILENET_FILE",
    "CachedPrior",
    "MobileNetTFLite",
    "cached_encoder",
    "mobilenet_encoder",
    "zero_prior",
]

MOBILENET_FILE = "MobileNet-ImageNet-tflite/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
"""The 1024-d embedding extractor, relative to the evaluation-data folder."""


class MobileNetTFLite:
    """Callable running the int8 MobileNet v1 embedding extractor on a batch, image by image.

    Input images are (B, 3, 224, 224) floats in [0, 1] (the registry's preprocessing resizes them
    and, with ``mean=0, std=1``, leaves their range); they are quantized to uint8 RGB, the model's
    input, and the uint8 output is dequantized with its ``(scale, zero_point)``. One interpreter per
    instance (it is not thread safe).

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads.

    Shape:
        (B, 3, 224, 224) in [0, 1] -> (B, 1024) float32 (not normalized).
    """

    def __init__(self, path: str | Path, *, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter  # benchmark dependency only

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_shape = tuple(int(s) for s in inp["shape"])  # (1, 224, 224, 3)
        self.scale, self.zero_point = (float(v) for v in out["quantization"])
        self.dim = int(np.prod(out["shape"][1:]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch.

        Args:
            images: (B, 3, H, W) in [0, 1] with H = W = 224.

        Returns:
            (B, 1024) dequantized embeddings.
        """
        x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        x = x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        feats = []
        for img in x:
            self.interpreter.set_tensor(self._in_index, img[None])
            self.interpreter.invoke()
            q = self.interpreter.get_tensor(self._out_index).reshape(-1).astype(np.float32)
            feats.append(self.scale * (q - self.zero_point))
        return torch.from_numpy(np.stack(feats)).to(images.device)


def mobilenet_encoder(data_dir: str | Path) -> Encoder:
    """The MobileNet embedding extractor as a ``ptg_refine`` encoder (224², no normalization).

    Args:
        data_dir: the evaluation-data folder holding :data:`MOBILENET_FILE`.

    Returns:
        An :class:`~ptg_refine.encoders.Encoder` with ``dim = 1024``.
    """
    net = MobileNetTFLite(Path(data_dir) / MOBILENET_FILE)
    return create_encoder(net, input_size=224, mean=(0, 0, 0), std=(1, 1, 1), dim=net.dim)


def zero_prior(dim: int = 512) -> Encoder:
    """An encoder whose features are all zero: the refiner without a prior.

    Args:
        dim: the feature length (the refiner's ``embed_dim``).

    Returns:
        An :class:`~ptg_refine.encoders.Encoder` returning ``(B, dim)`` zeros.
    """

    def zeros(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dim, device=x.device)

    # ModuleEncoder directly: create_encoder reads input_size=None as 'default (224)'.
    return ModuleEncoder(zeros, input_size=None, mean=(0, 0, 0), std=(1, 1, 1), dim=dim)


class CachedPrior:
    """Content-hash cache in front of an encoder (features of an image computed once).

    Called with the images the registry hands over (clamped, 3 channels, native size), it hashes
    each image's bytes and runs ``inner`` only on the images it has not seen.

    Args:
        inner: the encoder (any ``(B, 3, H, W) -> (B, D)`` module, normally an ``Encoder``).

    Attributes:
        hits: images answered from the cache.
        misses: images encoded.
    """

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.store: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self._forced: torch.Tensor | None = None
        self._last_keys: list[str] = []

    @staticmethod
    def key(image: torch.Tensor) -> str:
        """BLAKE2b of an image's shape and bytes."""
        x = image.detach().float().contiguous().cpu()
        h = hashlib.blake2b(digest_size=16)
        h.update(str(tuple(x.shape)).encode())
        h.update(x.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch (B, 3, H, W) -> (B, D), cached by content."""
        keys = [self.key(im) for im in images]
        self._last_keys = keys
        todo = sorted({i for i, k in enumerate(keys) if k not in self.store})
        first = {}
        for i in todo:
            first.setdefault(keys[i], i)
        idx = sorted(first.values())
        if idx:
            if self._forced is not None:
                feats = self._forced.expand(len(idx), -1)
            else:
                with torch.no_grad():
                    feats = self.inner(images[idx]).float().cpu()
            for j, i in enumerate(idx):
                self.store[keys[i]] = feats[j]
        self.misses += len(idx)
        self.hits += len(keys) - len(idx)
        return torch.stack([self.store[k] for k in keys]).to(images.device)

    def share_global(self, encoder: Encoder, image: torch.Tensor, crops: torch.Tensor) -> None:
        """Make ``crops`` (B, C, h, w) of ``image`` (C, H, W) answer with the whole image's features.

        The prior is global: at test time it is computed from the whole degraded image, so a
        training crop gets the features of the whole degraded image it was cut from (not of the
        crop alone, which an encoder sees at a very different scale). ``encoder`` is the
        registered encoder wrapping this cache, so the keys match what training will look up.
        """
        with torch.no_grad():
            encoder(image[None])
            self._forced = self.store[self._last_keys[0]][None]
            try:
                encoder(crops)
            finally:
                self._forced = None


def cached_encoder(inner: Encoder) -> tuple[Encoder, CachedPrior]:
    """Wrap ``inner`` in a :class:`CachedPrior` and register it as a ``ptg_refine`` encoder.

    The outer encoder does no resizing or normalization (``inner`` does its own), so its output is
    exactly ``inner``'s (L2-normalizing twice changes nothing).

    Args:
        inner: the encoder to cache.

    Returns:
        ``(encoder, cache)``: the encoder to pass to ``refine`` and its cache (for statistics).
    """
    cache = CachedPrior(inner)
    # ModuleEncoder directly: create_encoder reads input_size=None as 'default (224)'.
    enc = ModuleEncoder(cache, input_size=None, mean=(0, 0, 0), std=(1, 1, 1), dim=inner.dim)
    return enc, cache
