"""Scoring a refined model (or folders of restored images) with the field's protocol.

:func:`evaluate` runs a :class:`~ptg_refine.RefinedModel` on full-size pairs and scores, per image,
the degraded input, the base network's output and the refined output against the ground truth with
:func:`ptg_refine.metrics.psnr` and :func:`ptg_refine.metrics.ssim` (BT.601 Y channel with
``y_channel=True``, ``crop_border`` pixels removed per side, SSIM with an 11×11 Gaussian window on
the valid region). Dataset scores are means of the per-image scores. :func:`evaluate_folders` does
the same for images restored elsewhere (``ptg-refine eval --pred DIR --gt DIR``).

Outputs of the networks are clamped to [0, 1] before scoring (as when they are saved as images);
``quantize=True`` also rounds them to 8 bit, the convention of papers that score saved PNGs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write
from .errors import ConfigError, DataError
from .metrics import psnr, ssim

__all__ = ["EvalResult", "evaluate", "evaluate_folders"]

logger = logging.getLogger(__name__)

_MODEL_COLUMNS = (
    "psnr_input",
    "ssim_input",
    "psnr_base",
    "ssim_base",
    "psnr_refined",
    "ssim_refined",
)
_FOLDER_COLUMNS = ("psnr", "ssim")


@dataclass
class EvalResult:
    """Per-image scores and their means.

    Attributes:
        rows: one dict per image: ``"name"``, ``"height"``, ``"width"`` and the metric columns
            (``psnr_input``, ``ssim_input``, ``psnr_base``, ``ssim_base``, ``psnr_refined``,
            ``ssim_refined`` for :func:`evaluate`; ``psnr``, ``ssim`` for
            :func:`evaluate_folders`).
        means: the mean of every metric column over the images.
        columns: the metric column names, in order.
        settings: the protocol used (``y_channel``, ``crop_border``, ``quantize``).
        files: paths written (``"csv"``, ``"json"``, ``"grids"``), empty without ``out_dir``.
    """

    rows: list[dict[str, Any]]
    means: dict[str, float]
    columns: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> list[list[Any]]:
        """The per-image table as rows of ``[name, height, width, *columns]``."""
        return [
            [r["name"], r["height"], r["width"], *(r[c] for c in self.columns)] for r in self.rows
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: ``{"count", "means", "settings", "files"}`` (paths as strings)."""
        files = {
            k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in self.files.items()
        }
        overview = {
            "count": len(self.rows),
            "means": dict(self.means),
            "settings": dict(self.settings),
            "files": files,
        }
        return _json_safe(overview)


def _means(rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, float]:
    if not rows:
        return {c: float("nan") for c in columns}
    return {c: float(sum(r[c] for r in rows) / len(rows)) for c in columns}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _write_reports(result: EvalResult, out_dir: Path) -> None:
    header = ["name", "height", "width", *result.columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in result.table():
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    writer.writerow(["mean", "", "", *(f"{result.means[c]:.6f}" for c in result.columns)])
    csv_text = buf.getvalue()
    csv_path = out_dir / "metrics.csv"
    atomic_write(csv_path, lambda tmp: Path(tmp).write_text(csv_text, encoding="utf-8"))

    payload = {
        "settings": result.settings,
        "count": len(result.rows),
        "means": result.means,
        "images": result.rows,
    }
    json_text = json.dumps(_json_safe(payload), indent=2)
    json_path = out_dir / "metrics.json"
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json_text, encoding="utf-8"))
    result.files["csv"] = csv_path
    result.files["json"] = json_path


def _iter_items(data: Any) -> Iterable[Any]:
    if isinstance(data, Mapping):
        raise DataError("data must be a data set or a list of items, not a single dict.")
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return (data[i] for i in range(len(data)))
    if isinstance(data, Iterable):
        return data
    raise DataError(f"data must be a data set or an iterable of items, got {type(data).__name__}.")


