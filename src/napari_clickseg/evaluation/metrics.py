"""Interactive-segmentation metrics of ``docs/PROTOCOL.md`` (pure numpy).

Per object, the runner records the IoU after every click (a curve over
clicks 1..N). From those curves:

- ``noc``: first click count reaching a threshold (``max_clicks`` if never),
- ``nof``: number of objects that never reach it,
- ``mean_interval``: bootstrap 95 % interval of a per-object mean (how far NoC
  could move on another sample of objects of the same kind),
- ``miou_curve`` / ``auc``: mean IoU after k clicks and its mean over 1..N,
- ``share_above``: share of objects above an IoU after the last click,
- ``time_stats``: median and 90th percentile of per-click seconds,
- ``corrective_accuracy``: share of the clicked error region that the click fixed
  ("getting to 99%"), and ``decidability_index`` (FCTSFN's DI).

Conventions: IoU ignores ``ignore`` pixels; an empty union counts as IoU 1.
Click counts are 1-based (``curve[0]`` is the IoU after the first click).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..clicks import ClickLike, as_clicks

__all__ = [
    "MIOU_AT",
    "auc",
    "corrective_accuracy",
    "decidability_index",
    "fill_curve",
    "iou",
    "mean_interval",
    "miou_at",
    "miou_curve",
    "noc",
    "nof",
    "share_above",
    "summarize",
    "time_stats",
]

#: click counts at which mean IoU is reported
MIOU_AT = (1, 3, 5, 10, 20)


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two binary masks, ignoring ``ignore`` pixels.

    Returns 1.0 when both masks are empty (outside ``ignore``).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    if ignore is not None:
        valid = ~np.asarray(ignore, dtype=bool)
        pred = pred & valid
        gt = gt & valid
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def fill_curve(ious: Sequence[float], max_clicks: int) -> np.ndarray:
    """Extend a per-click IoU list to ``max_clicks`` entries by repeating its last value.

    Used when an object stopped early (``stop_iou`` reached or no error left):
    its IoU is taken to stay where it was.
    """
    a = np.asarray(ious, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("an IoU curve needs at least one click")
    if a.size >= max_clicks:
        return a[:max_clicks].copy()
    return np.concatenate([a, np.full(max_clicks - a.size, a[-1])])


def noc(curve: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks needed to reach ``threshold`` IoU; ``max_clicks`` if never.

    Args:
        curve: IoU after clicks 1, 2, ... (at most ``max_clicks`` are looked at).
        threshold: e.g. 0.85 or 0.90.
        max_clicks: the click budget (20 in the protocol).
    """
    a = np.asarray(curve, dtype=np.float64)[:max_clicks]
    hits = np.flatnonzero(a >= threshold)
    return int(hits[0]) + 1 if hits.size else int(max_clicks)


def nof(curves: Sequence[Sequence[float]], threshold: float = 0.90, max_clicks: int = 20) -> int:
    """Number of objects whose curve never reaches ``threshold`` within ``max_clicks``."""
    return int(sum(not np.any(np.asarray(c, dtype=np.float64)[:max_clicks] >= threshold) for c in curves))


def mean_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-object ``values`` (seeded, so reports repeat).

    With 15 objects one object is 7 % of the mean, and NoC@90 moves by a click
    between samples; compare models on the same objects (the runner's
    ``objects``) rather than by overlapping intervals.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(a, size=(resamples, a.size)).mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def miou_curve(curves: Sequence[Sequence[float]], max_clicks: int = 20) -> np.ndarray:
    """Mean IoU after k clicks, k = 1..max_clicks (short curves are filled, see ``fill_curve``)."""
    if len(curves) == 0:
        return np.full(max_clicks, np.nan)
    return np.stack([fill_curve(c, max_clicks) for c in curves]).mean(axis=0)


def miou_at(mcurve: Sequence[float], k: int) -> float:
    """Mean IoU after ``k`` clicks from a mean-IoU curve (NaN if the curve is shorter)."""
    a = np.asarray(mcurve, dtype=np.float64)
    return float(a[k - 1]) if 1 <= k <= a.size else float("nan")


def auc(mcurve: Sequence[float]) -> float:
    """Area under the mean-IoU curve: its mean over clicks 1..N ("getting to 99%")."""
    a = np.asarray(mcurve, dtype=np.float64)
    return float(a.mean()) if a.size else float("nan")


def share_above(values: Sequence[float], threshold: float) -> float:
    """Share of values strictly above ``threshold`` (NaN for no values)."""
    a = np.asarray(values, dtype=np.float64)
    return float(np.mean(a > threshold)) if a.size else float("nan")


