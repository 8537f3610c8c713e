"""Structural integrity against a brute-force flood fill; graph cut on a noisy disk."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from napari_clickseg.clicks import Click
from napari_clickseg.engine.postprocess import SURE, graph_cut, honour_clicks, structural_integrity


def brute_force(fg: np.ndarray, clicks: list[tuple[int, int, bool]]) -> np.ndarray:
    """Pixels 8-connected through foreground to a positive click (breadth-first search)."""
    h, w = fg.shape
    keep = np.zeros_like(fg)
    queue = deque((r, c) for r, c, pos in clicks if pos and fg[r, c])
    for r, c in queue:
        keep[r, c] = True
    while queue:
        r, c = queue.popleft()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                y, x = r + dr, c + dc
                if 0 <= y < h and 0 <= x < w and fg[y, x] and not keep[y, x]:
                    keep[y, x] = True
                    queue.append((y, x))
    return keep


@pytest.mark.parametrize("seed", range(40))
def test_structural_integrity_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 20, 2)
    prob = rng.random((h, w)).astype(np.float32) * rng.random()  * 1.6
    clicks = [(int(rng.integers(h)), int(rng.integers(w)), bool(rng.random() < 0.7))
              for _ in range(rng.integers(0, 5))]
    out = structural_integrity(prob, clicks)
    np.testing.assert_array_equal(out >= 0.5, brute_force(prob >= 0.5, clicks))
    kept = out > 0
    np.testing.assert_array_equal(out[kept], prob[kept])  # surviving values unchanged
    assert out.dtype == np.float32 and prob is not out


def test_structural_integrity_inputs():
    prob = np.zeros((5, 5), np.float32)
    prob[0, 0] = prob[4, 4] = prob[1, 1] = 0.9
    out = structural_integrity(prob, [Click(0, 0, True), Click(4, 4, False)])
    assert out[0, 0] == out[1, 1] == np.float32(0.9) and out[4, 4] == 0  # diagonal = connected
    assert structural_integrity(prob, [(9, 9, True)]).max() == 0  # clicks off the map: ignored
    with pytest.raises(ValueError):
        structural_integrity(prob[None], [])
    with pytest.raises(ValueError):
        structural_integrity(prob, [], threshold=0)


def disk_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    disk = (yy - 30) ** 2 + (xx - 34) ** 2 <= 15**2
    image = np.where(disk, 0.8, 0.2)[..., None].repeat(3, -1) + rng.normal(0, 0.03, (64, 64, 3))
    noisy = np.clip(np.where(disk, 0.7, 0.3) + rng.normal(0, 0.3, disk.shape), 0, 1).astype(np.float32)
    return disk, np.clip(image, 0, 1), noisy


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_graph_cut_cleans_a_noisy_disk():
    disk, image, noisy = disk_case()
    before = iou(noisy >= 0.5, disk)
    out = graph_cut(noisy, image, [Click(30, 34, True)])
    after = iou(out >= 0.5, disk)
    assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    assert before < 0.8 and after > 0.95, (before, after)


def test_graph_cut_respects_clicks_and_smoothness():
    disk, image, noisy = disk_case(1)
    flat = np.full(disk.shape, 0.3, np.float32)
    out = graph_cut(flat, image, [Click(30, 34, True), Click(2, 2, False)])
    assert out[30, 34] == 1 and out[2, 2] == 0
    raw = graph_cut(noisy, image, smoothness=0.0)
    np.testing.assert_array_equal(raw, (noisy >= 0.5).astype(np.float32) * (noisy != 0.5))
    gray = graph_cut(noisy, image[..., 0])  # a 2D image works too
    assert gray.shape == noisy.shape
    with pytest.raises(ValueError, match="does not match"):
        graph_cut(noisy, image[:10])


def test_graph_cut_takes_the_callers_threshold():
    # regression (audit 30): the cut always labelled at 0.5, so at threshold 0.3 an object the
    # network gives p = 0.4 collapsed to its clicked pixel
    disk, image, _ = disk_case(3)
    faint = np.where(disk, 0.4, 0.05).astype(np.float32)
    clicks = [Click(30, 34, True)]
    assert iou(graph_cut(faint, image, clicks, threshold=0.3) >= 0.5, disk) > 0.95
    assert graph_cut(faint, image, clicks).sum() < 0.1 * disk.sum()  # at 0.5 it is background
    raw = graph_cut(faint, image, smoothness=0.0, threshold=0.3)
    np.testing.assert_array_equal(raw, (faint >= 0.3).astype(np.float32))
    with pytest.raises(ValueError, match="threshold must be in"):
        graph_cut(faint, image, threshold=1.5)
    # extreme thresholds (predict accepts 0 and 1) act as the sure bounds, not as a collapse
    sure = np.where(disk, 0.999999, 1e-6).astype(np.float32)
    for t in (1.0, 0.99995, 1e-5, 0.0):
        np.testing.assert_array_equal(graph_cut(sure, image, clicks, threshold=t), disk.astype(np.float32))


def test_graph_cut_refuses_nan_smoothness_and_probabilities():
    # regression: smoothness=nan passed the check and maxflow never returned
    disk, image, noisy = disk_case(2)
    with pytest.raises(ValueError, match="smoothness must be a number >= 0"):
        graph_cut(noisy, image, smoothness=float("nan"))
    noisy[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        graph_cut(noisy, image)


def full_grid_cut(prob, image, clicks, smoothness=2.0, eps=1e-4):
    """The same energy cut over every pixel of the map (the reference for the band)."""
    import maxflow

    img = image[..., None] if image.ndim == 2 else image
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    cost_fg, cost_bg = -np.log(p), -np.log1p(-p)
    for r, c, pos in clicks:
        cost_fg[r, c], cost_bg[r, c] = (0.0, 1e9) if pos else (1e9, 0.0)
    d2 = [((img[:, 1:] - img[:, :-1]) ** 2).sum(-1).ravel(), ((img[1:] - img[:-1]) ** 2).sum(-1).ravel()]
    mean_d2 = np.concatenate(d2).mean()
    beta = 1 / (2 * mean_d2) if mean_d2 > 0 else 0.0
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(p.shape)
    h, w = p.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        weights = np.zeros((h, w))
        ys, yt = slice(0, h - dy), slice(dy, h)
        xs, xt = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        weights[ys, xs] = smoothness * np.exp(-beta * ((img[ys, xs] - img[yt, xt]) ** 2).sum(-1)) / np.hypot(dy, dx)
        structure = np.zeros((3, 3))
        structure[1 + dy, 1 + dx] = 1
        g.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
    g.add_grid_tedges(nodes, cost_bg, cost_fg)
    g.maxflow()
    return (~g.get_grid_segments(nodes)).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_graph_cut_over_the_unsure_band_equals_the_cut_over_every_pixel(seed):
    # soft disks of several edge widths with logit noise, one reaching the map's border,
    # and clicks on sure pixels far from any unsure one (the band must reach them)
    rng = np.random.default_rng(seed)
    n = 160
    yy, xx = np.mgrid[0:n, 0:n]
    logit = np.full((n, n), -12.0)
    for cy, cx, rad, soft in ((60, 70, 30, 1 + 4 * rng.random()), (150, 10, 25, 2.0)):
        logit = np.maximum(logit, (rad - np.hypot(yy - cy, xx - cx)) / soft)
    logit += rng.normal(0, 1.5, logit.shape)
    prob = (1 / (1 + np.exp(-logit))).astype(np.float32)
    image = np.clip(0.3 + 0.4 * (logit > 0)[..., None] + rng.normal(0, 0.1, (n, n, 3)), 0, 1)
    clicks = [(60, 70, True), (5, 150, False), (100, 140, True), (62, 72, False)]
    unsure = (prob > SURE) & (prob < 1 - SURE)
    assert prob[100, 140] < SURE and unsure.mean() < 0.5
    expected = full_grid_cut(prob, image, clicks)
    np.testing.assert_array_equal(graph_cut(prob, image, [Click(*c) for c in clicks]), expected)
    np.testing.assert_array_equal(graph_cut(prob, image[..., 0]), full_grid_cut(prob, image[..., 0], []))


def test_graph_cut_fixes_sure_pixels_beyond_the_band():
    # a 1-px line the map is sure is background, in a field it is sure is foreground, on a
    # flat image: cutting over every pixel fills the line (9.7 of smoothness beats
    # -log 1e-4 = 9.2 per pixel). One unsure pixel BAND_MARGIN columns left of the line puts
    # the line at the band's edge: only the band's part of it may change, and it does when
    # the fixed pixels right of the band count as foreground neighbours
    from napari_clickseg.engine.postprocess import BAND_MARGIN

    m = BAND_MARGIN
    prob = np.full((41, 41), 1 - 1e-5, np.float32)
    prob[:, 20] = 1e-5
    prob[20, 20 - m] = 0.3
    image = np.zeros((41, 41))
    assert full_grid_cut(prob, image, [])[1:-1, 20].all()  # (the two ends have fewer neighbours)
    expected = np.ones_like(prob)
    expected[:, 20] = 0.0
    expected[20 - m : 20 + m + 1, 20] = 1.0
    np.testing.assert_array_equal(graph_cut(prob, image), expected)


def test_graph_cut_of_a_sure_map_is_its_threshold():
    prob = np.where(_disk((40, 50), (20, 20), 8) > 0, 0.9999, 1e-5).astype(np.float32)
    out = graph_cut(prob, np.zeros((40, 50)))
    np.testing.assert_array_equal(out, (prob >= 0.5).astype(np.float32))


def _disk(shape, center, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.float32)


def test_honour_clicks_leaves_satisfied_clicks_alone():
    prob = _disk((40, 40), (20, 20), 8) * 0.9
    out = honour_clicks(prob, [(20, 20, True), (2, 2, False)], radius=5)
    np.testing.assert_array_equal(out, prob)
    assert out is not prob and out.dtype == np.float32


def test_honour_clicks_positive_click_reaches_the_mask_and_no_further():
    prob = _disk((60, 60), (30, 20), 6)  # mask edge at col 26
    out = honour_clicks(prob, [(30, 29, True)], radius=10)  # 3 px right of the edge
    assert out[30, 29] == 1.0
    added = (out >= 0.5) & (prob < 0.5)
    yy, xx = np.nonzero(added)
    assert np.hypot(yy - 30, xx - 29).max() <= 3.0 + 1e-6  # disk radius = distance to the mask
    assert ((out >= 0.5).astype(int) - (prob >= 0.5)).min() == 0  # nothing removed


def test_honour_clicks_radius_caps_the_disk_far_from_the_mask():
    prob = np.zeros((50, 50), np.float32)
    out = honour_clicks(prob, [(25, 25, True)], radius=3)
    np.testing.assert_array_equal(out >= 0.5, _disk((50, 50), (25, 25), 3) > 0)
    only_pixel = honour_clicks(prob, [(25, 25, True)], radius=0)
    assert (only_pixel >= 0.5).sum() == 1 and only_pixel[25, 25] == 1.0


def test_honour_clicks_negative_click_cuts_back_to_the_background():
    prob = _disk((60, 60), (30, 30), 12) * 0.8
    out = honour_clicks(prob, [(30, 40, False)], radius=20)  # 2 px inside the edge (col 42)
    assert out[30, 40] == 0.0
    removed = (prob >= 0.5) & (out < 0.5)
    yy, xx = np.nonzero(removed)
    assert np.hypot(yy - 30, xx - 40).max() <= 3.0 + 1e-6
    assert out[30, 30] == pytest.approx(0.8)  # the rest of the object stays


def test_honour_clicks_never_overrides_a_click_of_the_other_label():
    prob = np.zeros((30, 30), np.float32)
    out = honour_clicks(prob, [(10, 10, True), (10, 13, False), (40, 40, True)], radius=4)
    assert out[10, 10] == 1.0 and out[10, 13] == 0.0  # both clicks keep their labels
    # the positive disk's radius is 2.5 (short of the negative click), not 4
    assert out[10, 8] == 1.0 and out[10, 7] == 0.0
    np.testing.assert_array_equal(out >= 0.5, _disk((30, 30), (10, 10), 2.5) > 0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_honour_clicks_rejects_a_bad_radius(bad):
    with pytest.raises(ValueError, match="radius"):
        honour_clicks(np.zeros((5, 5)), [(1, 1, True)], radius=bad)
