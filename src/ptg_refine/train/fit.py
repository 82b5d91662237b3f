"""The training loop: ``fit(model, train_data, val_data)`` trains a PTG-RM refiner (Eq. 8).

See :func:`fit` and ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._atomic import atomic_write
from ..errors import CheckpointError, ConfigError, DataError
from ..metrics import psnr
from ..wrap import RefinedModel
from . import checkpoint as _ckpt
from . import distributed as _dist
from .cache import FeatureCache, content_key, normalize_key
from .checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    check_settings,
    module_fingerprint,
    restore_rng_state,
)
from .losses import LossFn, get_loss, loss_name, requires_target

__all__ = ["BASE_WEIGHTS_NAME", "LOG_NAME", "REFINER_DIR", "FitResult", "fit"]

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
REFINER_DIR = "refiner"
BASE_WEIGHTS_NAME = "base.safetensors"

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        steps: the global step reached (equals ``steps`` when training completed).
        final_loss: training loss of the last logged step (mean over processes), or None.
        history: one dict per logged step (the lines of ``log.jsonl``, including those of the run
            that was resumed).
        val_metrics: mean validation metrics of the last validation (see
            :func:`ptg_refine.evaluate.evaluate`), or None.
        best_step: with ``keep_best``, the step whose weights were kept (0: the untrained
            refiner), else None.
        best_val_psnr: with ``keep_best``, the validation ``psnr_refined`` of those weights.
        completed: False when ``max_steps_this_call`` stopped the run early.
        resumed_from: the step of the checkpoint this call resumed from, or None.
        seconds: wall time of this call.
        cache_stats: :meth:`FeatureCache.stats` of the training feature cache (this process), or
            None without a cache.
        out_dir: the output folder, or None.
        checkpoint_path: ``out_dir/checkpoint.pt``, or None.
        refiner_dir: ``out_dir/refiner`` (``PTGRefiner.from_pretrained`` loads it), or None.
        base_path: ``out_dir/base.safetensors`` (joint training), or None.
        log_path: ``out_dir/log.jsonl``, or None.
    """

    steps: int
    final_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    val_metrics: dict[str, float] | None = None
    best_step: int | None = None
    best_val_psnr: float | None = None
    completed: bool = True
    resumed_from: int | None = None
    seconds: float = 0.0
    cache_stats: dict[str, float | int] | None = None
    out_dir: Path | None = None
    checkpoint_path: Path | None = None
    refiner_dir: Path | None = None
    base_path: Path | None = None
    log_path: Path | None = None


# ------------------------------------------------------------------------------------------ helpers


