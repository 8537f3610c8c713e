"""Post-processing of probability maps: click honouring, structural integrity, graph cut.

- ``honour_clicks``: a click whose pixel the map gives the other label gets its
  label back in a disk around it, of radius ``min(D, radius)`` where ``D`` is the
  distance to the nearest pixel already carrying that label, and short of every
  click of the other label: a positive click next to the mask joins it, a
  negative click cuts the mask back to the background, and no click is ignored
  (a network that ignores a click would otherwise return the same mask however
  often the user clicks there).
- ``structural_integrity`` (FCA-Net): keep a foreground pixel only if an
  8-connected path of foreground pixels joins it to a positive click.
- ``graph_cut`` (iFCN / FCTSFN): a min-cut over the pixel grid with unary terms
  ``-log p`` / ``-log(1 - p)`` (shifted to the caller's threshold) and contrast-sensitive pairwise terms
  ``w * exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(p, q)`` on the 8-neighbourhood,
  clicked pixels fixed to their labels. Needs PyMaxflow (``import maxflow``). The cut
  runs over the band where the map is unsure (``SURE < p < 1 - SURE``, and the clicked
  pixels) widened by ``BAND_MARGIN`` pixels; the pixels beyond keep their thresholded
  labels and enter the cut as fixed neighbours. On a box of millions of pixels the band
  is a small part of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..clicks import Click, ClickLike, as_clicks

__all__ = ["click_pixels", "graph_cut", "honour_clicks", "structural_integrity"]

_EIGHT = np.ones((3, 3), dtype=bool)
#: graph cut: probabilities this close to 0 or 1 are sure (outside the band, the pixel is fixed)
SURE = 0.01
#: graph cut: how far the band reaches beyond the unsure pixels (a fixed pixel pays at least
#: -log(SURE) = 4.6 to change label: only a gap or a notch a pixel or two wide could repay that)
BAND_MARGIN = 6
_FORWARD = ((0, 1), (1, 0), (1, 1), (1, -1))


def click_pixels(clicks: Sequence[Click], shape: tuple[int, int]) -> list[tuple[int, int, bool]]:
    """Rounded (row, col, positive) of the clicks that fall inside ``shape``."""
    h, w = shape
    out = []
    for c in clicks:
        r, q = int(round(c.row)), int(round(c.col))
        if 0 <= r < h and 0 <= q < w:
            out.append((r, q, c.positive))
    return out


def _check_prob(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be a 2D map, got shape {prob.shape}")
    return prob


def honour_clicks(
    prob: np.ndarray, clicks: Iterable[ClickLike], radius: float, threshold: float = 0.5
) -> np.ndarray:
    """Give every contradicted click its label back in a disk around it (module docstring).

    Args:
        prob: (H, W) probability map.
        clicks: ``Click`` objects or (row, col, positive) tuples, in the map's pixels;
            clicks outside the map are skipped. A disk stops short of every click of
            the other label; where disks of the same label overlap nothing conflicts.
        radius: largest disk radius in pixels (at least the clicked pixel is set).
        threshold: foreground threshold in (0, 1].

    Returns:
        A new float32 map: disk pixels are 1.0 (positive click) or 0.0 (negative),
        all others unchanged.
    """
    prob = _check_prob(prob)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius}")
    out = np.array(prob, dtype=np.float32, copy=True)
    h, w = out.shape
    reach = int(np.ceil(radius)) + 1
    pixels = click_pixels(as_clicks(clicks), out.shape)
    for r, c, pos in pixels:
        if (out[r, c] >= threshold) == pos:
            continue
        # stop short of every click of the other label
        others = [np.hypot(r - r2, c - c2) for r2, c2, p2 in pixels if p2 != pos]
        limit = min([radius, *(d - 0.5 for d in others)])
        y0, y1, x0, x1 = max(r - reach, 0), min(r + reach + 1, h), max(c - reach, 0), min(c + reach + 1, w)
        window = out[y0:y1, x0:x1]
        wrong = (window >= threshold) != pos
        # distance to the nearest pixel with the click's label (beyond the window: > radius)
        d = float(ndimage.distance_transform_edt(wrong)[r - y0, c - x0]) if not wrong.all() else np.inf
        rad = max(min(d, limit), 0.0)
        yy, xx = np.ogrid[y0 - r : y1 - r, x0 - c : x1 - c]
        window[yy**2 + xx**2 <= rad**2] = 1.0 if pos else 0.0
    return out


def structural_integrity(
    prob: np.ndarray, clicks: Iterable[ClickLike], threshold: float = 0.5
) -> np.ndarray:
    """Zero the foreground components (8-connected, ``prob >= threshold``) without a positive click.

    Args:
        prob: (H, W) probability map.
        clicks: ``Click`` objects or (row, col, positive) tuples, in the map's pixels.
        threshold: foreground threshold in (0, 1].

    Returns:
        A new float32 map: pixels of dropped components are 0, all others unchanged,
        so ``result >= threshold`` is the filtered mask.
    """
    prob = _check_prob(prob)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    out = np.array(prob, dtype=np.float32, copy=True)
    fg = out >= threshold
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(fg.any(axis=0))
    y0, x0 = int(rows[0]), int(cols[0])
    box = (slice(y0, int(rows[-1]) + 1), slice(x0, int(cols[-1]) + 1))  # label the foreground's box only
    labels, n = ndimage.label(fg[box], structure=_EIGHT)
    keep = np.zeros(n + 1, dtype=bool)
    for r, c, pos in click_pixels(as_clicks(clicks), prob.shape):
        if pos and 0 <= r - y0 < labels.shape[0] and 0 <= c - x0 < labels.shape[1]:
            keep[labels[r - y0, c - x0]] = True
    keep[0] = True  # background pixels keep their (sub-threshold) values
    if not keep.all():
        out[box][~keep[labels]] = 0.0
    return out


def _shifted(h: int, w: int, dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the pixels p and of their neighbours p + (dy, dx) inside an (h, w) grid."""
    ys = slice(0, h - dy) if dy >= 0 else slice(-dy, h)
    yt = slice(dy, h) if dy >= 0 else slice(0, h + dy)
    xs = slice(0, w - dx) if dx >= 0 else slice(-dx, w)
    xt = slice(dx, w) if dx >= 0 else slice(0, w + dx)
    return (ys, xs), (yt, xt)


