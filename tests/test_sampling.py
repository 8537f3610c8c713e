"""Initial-click sampling: counts, positions and distance constraints."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_clickseg.training.sampling import (
    ClickSamplingConfig,
    array_to_clicks,
    clicks_to_array,
    first_click,
    sample_clicks,
)


def _mask(shape=(160, 160)):
    m = np.zeros(shape, bool)
    m[40:120, 50:110] = True
    return m


@pytest.mark.parametrize("seed", range(30))
def test_constraints(seed):
    rng = np.random.default_rng(seed)
    mask = _mask()
    ignore = np.zeros_like(mask)
    ignore[:, :5] = True
    cfg = ClickSamplingConfig()
    clicks = sample_clicks(mask, ignore, rng, cfg)
    pos = [c for c in clicks if c.positive]
    neg = [c for c in clicks if not c.positive]
    assert clicks[0].positive and clicks[0].order == 0
    assert [c.order for c in clicks] == list(range(len(clicks)))
    assert 1 <= len(pos) <= cfg.max_positive and len(neg) <= cfg.max_negative
    inner = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    outer = ndimage.distance_transform_edt(~mask)
    for c in pos:
        assert mask[int(c.row), int(c.col)]
    for c in pos[1:]:
        assert inner[int(c.row), int(c.col)] >= min(cfg.p1)
        assert min(np.hypot(c.row - o.row, c.col - o.col) for o in pos if o is not c) >= min(cfg.p2)
    for c in neg:
        r, cc = int(c.row), int(c.col)
        assert not mask[r, cc] and not ignore[r, cc]
        assert min(cfg.n1) <= outer[r, cc] <= max(cfg.n2)
    for a in neg:
        for b in neg:
            if a is not b:
                assert np.hypot(a.row - b.row, a.col - b.col) >= min(cfg.n3)


def test_counts_favour_few_clicks():
    rng = np.random.default_rng(0)
    counts = [sum(c.positive for c in sample_clicks(_mask(), None, rng)) for _ in range(200)]
    assert counts.count(1) > counts.count(2) > counts.count(5)
    assert max(counts) > 2


def test_first_click_central_and_inside():
    mask = _mask()
    cfg = ClickSamplingConfig(first_central_prob=1.0, first_com_prob=0.0)
    c = first_click(mask, np.random.default_rng(0), cfg)
    inner = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert inner[int(c.row), int(c.col)] == inner.max()  # FCA-Net's E(p) = 1
    cfg = ClickSamplingConfig(first_central_prob=0.0, first_com_prob=1.0, com_jitter=2.0)
    ring = np.zeros((100, 100), bool)  # centre of mass outside the object: snapped inside
    ring[20:80, 20:80] = True
    ring[30:70, 30:70] = False
    for s in range(20):
        c = first_click(ring, np.random.default_rng(s), cfg)
        assert ring[int(c.row), int(c.col)]


def test_negatives_on_other_objects_and_tight_crops():
    mask = np.zeros((64, 64), bool)
    mask[2:62, 2:62] = True  # no room for the 15-80 px band: relaxed, still background
    rng = np.random.default_rng(0)
    cfg = ClickSamplingConfig(decay=1.0)
    for _ in range(10):
        for c in sample_clicks(mask, None, rng, cfg):
            assert mask[int(c.row), int(c.col)] == c.positive
    big = _mask()
    others = np.zeros_like(big)
    others[0:20, 0:20] = True
    cfg = ClickSamplingConfig(other_object_prob=1.0, decay=1.0)
    negs = [c for c in sample_clicks(big, None, np.random.default_rng(3), cfg, others) if not c.positive]
    assert negs and all(others[int(c.row), int(c.col)] for c in negs)


def test_pack_roundtrip():
    clicks = sample_clicks(_mask(), None, np.random.default_rng(5))
    arr = clicks_to_array(clicks, 20)
    assert arr.shape == (20, 3)
    assert array_to_clicks(arr) == clicks


def test_empty_mask_rejected():
    with pytest.raises(ValueError, match="empty"):
        sample_clicks(np.zeros((8, 8), bool), None, np.random.default_rng(0))


def test_first_click_keeps_off_ignored_pixels():
    # regression (audit 28): a thin object inside a GrabCut-style ignore band got its first click on ignored pixels
    mask = _mask()
    ignore = np.zeros_like(mask)
    ignore[40:100, :] = True  # most of the object, its centre included, is ignored
    rng = np.random.default_rng(0)
    for _ in range(60):
        clicks = sample_clicks(mask, ignore, rng)
        assert all(not ignore[int(c.row), int(c.col)] for c in clicks)
        assert mask[int(clicks[0].row), int(clicks[0].col)]


def test_training_crops_keep_clicks_inside_the_image_and_the_object_off_ignore():
    from napari_clickseg.data.augment import AugmentConfig, object_crop

    shape = (200, 600)  # a wide image: square crops around a long object are padded
    mask = np.zeros(shape, bool)
    mask[60:140, 50:550] = True
    image = np.random.default_rng(0).random((*shape, 3)).astype(np.float32)
    rng = np.random.default_rng(1)
    padded = 0
    for _ in range(30):
        img, m, ign, oth, inside = object_crop(image, mask, np.zeros(shape, bool), (60, 50, 140, 550),
                                               AugmentConfig(crop_size=96), rng)
        padded += int((~inside).any())
        assert not (m & ign).any() and m[inside].sum() == m.sum()  # the object lies inside the image
        for c in sample_clicks(m, ign | ~inside, rng):
            assert inside[int(c.row), int(c.col)]
    assert padded > 0
    # a 1-px line in a 5-px ignore band: its pixels stay the object's, not ignored
    line = np.zeros((64, 64), bool)
    line[32, 10:54] = True
    band = ndimage.binary_dilation(line, iterations=5) & ~line
    _, m, ign, _, _ = object_crop(np.zeros((64, 64, 3), np.float32), line, band, (32, 10, 33, 54),
                                  AugmentConfig(crop_size=64), rng)
    assert m.any() and not (m & ign).any()
