"""Training and validation data: paired image folders and synthetic pairs made on the fly.

Both datasets yield dicts ``{"lq": (C, H, W), "gt": (C, H, W), "name": str}`` of float32 tensors
in ``[0, 1]`` (the one exception: ``lq`` of synthetic *denoising* pairs is not clamped, following the
Gaussian denoising protocol; see :mod:`ptg_refine.train.degradations`).

Randomness (crop window, flips / rotations, synthetic degradation) comes from a generator seeded
per item:

* ``fixed=True``: from ``(seed, index)`` only, so item ``i`` is identical on every access. Use it
  for validation sets.
* ``fixed=False`` (default): ``(seed, index, epoch, call counter, DataLoader worker seed)``. Every
  access differs (training variety) yet the sequence is reproducible: in the main process it
  depends only on ``seed`` and the order of the calls; inside DataLoader workers also on the
  worker seed, which the DataLoader derives from its ``generator`` / ``torch.manual_seed`` (and on
  ``num_workers``).
* after :meth:`set_epoch` (``fit`` calls it before every epoch): ``(seed, index, epoch)`` only, so a
  training run resumed mid-epoch sees exactly the items an uninterrupted run would have seen,
  whatever the number of workers. ``fit`` visits each index once per epoch, so items still differ
  from epoch to epoch.

With ``crop=None`` the full images are returned; their sizes differ in general, so use batch size 1
(or a collate function that pads).

Example:
    >>> from ptg_refine.train.data import SyntheticPairs
    >>> import torch
    >>> ds = SyntheticPairs([torch.rand(3, 40, 40)], "denoise", crop=32, sigma=25)
    >>> item = ds[0]
    >>> item["lq"].shape, item["gt"].shape
    (torch.Size([3, 32, 32]), torch.Size([3, 32, 32]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, DTypeError, ShapeError
from ..io import IMAGE_EXTENSIONS, image_size, list_images, read_image, to_channels
from .degradations import DEGRADATIONS as _DEGRADATIONS
from .degradations import _check_kwargs, degrade, resolve_task

__all__ = ["PairedFolder", "SyntheticPairs", "augment_pair", "random_crop"]

_MAX_LISTED = 20


# --------------------------------------------------------------------------------------------------
# crop / augment
# --------------------------------------------------------------------------------------------------


def _crop_size(size: object) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ConfigError(f"crop size must be a positive int or (height, width), got {size!r}.")


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad ``(C, H, W)`` at the bottom / right to at least ``h x w`` by reflection (repeated when
    the image is more than twice too small; replication for 1-pixel sides)."""
    while x.shape[-2] < h or x.shape[-1] < w:
        ih, iw = x.shape[-2:]
        ph, pw = max(0, h - ih), max(0, w - iw)
        if (ph and ih == 1) or (pw and iw == 1):
            x = F.pad(x[None], (0, pw, 0, ph), mode="replicate")[0]
        else:
            x = F.pad(x[None], (0, min(pw, iw - 1), 0, min(ph, ih - 1)), mode="reflect")[0]
    return x


def _check_pair(lq: object, gt: object) -> None:
    for name, t in (("lq", lq), ("gt", gt)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ShapeError(
                f"{name} must be a tensor (C, H, W), got "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}."
            )
    if lq.shape[-2:] != gt.shape[-2:]:
        raise ShapeError(
            f"lq and gt must have the same height and width, got {tuple(lq.shape)} and "
            f"{tuple(gt.shape)}."
        )


