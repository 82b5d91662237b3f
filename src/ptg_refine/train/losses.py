"""Training losses for :func:`ptg_refine.train.fit`.

Every loss in this module follows one calling convention, which :func:`~ptg_refine.train.fit` uses
for built-in and user-supplied losses alike::

    loss(pred, target, degraded) -> scalar tensor

* ``pred``: the image being trained, (B, C, H, W) (the refined output, and in joint training also
  the base network's output, Eq. 8 of the paper).
* ``target``: the ground truth of the same shape, or ``None`` when the data set has no ``"gt"``.
* ``degraded``: the network's input of the same shape.

Supervised losses (:func:`charbonnier`, :func:`l1`, :func:`mse`) ignore ``degraded``; unsupervised
losses (:func:`zero_dce`) ignore ``target``, which may be ``None``. Losses compute in float32 even
when the network runs under mixed precision.

Pick one by name with :func:`get_loss` (``fit(..., loss="charbonnier")``) or pass any callable with
that signature.

Example:
    >>> import torch
    >>> from ptg_refine.train.losses import get_loss
    >>> x = torch.zeros(1, 3, 8, 8)
    >>> float(get_loss("l1")(x + 0.5, x, None))
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError

__all__ = [
    "LOSSES",
    "LossFn",
    "charbonnier",
    "get_loss",
    "l1",
    "list_losses",
    "loss_name",
    "mse",
    "requires_target",
    "zero_dce",
]

LossFn = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


def _need_target(name: str, pred: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        raise ConfigError(
            f"The {name!r} loss is supervised and needs ground truth, but the batch has no 'gt'. "
            "Hint: give data items a 'gt' image, or train with an unsupervised loss "
            "(loss='zero_dce')."
        )
    if target.shape != pred.shape:
        raise ShapeError(
            f"{name} loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ "
            "in shape."
        )
    return target.float()


def charbonnier(
    pred: torch.Tensor,
    target: torch.Tensor | None,
    degraded: torch.Tensor | None = None,
    *,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Charbonnier loss ``mean(sqrt((pred - target)**2 + eps**2))``, a smooth L1.

    Args:
        pred: predicted images (B, C, H, W).
        target: ground truth, same shape. Required.
        degraded: ignored (present for the common loss signature).
        eps: smoothing constant (keyword only, so ``loss(pred, target, degraded)`` is safe).

    Returns:
        A float32 scalar.

    Raises:
        ConfigError: ``target`` is None.
    """
    t = _need_target("charbonnier", pred, target)
    return torch.sqrt((pred.float() - t).pow(2) + eps * eps).mean()


