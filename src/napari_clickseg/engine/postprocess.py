"""Post-processing of probability maps: structural integrity and graph cut.

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

__all__ = ["click_pixels", "graph_cut", "structural_integrity"]

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
    labels, n = ndimage.label(fg, structure=_EIGHT)
    if n == 0:
        return out
    keep = np.zeros(n + 1, dtype=bool)
    for r, c, pos in click_pixels(as_clicks(clicks), prob.shape):
        if pos:
            keep[labels[r, c]] = True
    keep[0] = True  # background pixels keep their (sub-threshold) values
    out[~keep[labels]] = 0.0
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
    if smoothness < 0:
        raise ValueError(f"smoothness must be >= 0, got {smoothness}")
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