def random_crop(
    lq: torch.Tensor,
    gt: torch.Tensor,
    size: int | tuple[int, int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop the same random window from ``lq`` and ``gt``.

    Images smaller than the crop are first padded by reflection at the bottom / right.

    Args:
        lq: Degraded image ``(C, H, W)``.
        gt: Ground truth ``(C', H, W)`` (same height and width).
        size: Crop side, or ``(height, width)``.
        generator: Generator for the window position; ``None`` uses torch's global RNG.

    Returns:
        ``(lq_crop, gt_crop)``, each ``(C, size_h, size_w)``.

    Raises:
        ShapeError: ``lq`` and ``gt`` differ in height or width.
        ConfigError: invalid ``size``.
    """
    _check_pair(lq, gt)
    ch, cw = _crop_size(size)
    lq, gt = _pad_to(lq, ch, cw), _pad_to(gt, ch, cw)
    h, w = lq.shape[-2:]
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    window = (..., slice(top, top + ch), slice(left, left + cw))
    return lq[window], gt[window]


def augment_pair(
    lq: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the same random flips and 90-degree rotation to ``lq`` and ``gt``.

    Draws a horizontal flip, a vertical flip (each with probability 1/2) and a rotation by
    ``k * 90`` degrees, ``k`` uniform in 0-3 (all 8 symmetries of the square are reachable).

    Args:
        lq: Degraded image ``(C, H, W)``.
        gt: Ground truth ``(C', H, W)``.
        generator: Generator; ``None`` uses torch's global RNG.

    Returns:
        ``(lq_aug, gt_aug)``; height and width are swapped for odd ``k``.
    """
    _check_pair(lq, gt)
    r = torch.randint(0, 2, (2,), generator=generator).tolist()
    k = int(torch.randint(0, 4, (1,), generator=generator))

    def apply(t: torch.Tensor) -> torch.Tensor:
        if r[0]:
            t = t.flip(-1)
        if r[1]:
            t = t.flip(-2)
        return torch.rot90(t, k, dims=(-2, -1)) if k else t

    return apply(lq).contiguous(), apply(gt).contiguous()


# --------------------------------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------------------------------


class _Seeded:
    """Per-item generators for ``fixed`` / non-fixed datasets (see the module docstring)."""

    def _init_seeding(self, seed: int, fixed: bool) -> None:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an int, got {seed!r}.")
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.epoch = 0
        self._calls = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        """Make items of non-fixed datasets depend on ``(seed, index, epoch)`` only (resumable).

        No effect when ``fixed``.
        """
        self.epoch = int(epoch)
        self._epoch_set = True

    def _generator(self, index: int) -> torch.Generator:
        entropy = [self.seed % 2**64, index]
        if not self.fixed and self._epoch_set:
            entropy += [2, self.epoch % 2**64]
        elif not self.fixed:
            info = torch.utils.data.get_worker_info()
            entropy += [
                1,
                self.epoch % 2**64,
                self._calls,
                0 if info is None else info.seed % 2**64,
            ]
            self._calls += 1
        state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
        return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def _index(i: int, n: int) -> int:
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for a dataset of {n} items")
    return i


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", and {more} more" if more > 0 else "")


def _short_reason(e: DataError) -> str:
    reason = str(e.__cause__) if e.__cause__ is not None else str(e)
    return reason if len(reason) <= 80 else reason[:77] + "..."


# --------------------------------------------------------------------------------------------------
# paired folders
# --------------------------------------------------------------------------------------------------


class PairedFolder(_Seeded, Dataset):
    """Pairs of degraded / ground-truth images from two folders, matched by file stem.

    ``lq_dir/a.png`` pairs with ``gt_dir/a.jpg``: the extension does not matter, the name without
    it must be equal. The constructor scans both folders once (file headers only) and raises a
    single :class:`DataError` that lists *every* problem: files without a partner, several files
    with the same stem, unreadable files, and pairs whose sizes differ.

    Args:
        lq_dir: Folder of degraded images.
        gt_dir: Folder of ground-truth images.
        crop: Random crop side (or ``(h, w)``), same window on both; images smaller than the crop
            are padded by reflection. ``None`` returns full images (use batch size 1).
        augment: Random flips and 90-degree rotations, the same on both images.
        channels: ``None`` keeps the files' channels, ``1`` converts to gray (BT.601), ``3`` to
            RGB.
        seed: Base seed of the crops and augmentations.
        fixed: Crops and augmentations depend only on ``(seed, index)`` (see module docstring).

    Raises:
        DataError: a folder is missing or has no images, or the scan found problems.

    Example:
        >>> ds = PairedFolder("data/rain/input", "data/rain/target", crop=256, augment=True)  # doctest: +SKIP
        >>> item = ds[0]; item["lq"].shape  # doctest: +SKIP
        torch.Size([3, 256, 256])
    """

    def __init__(
        self,
        lq_dir: str | os.PathLike,
        gt_dir: str | os.PathLike,
        *,
        crop: int | tuple[int, int] | None = None,
        augment: bool = False,
        channels: int | None = None,
        seed: int = 0,
        fixed: bool = False,
    ) -> None:
        self._init_seeding(seed, fixed)
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)
        self.crop = None if crop is None else _crop_size(crop)
        self.augment = bool(augment)
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be None, 1 (gray) or 3 (RGB), got {channels!r}.")
        self.channels = channels
        self.pairs: list[tuple[str, Path, Path]] = self._scan()

    def _scan(self) -> list[tuple[str, Path, Path]]:
        folders = {"lq": self.lq_dir, "gt": self.gt_dir}
        by_stem: dict[str, dict[str, list[Path]]] = {}
        for role, folder in folders.items():
            files = list_images(folder)
            if not files:
                raise DataError(
                    f"No images in the {role} folder {str(folder)!r} (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}; sub-folders are not searched). Hint: check "
                    "the path."
                )
            stems: dict[str, list[Path]] = {}
            for p in files:
                stems.setdefault(p.stem, []).append(p)
            by_stem[role] = stems

        sizes: dict[Path, tuple[int, int]] = {}
        unreadable: list[str] = []
        for role in ("lq", "gt"):
            for files in by_stem[role].values():
                for p in files:
                    try:
                        sizes[p] = image_size(p)
                    except DataError as e:
                        unreadable.append(f"{role}/{p.name} ({_short_reason(e)})")

        lq, gt = by_stem["lq"], by_stem["gt"]
        only_lq = [p.name for s in sorted(lq.keys() - gt.keys()) for p in lq[s]]
        only_gt = [p.name for s in sorted(gt.keys() - lq.keys()) for p in gt[s]]
        duplicates = [
            f"{role}/{{{', '.join(p.name for p in files)}}}"
            for role in ("lq", "gt")
            for _, files in sorted(by_stem[role].items())
            if len(files) > 1
        ]
        pairs, mismatched = [], []
        for stem in sorted(lq.keys() & gt.keys()):
            if len(lq[stem]) != 1 or len(gt[stem]) != 1:
                continue
            a, b = lq[stem][0], gt[stem][0]
            if a in sizes and b in sizes and sizes[a] != sizes[b]:
                (ha, wa), (hb, wb) = sizes[a], sizes[b]
                mismatched.append(f"{stem} (lq {ha}x{wa}, gt {hb}x{wb})")
            pairs.append((stem, a, b))

        problems = [
            (
                only_lq,
                f"file(s) in lq with no file of the same name stem in gt {str(self.gt_dir)!r}",
            ),
            (
                only_gt,
                f"file(s) in gt with no file of the same name stem in lq {str(self.lq_dir)!r}",
            ),
            (duplicates, "name stem(s) used by several files in one folder"),
            (unreadable, "unreadable file(s)"),
            (mismatched, "pair(s) whose images differ in size (height x width)"),
        ]
        problems = [(items, what) for items, what in problems if items]
        if problems:
            total = sum(len(items) for items, _ in problems)
            lines = [f"  {len(items)} {what}: {_listing(items)}" for items, what in problems]
            raise DataError(
                f"Paired folders lq={str(self.lq_dir)!r} and gt={str(self.gt_dir)!r} have "
                f"{total} problem(s):\n" + "\n".join(lines) + "\nHint: pairs are matched by file "
                "name without extension (lq/a.png <-> gt/a.jpg); rename, re-export or remove the "
                "files listed."
            )
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        """The pair names (file stems), in dataset order."""
        return [stem for stem, _, _ in self.pairs]

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = _index(index, len(self))
        stem, lq_path, gt_path = self.pairs[i]
        lq = read_image(lq_path, channels=self.channels)
        gt = read_image(gt_path, channels=self.channels)
        if lq.shape != gt.shape:
            raise DataError(
                f"Pair {stem!r}: {str(lq_path)!r} has shape {tuple(lq.shape)} (C, H, W) but "
                f"{str(gt_path)!r} has {tuple(gt.shape)}. Hint: both images of a pair must have "
                "the same size; for gray vs colour files pass channels=1 or channels=3."
            )
        if self.crop is not None or self.augment:
            g = self._generator(i)
            if self.crop is not None:
                lq, gt = random_crop(lq, gt, self.crop, g)
            if self.augment:
                lq, gt = augment_pair(lq, gt, g)
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "name": stem}


