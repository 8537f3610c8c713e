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
  ``-log p`` / ``-log(1 - p)`` and contrast-sensitive pairwise terms
  ``w * exp(-|I_p - I_q|^2 / (2 sigma^2)) / dist(p, q)`` on the 8-neighbourhood,
  clicked pixels fixed to their labels. Needs PyMaxflow (``import maxflow``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..clicks import Click, ClickLike, as_clicks

__all__ = ["click_pixels", "graph_cut", "honour_clicks", "structural_integrity"]

_EIGHT = np.ones((3, 3), dtype=bool)


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


def _neighbour_weights(image: np.ndarray, dy: int, dx: int, beta: float) -> np.ndarray:
    """exp(-beta |I_p - I_{p + (dy, dx)}|^2) per pixel p (0 where the neighbour is outside)."""
    h, w = image.shape[:2]
    out = np.zeros((h, w), dtype=np.float64)
    ys = slice(0, h - dy) if dy >= 0 else slice(-dy, h)
    yt = slice(dy, h) if dy >= 0 else slice(0, h + dy)
    xs = slice(0, w - dx) if dx >= 0 else slice(-dx, w)
    xt = slice(dx, w) if dx >= 0 else slice(0, w + dx)
    d2 = ((image[ys, xs] - image[yt, xt]) ** 2).sum(-1)
    out[ys, xs] = np.exp(-beta * d2)
    return out


def graph_cut(
    prob: np.ndarray,
    image01: np.ndarray,
    clicks: Iterable[ClickLike] = (),
    *,
    smoothness: float = 2.0,
    eps: float = 1e-4,
) -> np.ndarray:
    """Min-cut refinement of a probability map (see module docstring).

    Args:
        prob: (H, W) foreground probability.
        image01: (H, W) or (H, W, C) image scaled to [0, 1] (e.g. ``prepare_image``).
        clicks: clicks in the map's pixels; clicked pixels are fixed to their labels.
        smoothness: weight of the pairwise term relative to the unary term.
        eps: probability floor inside the logarithms.

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
    if not np.isfinite(prob).all():
        raise ValueError("prob holds NaN or infinite values")
    p = np.clip(prob.astype(np.float64), eps, 1.0 - eps)
    cost_fg = -np.log(p)  # paid when the pixel is labelled foreground
    cost_bg = -np.log1p(-p)  # paid when labelled background
    big = 1e9
    for r, c, pos in click_pixels(as_clicks(clicks), prob.shape):
        if pos:
            cost_fg[r, c], cost_bg[r, c] = 0.0, big
        else:
            cost_fg[r, c], cost_bg[r, c] = big, 0.0
    # Boykov-Jolly contrast scale: beta = 1 / (2 <|dI|^2>)
    h, w = prob.shape
    diffs = []
    if w > 1:
        diffs.append(((img[:, 1:] - img[:, :-1]) ** 2).sum(-1).ravel())
    if h > 1:
        diffs.append(((img[1:] - img[:-1]) ** 2).sum(-1).ravel())
    mean_d2 = float(np.concatenate(diffs).mean()) if diffs else 0.0
    beta = 1.0 / (2.0 * mean_d2) if mean_d2 > 0 else 0.0

    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes((h, w))
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        weights = smoothness * _neighbour_weights(img, dy, dx, beta) / np.hypot(dy, dx)
        structure = np.zeros((3, 3))
        structure[1 + dy, 1 + dx] = 1
        g.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
    # source side = foreground: cutting source->p (cap cost_bg) labels p background
    g.add_grid_tedges(nodes, cost_bg, cost_fg)
    g.maxflow()
    background = g.get_grid_segments(nodes)
    return (~background).astype(np.float32)
