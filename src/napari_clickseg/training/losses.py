"""Training losses, registered by name; every model has a default.

Each loss is called as ``loss(out, gt, ignore, clicks)`` with the model's
output dict (``"logits"`` (B, 1, H, W), maybe ``"aux_logits"``), the ground
truth (B, 1, H, W) float in {0, 1}, the ignore mask (B, 1, H, W) bool (pixels
left out) and the clicks of every sample (list of lists of ``Click``); it
returns a scalar.

- ``balanced_bce``: class-balanced BCE (HED; multi-stage fusion): per image,
  positives weigh |Y-| / |Y| and negatives |Y+| / |Y| (the multi-stage fusion
  paper takes the frequencies over the mini-batch).
- ``bce``: plain BCE.
- ``click_bce``: FCA-Net's click loss, BCE weighted by ``alpha + beta * psi``,
  ``psi = max(0, 1 - dist(p, S) / tau)`` with S all clicks, tau = 100,
  alpha = 0.8, beta = 2.0.
- ``fca``: ``click_bce`` on the final output plus the first-click loss
  (the same weighting with S = {first click}) on ``"aux_logits"``.
- ``nfl``: RITM's normalized focal loss (alpha 0.5, gamma 2): focal weights
  ``(1 - p_t)^gamma`` rescaled per image to sum to the pixel count, so hard
  pixels (thin boundaries, small objects) carry the loss without the total
  shrinking as the model improves.
- ``soft_iou_click``: the "99%" loss: soft IoU ``1 - sum(p g) / sum(max(p, g))``
  plus a click-location loss. The paper's click term (its Eq. 1) is a per-image
  sum of squared errors of the prediction at the clicks; here it is the mean
  BCE on the logits over all clicks of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from ..clicks import Click

__all__ = ["DEFAULT_LOSS", "LOSSES", "get_loss", "click_weights"]

LossFn = Callable[[dict, Tensor, Tensor, Sequence[Sequence[Click]]], Tensor]

FCA_TAU, FCA_ALPHA, FCA_BETA = 100.0, 0.8, 2.0
EPS = 1e-6
#: the normalized focal loss's epsilon (RITM's): 1e-6 stopped normalising once the model was confident
NFL_EPS = 1e-12


def _valid(ignore: Tensor) -> Tensor:
    return (~ignore).float()


def _mean_per_image(x: Tensor, valid: Tensor) -> Tensor:
    return ((x * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)).mean()


def bce(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """Plain binary cross-entropy over non-ignored pixels."""
    logits = out["logits"].float()
    return _mean_per_image(F.binary_cross_entropy_with_logits(logits, gt, reduction="none"), _valid(ignore))


def balanced_bce(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """Class-balanced BCE (see module docstring), ignored pixels left out."""
    logits = out["logits"].float()
    valid = _valid(ignore)
    n = valid.flatten(1).sum(1).clamp_min(1.0)
    n_pos = (gt * valid).flatten(1).sum(1)
    w_pos = ((n - n_pos) / n).view(-1, 1, 1, 1)
    w_neg = (n_pos / n).view(-1, 1, 1, 1)
    w = torch.where(gt > 0.5, w_pos, w_neg) * valid
    per_pixel = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    # factor 2: a balanced image gets the same scale as plain BCE
    return 2.0 * ((per_pixel * w).flatten(1).sum(1) / n).mean()


def click_weights(
    clicks: Sequence[Sequence[Click]], shape: tuple[int, int], device: torch.device | str = "cpu",
    *, first_only: bool = False, tau: float = FCA_TAU, alpha: float = FCA_ALPHA, beta: float = FCA_BETA,
) -> Tensor:
    """FCA-Net pixel weights ``alpha + beta * max(0, 1 - dist(p, S) / tau)``, (B, 1, H, W)."""
    h, w = shape
    rows = torch.arange(h, dtype=torch.float32, device=device).view(h, 1)
    cols = torch.arange(w, dtype=torch.float32, device=device).view(1, w)
    out = []
    for cl in clicks:
        pts = [c for c in cl if c.positive][:1] if first_only else list(cl)
        d2 = torch.full((h, w), float("inf"), device=device)
        for c in pts:
            d2 = torch.minimum(d2, (rows - c.row) ** 2 + (cols - c.col) ** 2)
        psi = (1.0 - d2.sqrt() / tau).clamp_min(0.0)
        out.append(alpha + beta * psi)
    return torch.stack(out)[:, None]


def _weighted_bce(logits: Tensor, gt: Tensor, ignore: Tensor, weights: Tensor) -> Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), gt, reduction="none")
    return _mean_per_image(per_pixel * weights, _valid(ignore))


def click_bce(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """FCA-Net's click loss on ``out["logits"]`` (weights grow near every click)."""
    w = click_weights(clicks, tuple(gt.shape[-2:]), gt.device)
    return _weighted_bce(out["logits"], gt, ignore, w)


