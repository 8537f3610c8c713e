"""The robot user: the one next-click simulator shared by training and evaluation.

Implements ``docs/PROTOCOL.md``: the next click goes to the pixel farthest
from the boundary of the larger error region (false negatives -> positive
click, false positives -> negative click). Distances are Euclidean distance
transforms of the error masks padded with a one-pixel zero border, so the
image border counts as outside. An exact tie goes to the negative side
(as in RITM's code). The first click (empty prediction) lands at the pixel
deepest inside the object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .clicks import Click

__all__ = ["error_distances", "next_click", "padded_edt"]


def padded_edt(mask: np.ndarray) -> np.ndarray:
    """Distance of every pixel in ``mask`` to the nearest pixel outside it or the border."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def error_distances(
    gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distance transforms of the false-negative and false-positive regions."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be 2D of one shape, got {gt.shape} and {pred.shape}")
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    return padded_edt(fn), padded_edt(fp)


def next_click(
    gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None, order: int = 0
) -> Click | None:
    """The robot user's next click for ``pred`` against ``gt``; None if there is no error.

    Args:
        gt: ground-truth object mask (H, W).
        pred: current binary prediction (H, W).
        ignore: pixels excluded from error regions (GrabCut's boundary band).
        order: order given to the returned click.
    """
    fn_dt, fp_dt = error_distances(gt, pred, ignore)
    fn_max, fp_max = fn_dt.max(initial=0.0), fp_dt.max(initial=0.0)
    if fn_max == 0 and fp_max == 0:
        return None
    positive = fn_max > fp_max
    dt = fn_dt if positive else fp_dt
    r, c = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return Click(float(r), float(c), bool(positive), order)

