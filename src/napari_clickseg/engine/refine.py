"""Test-time refinement: BRS (Jang & Kim 2019) and f-BRS (Sofiiuk et al. 2020).

Both minimise, with L-BFGS in float32, an energy that is small when every
clicked pixel carries its label, and stop as soon as that holds; the answer is
the map of the lowest energy evaluated (as in RITM's code), not the line-search
trial that first satisfied the clicks, which can overshoot far:

- ``brs``: an additive correction ``dz`` of the click maps; energy
  ``sum_clicks (label - p(click))^2 + lam * sum(dz^2)``; every step re-runs
  ``encode`` and ``decode`` (image-only features stay cached). ``lam`` = 1e-3
  is the paper's value, but it applies here to maps scaled to [0, 1]: for the
  distance maps of ``early`` and ``two_stream`` that is 255**2 weaker than the
  paper's term on 0-255 maps. Measured with the shipped weights and one
  negative click on the predicted foreground: at 1e-3 the click is satisfied
  but the mask shrinks to 10-28 % of its pixels; at the paper's scale (65) the
  mask stays (IoU 0.80 / 0.94 with the one before) but the click is not
  satisfied within 20 evaluations.
- ``fbrs``: a per-channel scale ``(1 + s)`` and bias ``b`` on ``encode(...)["x"]``
  (computed once without gradients); every step re-runs only ``decode``;
  loss: squared error on the 3x3 patch around each click plus
  ``lam * (|s|^2 + |b|^2)`` plus ``inertia * mean((p - p0)^2)``, the change of
  the whole map from the network's own ``p0``. A global scale and bias can
  satisfy a click by rewriting the whole mask; the inertia term keeps the rest
  (multi_stage round 2 with click honouring, 20 clicks: GrabCut, 8 objects, mIoU@20
  0.80 without it, 0.88 with 100, 0.85 without f-BRS; dsb2018/val, 10 objects, 0.92 ->
  0.93, NoC@90 6.0 -> 5.6). At 1000 it kept f-BRS from satisfying contradicted clicks.

Click points are (sub-pixel) coordinates in the network input (the zoom crop);
probabilities are sampled there bilinearly, which is what the click pixel gets
when the crop is mapped back to the image.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import BRS_MODES
from ..models.base import ClickSegModel

__all__ = ["BRS_MODES", "RefineResult", "brs", "fbrs", "refine"]

LAMBDA = 1e-3
#: weight of f-BRS's penalty on changing the map away from the clicks (module docstring)
INERTIA = 100.0


@dataclass
class RefineResult:
    """Outcome of a refinement.

    Attributes:
        logits: (1, 1, H, W) float32 logits of the chosen solution.
        iterations: network evaluations with gradient after the initial forward.
        satisfied: every click pixel carries its label.
        seconds: wall time.
    """

    logits: Tensor
    iterations: int
    satisfied: bool
    seconds: float


class _Stop(Exception):
    pass


def _satisfied(p: Tensor, labels: Tensor, threshold: float = 0.5) -> bool:
    return bool(torch.all((p >= threshold) == labels.bool()))


class _Search:
    """Runs L-BFGS on ``energy(params) -> (loss, logits)`` with early stop and caps."""

    def __init__(
        self,
        params: list[Tensor],
        energy: Callable[[], tuple[Tensor, Tensor, Tensor]],
        labels: Tensor,
        max_evals: int,
        time_cap: float,
        threshold: float = 0.5,
    ) -> None:
        self.params, self.energy, self.labels = params, energy, labels
        self.threshold = threshold
        self.max_evals, self.time_cap = max_evals, time_cap
        self.evals = 0
        self.best: tuple[float, Tensor, bool] | None = None  # energy, logits, clicks satisfied

    def run(self, t0: float) -> tuple[Tensor | None, int, bool]:
        """Logits of the solution (None if nothing was evaluated), evaluations, satisfied."""
        opt = torch.optim.LBFGS(
            self.params, lr=1.0, max_iter=self.max_evals, max_eval=self.max_evals,
            history_size=10, line_search_fn="strong_wolfe",
        )
        self.t0 = t0

        def closure() -> Tensor:
            if self.evals >= self.max_evals or time.perf_counter() - self.t0 > self.time_cap:
                raise _Stop
            self.evals += 1
            loss, logits, p_clicks = self.energy()
            value = float(loss.detach())
            if not torch.isfinite(loss):
                raise _Stop
            satisfied = _satisfied(p_clicks.detach(), self.labels, self.threshold)
            if self.best is None or value < self.best[0]:
                self.best = (value, logits.detach(), satisfied)
            if satisfied:  # stop, but answer with the lowest energy seen (as RITM's f-BRS does), not
                raise _Stop  # with whatever line-search trial point first satisfied the clicks
            grads = torch.autograd.grad(loss, self.params)
            for prm, g in zip(self.params, grads):
                prm.grad = g.contiguous()
            return loss.detach()

        with contextlib.suppress(_Stop):
            opt.step(closure)  # one call runs up to max_evals evaluations; it returns early only once converged
        if self.best is None:
            return None, self.evals, False
        return self.best[1], self.evals, self.best[2]


def _points(points: Sequence[tuple[float, float]], device: torch.device) -> tuple[Tensor, Tensor]:
    ys = torch.tensor([float(p[0]) for p in points], dtype=torch.float32, device=device)
    xs = torch.tensor([float(p[1]) for p in points], dtype=torch.float32, device=device)
    return ys, xs


def _sample(logits: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Bilinear samples of (1, 1, H, W) logits at (ys, xs), as ``F.interpolate`` would give."""
    img = logits[0, 0]
    h, w = img.shape
    y = ys.clamp(0, h - 1)
    x = xs.clamp(0, w - 1)
    y0, x0 = y.floor().long(), x.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    wy, wx = y - y0, x - x0
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _logits(out: dict) -> Tensor:
    return out["logits"].float()


