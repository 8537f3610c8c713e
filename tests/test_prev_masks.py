"""Corrupted true masks as previous masks for click-by-click training."""

from __future__ import annotations

import numpy as np
import torch

from napari_clickseg.clicks import Click
from napari_clickseg.training.prev_masks import corrupt_mask
from napari_clickseg.training.trainer import _corrupted_starts


def _disk(size: int = 64, r: int = 14) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    return (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_corrupted_masks_are_wrong_but_close_and_go_both_ways():
    gt = _disk()
    outs = [corrupt_mask(gt, np.random.default_rng(s)) for s in range(40)]
    assert all(o.dtype == bool and o.shape == gt.shape and o.any() for o in outs)
    assert all(not np.array_equal(o, gt) for o in outs)
    assert min(_iou(o, gt) for o in outs) > 0.4
    areas = np.array([o.sum() for o in outs])
    assert (areas > gt.sum()).any() and (areas < gt.sum()).any()
    again = corrupt_mask(gt, np.random.default_rng(7))
    assert np.array_equal(again, outs[7])  # seeded


def test_corrupting_tiny_and_empty_masks():
    tiny = np.zeros((16, 16), bool)
    tiny[8, 8] = True
    for s in range(20):
        assert corrupt_mask(tiny, np.random.default_rng(s)).any()  # a shrunk dot is not erased
    empty = np.zeros((16, 16), bool)
    assert not corrupt_mask(empty, np.random.default_rng(0)).any()


def test_corrupted_starts_add_the_robots_click_on_an_error():
    gt = _disk()[None].repeat(3, 0).astype(np.uint8)
    ignore = np.zeros_like(gt, dtype=bool)
    clicks = [[Click(32, 32, True, 0)] for _ in range(3)]
    prev = torch.zeros((3, 1, 64, 64))
    out = _corrupted_starts(prev, clicks, gt, ignore, 1.0, np.random.default_rng(0))
    assert not prev.any()  # the caller's tensor is left alone
    for b in range(3):
        wrong = out[b, 0].numpy() > 0.5
        assert not np.array_equal(wrong, gt[b] > 0)
        assert len(clicks[b]) == 2
        c = clicks[b][1]
        r, col = round(c.row), round(c.col)
        assert wrong[r, col] != (gt[b, r, col] > 0)  # on a pixel the corrupted mask gets wrong
        assert c.positive == bool(gt[b, r, col])
    kept = [[Click(32, 32, True, 0)] for _ in range(3)]
    none = _corrupted_starts(prev, kept, gt, ignore, 0.0, np.random.default_rng(0))
    assert not none.any() and all(len(k) == 1 for k in kept)
