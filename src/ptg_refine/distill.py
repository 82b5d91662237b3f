"""Prior distillation: a small CNN student that predicts a pre-trained encoder's prior ``g``.

PTG-RM runs its pre-trained encoder (the OSF of PAPER.md, e.g. CLIP ViT-B/32) on every image at
inference, which on a CPU costs more than the refiner itself. :func:`distill_encoder` trains a
:class:`StudentEncoder` (a strided CNN of under 1M parameters) to reproduce the teacher's
L2-normalized features from the *degraded* image, with a cosine loss on synthetically degraded crops
(the degradations of :mod:`ptg_refine.train.degradations`, mixed with clean crops). The student is an
:class:`~ptg_refine.encoders.Encoder` with the teacher's ``dim``, so it replaces the teacher anywhere
an encoder is accepted::

    from ptg_refine import refine
    from ptg_refine.distill import StudentEncoder, distill_encoder

    result = distill_encoder("open_clip:ViT-B-32@openai", "photos/", steps=3000)
    result.student.save_pretrained("student/")          # or .push_to_hub("me/ptg-student")
    model = refine(net, refiner, encoder="student:student/")   # same dim as the teacher

A saved student is a folder (or Hub repo) holding ``config.json`` and ``model.safetensors``; load it
with :meth:`StudentEncoder.from_pretrained` or as the encoder spec ``"student:<folder | org/repo>"``.
Loading is strict, and Hub failures raise the same :class:`~ptg_refine.errors.HubError` subclasses as
:meth:`ptg_refine.PTGRefiner.from_pretrained`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from ._atomic import atomic_write
from ._weights import load_state_dict_strict, read_config_json, read_safetensors
from .encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder
from .encoders.registry import create_encoder, list_encoders, register_encoder
from .errors import ConfigError, DataError, EncoderError

__all__ = [
    "STUDENT_FORMAT",
    "DistillResult",
    "StudentConfig",
    "StudentEncoder",
    "StudentNet",
    "distill_encoder",
    "feature_cosine",
    "load_state_dict_strict",
]

logger = logging.getLogger(__name__)

STUDENT_FORMAT = "ptg_refine.student"
_CONFIG_NAME = "config.json"
_WEIGHTS_NAME = "model.safetensors"
_TASKS = ("denoise", "derain", "lowlight", "deblur")
# Strength ranges sampled per crop (the defaults of the other tasks already are ranges).
_TASK_KWARGS: dict[str, dict[str, Any]] = {"denoise": {"sigma": (5.0, 50.0)}}


# ---------------------------------------------------------------------------------- config
@dataclass
class StudentConfig:
    """Everything that defines a :class:`StudentEncoder` (plain JSON values).

    Attributes:
        dim: Output length ``D`` (the teacher's ``dim``).
        input_size: Square side the images are resized to before the CNN (``None``: native
            resolution; the cost then grows with the image).
        widths: Channels of the strided stages (each halves the resolution).
        hidden: Width of the MLP head.
        mean: Per-channel normalization mean.
        std: Per-channel normalization std.
        teacher: Spec of the encoder it was distilled from (informational), or ``None``.
    """

    dim: int = 512
    input_size: int | None = 128
    widths: tuple[int, ...] = (24, 48, 96, 128)
    hidden: int = 384
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    teacher: str | None = None

    def validate(self) -> None:
        """Raise :class:`~ptg_refine.errors.ConfigError` on an invalid value."""

        def positive_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        if not positive_int(self.dim):
            raise ConfigError(f"dim must be a positive int, got {self.dim!r}.")
        if self.input_size is not None and (
            not positive_int(self.input_size) or self.input_size < 16
        ):
            raise ConfigError(f"input_size must be an int >= 16 or None, got {self.input_size!r}.")
        if not self.widths or not all(positive_int(w) for w in self.widths):
            raise ConfigError(f"widths must be a non-empty list of positive ints: {self.widths!r}.")
        if not positive_int(self.hidden):
            raise ConfigError(f"hidden must be a positive int, got {self.hidden!r}.")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
                raise ConfigError(f"{name} must be 3 numbers, got {v!r}.")
        if min(self.std) <= 0:
            raise ConfigError(f"std must be positive, got {self.std!r}.")
        if self.teacher is not None and not isinstance(self.teacher, str):
            raise ConfigError(f"teacher must be a spec string or None, got {self.teacher!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, tagged with ``"format": "ptg_refine.student"``."""
        return {
            "format": STUDENT_FORMAT,
            "dim": self.dim,
            "input_size": self.input_size,
            "widths": list(self.widths),
            "hidden": self.hidden,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "teacher": self.teacher,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> StudentConfig:
        """Parse :meth:`to_dict` output.

        Raises:
            ConfigError: not a student config (e.g. a refiner's), unknown keys or bad values.
        """
        data = dict(data)
        fmt = data.pop("format", None)
        if fmt != STUDENT_FORMAT:
            what = "a refiner's config" if "embed_dim" in data else f"format {fmt!r}"
            raise ConfigError(
                f"{source} is {what}, not a ptg_refine student encoder (format "
                f"{STUDENT_FORMAT!r}). Hint: load refiners with PTGRefiner.from_pretrained and "
                "students (written by StudentEncoder.save_pretrained) with "
                "StudentEncoder.from_pretrained."
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown keys {unknown} in {source}; valid keys: {sorted(known)}. Hint: it was "
                "written by a newer ptg_refine; upgrade the package."
            )
        for key in ("widths", "mean", "std"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        cfg = cls(**data)
        cfg.validate()
        return cfg


# ---------------------------------------------------------------------------------- network
class StudentNet(nn.Module):
    """The trainable core: strided 3x3 conv stages, mean + std pooling, a 2-layer MLP head.

    Mean and standard-deviation pooling make the features independent of the input size and keep
    second-order statistics (noise level, texture, contrast) that tell degradations apart.

    Args:
        dim: Output length.
        widths: Channels of each stage (conv 3x3 stride 2 + GELU, conv 3x3 + GELU).
        hidden: MLP hidden width.

    Shape:
        x: (B, 3, H, W) normalized images, H, W >= 2 ** len(widths) -> (B, dim) (not normalized).
    """

    def __init__(
        self, *, dim: int, widths: Sequence[int] = (24, 48, 96, 128), hidden: int = 384
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            layers += [
                nn.Conv2d(c_in, w, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(w, w, 3, padding=1),
                nn.GELU(),
            ]
            c_in = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).flatten(2)
        pooled = torch.cat([f.mean(-1), f.std(-1, unbiased=False)], dim=1)
        return self.head(pooled)


_MODEL_CARD = """---
{{ card_data }}
---

# PTG-RM student encoder

A {{ num_parameters }}-parameter CNN distilled (with `ptg_refine.distill.distill_encoder`) from the
encoder `{{ teacher }}` (D = {{ dim }}). It predicts the teacher's L2-normalized prior from a degraded
image, so a PTG-RM refiner trained with the teacher runs without it at inference.

```python
from ptg_refine import refine

model = refine(my_restoration_net, refiner, encoder="student:{{ repo_id }}")
```

{{ notes }}
"""


class StudentEncoder(
    Encoder,
    PyTorchModelHubMixin,
    library_name="ptg_refine",
    tags=["ptg-rm", "ptg_refine", "distillation", "image-feature-extraction"],
    paper_url="https://arxiv.org/abs/2403.06793",
    model_card_template=_MODEL_CARD,
):
    """A frozen :class:`~ptg_refine.encoders.Encoder` wrapping a distilled :class:`StudentNet`.

    The :class:`~ptg_refine.encoders.Encoder` base class does the preprocessing (clamp, gray to RGB,
    antialiased resize to ``input_size``, normalization), freezing and L2 normalization. Train the
    core ``encoder.net`` (a plain ``nn.Module``) with :func:`distill_encoder`, or directly on
    ``encoder.net(encoder.preprocess(images))``.

    Args:
        dim: Output length (the teacher's ``dim``).
        input_size: Square side the images are resized to (default 128: the cost is then fixed,
            about 30 MFLOPs per image whatever its size); ``None`` for native resolution.
        widths: Channels of the strided stages.
        hidden: MLP head width.
        mean: Normalization mean (default ImageNet).
        std: Normalization std (default ImageNet).
        teacher: Spec of the teacher it imitates (recorded in the config and model card).

    Shape:
        images: (B, C, H, W), C in {1, 3}, values in [0, 1] -> (B, dim) float32, unit L2 norm.

    Example:
        >>> import torch
        >>> from ptg_refine.distill import StudentEncoder
        >>> enc = StudentEncoder(dim=71)
        >>> enc(torch.rand(2, 3, 45, 61)).shape
        torch.Size([2, 71])
        >>> enc.num_parameters < 1_000_000
        True
    """

    def __init__(
        self,
        *,
        dim: int = 512,
        input_size: int | None = 128,
        widths: Sequence[int] = (24, 48, 96, 128),
        hidden: int = 384,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        teacher: str | None = None,
    ) -> None:
        cfg = StudentConfig(
            dim=dim,
            input_size=input_size,
            widths=tuple(widths),
            hidden=hidden,
            mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in std),  # type: ignore[arg-type]
            teacher=teacher,
        )
        cfg.validate()
        super().__init__(dim=dim, input_size=input_size, mean=cfg.mean, std=cfg.std)
        self.config = cfg
        self._hub_mixin_config = cfg.to_dict()
        self.net = StudentNet(dim=dim, widths=cfg.widths, hidden=hidden)
        self.freeze()

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the CNN."""
        return sum(p.numel() for p in self.net.parameters())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable L2-normalized features (for training; :meth:`forward` runs no_grad).

        Args:
            images: (B, C, H, W) in [0, 1], C in {1, 3}.

        Returns:
            (B, dim) float32, unit L2 norm.
        """
        return F.normalize(self.net(self.preprocess(images)).float(), dim=1, eps=1e-12)

    # ------------------------------------------------------------------ Hub I/O
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "library": "ptg_refine", "kind": STUDENT_FORMAT}
        atomic_write(
            save_directory / _WEIGHTS_NAME, lambda p: save_file(state, p, metadata=metadata)
        )
        text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        atomic_write(save_directory / _CONFIG_NAME, lambda p: Path(p).write_text(text))

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        values = {
            "num_parameters": f"{self.num_parameters:,}",
            "teacher": self.config.teacher or "an unrecorded encoder",
            "dim": self.dim,
            "repo_id": kwargs.pop("repo_id", "path/to/this/folder"),
            "notes": kwargs.pop("notes", ""),
        }
        values.update(kwargs)
        return super().generate_model_card(*args, **values)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        map_location: str | torch.device = "cpu",
        **unexpected: Any,
    ) -> StudentEncoder:
        """Load a student from a folder written by :meth:`save_pretrained` or a Hub repo.

        Loading is strict: a config that is not a student's raises
        :class:`~ptg_refine.errors.ConfigError`; missing or unexpected keys, wrong shapes or a
        corrupt file raise :class:`~ptg_refine.errors.CheckpointError`. Hub failures raise the
        matching :class:`~ptg_refine.errors.HubError` subclass.

        Returns:
            A frozen student in eval mode.
        """
        if unexpected:
            raise ConfigError(
                f"Unexpected keyword arguments {sorted(unexpected)} for "
                "StudentEncoder.from_pretrained; config values come from config.json."
            )
        from .hub import resolve_files

        config_file, weights_file = resolve_files(
            str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
        )
        model = cls.from_config_file(config_file)
        model.load_weights(weights_file, map_location=map_location)
        return model.freeze()  # type: ignore[return-value]

    @classmethod
    def from_config_file(cls, path: str | os.PathLike) -> StudentEncoder:
        """Build an untrained student from a ``config.json``."""
        cfg = StudentConfig.from_dict(read_config_json(path, "student"), source=str(path))
        return cls(
            dim=cfg.dim,
            input_size=cfg.input_size,
            widths=cfg.widths,
            hidden=cfg.hidden,
            mean=cfg.mean,
            std=cfg.std,
            teacher=cfg.teacher,
        )

    def load_weights(
        self, path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
    ) -> None:
        """Load ``model.safetensors`` strictly (keys and shapes must match, finite values)."""
        state = read_safetensors(path, map_location=map_location)
        load_state_dict_strict(
            self,
            state,
            source=str(path),
            hint=f"The config says {self.config.to_dict()}; make sure config.json and "
            "model.safetensors come from the same save_pretrained() call.",
        )


# ---------------------------------------------------------------------------------- registry
def _student_dim(arg: str | None) -> int:
    if arg is not None:
        cfg = Path(arg).expanduser() / _CONFIG_NAME
        if cfg.is_file():
            try:
                return int(
                    StudentConfig.from_dict(json.loads(cfg.read_text()), source=str(cfg)).dim
                )
            except (OSError, ValueError, TypeError):
                pass  # let the full load raise the readable error
    return _make_student(arg).dim


def _make_student(arg: str | None, **overrides: Any) -> StudentEncoder:
    """Factory of ``student:<folder | org/repo>``."""
    if not arg:
        raise EncoderError(
            "The 'student' encoder needs a folder or Hub repo: 'student:path/to/folder' or "
            "'student:org/name' (written by StudentEncoder.save_pretrained / push_to_hub)."
        )
    enc = StudentEncoder.from_pretrained(arg)
    own = enc.preprocess_config()
    probe = Encoder(dim=enc.dim, input_size=enc.input_size, mean=enc.mean, std=enc.std)
    probe.set_preprocess(**overrides)
    wanted = probe.preprocess_config()
    diff = {k: (own[k], wanted[k]) for k in own if own[k] != wanted[k]}
    if diff:
        raise EncoderError(
            f"Student {arg!r} was trained with preprocessing {own}; it cannot run with "
            f"{ {k: b for k, (_, b) in diff.items()} }. Hint: leave input_size / mean / std unset."
        )
    enc.spec = f"student:{arg}"
    return enc


if "student" not in list_encoders():  # idempotent under importlib.reload
    register_encoder("student", dim=_student_dim)(_make_student)


# ---------------------------------------------------------------------------------- distillation
@dataclass
class DistillResult:
    """What :func:`distill_encoder` returns.

    Attributes:
        student: The trained, frozen :class:`StudentEncoder`.
        teacher: Spec of the teacher (or its class name).
        steps: Optimizer steps taken.
        train_cosine: Mean cosine (student vs teacher) on the training pool after training.
        val_cosine: Mean cosine on the validation crops after training.
        initial_val_cosine: The same before training (the untrained student).
        seconds: Wall time of the whole call.
        teacher_seconds: Of which computing the teacher's features.
        num_parameters: Student parameter count.
        history: ``{"step", "loss", "lr"}`` records.
    """

    student: StudentEncoder
    teacher: str
    steps: int
    train_cosine: float
    val_cosine: float
    initial_val_cosine: float
    seconds: float
    teacher_seconds: float
    num_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (everything but the student and the history)."""
        return {
            "teacher": self.teacher,
            "dim": self.student.dim,
            "num_parameters": self.num_parameters,
            "steps": self.steps,
            "train_cosine": round(self.train_cosine, 5),
            "val_cosine": round(self.val_cosine, 5),
            "initial_val_cosine": round(self.initial_val_cosine, 5),
            "seconds": round(self.seconds, 2),
            "teacher_seconds": round(self.teacher_seconds, 2),
        }


def feature_cosine(student: Encoder, teacher: Encoder, images: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity between two encoders' features.

    Args:
        student: An encoder.
        teacher: An encoder with the same ``dim``.
        images: (B, C, H, W) in [0, 1].

    Returns:
        (B,) float32 cosines (both features are L2-normalized, so this is their dot product).
    """
    return (student(images) * teacher(images)).sum(1)


def _load_images(images: Any, channels: int = 3) -> list[torch.Tensor]:
    from .io import list_images, read_image, to_channels

    if isinstance(images, torch.Tensor):
        images = list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike)):
        p = Path(images)
        if not p.exists():
            raise DataError(f"Image folder {p} does not exist.")
        images = list_images(p) if p.is_dir() else [p]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise DataError(
            "images must be a folder, a non-empty list of image paths or of (C, H, W) tensors in "
            "[0, 1], or a (B, C, H, W) tensor."
        )
    out = []
    for i, item in enumerate(images):
        if isinstance(item, torch.Tensor):
            if item.ndim != 3 or item.shape[0] not in (1, 3) or not item.is_floating_point():
                raise DataError(
                    f"images[{i}] must be a float (C, H, W) tensor with C in (1, 3), got "
                    f"{item.dtype} {tuple(item.shape)}."
                )
            out.append(to_channels(item.detach().float().cpu(), channels))
        elif isinstance(item, (str, os.PathLike)):
            out.append(read_image(item, channels=channels))
        else:
            raise DataError(f"images[{i}] must be a path or a tensor, got {type(item).__name__}.")
    return out