def l1(
    pred: torch.Tensor, target: torch.Tensor | None, degraded: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error. ``degraded`` is ignored; ``target`` is required."""
    t = _need_target("l1", pred, target)
    return (pred.float() - t).abs().mean()


def mse(
    pred: torch.Tensor, target: torch.Tensor | None, degraded: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error. ``degraded`` is ignored; ``target`` is required."""
    t = _need_target("mse", pred, target)
    return (pred.float() - t).pow(2).mean()


def _spatial_consistency(
    out_gray: torch.Tensor, in_gray: torch.Tensor, region: int
) -> torch.Tensor:
    """Zero-DCE L_spa: keep the contrast between neighbouring regions of the input (per image)."""
    r = max(1, min(region, out_gray.shape[-2], out_gray.shape[-1]))
    y = F.avg_pool2d(out_gray, r)
    i = F.avg_pool2d(in_gray, r)
    k = y.shape[-2] * y.shape[-1]
    total = out_gray.new_zeros(out_gray.shape[0])
    if y.shape[-1] > 1:
        dh = (y[..., 1:] - y[..., :-1]).abs() - (i[..., 1:] - i[..., :-1]).abs()
        total = total + dh.pow(2).flatten(1).sum(1)
    if y.shape[-2] > 1:
        dv = (y[..., 1:, :] - y[..., :-1, :]).abs() - (i[..., 1:, :] - i[..., :-1, :]).abs()
        total = total + dv.pow(2).flatten(1).sum(1)
    # every neighbouring pair appears twice in the paper's sum over regions i and neighbours j
    return 2.0 * total / k


def zero_dce(
    pred: torch.Tensor,
    target: torch.Tensor | None = None,
    degraded: torch.Tensor | None = None,
    *,
    exposure: float = 0.6,
    exposure_patch: int = 16,
    region: int = 4,
    spa_weight: float = 1.0,
    exp_weight: float = 1.0,
    col_weight: float = 0.5,
    tv_weight: float = 0.0,
) -> torch.Tensor:
    """Unsupervised low-light enhancement loss after Zero-DCE (Guo et al., CVPR 2020).

    Written from the Zero-DCE paper's description; it scores an enhanced image using only the
    degraded (low-light) input, so it trains without ground truth (the paper's Table 4 trains PTG-RM
    this way):

    * spatial consistency: for 4×4 regions, the contrast ``|Y_i - Y_j|`` between each region and
      its top / bottom / left / right neighbours should equal the input's;
    * exposure control: the mean intensity of each 16×16 patch should be close to
      ``exposure = 0.6``;
    * colour constancy (gray-world): the mean of each colour channel should be equal
      (``sum over (R,G), (R,B), (G,B) of (J_p - J_q)**2``; zero for gray images);
    * Zero-DCE's illumination smoothness acts on its curve parameters, which PTG-RM does not
      have; ``tv_weight > 0`` adds an anisotropic total variation of the output instead (off by
      default).

    ``loss = spa_weight * L_spa + exp_weight * L_exp + col_weight * L_col + tv_weight * L_tv``
    with the paper's weights (1, 1, 0.5) as defaults. Intensities are channel means.

    Args:
        pred: enhanced images (B, C, H, W), C in {1, 3}.
        target: ignored (may be None).
        degraded: the low-light input images, same shape as ``pred``. Required.
        exposure: well-exposedness level E.
        exposure_patch: side of the exposure patches (the whole image when it is smaller).
        region: side of the spatial-consistency regions.
        spa_weight, exp_weight, col_weight, tv_weight: weights of the four terms.

    Returns:
        A float32 scalar (mean over the batch).

    Raises:
        ConfigError: ``degraded`` is None.
        ShapeError: ``degraded`` and ``pred`` differ in shape.
    """
    if degraded is None:
        raise ConfigError("The 'zero_dce' loss needs the degraded input (third argument).")
    if degraded.shape != pred.shape:
        raise ShapeError(
            f"zero_dce loss: prediction {tuple(pred.shape)} and degraded {tuple(degraded.shape)} "
            "differ in shape."
        )
    out = pred.float()
    gray = out.mean(1, keepdim=True)
    l_spa = _spatial_consistency(gray, degraded.float().mean(1, keepdim=True), region)

    p = max(1, min(exposure_patch, gray.shape[-2], gray.shape[-1]))
    l_exp = (F.avg_pool2d(gray, p) - exposure).abs().flatten(1).mean(1)

    if out.shape[1] == 3:
        j = out.mean(dim=(2, 3))
        l_col = (j[:, 0] - j[:, 1]).pow(2) + (j[:, 0] - j[:, 2]).pow(2) + (j[:, 1] - j[:, 2]).pow(2)
    else:
        l_col = out.new_zeros(out.shape[0])

    total = spa_weight * l_spa + exp_weight * l_exp + col_weight * l_col
    if tv_weight:
        tv = (out[..., 1:, :] - out[..., :-1, :]).abs().flatten(1).mean(1) + (
            out[..., 1:] - out[..., :-1]
        ).abs().flatten(1).mean(1)
        total = total + tv_weight * tv
    return total.mean()


zero_dce.requires_target = False  # type: ignore[attr-defined]
for _fn in (charbonnier, l1, mse):
    _fn.requires_target = True  # type: ignore[attr-defined]

#: Built-in losses by name (aliases included).
LOSSES: dict[str, LossFn] = {
    "charbonnier": charbonnier,
    "l1": l1,
    "mse": mse,
    "l2": mse,
    "zero_dce": zero_dce,
    "zero-dce": zero_dce,
}


def list_losses() -> list[str]:
    """Names accepted by :func:`get_loss` (aliases included), sorted."""
    return sorted(LOSSES)


def get_loss(name_or_callable: str | LossFn) -> LossFn:
    """Return a loss ``loss(pred, target, degraded) -> scalar`` by name, or a callable as is.

    Args:
        name_or_callable: one of :func:`list_losses` (case-insensitive: ``"charbonnier"``,
            ``"l1"``, ``"mse"`` / ``"l2"``, ``"zero_dce"``), or a callable with the signature
            ``loss(pred, target, degraded)``. Supervised callables may ignore ``degraded``;
            unsupervised ones must accept ``target=None``.

    Raises:
        ConfigError: unknown name, or neither a string nor a callable.
    """
    if callable(name_or_callable):
        return name_or_callable
    if isinstance(name_or_callable, str):
        fn = LOSSES.get(name_or_callable.strip().lower())
        if fn is not None:
            return fn
        raise ConfigError(
            f"Unknown loss {name_or_callable!r}. Known losses: {', '.join(list_losses())}; or pass "
            "a callable loss(pred, target, degraded) -> scalar."
        )
    raise ConfigError(
        f"loss must be a name ({', '.join(list_losses())}) or a callable "
        f"loss(pred, target, degraded), got {type(name_or_callable).__name__}."
    )


def requires_target(loss: LossFn) -> bool | None:
    """True / False for built-in losses (supervised or not); None when unknown (user callables)."""
    value = getattr(loss, "requires_target", None)
    return value if isinstance(value, bool) else None


def loss_name(loss: str | LossFn) -> str:
    """A stable name for a loss, recorded in checkpoints to check that a resume uses the same one."""
    fn = get_loss(loss)
    if fn in LOSSES.values():
        return fn.__name__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qual}"
