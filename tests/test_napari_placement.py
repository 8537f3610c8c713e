"""GUI tests: the dock's layers stay drawn over the pixels they annotate (transforms, units,
layer order) and a put-back copy of a committed layer does not write into the annotations
(audit 30, dock journeys). Same fixtures and stub model as test_napari_widget.py."""

from __future__ import annotations

import numpy as np
import pytest

import test_napari_widget as dock_tests  # skips this module too where there is no display

pytestmark = pytest.mark.gui

mouse_click = dock_tests.mouse_click
fluo, open_dock = dock_tests.fluo, dock_tests.open_dock  # the fixtures


def _world(layer, data_pos):
    return tuple(np.asarray(layer.data_to_world(np.asarray(data_pos, float)), float))


@pytest.mark.parametrize("transform", [{"rotate": 30}, {"shear": [0.0, 0.0, 0.4]}])
def test_a_turned_multichannel_image_has_its_objects_drawn_under_the_click(open_dock, fluo, transform):
    # regression: with a channel axis chosen, rotate and shear were dropped from the dock's layers
    viewer, w = open_dock(np.stack([fluo, 255 - fluo, fluo // 2]), **transform)
    w.channel_combo.value = 0
    img = w.image_layer
    wp = _world(img, (1, 30, 32))  # where pixel (30, 32) is drawn
    mouse_click(viewer, wp)
    assert (w.session.clicks[0].row, w.session.clicks[0].col) == pytest.approx((30, 32))
    oid = w.commit()
    assert w.session.labels[30, 32] == oid
    assert w.layers["committed"].get_value(wp, world=True) == oid
    np.testing.assert_allclose(w.layers["positive"].rotate, img.rotate)
    w.add_click(10, 12, True)
    oid2 = w.commit()
    img.rotate = 75  # turned later: the objects turn with it
    assert w.layers["committed"].get_value(_world(img, (1, 10, 12)), world=True) == oid2


def test_physical_units_are_kept_and_clicks_convert_them(open_dock, fluo):
    # regression: the dock's layers had napari's default unit (pixel), so napari stopped using
    # units for every layer ("Inconsistent units across layers"); with units kept, a click in a
    # world of um on an image in mm must be converted to its pixels
    viewer, w = open_dock(fluo, scale=(0.5, 0.5), units=("um", "um"))
    for key in ("positive", "negative", "preview", "committed"):
        assert w.layers[key].units == w.image_layer.units, key
    assert viewer.layers.extent.units is not None
    mm = viewer.add_image(fluo, name="mm", scale=(0.001, 0.001), units=("mm", "mm"))
    w.bind(mm)
    assert viewer.layers.extent.units is not None
    mouse_click(viewer, (30.0, 32.0))  # where mm's pixel (30, 32) is drawn: 1 um per pixel
    assert (w.session.clicks[0].row, w.session.clicks[0].col) == pytest.approx((30, 32)), w.last_status
    oid = w.commit()
    assert w.session.labels[30, 32] == oid


@pytest.mark.parametrize("again", ["same layer", "opened again"])
def test_objects_back_with_their_image_are_drawn_above_it(open_dock, fluo, qtbot, again):
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    img = w.image_layer
    viewer.layers.remove(img)
    qtbot.wait(20)
    if again == "same layer":
        viewer.add_layer(img)
    else:
        viewer.add_image(fluo.copy(), name="image")
        assert "are back" in w.last_status
    assert w.session.object_ids() == [1]
    names = [la.name for la in viewer.layers]
    assert names.index("committed objects") > names.index("image"), names


def test_a_deleted_committed_layer_put_back_is_a_plain_copy(open_dock, fluo):
    # regression: it was called a plain labels layer but still held the dock's own array
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    old = w.layers["committed"]
    viewer.layers.remove(old)
    w.add_click(40, 40, True)  # the dock makes a new committed layer
    viewer.add_layer(old)
    assert "is a copy: a plain labels layer" in w.last_status
    old.paint((50, 10), 7, refresh=True)
    assert not (w.session.labels == 7).any()
    assert (np.asarray(old.data) == 1).any()  # the copy keeps what it showed


def test_the_dock_layers_stay_over_their_image(open_dock, fluo):
    # regression: a committed layer dragged in napari's transform mode drew objects 10 px from
    # where they were written, and hand corrections went to the wrong pixels
    viewer, w = open_dock(fluo, scale=(0.5, 0.5))
    for key in ("committed", "positive", "preview"):
        w.layers[key].translate = (5.0, 0.0)
        np.testing.assert_allclose(w.layers[key].translate, w.image_layer.translate)
        assert "stays over 'image'" in w.last_status
    wp = _world(w.image_layer, (30, 32))
    mouse_click(viewer, wp)
    oid = w.commit()
    assert w.session.labels[30, 32] == oid
    assert w.layers["committed"].get_value(wp, world=True) == oid
    w.image_layer.translate = (3.0, 4.0)  # the image itself moves: its layers follow, quietly
    np.testing.assert_allclose(w.layers["committed"].translate, (3.0, 4.0))
    assert "stays over" not in w.last_status


@pytest.mark.parametrize("extra_4d", [False, True])
def test_reopen_goes_back_to_the_slice_across_units(open_dock, fluo, extra_4d):
    # regression (review, audit 30): with an image of fewer dims than the world, the way back
    # from pixels to the world skipped the unit conversion and the slider went to 0.005 um
    import pint

    stack = np.stack([np.roll(fluo, 3 * z, axis=1) for z in range(8)]).astype(np.uint16) * 200
    viewer, w = open_dock(stack, scale=(0.001, 0.001, 0.001), units=("mm", "mm", "mm"))  # 1 um per pixel
    img = w.image_layer
    if extra_4d:  # a 4D layer in um: the world has 4 dims in um, the image 3 in mm
        viewer.add_image(np.zeros((2, 8, 64, 64), np.uint8), name="t", units=("um",) * 4)
        w.bind(img)
    off = viewer.dims.ndim - 3
    z5 = (0.005 * pint.get_application_registry().mm).to(viewer.dims.units[off]).magnitude
    viewer.dims.set_point(off, z5)
    plane = w.current_plane()
    assert plane.index == ((0, 5),), plane
    w.add_click(30, 30, True)
    oid = w.commit()
    viewer.dims.set_point(off, 0.0)
    assert w.current_plane().index == ((0, 0),)
    assert w.reopen(oid)
    assert w.current_plane() == plane, viewer.dims.point