def _resolve_tasks(task: str | Sequence[str] | None) -> tuple[str, ...]:
    from .train.degradations import resolve_task

    if task is None:
        return _TASKS
    names = (task,) if isinstance(task, str) else tuple(task)
    if not names:
        raise ConfigError("task must be None (all tasks), a task name or a non-empty list.")
    return tuple(resolve_task(t) for t in names)


def _make_crops(
    sources: list[torch.Tensor],
    n: int,
    *,
    crop: int,
    tasks: tuple[str, ...],
    degraded: bool,
    clean_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``n`` degraded crops (n, 3, crop, crop); each depends only on ``generator``'s state."""
    from .train.data import random_crop
    from .train.degradations import degrade

    out = torch.empty(n, 3, crop, crop)
    for i in range(n):
        j = int(torch.randint(len(sources), (1,), generator=generator))
        x, _ = random_crop(sources[j], sources[j], crop, generator)
        if bool(torch.randint(2, (1,), generator=generator)):
            x = x.flip(-1)
        if not degraded and float(torch.rand((), generator=generator)) >= clean_fraction:
            t = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
            x = degrade(t, x.contiguous(), generator=generator, **_TASK_KWARGS.get(t, {}))
        out[i] = x
    return out


def _teacher_features(teacher: Encoder, crops: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([teacher(crops[i : i + batch]).cpu() for i in range(0, len(crops), batch)])


def _cosine(net: nn.Module, xs: torch.Tensor, targets: torch.Tensor, batch: int = 64) -> float:
    was_training = net.training
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            s = F.normalize(net(xs[i : i + batch]).float(), dim=1)
            total += float((s * targets[i : i + batch]).sum())
    net.train(was_training)
    return total / max(len(xs), 1)


def distill_encoder(
    teacher: str | Encoder,
    images: Any,
    *,
    task: str | Sequence[str] | None = None,
    degraded: bool = False,
    val_images: Any = None,
    steps: int = 2000,
    batch_size: int = 32,
    crop: int = 256,
    num_crops: int = 1024,
    num_val_crops: int = 128,
    clean_fraction: float = 0.2,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    student_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
    cache: bool = True,
    device: str | torch.device = "cpu",
) -> DistillResult:
    """Train a :class:`StudentEncoder` to predict ``teacher``'s features of degraded images.

    Crops of ``crop`` x ``crop`` pixels (native resolution) are cut from the images, flipped at
    random and degraded with a random task among ``task`` (strengths sampled from the ranges of
    :mod:`ptg_refine.train.degradations`; denoising with sigma in [5, 50]), except a
    ``clean_fraction`` left clean. The loss is ``1 - cos(student(x), teacher(x))`` with both
    L2-normalized. With ``cache=True`` the teacher runs once on a fixed pool of ``num_crops`` crops
    (the usual setting: the teacher is the expensive part); with ``cache=False`` every batch is
    fresh and the teacher runs on each. Deterministic given ``seed`` (on the CPU).

    Args:
        teacher: Encoder spec (e.g. ``"open_clip:ViT-B-32@openai"``, ``"stats"``) or an
            :class:`~ptg_refine.encoders.Encoder`.
        images: Clean training images: a folder, a list of paths or (C, H, W) tensors in [0, 1],
            or a (B, C, H, W) tensor. With ``degraded=True``: already degraded images, used as
            they are.
        task: ``None`` (a mix of denoise, derain, lowlight and deblur), a task name or a list.
        degraded: ``images`` are degraded already: no synthetic degradation.
        val_images: Held-out images for ``val_cosine`` (same kind as ``images``); ``None`` uses
            fresh crops (other windows and degradations) of the training images.
        steps: Optimizer steps.
        batch_size: Crops per step.
        crop: Crop side in pixels (smaller images are padded by reflection).
        num_crops: Size of the cached training pool (``cache=True``).
        num_val_crops: Number of validation crops.
        clean_fraction: Share of crops left undegraded.
        lr: Peak AdamW learning rate (5% linear warm-up, cosine decay).
        weight_decay: AdamW weight decay.
        student_kwargs: :class:`StudentEncoder` options (``input_size``, ``widths``, ``hidden``,
            ``mean``, ``std``); ``dim`` is the teacher's.
        seed: Seed of the initialization, crops, degradations and batch order.
        out_dir: If given, ``save_pretrained(out_dir)`` the student and write ``metrics.json``.
        progress: Show a tqdm bar.
        cache: Cache teacher features for a fixed crop pool (see above).
        device: Device of the student and teacher.

    Returns:
        A :class:`DistillResult` (the student is frozen, on the CPU).

    Raises:
        ConfigError: invalid option or unknown task.
        DataError: no or unreadable images.
        EncoderError / MissingDependencyError: the teacher cannot be built.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    for name, value, lo in (
        ("steps", steps, 0),
        ("batch_size", batch_size, 1),
        ("crop", crop, 16),
        ("num_crops", num_crops, 1),
        ("num_val_crops", num_val_crops, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name} must be an int >= {lo}, got {value!r}.")
    if not 0.0 <= clean_fraction <= 1.0:
        raise ConfigError(f"clean_fraction must be in [0, 1], got {clean_fraction!r}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr!r}.")
    tasks = _resolve_tasks(task)
    device = torch.device(device)
    teacher_enc = create_encoder(teacher, device=device)
    teacher_name = teacher_enc.spec or (teacher if isinstance(teacher, str) else None)
    teacher_name = teacher_name or type(teacher_enc).__name__
    kwargs = dict(student_kwargs or {})
    if "dim" in kwargs and kwargs.pop("dim") != teacher_enc.dim:
        raise ConfigError(f"student dim must equal the teacher's ({teacher_enc.dim}).")
    sources = _load_images(images)
    val_sources = _load_images(val_images) if val_images is not None else sources

    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        student = StudentEncoder(dim=teacher_enc.dim, teacher=teacher_name, **kwargs)
    net = student.net.to(device)
    crop_kw = dict(crop=crop, tasks=tasks, degraded=degraded, clean_fraction=clean_fraction)

    def prepare(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal teacher_seconds
        t0 = time.perf_counter()
        targets = _teacher_features(teacher_enc, crops.to(device))
        teacher_seconds += time.perf_counter() - t0
        return student.to(device).preprocess(crops).cpu(), targets

    teacher_seconds = 0.0
    val_gen = torch.Generator().manual_seed(int(seed) + 1)
    val_x, val_t = prepare(_make_crops(val_sources, num_val_crops, generator=val_gen, **crop_kw))
    pool_x, pool_t = (
        prepare(_make_crops(sources, num_crops, generator=gen, **crop_kw))
        if cache
        else (None, None)
    )
    initial = _cosine(net, val_x.to(device), val_t.to(device))

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    history: list[dict[str, float]] = []
    for p in net.parameters():
        p.requires_grad_(True)
    net.train()
    log_every = max(1, steps // 50)
    bar = tqdm(range(steps), desc="distill", unit="step", disable=not progress)
    for step in bar:
        if cache:
            idx = torch.randint(len(pool_x), (batch_size,), generator=gen)
            x, t = pool_x[idx].to(device), pool_t[idx].to(device)
        else:
            x, t = prepare(_make_crops(sources, batch_size, generator=gen, **crop_kw))
            x, t = x.to(device), t.to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        s = F.normalize(net(x).float(), dim=1)
        loss = 1.0 - (s * t).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            history.append({"step": step, "loss": float(loss.detach()), "lr": lr_at(step)})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    student.freeze()
    student.to("cpu")
    train_x, train_t = (pool_x, pool_t) if cache else (val_x, val_t)
    result = DistillResult(
        student=student,
        teacher=teacher_name,
        steps=steps,
        train_cosine=_cosine(net, train_x[:512], train_t[:512]),
        val_cosine=_cosine(net, val_x, val_t),
        initial_val_cosine=initial,
        seconds=time.perf_counter() - t_start,
        teacher_seconds=teacher_seconds,
        num_parameters=student.num_parameters,
        history=history,
    )
    logger.info("distilled %s: %s", teacher_name, result.summary())
    if out_dir is not None:
        out = Path(out_dir)
        student.save_pretrained(out)
        text = json.dumps(result.summary(), indent=2)
        atomic_write(out / "metrics.json", lambda p: Path(p).write_text(text))
    return result