def brs(
    model: ClickSegModel,
    image: Tensor,
    image_feats: dict,
    click_maps: Tensor,
    prev_mask: Tensor,
    points: Sequence[tuple[int, int]],
    labels: Sequence[bool],
    *,
    max_evals: int = 20,
    threshold: float = 0.5,
    time_cap: float = 10.0,
    lam: float = LAMBDA,
) -> RefineResult:
    """Backpropagating refinement of the click maps (see module docstring).

    Args:
        model: the network (eval mode).
        image, image_feats, click_maps, prev_mask: network inputs of the crop.
        points: (row, col) crop coordinates of the clicks; labels: True for positive.
        max_evals: cap on network evaluations with gradient.
        time_cap: cap on wall time in seconds.
        threshold: a click is satisfied when its probability is on its side of this (>= for positive).
        lam: weight of the L2 penalty on the correction.
    """
    t0 = time.perf_counter()
    ys, xs = _points(points, image.device)
    target = torch.tensor([float(v) for v in labels], device=image.device)
    with torch.no_grad():
        logits0 = _logits(model.decode(model.encode(image, image_feats, click_maps, prev_mask), image))
    if _satisfied(torch.sigmoid(_sample(logits0, ys, xs)), target, threshold):
        return RefineResult(logits0, 0, True, time.perf_counter() - t0)
    dz = torch.zeros(click_maps.shape, device=click_maps.device, requires_grad=True)

    def energy() -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            maps = click_maps + dz
            logits = _logits(model.decode(model.encode(image, image_feats, maps, prev_mask), image))
        p = torch.sigmoid(_sample(logits, ys, xs))
        loss = ((target - p) ** 2).sum() + lam * (dz**2).sum()
        return loss, logits, p

    logits, n, ok = _Search([dz], energy, target, max_evals, time_cap, threshold).run(t0)
    if logits is None:
        logits = logits0
    return RefineResult(logits, n, ok, time.perf_counter() - t0)


def _patch_index(ys: Tensor, xs: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows, cols and click index of the 3x3 patches around the clicks (clipped)."""
    d = torch.tensor([-1, 0, 1], device=ys.device)
    py = (ys[:, None, None] + d[None, :, None]).clamp(0, h - 1).expand(-1, 3, 3)
    px = (xs[:, None, None] + d[None, None, :]).clamp(0, w - 1).expand(-1, 3, 3)
    idx = torch.arange(ys.numel(), device=ys.device)[:, None, None].expand(-1, 3, 3)
    return py.reshape(-1), px.reshape(-1), idx.reshape(-1)


def fbrs(
    model: ClickSegModel,
    image: Tensor,
    image_feats: dict,
    click_maps: Tensor,
    prev_mask: Tensor,
    points: Sequence[tuple[int, int]],
    labels: Sequence[bool],
    *,
    max_evals: int = 20,
    threshold: float = 0.5,
    time_cap: float = 5.0,
    lam: float = LAMBDA,
    inertia: float = INERTIA,
) -> RefineResult:
    """Feature backpropagating refinement (scale and bias of ``enc["x"]``), see module docstring."""
    t0 = time.perf_counter()
    ys, xs = _points(points, image.device)
    target = torch.tensor([float(v) for v in labels], device=image.device)
    with torch.no_grad():
        enc = model.encode(image, image_feats, click_maps, prev_mask)
        logits0 = _logits(model.decode(enc, image))
    if _satisfied(torch.sigmoid(_sample(logits0, ys, xs)), target, threshold):
        return RefineResult(logits0, 0, True, time.perf_counter() - t0)
    x = enc["x"]
    p0 = torch.sigmoid(logits0)
    c = x.shape[1]
    s = torch.zeros(c, device=x.device, requires_grad=True)
    b = torch.zeros(c, device=x.device, requires_grad=True)
    py, px, idx = _patch_index(ys.round().long(), xs.round().long(), *logits0.shape[-2:])
    patch_target = target[idx]

    def energy() -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            xm = x * (1 + s).view(1, c, 1, 1).to(x.dtype) + b.view(1, c, 1, 1).to(x.dtype)
            logits = _logits(model.decode({**enc, "x": xm}, image))
        p_patch = torch.sigmoid(logits[0, 0, py, px])
        change = ((torch.sigmoid(logits) - p0) ** 2).mean()
        loss = ((patch_target - p_patch) ** 2).sum() + lam * ((s**2).sum() + (b**2).sum()) + inertia * change
        return loss, logits, torch.sigmoid(_sample(logits, ys, xs))

    logits, n, ok = _Search([s, b], energy, target, max_evals, time_cap, threshold).run(t0)
    if logits is None:
        logits = logits0
    return RefineResult(logits, n, ok, time.perf_counter() - t0)


def refine(
    mode: str,
    model: ClickSegModel,
    image: Tensor,
    image_feats: dict,
    click_maps: Tensor,
    prev_mask: Tensor,
    points: Sequence[tuple[int, int]],
    labels: Sequence[bool],
    **options: Any,
) -> RefineResult:
    """Run ``brs`` or ``fbrs`` by mode name ("brs" | "fbrs"); ``options`` are their keywords."""
    args = (model, image, image_feats, click_maps, prev_mask, points, labels)
    if mode == "brs":
        return brs(*args, **options)
    if mode == "fbrs":
        return fbrs(*args, **options)
    raise ValueError(f"brs must be one of {BRS_MODES}, got {mode!r}")