def time_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile, mean and count of per-click wall times."""
    a = np.asarray(seconds, dtype=np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan"), "n": 0}
    return {
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def corrective_accuracy(
    prev_pred: np.ndarray,
    new_pred: np.ndarray,
    gt: np.ndarray,
    row: int,
    col: int,
    ignore: np.ndarray | None = None,
) -> float:
    """Share of the clicked error region that the click fixed.

    The clicked region is the 8-connected component, containing the click, of
    the previous prediction's error (false negatives for a click on the object,
    false positives for one on the background), ignore pixels excluded. The
    score is the share of its pixels that the new prediction labels correctly.

    Returns NaN when the click does not lie in an error region.
    """
    gt = np.asarray(gt, dtype=bool)
    prev_pred = np.asarray(prev_pred, dtype=bool)
    new_pred = np.asarray(new_pred, dtype=bool)
    error = gt != prev_pred
    if ignore is not None:
        error &= ~np.asarray(ignore, dtype=bool)
    if not (0 <= row < error.shape[0] and 0 <= col < error.shape[1]):
        raise ValueError(f"click ({row}, {col}) lies outside the {error.shape[0]}x{error.shape[1]} masks")
    if not error[row, col]:
        return float("nan")
    error &= gt == gt[row, col]  # only the clicked kind of error (FN or FP) is the clicked region
    lab, _ = ndimage.label(error, structure=np.ones((3, 3), dtype=bool))
    region = lab == lab[row, col]
    fixed = new_pred[region] == gt[region]
    return float(fixed.mean())


def decidability_index(
    prob: np.ndarray,
    clicks: Sequence[ClickLike],
    gt: np.ndarray,
    radius: float = 10.0,
    ignore: np.ndarray | None = None,
) -> float:
    """FCTSFN's decidability index of the responses around positive and negative clicks.

    ``DI = |mu_p - mu_n| / sqrt((var_p + var_n) / 2)`` over the probabilities
    within ``radius`` of positive / negative clicks. Without negative clicks the
    negative sample is every background pixel of ``gt`` (as in the paper).
    Returns NaN without positive clicks or samples; ``inf`` for perfectly
    separated constant responses.
    """
    prob = np.asarray(prob, dtype=np.float64)
    h, w = prob.shape
    r = int(np.ceil(radius))
    clicks = as_clicks(clicks)  # Click objects or (row, col, positive) tuples

    def around(positive: bool) -> np.ndarray:
        vals = []
        for c in clicks:
            if bool(c.positive) != positive:
                continue
            y, x = int(round(c.row)), int(round(c.col))
            y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            inside = (yy - c.row) ** 2 + (xx - c.col) ** 2 <= radius**2
            vals.append(prob[y0:y1, x0:x1][inside])
        return np.concatenate(vals) if vals else np.empty(0)

    pos = around(True)
    neg = around(False)
    if neg.size == 0:
        bg = ~np.asarray(gt, dtype=bool)
        if ignore is not None:
            bg &= ~np.asarray(ignore, dtype=bool)
        neg = prob[bg]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    spread = np.sqrt((pos.var() + neg.var()) / 2.0)
    diff = abs(pos.mean() - neg.mean())
    if spread < 1e-9:  # constant responses (up to rounding)
        return float("inf") if diff > 1e-9 else float("nan")
    return float(diff / spread)


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def summarize(
    curves: Sequence[Sequence[float]],
    seconds: Sequence[float] = (),
    max_clicks: int = 20,
    corrective: Sequence[Sequence[float]] | None = None,
) -> dict:
    """All protocol numbers for a set of per-object IoU curves.

    Args:
        curves: per object, IoU after clicks 1..n (n <= max_clicks; short curves are filled).
        seconds: wall time of every predict call.
        max_clicks: the click budget.
        corrective: per object, corrective-click accuracy of each click (NaN where undefined).

    Returns:
        A JSON-ready dict: ``n_objects``, ``noc85``, ``noc90``, ``noc90_interval95`` (bootstrap
        over objects, see ``mean_interval``), ``nof90``, ``miou`` (k -> value
        for k in ``MIOU_AT`` up to ``max_clicks``), ``miou_curve``, ``auc``, ``above95``,
        ``above99`` (at the last click), ``seconds_per_click`` and, if given,
        ``corrective_accuracy`` (mean over objects and clicks, and per click).
    """
    n = len(curves)
    filled = [fill_curve(c, max_clicks) for c in curves]
    mcurve = miou_curve(filled, max_clicks)
    final = [c[-1] for c in filled]
    noc90 = [noc(c, 0.90, max_clicks) for c in filled]
    out: dict = {
        "n_objects": n,
        "max_clicks": max_clicks,
        "noc85": float(np.mean([noc(c, 0.85, max_clicks) for c in filled])) if n else float("nan"),
        "noc90": float(np.mean(noc90)) if n else float("nan"),
        "noc90_interval95": list(mean_interval(noc90)),
        "nof85": nof(filled, 0.85, max_clicks),
        "nof90": nof(filled, 0.90, max_clicks),
        "miou": {str(k): miou_at(mcurve, k) for k in MIOU_AT if k <= max_clicks},
        "miou_curve": [float(v) for v in mcurve],
        "auc": auc(mcurve),
        "above95": share_above(final, 0.95),
        "above99": share_above(final, 0.99),
        "seconds_per_click": time_stats(seconds),
    }
    if corrective is not None:
        per_click = []
        for k in range(max_clicks):
            per_click.append(_nanmean([c[k] for c in corrective if k < len(c)]))
        out["corrective_accuracy"] = {
            "mean": _nanmean([v for c in corrective for v in c]),
            "per_click": per_click,
        }
    return out