def _contrast_beta(image: np.ndarray) -> float:
    """Boykov-Jolly contrast scale: beta = 1 / (2 <|dI|^2>) over 4-neighbours."""
    d2 = [((image[:, 1:] - image[:, :-1]) ** 2).sum(-1).ravel(), ((image[1:] - image[:-1]) ** 2).sum(-1).ravel()]
    mean_d2 = float(np.concatenate(d2).mean()) if sum(d.size for d in d2) else 0.0
    return 1.0 / (2.0 * mean_d2) if mean_d2 > 0 else 0.0


def graph_cut(
    prob: np.ndarray,
    image01: np.ndarray,
    clicks: Iterable[ClickLike] = (),
    *,
    smoothness: float = 2.0,
    eps: float = 1e-4,
    threshold: float = 0.5,
) -> np.ndarray:
    """Min-cut refinement of a probability map (see module docstring).

    Args:
        prob: (H, W) foreground probability.
        image01: (H, W) or (H, W, C) image scaled to [0, 1] (e.g. ``prepare_image``).
        clicks: clicks in the map's pixels; clicked pixels are fixed to their labels.
        smoothness: weight of the pairwise term relative to the unary term.
        eps: probability floor inside the logarithms.
        threshold: the probability where either label costs the same (as ``prob >= threshold``
            labels pixels without the cut): the unary terms get the prior ``log t / (1 - t)``;
            taken as ``SURE`` or ``1 - SURE`` beyond those.

    Returns:
        float32 (H, W) map of 1.0 (foreground) and 0.0 (background).

    Raises:
        ImportError: PyMaxflow is not installed.
        ValueError: shapes do not match.
    """
    import maxflow

    prob = _check_prob(prob)
    img = np.asarray(image01, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[:2] != prob.shape:
        raise ValueError(f"image shape {img.shape[:2]} does not match prob shape {prob.shape}")
    if not smoothness >= 0:  # NaN too: maxflow would never return
        raise ValueError(f"smoothness must be a number >= 0, got {smoothness}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    threshold = min(max(threshold, SURE), 1.0 - SURE)  # beyond, the map counts as sure: no cut
    if not np.isfinite(prob).all():
        raise ValueError("prob holds NaN or infinite values")
    p = np.clip(prob.astype(np.float64), eps, 1.0 - eps)
    out = (prob >= threshold).astype(np.float32)
    unsure = (p > SURE) & (p < 1.0 - SURE)
    pixels = click_pixels(as_clicks(clicks), prob.shape)
    for r, c, _ in pixels:
        unsure[r, c] = True
    if not unsure.any():
        return out
    band = ndimage.maximum_filter(unsure, size=2 * BAND_MARGIN + 1)
    beta = _contrast_beta(img)
    # the band's box with a ring of fixed pixels: every band pixel's neighbours lie in it
    rows, cols = np.flatnonzero(band.any(axis=1)), np.flatnonzero(band.any(axis=0))
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, prob.shape[0])
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, prob.shape[1])
    band, img, fixed_fg = band[y0:y1, x0:x1], img[y0:y1, x0:x1], out[y0:y1, x0:x1] > 0
    n = int(band.sum())
    ids = np.full(band.shape, -1, dtype=np.int64)
    ids[band] = np.arange(n)
    pb = p[y0:y1, x0:x1][band]
    # -log p + log t (paid when labelled foreground) against -log(1 - p) + log(1 - t): only their
    # difference matters, kept as one non-negative capacity
    excess = np.log(pb / (1.0 - pb)) - np.log(threshold / (1.0 - threshold))
    cost_fg = np.maximum(-excess, 0.0)  # paid when the pixel is labelled foreground
    cost_bg = np.maximum(excess, 0.0)  # paid when labelled background
    g = maxflow.Graph[float]()
    g.add_nodes(n)
    for dy, dx in _FORWARD:
        here, there = _shifted(*band.shape, dy, dx)
        d2 = ((img[here] - img[there]) ** 2).sum(-1)
        weight = smoothness * np.exp(-beta * d2) / np.hypot(dy, dx)
        a, b = band[here], band[there]
        both = a & b
        g.add_edges(ids[here][both], ids[there][both], weight[both], weight[both])
        # a band pixel beside a fixed one pays the edge when it takes the other label
        for node, other, m in ((here, there, a & ~b), (there, here, ~a & b)):
            i, wm, fg = ids[node][m], weight[m], fixed_fg[other][m]
            cost_bg += np.bincount(i[fg], wm[fg], minlength=n)
            cost_fg += np.bincount(i[~fg], wm[~fg], minlength=n)
    big = 1e9
    for r, c, pos in pixels:
        k = ids[r - y0, c - x0]
        cost_fg[k], cost_bg[k] = (0.0, big) if pos else (big, 0.0)
    nodes = np.arange(n)
    # source side = foreground: cutting source->p (cap cost_bg) labels p background
    g.add_grid_tedges(nodes, cost_bg, cost_fg)
    g.maxflow()
    out[y0:y1, x0:x1][band] = (~g.get_grid_segments(nodes)).astype(np.float32)
    return out