def _as_pair(item: Any, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Any]:
    """(lq, gt, name, key) of an item: a dict {"lq", "gt", "name"?, "key"?} or a tuple (lq, gt)."""
    if isinstance(item, Mapping):
        lq, gt, name, key = item.get("lq"), item.get("gt"), item.get("name"), item.get("key")
    elif isinstance(item, Sequence) and len(item) in (2, 3):
        lq, gt = item[0], item[1]
        name = item[2] if len(item) == 3 else None
        key = None
    else:
        raise DataError(
            f"Evaluation item {index} must be a dict {{'lq', 'gt', 'name'}} or a tuple (lq, gt), "
            f"got {type(item).__name__}."
        )
    if not isinstance(lq, torch.Tensor):
        raise DataError(f"Evaluation item {index} has no 'lq' tensor (C, H, W).")
    if not isinstance(gt, torch.Tensor):
        raise DataError(
            f"Evaluation item {index} ({name or index}) has no 'gt' image; evaluation compares "
            "against ground truth. Hint: use a validation set with ground-truth images."
        )
    if lq.ndim == 4 and lq.shape[0] == 1:
        lq = lq[0]
    if gt.ndim == 4 and gt.shape[0] == 1:
        gt = gt[0]
    if lq.ndim != 3 or gt.ndim != 3 or lq.shape != gt.shape:
        raise DataError(
            f"Evaluation item {index} ({name or index}): lq {tuple(lq.shape)} and gt "
            f"{tuple(gt.shape)} must be images (C, H, W) of the same shape."
        )
    return lq, gt, str(name if name is not None else f"{index:06d}"), key


def _prepare_output(x: torch.Tensor, quantize: bool) -> torch.Tensor:
    x = x.float().clamp(0.0, 1.0)
    return (x * 255.0).round() / 255.0 if quantize else x


def _check_protocol(y_channel: Any, crop_border: Any, max_grids: Any) -> None:
    if not isinstance(y_channel, bool):
        raise ConfigError(f"y_channel must be True or False, got {y_channel!r}.")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ConfigError(f"crop_border must be an int >= 0, got {crop_border!r}.")
    if max_grids is not None and (
        isinstance(max_grids, bool) or not isinstance(max_grids, int) or max_grids < 0
    ):
        raise ConfigError(f"max_grids must be an int >= 0 or None, got {max_grids!r}.")