# --------------------------------------------------------------------------------------------------
# synthetic pairs
# --------------------------------------------------------------------------------------------------


class SyntheticPairs(_Seeded, Dataset):
    """Pairs made on the fly from clean images with a task's synthetic degradation.

    For each item: load the clean image, random-crop it (padding by reflection if it is smaller),
    randomly flip / rotate it, then degrade it with
    :func:`ptg_refine.train.degradations.degrade`; ``gt`` is the clean crop, ``lq`` the degraded
    one.

    Args:
        clean: A folder of images, a list of image paths, or a list of tensors ``(C, H, W)`` in
            ``[0, 1]`` (a batch tensor ``(B, C, H, W)`` also works).
        task: ``"denoise"``, ``"derain"``, ``"lowlight"`` or ``"deblur"``.
        crop: Crop side (or ``(h, w)``); ``None`` uses full images (batch size 1).
        augment: Random flips and 90-degree rotations before degrading.
        length: Number of items; ``None`` = number of clean images. Item ``i`` uses clean image
            ``i % n``, so a large ``length`` draws many crops from a few images.
        seed: Base seed.
        channels: ``None`` keeps each image's channels, ``1`` gray (BT.601), ``3`` RGB.
        fixed: Item ``i`` depends only on ``(seed, i)`` (validation sets); otherwise every access
            differs but the sequence is reproducible (see module docstring).
        names: One name per clean image (default: file stems, or ``000000``... for tensors).
        **degradation_kwargs: Options of the task's degradation, e.g. ``sigma=50``.

    Raises:
        DataError: no clean images, or unreadable files (all listed at once).
        ConfigError: unknown task, unknown degradation option, or invalid argument.
    """

    def __init__(
        self,
        clean: str
        | os.PathLike
        | Sequence[str | os.PathLike]
        | Sequence[torch.Tensor]
        | torch.Tensor,
        task: str,
        *,
        crop: int | tuple[int, int] | None = None,
        augment: bool = True,
        length: int | None = None,
        seed: int = 0,
        channels: int | None = None,
        fixed: bool = False,
        names: Sequence[str] | None = None,
        **degradation_kwargs: Any,
    ) -> None:
        self._init_seeding(seed, fixed)
        self.task = resolve_task(task)
        _check_kwargs(self.task, _DEGRADATIONS[self.task], degradation_kwargs)
        self.degradation_kwargs = dict(degradation_kwargs)
        self.crop = None if crop is None else _crop_size(crop)
        self.augment = bool(augment)
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be None, 1 (gray) or 3 (RGB), got {channels!r}.")
        self.channels = channels
        self.sources: list[Path | torch.Tensor] = self._collect(clean)
        if names is not None and len(names) != len(self.sources):
            raise ConfigError(f"names has {len(names)} entries for {len(self.sources)} images.")
        self.stems = (
            [str(n) for n in names]
            if names is not None
            else [s.stem if isinstance(s, Path) else f"{i:06d}" for i, s in enumerate(self.sources)]
        )
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ConfigError(f"length must be a positive int or None, got {length!r}.")
        self.length = len(self.sources) if length is None else int(length)
        self._dry_run()

    def _collect(self, clean: Any) -> list[Path | torch.Tensor]:
        if isinstance(clean, torch.Tensor):
            clean = list(clean) if clean.ndim == 4 else [clean]
        if isinstance(clean, (str, os.PathLike)):
            p = Path(clean)
            clean = list_images(p) if p.is_dir() else [p]
            if not clean:
                raise DataError(
                    f"No images in the clean folder {str(p)!r} (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}; sub-folders are not searched)."
                )
        if not isinstance(clean, Sequence) or len(clean) == 0:
            raise DataError(
                "clean must be a folder, a non-empty list of image paths, or a non-empty list of "
                f"tensors (C, H, W); got {type(clean).__name__} of length "
                f"{len(clean) if isinstance(clean, Sequence) else '?'}."
            )
        sources: list[Path | torch.Tensor] = []
        unreadable: list[str] = []
        for i, item in enumerate(clean):
            if isinstance(item, torch.Tensor):
                if item.ndim != 3 or item.shape[0] not in (1, 3) or item.numel() == 0:
                    raise ShapeError(
                        f"clean[{i}] must be an image (C, H, W) with C = 1 or 3, got "
                        f"{tuple(item.shape)}. Hint: channels-last arrays need x.permute(2, 0, 1)."
                    )
                if not item.is_floating_point():
                    raise DTypeError(
                        f"clean[{i}] must be a float tensor in [0, 1], got {item.dtype}. "
                        "Hint: for uint8 data use x.float() / 255."
                    )
                sources.append(to_channels(item.detach().float(), self.channels))
            elif isinstance(item, (str, os.PathLike)):
                p = Path(item)
                try:
                    image_size(p)
                except DataError as e:
                    unreadable.append(f"{p} ({_short_reason(e)})")
                sources.append(p)
            else:
                raise DataError(
                    f"clean[{i}] must be an image path or a tensor (C, H, W), got "
                    f"{type(item).__name__}."
                )
        if unreadable:
            raise DataError(
                f"{len(unreadable)} clean image(s) cannot be read: {_listing(unreadable)}. "
                "Hint: re-export them as PNG or remove them."
            )
        return sources

    def _dry_run(self) -> None:
        """Fail at construction, not in a DataLoader worker, on invalid degradation options."""
        probe = torch.full((1, 16, 16), 0.5)
        try:
            degrade(self.task, probe, generator=0, **self.degradation_kwargs)
        except (ConfigError, ShapeError):
            raise
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(
                f"Invalid options {self.degradation_kwargs!r} for task {self.task!r}: {e}"
            ) from e

    def __len__(self) -> int:
        return self.length

    def _load(self, j: int) -> torch.Tensor:
        src = self.sources[j]
        if isinstance(src, torch.Tensor):
            return src
        return read_image(src, channels=self.channels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = _index(index, self.length)
        j = i % len(self.sources)
        g = self._generator(i)
        gt = self._load(j)
        if self.crop is not None:
            gt, _ = random_crop(gt, gt, self.crop, g)
        if self.augment:
            gt, _ = augment_pair(gt, gt, g)
        gt = gt.contiguous()
        lq = degrade(self.task, gt, generator=g, **self.degradation_kwargs)
        name = self.stems[j] if self.length == len(self.sources) else f"{self.stems[j]}_{i}"
        return {"lq": lq.float().contiguous(), "gt": gt.float(), "name": name}
