"""Corrupted ground-truth masks as the previous mask of a training sequence.

A model that receives its previous mask learns, from its own outputs alone,
what those outputs usually look like. Ours learned that they are usually too
small, so a negative click after an over-segmentation sometimes grew the mask
(``scripts/click_response.py``). Starting some click-by-click sequences from a
ground-truth mask that is too large or too small, followed by the robot's click
on its largest error, shows the model both kinds of mistakes to correct.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["corrupt_mask"]


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def corrupt_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong version of the binary ``mask``: grown or shrunk, with a bump or a bite.

    The border moves by 1 px to a fifth of the object's equivalent radius (grown
    or shrunk with equal chance); then, half the time, a disk centred on the
    border (a tenth to 0.4 of that radius) is added or cut out. An object that
    would vanish is kept as it was before the cut. Returns a bool array.
    """
    m = np.asarray(mask, dtype=bool)
    area = int(m.sum())
    if area == 0:
        return m.copy()
    radius = float(np.sqrt(area / np.pi))
    step = int(rng.integers(1, max(2, int(round(0.2 * radius))) + 1))
    grow = bool(rng.random() < 0.5)
    op = ndimage.binary_dilation if grow else ndimage.binary_erosion
    out = op(m, structure=_disk(step))
    if not out.any():
        out = m.copy()
    if rng.random() < 0.5:
        edge = out & ~ndimage.binary_erosion(out)
        ys, xs = np.nonzero(edge)
        k = int(rng.integers(len(ys)))
        r = max(1.0, radius * float(rng.uniform(0.1, 0.4)))
        yy, xx = np.ogrid[: m.shape[0], : m.shape[1]]
        blob = (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= r * r
        cut = out & ~blob
        out = out | blob if rng.random() < 0.5 else (cut if cut.any() else out)
    return out
