"""Click encodings against brute-force per-pixel loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_clickseg.clicks import (
    DISK_RADIUS,
    DISTANCE_TRUNCATION,
    ENCODINGS,
    FIRST_CLICK_SCALE,
    GAUSSIAN_SIGMA,
    MULTISCALE_SIGMAS,
    Click,
    as_clicks,
    disk_maps,
    distance_maps,
    encode_clicks,
    encoding_channels,
    first_click_map,
    gaussian_maps,
    multiscale_gaussian_maps,
    validate_clicks,
)

# ---------------------------------------------------------------- brute-force references


def _dists(clicks, positive, r, c):
    return [math.hypot(r - k.row, c - k.col) for k in clicks if k.positive == positive]


def ref_distance(clicks, shape, truncate=255.0):
    h, w = shape
    out = np.empty((2, h, w))
    for i, pos in enumerate((True, False)):
        for r in range(h):
            for c in range(w):
                d = _dists(clicks, pos, r, c)
                out[i, r, c] = min(min(d), truncate) if d else truncate
    return out


def ref_gaussian(clicks, shape, sigma=10.0, positive=None):
    h, w = shape
    signs = (True, False) if positive is None else (positive,)
    out = np.zeros((len(signs), h, w))
    for i, pos in enumerate(signs):
        for r in range(h):
            for c in range(w):
                d = _dists(clicks, pos, r, c)
                out[i, r, c] = max((math.exp(-x * x / (2 * sigma**2)) for x in d), default=0.0)
    return out


def ref_disk(clicks, shape, radius=5.0):
    h, w = shape
    out = np.zeros((2, h, w))
    for i, pos in enumerate((True, False)):
        for r in range(h):
            for c in range(w):
                out[i, r, c] = float(any(x <= radius for x in _dists(clicks, pos, r, c)))
    return out


def disk_boundary(clicks, shape, radius=5.0, eps=1e-3):
    """Pixels within ``eps`` of a disk edge, where float32 rounding may flip the answer."""
    h, w = shape
    rows, cols = np.mgrid[:h, :w]
    near = np.zeros((h, w), dtype=bool)
    for k in clicks:
        d = np.hypot(rows - k.row, cols - k.col)
        near |= np.abs(d - radius) < eps
    return near


# ---------------------------------------------------------------- fixed examples

CLICKS = [
    Click(3, 4, True, 0),
    Click(10, 2, False, 1),
    Click(7.5, 11.25, True, 2),
    Click(0, 13, False, 3),
]
SHAPE = (14, 17)


def test_constants_match_the_papers():
    assert DISTANCE_TRUNCATION == 255
    assert GAUSSIAN_SIGMA == 10
    assert DISK_RADIUS == 5
    assert tuple(MULTISCALE_SIGMAS) == (5, 10, 20)
    assert FIRST_CLICK_SCALE == 3


def test_distance_maps_match_brute_force():
    got = distance_maps(CLICKS, SHAPE)
    assert got.dtype == np.float32 and got.shape == (2, *SHAPE)
    np.testing.assert_allclose(got, ref_distance(CLICKS, SHAPE), rtol=1e-5, atol=1e-4)
    # zero at the clicks themselves
    assert got[0, 3, 4] == 0 and got[1, 10, 2] == 0


def test_distance_truncated_at_255():
    shape = (3, 300)
    clicks = [Click(1, 0, True), Click(0, 299, False)]
    got = distance_maps(clicks, shape)
    np.testing.assert_allclose(got, ref_distance(clicks, shape), rtol=1e-5, atol=1e-3)
    assert got.max() == 255.0
    assert got[0, 1, 255] == 255.0 and got[0, 1, 254] == pytest.approx(254.0)
    assert got[0, 1, 299] == 255.0


def test_distance_without_negatives_is_all_255():
    got = distance_maps([Click(2, 2, True)], (6, 7))
    assert np.all(got[1] == 255.0)
    got = distance_maps([Click(2, 2, False)], (6, 7))
    assert np.all(got[0] == 255.0)
    assert got[1, 2, 2] == 0


def test_distance_encoding_is_scaled_to_unit_range():
    got = encode_clicks(CLICKS, SHAPE, "distance")
    np.testing.assert_allclose(got, ref_distance(CLICKS, SHAPE) / 255.0, rtol=1e-5, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1


def test_gaussian_maps_sigma_10_match_brute_force():
    got = gaussian_maps(CLICKS, SHAPE)
    assert got.dtype == np.float32 and got.shape == (2, *SHAPE)
    np.testing.assert_allclose(got, ref_gaussian(CLICKS, SHAPE, 10.0), rtol=1e-5, atol=1e-6)
    assert got[0, 3, 4] == pytest.approx(1.0)
    # one sigma away: exp(-1/2)
    assert gaussian_maps([Click(0, 0, True)], (1, 11))[0, 0, 10] == pytest.approx(math.exp(-0.5), rel=1e-5)


def test_gaussian_maps_zero_without_clicks_of_a_sign():
    got = gaussian_maps([Click(1, 1, True)], (4, 4))
    assert np.all(got[1] == 0)


def test_disk_maps_radius_5_match_brute_force():
    got = disk_maps(CLICKS, SHAPE)
    assert got.dtype == np.float32 and set(np.unique(got)) <= {0.0, 1.0}
    np.testing.assert_array_equal(got, ref_disk(CLICKS, SHAPE, 5.0))
    # the radius is inclusive: (r, c + 5) is inside, (r, c + 6) and (r + 4, c + 4) are not
    one = disk_maps([Click(10, 10, True)], (21, 21))[0]
    assert one[10, 15] == 1 and one[10, 16] == 0 and one[14, 14] == 0 and one[13, 14] == 1
    assert one.sum() == 81  # lattice points in a disk of radius 5


def test_multiscale_channel_order():
    got = multiscale_gaussian_maps(CLICKS, SHAPE)
    assert got.shape == (6, *SHAPE) and got.dtype == np.float32
    for i, sigma in enumerate((5.0, 10.0, 20.0)):
        np.testing.assert_allclose(got[2 * i], ref_gaussian(CLICKS, SHAPE, sigma, True)[0], atol=1e-6)
        np.testing.assert_allclose(got[2 * i + 1], ref_gaussian(CLICKS, SHAPE, sigma, False)[0], atol=1e-6)


def test_first_click_map_is_gaussian_of_three_sigma_around_first_positive():
    got = first_click_map(CLICKS, SHAPE)
    assert got.shape == (1, *SHAPE) and got.dtype == np.float32
    ref = ref_gaussian([CLICKS[0]], SHAPE, 30.0, True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_first_click_map_uses_order_and_skips_negatives():
    clicks = [Click(9, 9, True, 2), Click(1, 1, False, 0), Click(5, 2, True, 1)]
    got = first_click_map(clicks, (12, 12))
    np.testing.assert_allclose(got, ref_gaussian([clicks[2]], (12, 12), 30.0, True), atol=1e-6)
    assert np.unravel_index(np.argmax(got[0]), (12, 12)) == (5, 2)


def test_first_click_map_zeros_without_positive():
    got = first_click_map([Click(1, 1, False)], (5, 6))
    assert got.shape == (1, 5, 6) and not got.any()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("first_click", [False, True])
def test_encode_clicks_channels_and_range(encoding, first_click):
    got = encode_clicks(CLICKS, SHAPE, encoding, first_click=first_click)
    assert got.shape == (encoding_channels(encoding, first_click), *SHAPE)
    assert got.dtype == np.float32
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    if first_click:
        np.testing.assert_array_equal(got[-1], first_click_map(CLICKS, SHAPE)[0])
        np.testing.assert_array_equal(got[:-1], encode_clicks(CLICKS, SHAPE, encoding))


def test_encoding_channels():
    assert encoding_channels("distance") == 2
    assert encoding_channels("gaussian") == 2
    assert encoding_channels("disk") == 2
    assert encoding_channels("multiscale") == 6
    assert encoding_channels("multiscale", first_click=True) == 7


def test_unknown_encoding_lists_valid_ones():
    with pytest.raises(ValueError, match="gaussian"):
        encoding_channels("nope")
    with pytest.raises(ValueError, match="unknown click encoding"):
        encode_clicks(CLICKS, SHAPE, "nope")


def test_encodings_accept_no_clicks():
    for name in ENCODINGS:
        got = encode_clicks([], (3, 4), name, first_click=True)
        assert got.shape == (encoding_channels(name, True), 3, 4)
        assert np.isfinite(got).all()


# ---------------------------------------------------------------- as_clicks / validate_clicks


def test_as_clicks_normalises_tuples_and_reassigns_orders():
    got = as_clicks([(1, 2, True), Click(3.5, 4, False, order=7), np.array([5, 6, 1])])
    assert got == [Click(1.0, 2.0, True, 0), Click(3.5, 4.0, False, 1), Click(5.0, 6.0, True, 2)]
    assert all(isinstance(c.positive, bool) for c in got)
    assert all(type(c.row) is float and type(c.col) is float for c in got)
    assert as_clicks([]) == []
    assert as_clicks(iter([(0, 0, False)])) == [Click(0.0, 0.0, False, 0)]


@pytest.mark.parametrize(
    "bad, match",
    [
        ((1, 2), "must be a Click"),
        ((1, 2, True, 4), "must be a Click"),
        (5, "must be a Click"),
        (None, "must be a Click"),
        (("a", 2, True), "non-numeric"),
        ((None, 2, True), "non-numeric"),
        ((float("nan"), 2, True), "non-finite"),
        ((1, float("inf"), True), "non-finite"),
        ((10**400, 2, True), "non-finite"),  # regression: OverflowError
    ],
)
def test_as_clicks_rejects_bad_items(bad, match):
    with pytest.raises(ValueError, match=match):
        as_clicks([(0, 0, True), bad])
    with pytest.raises(ValueError, match="click 1"):
        as_clicks([(0, 0, True), bad])


@pytest.mark.parametrize("flag", ["-", "+", "False", "", None, 2, -1, 0.5, float("nan"), [True]])
def test_as_clicks_rejects_flags_that_are_not_bool_0_or_1(flag):
    # regression: bool("-") is True, so a "-" click silently became a positive one
    with pytest.raises(ValueError, match="click 1 has positive="):
        as_clicks([(0, 0, True), (5, 5, flag)])
    with pytest.raises(ValueError, match="click 0 has positive="):
        as_clicks([Click(5, 5, flag)])


@pytest.mark.parametrize(
    "flag, expected",
    [(True, True), (False, False), (1, True), (0, False), (1.0, True), (0.0, False),
     (np.bool_(True), True), (np.bool_(False), False), (np.int64(1), True), (np.float32(0), False)],
)
def test_as_clicks_accepts_bools_and_0_1(flag, expected):
    (c,) = as_clicks([(5, 5, flag)])
    assert c.positive is expected


def test_as_clicks_rejects_non_finite_click_objects():
    with pytest.raises(ValueError, match="non-finite"):
        as_clicks([Click(float("nan"), 1, True)])


def test_validate_clicks_accepts_inside_and_pixel_edges():
    validate_clicks([Click(0, 0, True), Click(9, 19, False)], (10, 20))
    validate_clicks([Click(-0.5, -0.5, True), Click(9.49, 19.49, True)], (10, 20))


@pytest.mark.parametrize(
    "click",
    [
        Click(10, 0, True),
        Click(0, 20, True),
        Click(-0.51, 0, True),
        Click(0, -1, False),
        Click(9.5, 3, True),
        Click(float("nan"), 3, True),
        Click(3, float("nan"), True),
        Click(float("inf"), 3, True),
    ],
)
def test_validate_clicks_rejects_outside_and_nan(click):
    with pytest.raises(ValueError, match="outside the image of shape 10x20"):
        validate_clicks([Click(1, 1, True), click], (10, 20))


def test_validate_clicks_needs_a_click():
    with pytest.raises(ValueError, match="at least one click"):
        validate_clicks([], (10, 20))


def test_click_shifted():
    c = Click(10, 20, True, 3).shifted(2, 4, scale=0.5)
    assert c == Click(4.0, 8.0, True, 3)


# ---------------------------------------------------------------- property tests

shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@st.composite
def shape_and_clicks(draw, min_clicks=0):
    h, w = draw(shapes)
    n = draw(st.integers(min_clicks, 5))
    coords = st.tuples(
        st.floats(-0.5, h - 0.5, exclude_max=True, allow_nan=False, width=32),
        st.floats(-0.5, w - 0.5, exclude_max=True, allow_nan=False, width=32),
        st.booleans(),
    )
    clicks = as_clicks(draw(st.lists(coords, min_size=n, max_size=n)))
    return (h, w), clicks


@given(shape_and_clicks())
def test_property_distance(sc):
    shape, clicks = sc
    np.testing.assert_allclose(distance_maps(clicks, shape), ref_distance(clicks, shape), rtol=1e-5, atol=1e-4)


@given(shape_and_clicks(), st.floats(0.5, 30))
def test_property_gaussian(sc, sigma):
    shape, clicks = sc
    got = gaussian_maps(clicks, shape, sigma=sigma)
    np.testing.assert_allclose(got, ref_gaussian(clicks, shape, sigma), rtol=1e-4, atol=1e-5)


@given(shape_and_clicks(), st.floats(0.5, 8))
def test_property_disk(sc, radius):
    shape, clicks = sc
    got = disk_maps(clicks, shape, radius=radius)
    ref = ref_disk(clicks, shape, radius)
    sure = ~disk_boundary(clicks, shape, radius)
    np.testing.assert_array_equal(got[:, sure], ref[:, sure])


@given(shape_and_clicks())
def test_property_multiscale_and_first_click(sc):
    shape, clicks = sc
    got = encode_clicks(clicks, shape, "multiscale", first_click=True)
    for i, sigma in enumerate(MULTISCALE_SIGMAS):
        np.testing.assert_allclose(got[2 * i : 2 * i + 2], ref_gaussian(clicks, shape, sigma), rtol=1e-4, atol=1e-5)
    positives = [c for c in clicks if c.positive]
    ref_first = ref_gaussian(positives[:1], shape, 30.0, True)[0]
    np.testing.assert_allclose(got[-1], ref_first, rtol=1e-4, atol=1e-5)


@given(shape_and_clicks(min_clicks=1))
def test_property_valid_clicks_pass_validation_and_encode(sc):
    shape, clicks = sc
    validate_clicks(clicks, shape)
    for name in ENCODINGS:
        maps = encode_clicks(clicks, shape, name)
        assert maps.shape == (encoding_channels(name), *shape)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@given(shapes, st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_property_validate_clicks_iff_inside(shape, row, col):
    h, w = shape
    inside = -0.5 <= row < h - 0.5 and -0.5 <= col < w - 0.5
    if inside:
        validate_clicks([Click(row, col, True)], shape)
    else:
        with pytest.raises(ValueError):
            validate_clicks([Click(row, col, True)], shape)