def _derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (independent streams for epochs, ranks, ...)."""
    state = np.random.SeedSequence([int(v) % 2**64 for v in values]).generate_state(2, np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_derive_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seed the global RNG user code may draw from)
    random.seed(seed)


def _collate(items: Sequence[Any], *, cache_keys: bool) -> dict[str, Any]:
    """Stack dataset items ``{"lq", "gt"?, "name"?, "key"?}`` into a batch."""
    for it in items:
        if not isinstance(it, Mapping) or not isinstance(it.get("lq"), torch.Tensor):
            got = sorted(map(str, it)) if isinstance(it, Mapping) else type(it).__name__
            raise DataError(
                "Training data items must be dicts {'lq': (C, H, W) tensor, 'gt': (C, H, W) "
                f"tensor (supervised), 'name': str}}; got {got}."
            )
    gts = [it.get("gt") for it in items]
    have_gt = [g is not None for g in gts]
    if any(have_gt) and not all(have_gt):
        raise DataError("Some items of a batch have a 'gt' image and others not; all or none must.")
    try:
        lq = torch.stack([it["lq"] for it in items])
        gt = torch.stack(gts) if all(have_gt) else None
    except RuntimeError as err:
        shapes = sorted({tuple(it["lq"].shape) for it in items})
        raise DataError(
            f"Cannot batch items of different shapes {shapes} (or lq/gt of different shapes): "
            f"{err}. Hint: crop them to one size (e.g. SyntheticPairs(..., crop=128)) or use "
            "batch_size=1."
        ) from err
    batch: dict[str, Any] = {
        "lq": lq,
        "gt": gt,
        "name": [str(it.get("name", "")) for it in items],
        "cache_keys": None,
    }
    if cache_keys:
        batch["cache_keys"] = [
            content_key(it["lq"]) if it.get("key") is None else normalize_key(it["key"])
            for it in items
        ]
    return batch


class _Trainable(nn.Module):
    """The trained part of a RefinedModel (base + refiner, not the encoder), for DDP wrapping."""

    def __init__(self, model: RefinedModel) -> None:
        super().__init__()
        self.base = model.base
        self.refiner = model.refiner
        object.__setattr__(self, "_model", model)  # not registered: keeps the encoder out of DDP

    def forward(
        self, degraded: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._model.forward_all(degraded, features)
        return out.restored, out.refined


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_line(record: dict[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return _finite_or_none(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return json.dumps(clean(record), sort_keys=False)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(_json_line(record) + "\n")
        f.flush()


def _read_log(path: Path, *, up_to_step: int | None) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (a torn last line is skipped), up to ``up_to_step``."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            continue
        if up_to_step is None or rec["step"] <= up_to_step:
            out.append(rec)
    return out


def _rewrite_log(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(_json_line(r) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int" + (" or None" if allow_none else "")
        raise ConfigError(f"{name} must be {expected}, got {value!r}.")


def _number(name: str, value: Any, *, low: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    if value < low or (strict and value == low):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}.")
    return float(value)


def _save_base(path: Path, base: nn.Module) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().clone().contiguous() for k, v in base.state_dict().items()}
    meta = {"format": "pt", "library": "ptg_refine"}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


# ------------------------------------------------------------------------------------------ fit


def fit(
    model: RefinedModel,
    train_data: Any,
    val_data: Any = None,
    *,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 1e-4,
    min_lr: float = 1e-7,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    loss: str | LossFn = "charbonnier",
    joint: bool | None = None,
    lam: float = 1.0,
    amp: str | None = None,
    grad_clip: float | None = 1.0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = 500,
    resume: bool | str | os.PathLike = False,
    seed: int = 0,
    cache_features: bool = True,
    cache_size: int = 100_000,
    num_workers: int = 0,
    val_every: int | None = None,
    keep_best: bool = False,
    log_every: int = 10,
    progress: bool = True,
    device: str | torch.device | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    max_steps_this_call: int | None = None,
) -> FitResult:
    """Train the refiner of ``model`` (and, jointly, its base network) with Eq. 8 of the paper.

    Joint training (``joint=True``) minimizes ``L(base output, gt) + lam * L(refined, gt)`` over the
    refiner's and the base network's parameters; with a frozen base (the default for
    ``refine(model, refiner)``) only ``L(refined, gt)`` over the refiner's. The encoder is never
    trained. Adam / AdamW with cosine annealing from ``lr`` to ``min_lr`` over ``steps`` (stepped
    every step), gradient-norm clipping and optional mixed precision.

    Training counts steps, not epochs: epoch ``e`` visits the data set in a permutation drawn from
    a generator seeded by ``(seed, e)`` (``len(train_data) // (batch_size * world_size)`` batches,
    the rest of the permutation is dropped), calling ``train_data.set_epoch(e)`` first when the data
    set has that method. Runs are reproducible: with a data set whose items depend only on its own
    seed, the epoch and the index (see ``docs/training.md``), a resumed run ends with exactly the
    weights of an uninterrupted one.

    Under ``torchrun --nproc_per_node N`` the function joins the process group, wraps the trained
    modules in ``DistributedDataParallel`` and gives every process its own ``batch_size`` items of
    each step (an effective batch of ``batch_size * N``); only rank 0 writes files, logs progress
    and validates.

    Args:
        model: a :class:`~ptg_refine.RefinedModel` from :func:`ptg_refine.refine`.
        train_data: a map-style data set (``__len__`` and ``__getitem__``) of dicts
            ``{"lq": (C, H, W), "gt": (C, H, W) (absent for unsupervised losses), "name": str,
            "key": hashable (optional; identifies the exact degraded crop for the feature
            cache)}``, e.g. :class:`~ptg_refine.train.PairedFolder` or
            :class:`~ptg_refine.train.SyntheticPairs` with a ``crop``.
        val_data: optional data set of full-size pairs, scored with
            :func:`ptg_refine.evaluate.evaluate` every ``val_every`` steps and at the end.
        steps: total optimizer steps (of the whole run, including resumed parts).
        batch_size: items per step and process.
        lr, min_lr: cosine annealing from ``lr`` to ``min_lr`` over ``steps``.
        betas, weight_decay: optimizer settings.
        optimizer: ``"adam"`` or ``"adamw"``.
        loss: a name from :func:`ptg_refine.train.losses.list_losses` (``"charbonnier"``,
            ``"l1"``, ``"mse"``, ``"zero_dce"`` for unsupervised low-light training) or a callable
            ``loss(pred, target, degraded) -> scalar`` (``target`` is None for data without
            ``"gt"``).
        joint: train the base network too (Eq. 8). None: joint when the model's base is not
            frozen (``refine(..., freeze_base=False)``). ``joint=True`` needs such a base;
            ``joint=False`` with a trainable base trains the refiner only.
        lam: the weight λ of the refined output's loss in joint training.
        amp: None (float32), ``"bf16"`` (CPU or GPU) or ``"fp16"`` (with a gradient scaler).
        grad_clip: maximum gradient norm, or None.
        out_dir: folder for ``checkpoint.pt``, ``log.jsonl``, ``refiner/`` and (joint)
            ``base.safetensors``; None writes nothing.
        checkpoint_every: save a checkpoint every this many steps (and always at the end);
            None: only at the end.
        resume: True continues from ``out_dir/checkpoint.pt`` when it exists (else starts
            fresh); a path continues from that checkpoint. The settings above must match the
            checkpoint's.
        seed: seeds the data order and the global RNGs (``seed + rank`` per process).
        cache_features: cache the encoder's features of each degraded crop
            (:class:`~ptg_refine.train.FeatureCache`): pays off when crops repeat (fixed crops, or
            items with a ``"key"``). Data drawing new random crops every epoch never hits it.
        cache_size: maximum cached feature vectors (least recently used dropped first).
        num_workers: DataLoader worker processes.
        val_every: validate every this many steps; None: only at the end.
        keep_best: needs ``val_data``: also validate before the first step (the untrained
            refiner, i.e. the base network's own output) and, at the end, keep the weights with
            the best validation ``psnr_refined`` (the refiner's, and the base's in joint
            training) instead of the last ones. The refiner then never scores below its
            starting point on ``val_data``. The best weights travel in checkpoints, so a resumed
            run keeps them. Under DDP the main process validates and keeps them (it saves).
        log_every: log (``log.jsonl``, progress bar, ``history``) every this many steps.
        progress: show a tqdm progress bar (rank 0).
        device: None: the refiner's device (``cuda:LOCAL_RANK`` under torchrun with CUDA).
        callback: called after every step with ``{"step", "epoch", "loss"}`` (rank-local loss).
        max_steps_this_call: stop after this many steps of this call (writing a checkpoint), to
            split a run over several calls; the result then has ``completed=False``.

    Returns:
        A :class:`FitResult`.

    Raises:
        ConfigError: invalid settings, or a resume with settings that differ from the checkpoint's.
        CheckpointError: the checkpoint to resume from is missing, corrupt or does not match.
        DataError: the data set is too small or its items are malformed.
        FloatingPointError: the loss became NaN or infinite.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from ptg_refine import PTGRefiner, refine
        >>> from ptg_refine.train import SyntheticPairs, fit
        >>> refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8)
        >>> model = refine(nn.Identity(), refiner)
        >>> data = SyntheticPairs(torch.rand(4, 3, 64, 64), "denoise", crop=32, sigma=25)
        >>> result = fit(model, data, steps=2, batch_size=2, progress=False)
        >>> result.steps
        2
    """
    t_start = time.perf_counter()

    # ---------------------------------------------------------------- validate settings
    if not isinstance(model, RefinedModel):
        raise ConfigError(
            f"fit() trains a RefinedModel, got {type(model).__name__}. Hint: wrap your network with "
            "ptg_refine.refine(my_net, PTGRefiner(encoder=...))."
        )
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        _positive_int(name, value)
    _positive_int("checkpoint_every", checkpoint_every, allow_none=True)
    _positive_int("val_every", val_every, allow_none=True)
    if keep_best and val_data is None:
        raise ConfigError(
            "keep_best=True chooses the weights by their validation score and needs val_data. "
            "Hint: hold out some training pairs as val_data, or pass keep_best=False."
        )
    _positive_int("max_steps_this_call", max_steps_this_call, allow_none=True)
    _positive_int("cache_size", cache_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an int >= 0, got {num_workers!r}.")
    lr = _number("lr", lr, strict=True)
    min_lr = _number("min_lr", min_lr)
    if min_lr > lr:
        raise ConfigError(f"min_lr={min_lr} must not exceed lr={lr}.")
    weight_decay = _number("weight_decay", weight_decay)
    lam = _number("lam", lam)
    if grad_clip is not None:
        grad_clip = _number("grad_clip", grad_clip, strict=True)
    if (
        not isinstance(betas, Sequence)
        or len(betas) != 2
        or not all(isinstance(b, int | float) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}.")
    betas = (float(betas[0]), float(betas[1]))
    opt_name = str(optimizer).lower()
    if opt_name not in ("adam", "adamw"):
        raise ConfigError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}.")
    if amp not in (None, *_AMP_DTYPES):
        raise ConfigError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int, got {seed!r}.")
    loss_fn = get_loss(loss)
    if joint is None:
        joint = not model.freeze_base
    if joint and model.freeze_base:
        raise ConfigError(
            "joint=True trains the base network too, but this model's base is frozen. Hint: wrap "
            "it with refine(my_net, refiner, freeze_base=False)."
        )
    if joint and not any(p.requires_grad for p in model.base.parameters()):
        raise ConfigError(
            "joint=True, but the base network has no trainable parameters (requires_grad=False "
            "everywhere). Hint: unfreeze it or use joint=False."
        )
    if not hasattr(train_data, "__len__") or not hasattr(train_data, "__getitem__"):
        raise DataError(
            f"train_data must be a map-style data set (__len__ and __getitem__), got "
            f"{type(train_data).__name__}."
        )
    if val_data is not None:
        _check_val_data(val_data)
    out_path = None if out_dir is None else Path(out_dir)
    if resume is True and out_path is None:
        raise ConfigError("resume=True resumes from out_dir/checkpoint.pt, but out_dir is None.")
    if resume is not True and resume is not False and not isinstance(resume, str | os.PathLike):
        raise ConfigError(f"resume must be True, False or a checkpoint path, got {resume!r}.")

    # ---------------------------------------------------------------- processes and devices
    refiner = model.refiner
    default_device = next(refiner.parameters()).device
    info = _dist.setup(device, default_device)
    dev = info.device
    n_items = len(train_data)
    per_step = batch_size * info.world_size
    batches_per_epoch = n_items // per_step
    if batches_per_epoch < 1:
        raise DataError(
            f"train_data has {n_items} items, fewer than one step needs (batch_size={batch_size} × "
            f"{info.world_size} process(es)). Hint: lower batch_size or give the data set a larger "
            "length (SyntheticPairs(..., length=...))."
        )
    if amp == "fp16" and dev.type == "cpu":
        logger.warning("amp='fp16' on the CPU is slow; amp='bf16' is the usual CPU choice.")

    # joint=False with a trainable base: train the refiner only, restore the flags afterwards.
    saved_flags: tuple[bool, list[bool], bool] | None = None
    if not joint and not model.freeze_base:
        saved_flags = (
            model.freeze_base,
            [p.requires_grad for p in model.base.parameters()],
            model.base.training,
        )
        model.freeze_base = True
        model.base.requires_grad_(False)

    was_training = model.training
    model.to(dev)
    model.train()

    settings: dict[str, Any] = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "min_lr": min_lr,
        "betas": list(betas),
        "weight_decay": weight_decay,
        "optimizer": opt_name,
        "loss": loss_name(loss_fn),
        "joint": bool(joint),
        "lam": lam,
        "amp": amp,
        "grad_clip": grad_clip,
        "seed": seed,
        "world_size": info.world_size,
        "dataset_length": n_items,
        "refiner_config": refiner.config.to_dict(),
        "at": getattr(model, "at", None),
        # a frozen base must be the same network on resume (a joint one comes from the checkpoint)
        "base_fingerprint": None if joint else module_fingerprint(model.base),
    }

    params = [p for p in refiner.parameters() if p.requires_grad]
    if joint:
        params += [p for p in model.base.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if opt_name == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=lr, betas=betas, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=min_lr)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")

    ckpt_file = None if out_path is None else out_path / CHECKPOINT_NAME
    log_file = None if out_path is None else out_path / LOG_NAME
    history: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- resume or start fresh
    start_step = 0
    resumed_from = None
    best: dict[str, Any] | None = None  # keep_best: the best weights so far
    pending_loss: list = [0.0, 0]  # loss sum and count since the last log line
    resume_path: Path | None = None
    if resume is True:
        assert ckpt_file is not None
        if ckpt_file.exists():
            resume_path = ckpt_file
        else:
            logger.info("no checkpoint in %s; starting a new run", out_path)
    elif resume is not False:
        resume_path = Path(resume)  # type: ignore[arg-type]
    try:
        if resume_path is not None:
            state = _ckpt.load_checkpoint(resume_path)
            check_settings(state.get("settings", {}), settings, source=str(resume_path))
            _load_training_state(state, model, joint, opt, sched, scaler, info, resume_path)
            start_step = resumed_from = int(state["step"])
            best = state.get("best") if keep_best else None
            pending = state.get("pending_loss") or []
            if len(pending) == info.world_size:
                pending_loss = list(pending[info.rank])
            logger.info("resumed from %s at step %d", resume_path, start_step)
            if info.is_main and log_file is not None:
                history = _read_log(log_file, up_to_step=start_step)
                _rewrite_log(log_file, history)
        else:
            _seed_everything(seed + info.rank)
            if info.is_main and out_path is not None:
                if ckpt_file is not None and ckpt_file.exists():
                    logger.warning(
                        "%s holds a checkpoint from an earlier run; this new run (resume=False) "
                        "overwrites it",
                        out_path,
                    )
                out_path.mkdir(parents=True, exist_ok=True)
                _rewrite_log(log_file, [])  # type: ignore[arg-type]
    except BaseException:
        _restore_flags(model, saved_flags, was_training)
        _dist.cleanup(info)
        raise

    val_cache = FeatureCache(cache_size) if cache_features else None
    if keep_best and best is None and info.is_main:
        best = _snapshot(model, joint, start_step, _validate(model, val_data, val_cache, dev))

    trainable: nn.Module = _Trainable(model)
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(
            trainable, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    cache = FeatureCache(cache_size) if cache_features else None
    collate = functools.partial(_collate, cache_keys=cache is not None)
    stop_step = (
        steps if max_steps_this_call is None else min(steps, start_step + max_steps_this_call)
    )
    autocast_dtype = _AMP_DTYPES.get(amp) if amp is not None else None

    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, unit="step", dynamic_ncols=True, desc="fit")

    step = start_step
    final_loss: float | None = history[-1].get("loss") if history else None
    val_metrics: dict[str, float] | None = None
    for rec in reversed(history):
        if isinstance(rec.get("val"), dict):
            val_metrics = rec["val"]
            break
    last_log_time, last_log_step = time.perf_counter(), step
    loss_acc = torch.tensor(float(pending_loss[0]), dtype=torch.float64, device=dev)
    loss_count = int(pending_loss[1])

    try:
        while step < stop_step:
            epoch, position = divmod(step, batches_per_epoch)
            if hasattr(train_data, "set_epoch"):
                train_data.set_epoch(epoch)
            perm = _epoch_permutation(n_items, seed, epoch)
            n_batches = min(batches_per_epoch - position, stop_step - step)
            sampler = [
                perm[
                    j * per_step + info.rank * batch_size : j * per_step
                    + (info.rank + 1) * batch_size
                ].tolist()
                for j in range(position, position + n_batches)
            ]
            loader = DataLoader(
                train_data,
                batch_sampler=sampler,
                num_workers=num_workers,
                collate_fn=collate,
                pin_memory=dev.type == "cuda",
                generator=torch.Generator().manual_seed(_derive_seed(seed, epoch, info.rank, 0xD1)),
            )
            for batch in loader:
                step += 1
                lq = batch["lq"].to(dev, non_blocking=True)
                gt = batch["gt"]
                gt = None if gt is None else gt.to(dev, non_blocking=True)
                if gt is None and requires_target(loss_fn):
                    raise ConfigError(
                        f"The {settings['loss']!r} loss needs ground truth, but the training items "
                        "have no 'gt'. Hint: use loss='zero_dce' (unsupervised) or add 'gt'."
                    )
                with torch.no_grad():
                    if cache is not None:
                        feats = cache.features(model.encode, lq, batch["cache_keys"])
                    else:
                        feats = model.encode(lq)
                with (
                    torch.autocast(dev.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else contextlib.nullcontext()
                ):
                    restored, refined = trainable(lq, feats)
                loss_refined = loss_fn(refined, gt, lq)
                total = loss_fn(restored, gt, lq) + lam * loss_refined if joint else loss_refined

                opt.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if grad_clip is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(opt)
                scaler.update()
                lr_used = opt.param_groups[0]["lr"]
                sched.step()
                loss_acc += total.detach().double()
                loss_count += 1

                if callback is not None:
                    callback({"step": step, "epoch": epoch, "loss": float(total.detach())})
                if bar is not None:
                    bar.update(1)

                do_val = val_data is not None and (
                    step == steps or (val_every is not None and step % val_every == 0)
                )
                do_log = step % log_every == 0 or step == steps or do_val
                if do_log:
                    with torch.no_grad():
                        if gt is not None:
                            p_ref = float(psnr(refined.detach().float().clamp(0, 1), gt).mean())
                            p_base = float(psnr(restored.detach().float().clamp(0, 1), gt).mean())
                        else:
                            p_ref = p_base = float("nan")
                    mean_loss, p_ref, p_base = _dist.mean_across(
                        info, [float(loss_acc) / max(1, loss_count), p_ref, p_base]
                    )
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(
                            f"The training loss became {mean_loss} by step {step}. Hint: lower lr, "
                            "keep grad_clip, or train in float32 (amp=None)."
                        )
                    loss_acc.zero_()
                    loss_count = 0
                    now = time.perf_counter()
                    record: dict[str, Any] = {
                        "step": step,
                        "epoch": epoch,
                        "loss": mean_loss,
                        "psnr": _finite_or_none(p_ref) if gt is not None else None,
                        "base_psnr": _finite_or_none(p_base) if gt is not None else None,
                        "lr": lr_used,
                        "steps_per_s": (step - last_log_step) / max(now - last_log_time, 1e-9),
                        "elapsed_s": now - t_start,
                    }
                    last_log_time, last_log_step = now, step
                    if do_val and info.is_main:
                        val_metrics = _validate(model, val_data, val_cache, dev)
                        record["val"] = val_metrics
                        if keep_best and _score(val_metrics) > _score(best["metrics"]):
                            best = _snapshot(model, joint, step, val_metrics)
                    final_loss = mean_loss
                    history.append(record)
                    if info.is_main and log_file is not None:
                        _append_log(log_file, record)
                    if bar is not None:
                        post = {
                            "loss": f"{mean_loss:.4g}",
                            "steps/s": f"{record['steps_per_s']:.2f}",
                        }
                        if record["psnr"] is not None:
                            post["psnr"] = f"{record['psnr']:.2f}"
                        bar.set_postfix(post, refresh=False)
                    logger.debug("step %d: %s", step, record)

                if ckpt_file is not None and (
                    step == stop_step
                    or (checkpoint_every is not None and step % checkpoint_every == 0)
                ):
                    _write_checkpoint(
                        ckpt_file,
                        model,
                        joint,
                        opt,
                        sched,
                        scaler,
                        info,
                        settings,
                        step,
                        batches_per_epoch,
                        final_loss,
                        [float(loss_acc), loss_count],
                        best,
                    )
            del loader

        completed = step >= steps
        if keep_best and completed and best is not None:
            model.refiner.load_state_dict(best["refiner"])
            if joint and best.get("base") is not None:
                model.base.load_state_dict(best["base"])
            logger.info("keep_best: kept the weights of step %d", best["step"])
        refiner_dir = base_path = None
        if out_path is not None and info.is_main:
            if completed:
                refiner_dir = out_path / REFINER_DIR
                refiner.save_pretrained(refiner_dir)
                if joint:
                    base_path = out_path / BASE_WEIGHTS_NAME
                    _save_base(base_path, model.base)
        elif out_path is not None and completed:
            refiner_dir = out_path / REFINER_DIR
            base_path = out_path / BASE_WEIGHTS_NAME if joint else None
        _dist.barrier(info)
    finally:
        if bar is not None:
            bar.close()
        _restore_flags(model, saved_flags, was_training)
        _dist.cleanup(info)

    return FitResult(
        steps=step,
        final_loss=final_loss,
        history=history,
        val_metrics=val_metrics,
        best_step=None if best is None else int(best["step"]),
        best_val_psnr=None if best is None else _score(best["metrics"]),
        completed=completed,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - t_start,
        cache_stats=None if cache is None else cache.stats(),
        out_dir=out_path,
        checkpoint_path=ckpt_file,
        refiner_dir=refiner_dir,
        base_path=base_path,
        log_path=log_file,
    )


def _check_val_data(val_data: Any) -> None:
    """Fail before training, not after it, on a validation set without ground truth."""
    if not hasattr(val_data, "__len__") or not hasattr(val_data, "__getitem__"):
        return
    if len(val_data) == 0:
        raise DataError("val_data is empty.")
    first = val_data[0]
    if isinstance(first, Mapping) and first.get("gt") is None:
        raise DataError(
            "val_data items have no 'gt' image; validation scores against ground truth. Hint: "
            "pass val_data=None for unsupervised training without ground truth."
        )


def _restore_flags(
    model: RefinedModel, saved: tuple[bool, list[bool], bool] | None, was_training: bool
) -> None:
    model.train(was_training)
    if saved is not None:
        freeze, flags, base_training = saved
        model.freeze_base = freeze
        for p, flag in zip(model.base.parameters(), flags):
            p.requires_grad_(flag)
        model.base.train(base_training)


def _score(metrics: dict[str, float]) -> float:
    value = metrics.get("psnr_refined", float("nan"))
    return value if math.isfinite(value) else float("-inf")


def _snapshot(
    model: RefinedModel, joint: bool, step: int, metrics: dict[str, float]
) -> dict[str, Any]:
    """A CPU copy of the trained weights and their validation metrics (for ``keep_best``)."""
    return {
        "step": step,
        "metrics": dict(metrics),
        "refiner": {k: v.detach().cpu().clone() for k, v in model.refiner.state_dict().items()},
        "base": (
            {k: v.detach().cpu().clone() for k, v in model.base.state_dict().items()}
            if joint
            else None
        ),
    }


def _validate(
    model: RefinedModel, val_data: Any, cache: FeatureCache | None, dev: torch.device
) -> dict[str, float]:
    from ..evaluate import evaluate

    result = evaluate(model, val_data, features=cache, device=dev)
    return dict(result.means)


def _write_checkpoint(
    path: Path,
    model: RefinedModel,
    joint: bool,
    opt: torch.optim.Optimizer,
    sched: Any,
    scaler: torch.amp.GradScaler,
    info: _dist.DistInfo,
    settings: dict[str, Any],
    step: int,
    batches_per_epoch: int,
    last_loss: float | None,
    pending_loss: list,
    best: dict[str, Any] | None = None,
) -> None:
    # every process's RNG states and loss sum since the last log line
    gathered = _dist.all_gather_objects(info, (capture_rng_state(), pending_loss))
    if not info.is_main:
        return
    epoch, position = divmod(step, batches_per_epoch)
    state = {
        "step": step,
        "epoch": epoch,
        "position_in_epoch": position,
        "refiner": {k: v.detach().cpu() for k, v in model.refiner.state_dict().items()},
        "base": (
            {k: v.detach().cpu() for k, v in model.base.state_dict().items()} if joint else None
        ),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": [g[0] for g in gathered],
        "pending_loss": [g[1] for g in gathered],
        "settings": settings,
        "last_loss": last_loss,
        "best": best,
    }
    _ckpt.save_checkpoint(path, state)
    logger.info("checkpoint at step %d written to %s", step, path)


def _load_training_state(
    state: dict[str, Any],
    model: RefinedModel,
    joint: bool,
    opt: torch.optim.Optimizer,
    sched: Any,
    scaler: torch.amp.GradScaler,
    info: _dist.DistInfo,
    source: Path,
) -> None:
    try:
        model.refiner.load_state_dict_strict(state["refiner"], source=str(source))
        if joint:
            if state.get("base") is None:
                raise CheckpointError(f"Checkpoint {source} holds no base-network weights.")
            model.base.load_state_dict(state["base"], strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        restore_rng_state(rng[info.rank] if len(rng) == info.world_size else rng[0])
        int(state["step"])
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
        raise CheckpointError(
            f"Checkpoint {source} does not match this model or training setup: "
            f"{type(err).__name__}: {err}. Delete it (or resume=False) to start over, or pass "
            "resume=<path of a matching checkpoint>."
        ) from err
