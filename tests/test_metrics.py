"""Evaluation metrics (PROTOCOL.md) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_clickseg.clicks import Click
from napari_clickseg.evaluation import metrics as M


def test_iou_hand_computed():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 px
    pred = np.zeros((4, 4), bool)
    pred[:2, 1:3] = True  # 4 px, 2 shared
    assert M.iou(pred, gt) == pytest.approx(2 / 6)


def test_iou_ignores_ignore_pixels():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    pred = gt.copy()
    pred[3, 3] = True  # a false positive ...
    ignore = np.zeros((4, 4), bool)
    ignore[3, 3] = True  # ... inside the ignore band
    assert M.iou(pred, gt, ignore) == 1.0
    assert M.iou(pred, gt) == pytest.approx(4 / 5)
    # an ignored object pixel missed by the prediction does not count either
    ignore2 = np.zeros((4, 4), bool)
    ignore2[0, 0] = True
    pred2 = gt.copy()
    pred2[0, 0] = False
    assert M.iou(pred2, gt, ignore2) == 1.0


def test_iou_empty_union_is_one_and_shapes_checked():
    z = np.zeros((3, 3), bool)
    assert M.iou(z, z) == 1.0
    with pytest.raises(ValueError):
        M.iou(np.zeros((2, 2)), np.zeros((3, 3)))


def test_noc_first_click_reaching_threshold():
    curve = [0.5, 0.8, 0.86, 0.91, 0.95]
    assert M.noc(curve, 0.85) == 3
    assert M.noc(curve, 0.90) == 4
    assert M.noc(curve, 0.99, max_clicks=20) == 20  # never
    assert M.noc([0.9], 0.90) == 1  # ">=" : reaching exactly counts
    # only the first max_clicks entries count
    assert M.noc([0.1, 0.2, 0.95], 0.9, max_clicks=2) == 2


def test_nof_counts_objects_never_reaching():
    curves = [[0.5, 0.95], [0.5, 0.6], [0.91], [0.89, 0.899]]
    assert M.nof(curves, 0.90) == 2
    assert M.nof(curves, 0.50) == 0


def test_fill_curve_repeats_last_value():
    assert M.fill_curve([0.2, 0.7], 4).tolist() == [0.2, 0.7, 0.7, 0.7]
    assert M.fill_curve([0.1, 0.2, 0.3], 2).tolist() == [0.1, 0.2]
    with pytest.raises(ValueError):
        M.fill_curve([], 3)


def test_miou_curve_auc_and_miou_at():
    curves = [[0.2, 0.4, 0.6, 0.8], [0.4, 0.6]]  # second filled: 0.4, 0.6, 0.6, 0.6
    mc = M.miou_curve(curves, 4)
    np.testing.assert_allclose(mc, [0.3, 0.5, 0.6, 0.7])
    assert M.auc(mc) == pytest.approx((0.3 + 0.5 + 0.6 + 0.7) / 4)
    assert M.miou_at(mc, 1) == pytest.approx(0.3)
    assert M.miou_at(mc, 4) == pytest.approx(0.7)
    assert math.isnan(M.miou_at(mc, 5))


def test_share_above_is_strict():
    assert M.share_above([0.95, 0.96, 0.99, 0.995], 0.95) == pytest.approx(0.75)
    assert M.share_above([0.95, 0.96, 0.99, 0.995], 0.99) == pytest.approx(0.25)
    assert math.isnan(M.share_above([], 0.9))


def test_time_stats_median_and_p90():
    s = M.time_stats([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert s["median"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)  # numpy's linear interpolation
    assert s["n"] == 10
    assert M.time_stats([])["n"] == 0


def test_corrective_accuracy_share_of_clicked_region_fixed():
    gt = np.zeros((6, 10), bool)
    gt[1:5, 1:9] = True  # 4 x 8 object
    prev = np.zeros_like(gt)
    prev[1:5, 1:5] = True  # left half found; FN region = columns 5..8 (16 px)
    new = prev.copy()
    new[1:5, 5:7] = True  # the click fixes 8 of the 16
    assert M.corrective_accuracy(prev, new, gt, 2, 7) == pytest.approx(0.5)
    # the click lies on a correct pixel: undefined
    assert math.isnan(M.corrective_accuracy(prev, new, gt, 2, 2))
    # negative click on a false positive blob that is removed entirely
    prev2 = gt.copy()
    prev2[5, :3] = True  # a 3 px false positive below the object
    new2 = gt.copy()
    assert M.corrective_accuracy(prev2, new2, gt, 5, 1) == 1.0
    # regression: row -1 scored the last row's region
    with pytest.raises(ValueError, match=r"click \(-1, 7\) lies outside the 6x10 masks"):
        M.corrective_accuracy(prev, new, gt, -1, 7)


def test_corrective_accuracy_uses_connected_region_only():
    gt = np.zeros((5, 12), bool)
    gt[1:4, 1:4] = True
    gt[1:4, 8:11] = True
    prev = np.zeros_like(gt)  # both objects missed: two FN components
    new = np.zeros_like(gt)
    new[1:4, 1:4] = True  # the clicked one is fully fixed
    assert M.corrective_accuracy(prev, new, gt, 2, 2) == 1.0


def test_decidability_index_hand_computed():
    prob = np.zeros((30, 30))
    prob[:15] = 0.9
    prob[15:] = 0.1
    gt = np.zeros((30, 30), bool)
    gt[:15] = True
    clicks = [Click(5, 15, True), Click(25, 15, False)]
    # constant responses on both sides: perfectly separated
    assert M.decidability_index(prob, clicks, gt, radius=3) == math.inf
    rng = np.random.default_rng(0)
    noisy = prob + rng.normal(0, 0.05, prob.shape)
    di = M.decidability_index(noisy, clicks, gt, radius=3)
    assert 10 < di < 25  # |0.9 - 0.1| / 0.05 = 16 up to sampling noise
    # without negative clicks the negative sample is the ground-truth background
    di_bg = M.decidability_index(noisy, clicks[:1], gt, radius=3)
    assert 10 < di_bg < 25
    assert math.isnan(M.decidability_index(prob, clicks[1:], gt))
    # regression: (row, col, positive) tuples, which every other click-taking function
    # accepts, raised AttributeError
    assert M.decidability_index(noisy, [(5, 15, True), (25, 15, False)], gt, radius=3) == di


def test_summarize_all_numbers():
    curves = [
        [0.5, 0.86, 0.91] + [0.96] * 17,  # NoC85 2, NoC90 3
        [0.3, 0.4] + [0.7] * 18,  # never: 20, 20
        [0.995],  # stopped early at click 1 (filled)
    ]
    s = M.summarize(curves, seconds=[0.1, 0.2, 0.3], max_clicks=20, corrective=[[1.0, 0.5], [float("nan")], []])
    assert s["n_objects"] == 3
    assert s["noc85"] == pytest.approx((2 + 20 + 1) / 3)
    assert s["noc90"] == pytest.approx((3 + 20 + 1) / 3)
    assert s["nof90"] == 1
    assert s["nof85"] == 1
    assert s["miou"]["1"] == pytest.approx((0.5 + 0.3 + 0.995) / 3)
    assert s["miou"]["20"] == pytest.approx((0.96 + 0.7 + 0.995) / 3)
    assert len(s["miou_curve"]) == 20
    assert s["auc"] == pytest.approx(np.mean(s["miou_curve"]))
    assert s["above95"] == pytest.approx(2 / 3)
    assert s["above99"] == pytest.approx(1 / 3)
    assert s["seconds_per_click"]["median"] == pytest.approx(0.2)
    assert s["corrective_accuracy"]["mean"] == pytest.approx(0.75)
    assert s["corrective_accuracy"]["per_click"][0] == pytest.approx(1.0)
    assert s["corrective_accuracy"]["per_click"][1] == pytest.approx(0.5)
    assert set(s["miou"]) == {"1", "3", "5", "10", "20"}
    lo, hi = s["noc90_interval95"]
    assert 1 <= lo <= s["noc90"] <= hi <= 20


def test_mean_interval_bootstrap():
    values = np.random.default_rng(1).integers(1, 21, size=200).astype(float)
    lo, hi = M.mean_interval(values)
    assert lo < values.mean() < hi
    # a 95 % interval of a mean spans about 4 standard errors
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert hi - lo == pytest.approx(3.92 * se, rel=0.15)
    assert M.mean_interval(values) == (lo, hi)  # seeded: reports repeat
    assert M.mean_interval([5.0] * 10) == (5.0, 5.0)  # no spread, no interval
    assert all(np.isnan(M.mean_interval([])))
    # fewer objects, wider interval
    lo15, hi15 = M.mean_interval(values[:15])
    assert hi15 - lo15 > hi - lo


def test_summarize_with_fewer_clicks_reports_available_k():
    s = M.summarize([[0.5, 0.6, 0.7]], max_clicks=3)
    assert set(s["miou"]) == {"1", "3"}
    assert s["above95"] == 0.0


def test_corrective_accuracy_keeps_touching_fn_and_fp_apart():
    # gt [0:10, 0:10], previous prediction [5:15, 5:15]: the FN and FP L-shapes touch at a corner
    gt = np.zeros((16, 16), bool)
    gt[:10, :10] = True
    prev = np.zeros_like(gt)
    prev[5:15, 5:15] = True
    new = prev & gt  # a negative click at (7, 12) removed every false positive and nothing else
    assert M.corrective_accuracy(prev, new, gt, 7, 12) == 1.0