def _safe_stem(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip(".")[:80] or "image"


def _write_grid(path: Path, images: Sequence[torch.Tensor], gap: int = 4) -> None:
    """Side by side, separated by white ``gap``-pixel columns (no captions)."""
    from .io import write_image

    c, h, _ = images[0].shape
    white = torch.ones(c, h, gap)
    parts: list[torch.Tensor] = []
    for i, img in enumerate(images):
        if i:
            parts.append(white)
        parts.append(img.detach().float().cpu().clamp(0, 1))
    write_image(path, torch.cat(parts, dim=-1))


def evaluate(
    model: Any,
    data: Any,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = False,
    out_dir: str | os.PathLike | None = None,
    save_grids: bool = False,
    max_grids: int | None = 16,
    features: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score a refined model on full-size pairs: degraded input, base output and refined output.

    Each image is run alone (batch of one, any size) in eval mode without gradients; the model's
    training mode is restored afterwards. Scores follow :mod:`ptg_refine.metrics`.

    Args:
        model: a :class:`~ptg_refine.RefinedModel`.
        data: a data set (``__len__`` / ``__getitem__``) or iterable of items
            ``{"lq": (C, H, W), "gt": (C, H, W), "name": str, "key": optional}``, or of tuples
            ``(lq, gt)`` / ``(lq, gt, name)``.
        y_channel: score RGB images on the BT.601 Y channel (deraining benchmarks).
        crop_border: pixels removed from each side before scoring.
        quantize: round outputs to 8 bit before scoring (papers that score saved PNGs).
        out_dir: when given, write ``metrics.csv`` (one row per image plus a ``mean`` row) and
            ``metrics.json`` (settings, means, per-image rows) atomically, and grids when
            ``save_grids``.
        save_grids: write ``out_dir/grids/<index>_<name>_base<PSNR>_ref<PSNR>.png``: degraded |
            base | refined | ground truth side by side, separated by white 4-pixel columns.
        max_grids: write grids for at most this many images (None: all).
        features: precomputed priors: None runs the model's encoder; a
            :class:`~ptg_refine.train.FeatureCache` reuses (and fills) a cache; a mapping from
            item name to a (D,) tensor; or a (N, D) tensor in item order.
        device: where to run; None: the refiner's device.
        progress: show a tqdm progress bar (unit "image").

    Returns:
        An :class:`EvalResult` with columns ``psnr_input``, ``ssim_input``, ``psnr_base``,
        ``ssim_base``, ``psnr_refined``, ``ssim_refined``.

    Raises:
        DataError: an item has no ground truth, or malformed images.
        ConfigError: invalid settings.
        ShapeError: images smaller than the 11×11 SSIM window after cropping.
    """
    from .train.cache import FeatureCache, content_key, normalize_key
    from .wrap import RefinedModel

    if not isinstance(model, RefinedModel):
        raise ConfigError(
            f"evaluate() scores a RefinedModel, got {type(model).__name__}. Hint: wrap your network "
            "with ptg_refine.refine(), or score saved images with evaluate_folders()."
        )
    _check_protocol(y_channel, crop_border, max_grids)
    dev = torch.device(device) if device is not None else next(model.refiner.parameters()).device
    if dev != next(model.refiner.parameters()).device:
        model.to(dev)
    out_path = None if out_dir is None else Path(out_dir)
    grid_dir = None if out_path is None or not save_grids else out_path / "grids"

    total = len(data) if hasattr(data, "__len__") else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="image", desc="evaluate", dynamic_ncols=True)

    rows: list[dict[str, Any]] = []
    grids: list[Path] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, item in enumerate(_iter_items(data)):
                lq, gt, name, key = _as_pair(item, index)
                if isinstance(features, FeatureCache):
                    ck = content_key(lq) if key is None else normalize_key(key)
                    feats = features.features(model.encode, lq[None].to(dev), [ck])
                elif features is None:
                    feats = None
                elif isinstance(features, torch.Tensor):
                    feats = features[index : index + 1].to(dev)
                elif isinstance(features, Mapping):
                    if name not in features:
                        raise DataError(f"features has no entry for item {name!r}.")
                    feats = torch.as_tensor(features[name]).reshape(1, -1).to(dev)
                else:
                    raise ConfigError(
                        "features must be None, a FeatureCache, a mapping name -> (D,) tensor or "
                        f"a (N, D) tensor, got {type(features).__name__}."
                    )
                x = lq[None].to(dev).float()
                out = model.forward_all(x, feats)
                target = gt[None].to(dev).float()
                base = _prepare_output(out.restored, quantize)
                refined = _prepare_output(out.refined, quantize)
                degraded = _prepare_output(x, quantize)
                kw = {"y_channel": y_channel, "crop_border": crop_border}
                row: dict[str, Any] = {"name": name, "height": lq.shape[-2], "width": lq.shape[-1]}
                for label, img in (("input", degraded), ("base", base), ("refined", refined)):
                    row[f"psnr_{label}"] = float(psnr(img, target, **kw)[0])
                    row[f"ssim_{label}"] = float(ssim(img, target, **kw)[0])
                rows.append(row)
                if grid_dir is not None and (max_grids is None or len(grids) < max_grids):
                    fname = (
                        f"{index:04d}_{_safe_stem(name)}_base{row['psnr_base']:.2f}"
                        f"_ref{row['psnr_refined']:.2f}.png"
                    )
                    _write_grid(grid_dir / fname, [degraded[0], base[0], refined[0], target[0]])
                    grids.append(grid_dir / fname)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(psnr=f"{row['psnr_refined']:.2f}", refresh=False)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if not rows:
        raise DataError("evaluate() got no items to score.")

    result = EvalResult(
        rows=rows,
        means=_means(rows, _MODEL_COLUMNS),
        columns=_MODEL_COLUMNS,
        settings={"y_channel": y_channel, "crop_border": crop_border, "quantize": quantize},
    )
    if out_path is not None:
        _write_reports(result, out_path)
        if grids:
            result.files["grids"] = grids
    m = result.means
    logger.info(
        "evaluated %d images: input %.2f dB, base %.2f dB, refined %.2f dB",
        len(rows),
        m["psnr_input"],
        m["psnr_base"],
        m["psnr_refined"],
    )
    return result


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    channels: int | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score restored images in ``pred_dir`` against ground truth in ``gt_dir``, matched by stem.

    ``pred/a.png`` is scored against ``gt/a.jpg`` (extensions may differ). Every predicted image
    needs a ground truth; ground-truth files without a prediction are ignored (logged).

    Args:
        pred_dir: folder of restored images.
        gt_dir: folder of ground-truth images.
        y_channel: score RGB images on the BT.601 Y channel.
        crop_border: pixels removed from each side before scoring.
        channels: None keeps the files' channels (both files of a pair must agree); 1 or 3
            converts both.
        out_dir: when given, write ``metrics.csv`` and ``metrics.json`` there.
        progress: show a tqdm progress bar.

    Returns:
        An :class:`EvalResult` with columns ``psnr`` and ``ssim``.

    Raises:
        DataError: a folder is missing or empty, a prediction has no ground truth, names repeat,
            or the two images of a pair differ in size or channels.
    """
    from .io import list_images, read_image

    _check_protocol(y_channel, crop_border, None)
    preds, gts = list_images(pred_dir), list_images(gt_dir)
    if not preds:
        raise DataError(f"No images in the prediction folder {str(pred_dir)!r}.")

    def by_stem(files: list[Path], label: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        dupes = []
        for p in files:
            if p.stem in out:
                dupes.append(f"{out[p.stem].name} / {p.name}")
            out[p.stem] = p
        if dupes:
            raise DataError(
                f"Several files share a name stem in the {label} folder: {', '.join(dupes)}. "
                "Hint: keep one file per image name."
            )
        return out

    pred_map, gt_map = by_stem(preds, "prediction"), by_stem(gts, "ground-truth")
    missing = sorted(set(pred_map) - set(gt_map))
    if missing:
        shown = ", ".join(missing[:20]) + (
            f", and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise DataError(
            f"{len(missing)} prediction(s) in {str(pred_dir)!r} have no ground truth with the same "
            f"name stem in {str(gt_dir)!r}: {shown}."
        )
    extra = sorted(set(gt_map) - set(pred_map))
    if extra:
        logger.info("%d ground-truth images have no prediction and are skipped", len(extra))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pred_map), unit="image", desc="evaluate", dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    try:
        for stem in sorted(pred_map):
            pred = read_image(pred_map[stem], channels=channels)
            gt = read_image(gt_map[stem], channels=channels)
            if pred.shape != gt.shape:
                raise DataError(
                    f"{pred_map[stem].name} has shape {tuple(pred.shape)} (C, H, W) but its ground "
                    f"truth {gt_map[stem].name} has {tuple(gt.shape)}. Hint: images of a pair must "
                    "have the same size; for gray vs colour files pass channels=1 or 3."
                )
            kw = {"y_channel": y_channel, "crop_border": crop_border}
            rows.append(
                {
                    "name": stem,
                    "height": pred.shape[-2],
                    "width": pred.shape[-1],
                    "psnr": float(psnr(pred[None], gt[None], **kw)[0]),
                    "ssim": float(ssim(pred[None], gt[None], **kw)[0]),
                }
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    result = EvalResult(
        rows=rows,
        means=_means(rows, _FOLDER_COLUMNS),
        columns=_FOLDER_COLUMNS,
        settings={"y_channel": y_channel, "crop_border": crop_border, "quantize": False},
    )
    if out_dir is not None:
        _write_reports(result, Path(out_dir))
    return result