def fca(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """Click loss on the output + first-click loss on ``out["aux_logits"]`` (when present)."""
    loss = click_bce(out, gt, ignore, clicks)
    aux = out.get("aux_logits")
    if aux is not None:
        aux = aux if aux.shape[-2:] == gt.shape[-2:] else F.interpolate(
            aux, size=gt.shape[-2:], mode="bilinear", align_corners=False
        )
        w = click_weights(clicks, tuple(gt.shape[-2:]), gt.device, first_only=True)
        loss = loss + _weighted_bce(aux, gt, ignore, w)
    return loss


NFL_ALPHA, NFL_GAMMA = 0.5, 2.0


def nfl(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """Normalized focal loss (RITM) over non-ignored pixels, plus the same on ``aux_logits``."""
    loss = _nfl(out["logits"], gt, ignore)
    aux = out.get("aux_logits")
    if aux is not None:
        aux = aux if aux.shape[-2:] == gt.shape[-2:] else F.interpolate(
            aux, size=gt.shape[-2:], mode="bilinear", align_corners=False
        )
        loss = loss + 0.4 * _nfl(aux, gt, ignore)
    return loss


def _nfl(logits: Tensor, gt: Tensor, ignore: Tensor) -> Tensor:
    logits = logits.float()
    valid = _valid(ignore)
    p = torch.sigmoid(logits)
    pt = torch.where(gt > 0.5, p, 1.0 - p)
    alpha = torch.where(gt > 0.5, NFL_ALPHA, 1.0 - NFL_ALPHA) * valid
    beta = (1.0 - pt) ** NFL_GAMMA * valid
    # normalise the focal weights per image (detached, as in RITM)
    mult = (valid.flatten(1).sum(1) / (beta.detach().flatten(1).sum(1) + NFL_EPS)).view(-1, 1, 1, 1)
    # log(pt) from logits for stability: log sigmoid(+-x)
    log_pt = F.logsigmoid(torch.where(gt > 0.5, logits, -logits))
    per_pixel = -alpha * beta * mult.detach() * log_pt
    return _mean_per_image(per_pixel, valid)


def soft_iou_click(out: dict, gt: Tensor, ignore: Tensor, clicks: Sequence[Sequence[Click]]) -> Tensor:
    """Soft IoU + BCE at the clicked pixels ("getting to 99 %")."""
    logits = out["logits"].float()
    p = torch.sigmoid(logits)
    valid = _valid(ignore)
    inter = (p * gt * valid).flatten(1).sum(1)
    union = (torch.maximum(p, gt) * valid).flatten(1).sum(1)
    iou_loss = (1.0 - inter / union.clamp_min(EPS)).mean()
    h, w = gt.shape[-2:]
    idx_b, idx_r, idx_c, lab = [], [], [], []
    for b, cl in enumerate(clicks):
        for c in cl:
            idx_b.append(b)
            idx_r.append(min(max(int(round(c.row)), 0), h - 1))
            idx_c.append(min(max(int(round(c.col)), 0), w - 1))
            lab.append(1.0 if c.positive else 0.0)
    if not idx_b:
        return iou_loss
    at = logits[idx_b, 0, idx_r, idx_c]
    target = torch.tensor(lab, dtype=at.dtype, device=at.device)
    return iou_loss + F.binary_cross_entropy_with_logits(at, target)


LOSSES: dict[str, LossFn] = {
    "bce": bce,
    "balanced_bce": balanced_bce,
    "click_bce": click_bce,
    "fca": fca,
    "nfl": nfl,
    "soft_iou_click": soft_iou_click,
}

#: each model's default loss
DEFAULT_LOSS: dict[str, str] = {
    "early": "balanced_bce",
    "two_stream": "balanced_bce",
    "multi_stage": "balanced_bce",
    "fca": "fca",
    "hires": "soft_iou_click",
}


def get_loss(name: str | None, model: str | None = None) -> LossFn:
    """A loss by name, or the model's default when ``name`` is None."""
    if name is None:
        name = DEFAULT_LOSS.get(model or "", "balanced_bce")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
