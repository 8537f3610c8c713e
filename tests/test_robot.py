"""The robot user (docs/PROTOCOL.md) against brute force on small masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_clickseg.clicks import Click
from napari_clickseg.evaluation.runner import run_object
from napari_clickseg.robot import error_distances, next_click


def ref_padded_edt(mask: np.ndarray) -> np.ndarray:
    """Distance from each pixel of ``mask`` to the nearest pixel outside it, the area beyond
    the image border counting as outside (a one-pixel zero padding)."""
    h, w = mask.shape
    outside = [(r, c) for r in range(-1, h + 1) for c in range(-1, w + 1)
               if not (0 <= r < h and 0 <= c < w) or not mask[r, c]]
    out = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            if mask[r, c]:
                out[r, c] = min(math.hypot(r - a, c - b) for a, b in outside)
    return out


def disk(shape, center, radius):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def test_first_click_lands_at_deepest_object_pixel():
    gt = disk((40, 50), (22, 17), 9)
    click = next_click(gt, np.zeros_like(gt))
    assert click == Click(22.0, 17.0, True, 0)


def test_first_click_on_rectangle_is_at_maximal_depth():
    gt = np.zeros((30, 40), dtype=bool)
    gt[5:20, 8:35] = True
    click = next_click(gt, np.zeros_like(gt), order=0)
    depth = ref_padded_edt(gt)
    assert click.positive
    assert depth[int(click.row), int(click.col)] == depth.max() == 8
    assert int(click.row) == 12


def test_border_counts_as_outside():
    # object filling the left columns: without padding the deepest pixel would be column 0
    gt = np.zeros((21, 30), dtype=bool)
    gt[:, :9] = True
    click = next_click(gt, np.zeros_like(gt))
    assert click.positive
    assert click.col == 4 and 4 <= click.row <= 16  # depth 5; column 0 would have depth 1
    assert ref_padded_edt(gt)[int(click.row), 4] == 5
    # the whole image is the object: the centre is deepest
    gt = np.ones((9, 13), dtype=bool)
    assert next_click(gt, np.zeros_like(gt)) == Click(4.0, 4.0, True, 0)  # depth 5 (first of a tie)


def test_false_negative_larger_gives_positive_click():
    gt = disk((40, 40), (20, 20), 12)
    pred = np.zeros_like(gt)
    pred[5:12, 28:36] = True  # small false positive
    click = next_click(gt, pred)
    assert click.positive and gt[int(click.row), int(click.col)]
    assert (click.row, click.col) == (20.0, 20.0)


def test_false_positive_larger_gives_negative_click():
    gt = disk((40, 40), (8, 8), 4)
    pred = gt | disk((40, 40), (27, 26), 10)
    pred[8, 8] = False  # one-pixel false negative
    click = next_click(gt, pred, order=5)
    assert click == Click(27.0, 26.0, False, 5)


def test_exact_tie_goes_negative():
    gt = np.zeros((20, 30), dtype=bool)
    pred = np.zeros_like(gt)
    gt[4:11, 3:10] = True  # 7x7 false negative
    pred[4:11, 18:25] = True  # 7x7 false positive
    fn_dt, fp_dt = error_distances(gt, pred)
    assert fn_dt.max() == fp_dt.max()
    click = next_click(gt, pred)
    assert not click.positive
    assert pred[int(click.row), int(click.col)] and (click.row, click.col) == (7.0, 21.0)


def test_no_error_gives_none():
    gt = disk((16, 16), (8, 8), 5)
    assert next_click(gt, gt.copy()) is None
    empty = np.zeros((5, 5), dtype=bool)
    assert next_click(empty, empty) is None


def test_ignore_mask_is_honoured():
    gt = disk((40, 40), (20, 20), 10)
    ignore = disk((40, 40), (20, 20), 4)
    click = next_click(gt, np.zeros_like(gt), ignore=ignore)
    assert click.positive
    assert not ignore[int(click.row), int(click.col)] and gt[int(click.row), int(click.col)]
    fn_dt, _ = error_distances(gt, np.zeros_like(gt), ignore)
    np.testing.assert_allclose(fn_dt, ref_padded_edt(gt & ~ignore))
    # errors only inside the ignore band: nothing to correct
    pred = gt & ~ignore
    assert next_click(gt, pred, ignore=ignore) is None
    fp = np.zeros_like(gt)
    fp[:3, :3] = True
    assert next_click(gt, gt | fp, ignore=fp) is None


def test_ignore_can_flip_the_choice():
    gt = np.zeros((30, 30), dtype=bool)
    gt[2:14, 2:14] = True  # big false negative ...
    pred = np.zeros_like(gt)
    pred[18:26, 18:26] = True  # ... smaller false positive
    assert next_click(gt, pred).positive
    ignore = np.zeros_like(gt)
    ignore[2:14, 2:14] = True
    ignore[8, 8] = False
    assert not next_click(gt, pred, ignore=ignore).positive


def test_accepts_non_bool_inputs():
    gt = disk((20, 20), (10, 10), 5).astype(np.uint8) * 255
    pred = np.zeros((20, 20), dtype=np.float32)
    assert next_click(gt, pred) == Click(10.0, 10.0, True, 0)


@pytest.mark.parametrize(
    "gt_shape, pred_shape",
    [((10, 10), (10, 11)), ((10, 10, 1), (10, 10, 1)), ((10,), (10,))],
)
def test_rejects_bad_shapes(gt_shape, pred_shape):
    with pytest.raises(ValueError, match="2D of one shape"):
        next_click(np.zeros(gt_shape, bool), np.zeros(pred_shape, bool))


def test_robot_loop_stops_when_correct():
    gt = disk((30, 30), (15, 15), 8)
    preds = [gt & ~disk((30, 30), (15, 9), 2), gt.copy(), np.zeros_like(gt)]
    seen = []

    def predict(clicks):  # the prediction after each click in turn
        seen.append(list(clicks))
        return preds[len(clicks) - 1].astype(np.float32)

    rec = run_object(predict, gt, None, max_clicks=4, corrective=False)
    clicks = seen[-1]
    assert len(seen) == 2 and rec["stopped"] == "no_error"
    assert len(clicks) == 2 and rec["clicks"] == [[c.row, c.col, c.positive] for c in clicks]
    assert [c.order for c in clicks] == [0, 1]
    assert clicks[0] == Click(15.0, 15.0, True, 0)
    assert clicks[1].positive and abs(clicks[1].row - 15) <= 1 and abs(clicks[1].col - 9) <= 1


masks = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda s: st.tuples(arrays(bool, s), arrays(bool, s), arrays(bool, s))
)


@given(masks, st.booleans())
def test_property_click_is_deepest_error_pixel(m, use_ignore):
    gt, pred, ignore = m
    if not use_ignore:
        ignore = np.zeros_like(gt)
    fn = gt & ~pred & ~ignore
    fp = ~gt & pred & ~ignore
    fn_ref, fp_ref = ref_padded_edt(fn), ref_padded_edt(fp)
    fn_dt, fp_dt = error_distances(gt, pred, ignore if use_ignore else None)
    np.testing.assert_allclose(fn_dt, fn_ref, atol=1e-9)
    np.testing.assert_allclose(fp_dt, fp_ref, atol=1e-9)

    click = next_click(gt, pred, ignore if use_ignore else None, order=3)
    if not (fn.any() or fp.any()):
        assert click is None
        return
    assert click.order == 3
    r, c = int(click.row), int(click.col)
    assert (r, c) == (click.row, click.col)
    best = max(fn_ref.max(), fp_ref.max())
    if click.positive:
        assert fn[r, c] and fn_ref.max() > fp_ref.max()
        assert fn_ref[r, c] == pytest.approx(best)
    else:
        assert fp[r, c] and fp_ref.max() >= fn_ref.max()
        assert fp_ref[r, c] == pytest.approx(best)
    assert not ignore[r, c]
