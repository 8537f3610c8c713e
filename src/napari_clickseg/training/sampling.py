"""Random initial clicks for training (the robot adds the iterative ones).

Follows Xu et al. (2016) as used by FCA-Net: 1-10 positive and 0-10 negative
clicks. Positives lie at least ``P1`` pixels inside the object and ``P2``
pixels from each other; negatives lie ``N1``-``N2`` pixels outside the object
and ``N3`` pixels from each other, with ``P1`` in {5, 10, 15, 20}, ``P2`` in
{7, 10, 20}, ``N1`` in {15, 40, 60}, ``N2`` = 80, ``N3`` in {10, 15, 25}
(drawn per sample). Xu's third strategy is kept too: with instance labels, some
negatives go on neighbouring objects. Counts are drawn with probability
``decay**n`` (few clicks are more common, as in RITM's multi-point sampler),
because evaluation starts from one click.

The first positive click is the object's most central point (maximum of the
distance transform, FCA-Net's E(p) = 1), or the centre of mass jittered by up
to ``com_jitter`` of the object's size (multi-stage fusion's U(-50, 50) px,
scaled to the crop) and snapped into the object, or a random valid positive.
Where a constraint leaves no candidate it is relaxed rather than failing.
All distances are in pixels of the training crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..clicks import Click
from ..robot import padded_edt

__all__ = ["ClickSamplingConfig", "first_click", "sample_clicks"]


@dataclass(frozen=True)
class ClickSamplingConfig:
    """Constants of the initial-click sampler (see module docstring)."""

    max_positive: int = 10
    max_negative: int = 10
    decay: float = 0.6
    first_central_prob: float = 0.4
    first_com_prob: float = 0.4
    com_jitter: float = 0.25
    p1: tuple[int, ...] = (5, 10, 15, 20)
    p2: tuple[int, ...] = (7, 10, 20)
    n1: tuple[int, ...] = (15, 40, 60)
    n2: tuple[int, ...] = (80,)
    n3: tuple[int, ...] = (10, 15, 25)
    other_object_prob: float = 0.3

    @property
    def max_clicks(self) -> int:
        """Largest number of initial clicks."""
        return self.max_positive + self.max_negative


def _draw_count(lo: int, hi: int, decay: float, rng: np.random.Generator) -> int:
    n = np.arange(lo, hi + 1)
    p = decay ** (n - lo).astype(float)
    return int(rng.choice(n, p=p / p.sum()))


def _pick_spread(
    candidates: np.ndarray, n: int, min_dist: float, taken: list[np.ndarray], rng: np.random.Generator
) -> list[np.ndarray]:
    """Pick up to ``n`` points from (N, 2) candidates, each ``min_dist`` from the others and ``taken``."""
    picked: list[np.ndarray] = []
    cand = candidates
    for t in taken:
        cand = cand[((cand - t) ** 2).sum(1) >= min_dist**2]
    for _ in range(n):
        if len(cand) == 0:
            break
        p = cand[int(rng.integers(len(cand)))]
        picked.append(p)
        cand = cand[((cand - p) ** 2).sum(1) >= min_dist**2]
    return picked


def first_click(
    mask: np.ndarray,
    rng: np.random.Generator,
    cfg: ClickSamplingConfig,
    inner: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> Click:
    """The first positive click (see module docstring); ``mask`` must not be empty.

    ``valid``: pixels a click may land on (not ignored, inside the image); the click keeps to
    them where the object has any.
    """
    if inner is None:
        inner = padded_edt(mask)
    allowed = mask & valid if valid is not None and (mask & valid).any() else mask
    u = rng.random()
    if u < cfg.first_central_prob:
        r, c = np.unravel_index(int(np.argmax(np.where(allowed, inner, -1.0))), inner.shape)
        return Click(float(r), float(c), True, 0)
    coords = np.argwhere(allowed)
    if u < cfg.first_central_prob + cfg.first_com_prob:
        com = coords.mean(0)
        size = coords.max(0) - coords.min(0) + 1
        p = com + rng.uniform(-1, 1, 2) * cfg.com_jitter * size
        p = np.round(p).astype(int)
        h, w = mask.shape
        if not (0 <= p[0] < h and 0 <= p[1] < w and allowed[p[0], p[1]]):
            p = coords[int(np.argmin(((coords - p) ** 2).sum(1)))]
        return Click(float(p[0]), float(p[1]), True, 0)
    p1 = min(float(rng.choice(cfg.p1)), inner[allowed].max() / 2)
    cand = np.argwhere((inner >= max(p1, 1.0)) & allowed)
    if len(cand) == 0:
        cand = coords
    p = cand[int(rng.integers(len(cand)))]
    return Click(float(p[0]), float(p[1]), True, 0)


def sample_clicks(
    mask: np.ndarray,
    ignore: np.ndarray | None,
    rng: np.random.Generator,
    cfg: ClickSamplingConfig | None = None,
    others: np.ndarray | None = None,
) -> list[Click]:
    """Random initial clicks for one object mask: the first positive click, then positives, then negatives.

    Args:
        mask: (H, W) bool object mask (not empty).
        ignore: (H, W) bool pixels where no click may land, or None.
        rng: random generator.
        cfg: constants; defaults to ``ClickSamplingConfig()``.
        others: (H, W) bool mask of other labelled objects (negatives may land there).
    """
    cfg = cfg or ClickSamplingConfig()
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("cannot sample clicks on an empty mask")
    valid = np.ones_like(mask) if ignore is None else ~np.asarray(ignore, dtype=bool)
    inner = padded_edt(mask)
    first = first_click(mask, rng, cfg, inner, valid)
    clicks = [first]

    n_pos = _draw_count(1, cfg.max_positive, cfg.decay, rng) - 1
    if n_pos > 0:
        p1 = min(float(rng.choice(cfg.p1)), inner.max() / 2)
        cand = np.argwhere((inner >= max(p1, 1.0)) & valid)
        taken = [np.array([first.row, first.col])]
        for p in _pick_spread(cand, n_pos, float(rng.choice(cfg.p2)), taken, rng):
            clicks.append(Click(float(p[0]), float(p[1]), True, len(clicks)))

    n_neg = _draw_count(0, cfg.max_negative, cfg.decay, rng)
    if n_neg > 0:
        background = ~mask & valid
        use_others = others is not None and rng.random() < cfg.other_object_prob
        if use_others:
            cand = np.argwhere(others & background)
            if len(cand) == 0:
                use_others = False
        if not use_others:
            outer = ndimage.distance_transform_edt(~mask)
            n1, n2 = float(rng.choice(cfg.n1)), float(rng.choice(cfg.n2))
            band = background & (outer >= n1) & (outer <= n2)
            if not band.any():  # crop too tight for the band: relax it
                far = outer[background].max(initial=0.0)
                band = background & (outer >= min(n1, far / 2))
            cand = np.argwhere(band)
        for p in _pick_spread(cand, n_neg, float(rng.choice(cfg.n3)), [], rng):
            clicks.append(Click(float(p[0]), float(p[1]), False, len(clicks)))
    return clicks


def clicks_to_array(clicks: list[Click], size: int) -> np.ndarray:
    """Pack clicks as a (size, 3) float32 array of (row, col, label): 1 positive, 0 negative, -1 padding."""
    out = np.full((size, 3), -1.0, dtype=np.float32)
    for i, c in enumerate(clicks[:size]):
        out[i] = (c.row, c.col, 1.0 if c.positive else 0.0)
    return out


def array_to_clicks(arr: np.ndarray) -> list[Click]:
    """Inverse of ``clicks_to_array``."""
    out = []
    for row, col, lab in np.asarray(arr, dtype=float):
        if lab < 0:
            break
        out.append(Click(float(row), float(col), bool(lab > 0.5), len(out)))
    return out
