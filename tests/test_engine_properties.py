"""Property: for any image and click list, predict returns a valid map or raises ValueError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_clickseg.engine import Predictor
from napari_clickseg.models import create_model

DTYPES = [np.uint8, np.uint16, np.int32, np.float32, np.float64]


@pytest.fixture(scope="module")
def predictor(one_torch_thread):
    torch.manual_seed(0)
    return Predictor(create_model("early", decoder_width=8), device="cpu")


@st.composite
def images(draw):
    h, w = draw(st.integers(2, 64)), draw(st.integers(2, 64))
    channels = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if channels == 1 and draw(st.booleans()) else (h, w, channels)
    kind = draw(st.sampled_from(["random"] * 5 + ["constant", "extreme", "nan"]))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        img = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        img = (rng.standard_normal(shape) * 10 ** draw(st.integers(-3, 30))).astype(dtype)
    if kind == "constant":
        img[...] = img.flat[0]
    elif kind == "extreme" and np.issubdtype(dtype, np.floating):
        img.flat[0] = np.finfo(dtype).max
    elif kind == "nan" and np.issubdtype(dtype, np.floating):
        img.flat[-1] = np.nan
    return img


@st.composite
def click_lists(draw, shape):
    """Mostly valid clicks, sometimes outside the image, non-finite or none at all."""
    h, w = shape

    def coord(limit):
        if draw(st.integers(0, 9)) == 0:
            return draw(st.sampled_from([-1, limit, float("nan"), float("inf"), 1e300]))
        return draw(st.one_of(st.floats(-0.5, limit - 0.51), st.integers(0, limit - 1)))

    n = draw(st.sampled_from([0, 1, 1, 2, 3, 4]))
    return [(coord(h), coord(w), draw(st.booleans())) for _ in range(n)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data(), image=images(), brs=st.sampled_from(["off"] * 4 + ["fbrs", "on"]),
       structural=st.booleans(), cut=st.booleans())
def test_predict_returns_a_map_or_value_error(predictor, data, image, brs, structural, cut):
    click_list = data.draw(click_lists(image.shape[:2]))
    try:
        predictor.set_image(image)
        prob = predictor.predict(click_list, brs=brs, structural_integrity=structural, graph_cut=cut)
    except ValueError as e:
        assert str(e)  # a message that says what is wrong
        return
    assert prob.dtype == np.float32
    assert prob.shape == image.shape[:2]
    assert np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0
