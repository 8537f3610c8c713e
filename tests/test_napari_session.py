"""The dock's pure-Python core: planes and the annotation session (no viewer, no Qt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_clickseg._napari.planes import ImageGeometry, Plane
from napari_clickseg._napari.session import AnnotationSession, SessionError
from napari_clickseg.clicks import Click


def disk(shape, center, r):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= r * r


P2 = Plane.full_2d()


# --- planes ---------------------------------------------------------------------------------


def test_plane_view_writes_through_and_transposes():
    a = np.zeros((3, 4, 5), np.uint16)
    p = Plane((1, 2), ((0, 2),))
    p.view(a)[1, 3] = 7
    assert a[2, 1, 3] == 7
    q = Plane((2, 1), ((0, 0),))  # transposed display: rows = axis 2
    v = q.view(a)
    assert v.shape == (5, 4)
    v[4, 1] = 9
    assert a[0, 1, 4] == 9
    with pytest.raises(ValueError, match="outside"):
        Plane((1, 2), ((0, 3),)).view(a)
    assert Plane.from_json(p.to_json()) == p


def test_geometry_gray_stack_plane_and_points():
    g = ImageGeometry((4, 10, 12))
    assert g.spatial_shape == (4, 10, 12)
    plane = g.plane_at([1, 2], [2.4, 3.0, 3.0])
    assert plane == Plane((1, 2), ((0, 2),))
    data = np.arange(4 * 10 * 12).reshape(4, 10, 12)
    img, ch = g.plane_image(data, plane)
    assert ch is None and np.array_equal(img, data[2])
    clicks = [Click(1.0, 2.0, True, 0), Click(5.0, 6.0, False, 1)]
    pts = g.points_from_clicks(clicks, plane)
    assert pts.tolist() == [[2, 1, 2], [2, 5, 6]]
    back, off = g.clicks_from_points(
        np.vstack([pts, [[0, 1, 1]]]), [True, False, True], [5, 7, 1], plane
    )
    assert off == 1 and back == clicks


def test_geometry_click_order_follows_orders():
    g = ImageGeometry((10, 10))
    clicks, _ = g.clicks_from_points(np.array([[1, 1], [2, 2]]), [True, False], [9, 3], P2)
    assert [c.positive for c in clicks] == [False, True]
    assert [c.order for c in clicks] == [0, 1]


def test_geometry_rgb_and_channel_axis():
    rgb = ImageGeometry((6, 8, 3), rgb=True)
    assert rgb.layer_ndim == 2 and rgb.spatial_shape == (6, 8) and rgb.n_channels == 3
    img, ch = rgb.plane_image(np.zeros((6, 8, 3)), P2)
    assert img.shape == (6, 8, 3) and ch == 2

    # (Z, C, Y, X) with channels on axis 1
    g = ImageGeometry((3, 2, 6, 8), channel_axis=1)
    assert g.spatial_shape == (3, 6, 8) and g.n_channels == 2
    plane = g.plane_at([2, 3], [1, 1, 0, 0])
    assert plane == Plane((1, 2), ((0, 1),))
    data = np.random.default_rng(0).random((3, 2, 6, 8))
    img, ch = g.plane_image(data, plane)
    assert img.shape == (6, 8, 2) and ch == 2
    assert np.array_equal(img[..., 1], data[1, 1])
    labels = np.zeros(g.spatial_shape, np.uint32)
    layer_view = g.layer_labels_view(labels)
    assert layer_view.shape == (3, 1, 6, 8)
    layer_view[2, 0, 1, 1] = 5
    assert labels[2, 1, 1] == 5
    assert g.labels_from_layer(layer_view).shape == g.spatial_shape
    scale, translate = g.annotation_transform([1, 1, 0.5, 0.5], [0, 0, 0, 0])
    assert scale == [1, 2, 0.5, 0.5] and translate == [0, 0.5, 0, 0]
    with pytest.raises(ValueError, match="channel axis"):
        g.plane_at([1, 2], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="2D"):
        g.plane_at([0, 2, 3], [0, 0, 0, 0])


def test_a_lazy_plane_view_reads_only_what_is_sliced():
    # (C, Z, Y, X) data shown as a transposed (X, Y) plane of slice z=2, channels on axis 0
    data = np.random.default_rng(1).random((2, 4, 6, 8))
    reads = []

    class Lazy:
        shape, dtype = data.shape, data.dtype

        def __getitem__(self, index):
            reads.append(index)
            return data[index]

    g = ImageGeometry(data.shape, channel_axis=0)
    plane = Plane((2, 1), ((0, 2),))
    view = g.plane_view(Lazy(), plane)
    assert reads == [] and view.shape == (8, 6, 2) and view.channel_axis == 2 and view.dtype == data.dtype
    whole, _ = g.plane_image(data, plane)
    np.testing.assert_array_equal(view[1:5, 2:4], whole[1:5, 2:4])
    assert reads == [(slice(None), 2, slice(2, 4), slice(1, 5))]
    np.testing.assert_array_equal(view[::3, ::2], whole[::3, ::2])
    with pytest.raises(IndexError, match="up to 3 slices"):
        view[1, 2]


def test_a_pyramid_plane_in_a_coarser_level(monkeypatch):
    from napari_clickseg._napari import planes

    monkeypatch.setattr(planes, "STATISTICS_PIXELS", 16 * 16)
    data = np.random.default_rng(2).random((8, 64, 64))  # (Z, Y, X), every level halves Z too
    levels = [data, data[::2, ::2, ::2], data[::4, ::4, ::4], data[::8, ::8, ::8]]
    g = ImageGeometry(data.shape)
    # z=5 of 8 is z=1 of the 2 slices at level 2, the coarsest with a 16x16 plane
    np.testing.assert_array_equal(g.coarse_plane(levels, Plane((1, 2), ((0, 5),))), levels[2][1])
    assert g.coarse_plane(levels[:1], Plane((1, 2), ((0, 5),))) is None  # no pyramid
    monkeypatch.setattr(planes, "STATISTICS_PIXELS", 64 * 64)
    assert g.coarse_plane(levels, Plane((1, 2), ((0, 5),))) is None  # level 0 is the one
    assert g.coarse_plane([data, data[0]], Plane((1, 2), ((0, 5),))) is None  # levels that do not fit


def test_geometry_rejects_bad_setups():
    with pytest.raises(ValueError, match="rgb"):
        ImageGeometry((6, 8, 3), rgb=True, channel_axis=0)
    with pytest.raises(ValueError, match="two spatial"):
        ImageGeometry((3, 8), channel_axis=0)


# --- session --------------------------------------------------------------------------------


def test_clicks_undo_redo_clear():
    s = AnnotationSession(np.zeros((20, 20), np.uint16))
    assert s.plane is None and not s.can_undo
    s.add_click(3, 3, True, P2)
    s.add_click(5, 5, False)
    assert [c.positive for c in s.clicks] == [True, False] and s.plane == P2
    assert s.undo() and len(s.clicks) == 1
    assert s.redo() and len(s.clicks) == 2
    assert not s.redo()
    assert s.clear() and s.clicks == () and s.plane is None
    assert s.undo() and len(s.clicks) == 2  # clear is undoable
    s.undo()
    s.add_click(9, 9, True)  # a new change drops the redo branch
    assert not s.can_redo and [c.row for c in s.clicks] == [3, 9]
    assert not s.set_clicks(s.clicks)  # no change, no undo step


def test_blank_means_nothing_to_keep():
    s = AnnotationSession(np.zeros((20, 20), np.uint16))
    assert s.blank
    s.add_click(3, 3, True, P2)
    assert not s.blank  # an open object
    s.clear()
    assert not s.blank  # the clear can be undone
    painted = AnnotationSession(np.zeros((20, 20), np.uint16))
    painted.labels[2, 2] = 4
    assert not painted.blank


def test_click_on_other_plane_is_refused():
    s = AnnotationSession(np.zeros((3, 10, 10), np.uint16))
    s.add_click(1, 1, True, Plane((1, 2), ((0, 0),)))
    with pytest.raises(SessionError, match="another slice"):
        s.add_click(1, 1, True, Plane((1, 2), ((0, 1),)))
    with pytest.raises(SessionError, match="plane"):
        AnnotationSession(np.zeros((3, 10, 10), np.uint16)).set_clicks([Click(1, 1, True)])


def test_commit_never_overwrites_other_objects():
    labels = np.zeros((40, 40), np.uint16)
    s = AnnotationSession(labels)
    a = disk(labels.shape, (15, 15), 8)
    s.add_click(15, 15, True, P2)
    r1 = s.commit(a, model={"name": "m"}, settings={"threshold": 0.5})
    assert r1.id == 1 and r1.written == a.sum() and s.clicks == () and not s.can_undo
    assert s.records[1].model == {"name": "m"} and s.records[1].settings == {"threshold": 0.5}
    assert s.records[1].clicks == (Click(15, 15, True, 0),)
    b = disk(labels.shape, (15, 25), 8)
    s.add_click(15, 25, True, P2)
    r2 = s.commit(b)
    assert r2.id == 2 and r2.kept == (a & b).sum() > 0
    assert (labels == 1).sum() == a.sum()  # object 1 lost nothing
    assert np.array_equal(labels == 2, b & ~a)
    s.add_click(15, 20, True, P2)
    r3 = s.commit(a | b, overwrite=True)
    assert r3.id == 3 and r3.overwritten == (a | b).sum() and not (labels == 1).any()
    assert set(s.records) == {3}  # objects 1 and 2 are gone, and their provenance with them


def test_commit_errors():
    s = AnnotationSession(np.zeros((10, 10), np.uint8))
    with pytest.raises(SessionError, match="click"):
        s.commit(np.ones((10, 10), bool))
    s.add_click(2, 2, True, P2)
    with pytest.raises(SessionError, match="empty"):
        s.commit(np.zeros((10, 10), bool))
    with pytest.raises(SessionError, match="shape"):
        s.commit(np.ones((5, 5), bool))
    s.labels[...] = 7
    with pytest.raises(SessionError, match="belong to other objects"):
        s.commit(np.ones((10, 10), bool))


def test_ids_outgrowing_the_dtype_widen_the_labels():
    labels = np.zeros((10, 10), np.uint8)
    labels[0, 0] = 255
    s = AnnotationSession(labels)
    s.add_click(5, 5, True, P2)
    assert s.commit(disk((10, 10), (5, 5), 2)).id == 256
    assert s.labels.dtype == np.uint16 and s.labels is not labels
    assert s.labels[0, 0] == 255 and s.labels[5, 5] == 256


def test_reopen_recommit_same_id_and_delete():
    labels = np.zeros((3, 30, 30), np.uint32)
    s = AnnotationSession(labels)
    plane = Plane((1, 2), ((0, 1),))
    s.add_click(10, 10, True, plane)
    s.add_click(2, 2, False)
    s.commit(disk((30, 30), (10, 10), 5))
    s.add_click(20, 20, True, plane)
    s.commit(disk((30, 30), (20, 20), 4))
    rec = s.reopen(1)
    assert rec is not None and s.editing == 1 and s.plane == plane
    assert [c.positive for c in s.clicks] == [True, False]
    s.add_click(14, 14, True)
    smaller = disk((30, 30), (10, 10), 3)
    r = s.commit(smaller)
    assert r.id == 1 and s.records[1].revision == 2 and len(s.records[1].clicks) == 3
    assert (
        np.array_equal(labels[1] == 1, smaller)
        and (labels[1] == 2).sum() == disk((30, 30), (20, 20), 4).sum()
    )
    assert s.next_id() == 3
    assert s.delete(2) > 0 and not (labels == 2).any() and 2 not in s.records
    with pytest.raises(SessionError, match="no object"):
        s.delete(2)
    with pytest.raises(SessionError, match="no object"):
        s.reopen(7)


def test_reopen_painted_object_needs_plane_and_undo_restores():
    labels = np.zeros((20, 20), np.uint16)
    labels[2:6, 2:6] = 4  # painted by hand: no provenance
    s = AnnotationSession(labels)
    s.add_click(10, 10, True, P2)
    assert s.reopen(4, P2) is None and s.editing == 4 and s.clicks == ()
    assert s.undo() and s.editing is None and len(s.clicks) == 1
    assert s.next_id() == 5


def test_save_load_round_trip(tmp_path):
    labels = np.zeros((2, 16, 16), np.uint16)
    s = AnnotationSession(labels)
    plane = Plane((1, 2), ((0, 1),))
    s.add_click(5, 5, True, plane)
    s.commit(disk((16, 16), (5, 5), 3), model={"name": "m", "weights_sha256": "ab" * 32})
    tif, js = s.save(tmp_path / "ann", image={"name": "img"})
    assert tif.name == "ann.tif" and js.name == "ann.json"
    doc = json.loads(js.read_text())
    assert doc["format"] == "napari-clickseg-annotations" and doc["objects"][0]["id"] == 1

    t = AnnotationSession(np.zeros((2, 16, 16), np.uint16))
    t.add_click(1, 1, True, plane)
    assert t.load(tmp_path / "ann.tif") == []
    assert np.array_equal(t.labels, labels) and t.clicks == ()
    assert t.records[1].clicks == s.records[1].clicks and t.records[1].plane == plane
    assert t.records[1].model["weights_sha256"] == "ab" * 32
    t.reopen(1)
    assert len(t.clicks) == 1

    with pytest.raises(SessionError, match="shape"):
        AnnotationSession(np.zeros((16, 16), np.uint16)).load(tif)
    js.unlink()
    u = AnnotationSession(np.zeros((2, 16, 16), np.uint16))
    assert any("provenance" in w for w in u.load(tif)) and u.records == {}
    with pytest.raises(SessionError, match="not found"):
        u.load(tmp_path / "missing.tif")


def test_load_warns_when_the_labels_were_edited_elsewhere_after_saving(tmp_path):
    # regression (audit 21): ids renumbered in another program loaded silently, and re-opening
    # object 1 restored the clicks of the object that had been 1 before
    import tifffile

    s = AnnotationSession(np.zeros((16, 16), np.uint16))
    for center in ((4, 4), (11, 11)):
        s.add_click(*center, True, P2)
        s.commit(disk((16, 16), center, 2))
    tif, _ = s.save(tmp_path / "ann")
    assert AnnotationSession(np.zeros((16, 16), np.uint16)).load(tif) == []  # untouched: no warning
    big_endian = tifffile.imread(tif).astype(">u2")  # the same values, written another way
    tifffile.imwrite(tif, big_endian)
    assert AnnotationSession(np.zeros((16, 16), np.uint16)).load(tif) == []
    swapped = tifffile.imread(tif).astype(np.uint16)
    swapped[swapped > 0] = 3 - swapped[swapped > 0]  # 1 <-> 2
    tifffile.imwrite(tif, swapped)
    t = AnnotationSession(np.zeros((16, 16), np.uint16))
    warnings = t.load(tif)
    assert len(warnings) == 2 and "was changed after it was saved with ann.json" in warnings[0]
    # (audit, session 29) the clicks of a record no longer on its pixels are dropped
    assert "object(s) 1, 2: recorded clicks no longer lie on their pixels" in warnings[1]
    assert t.records[1].clicks == () and t.records[2].clicks == ()


def test_load_of_labels_renumbered_elsewhere_keeps_no_stale_clicks_or_records(tmp_path):
    # regression (journeys audit, session 29): object 2 removed and 3, 4 renumbered 2, 3 in another
    # program; the load said 4 objects, and re-opening 2 brought back the removed object's clicks,
    # so C erased the object that now has id 2
    import tifffile

    s = AnnotationSession(np.zeros((32, 32), np.uint16))
    centres = ((4, 4), (4, 20), (20, 4), (20, 20))
    for center in centres:
        s.add_click(*center, True, P2)
        s.commit(disk((32, 32), center, 2))
    tif, _ = s.save(tmp_path / "ann")
    lab = tifffile.imread(tif)
    lab[lab == 2] = 0
    lab[lab == 3], lab[lab == 4] = 2, 3
    tifffile.imwrite(tif, lab)
    t = AnnotationSession(np.zeros((32, 32), np.uint16))
    t.load(tif)
    assert sorted(t.records) == [1, 2, 3]
    assert t.records[1].clicks == s.records[1].clicks  # still on its pixels
    assert t.records[2].clicks == () and t.records[3].clicks == ()


def test_load_into_small_dtype_replaces_array(tmp_path):
    big = np.zeros((8, 8), np.uint32)
    big[0, 0] = 70000
    s = AnnotationSession(big)
    s.save(tmp_path / "a")
    t = AnnotationSession(np.zeros((8, 8), np.uint16))
    t.load(tmp_path / "a.tif")
    assert t.labels.dtype == np.uint32 and t.labels[0, 0] == 70000


def test_corrupt_provenance_is_an_error(tmp_path):
    s = AnnotationSession(np.zeros((8, 8), np.uint16))
    tif, js = s.save(tmp_path / "a")
    js.write_text("{not json")
    with pytest.raises(SessionError, match="provenance"):
        AnnotationSession(np.zeros((8, 8), np.uint16)).load(tif)
    js.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SessionError, match="not a napari-clickseg"):
        AnnotationSession(np.zeros((8, 8), np.uint16)).load(tif)


@pytest.mark.parametrize("edit", [
    {"objects": [1, 2]}, {"objects": None}, {"version": "one"}, {"objects": [{"id": "x"}]},
])
def test_a_hand_edited_provenance_file_is_a_session_error(tmp_path, edit):
    # regression: these raised AttributeError / TypeError / ValueError into napari
    s = AnnotationSession(np.zeros((8, 8), np.uint16))
    tif, js = s.save(tmp_path / "a")
    js.write_text(json.dumps({**json.loads(js.read_text()), **edit}))
    with pytest.raises(SessionError):
        AnnotationSession(np.zeros((8, 8), np.uint16)).load(tif)


@pytest.mark.parametrize("plane", [
    {"displayed": [1, 2], "index": [[0, 9]]},  # a slice outside the 4-slice stack
    {"displayed": [1, 7], "index": [[0, 1]]},  # an axis the labels do not have
    {"displayed": [1, 2], "index": [[1, 0]]},  # a displayed axis also indexed
])
def test_a_recorded_plane_outside_the_labels_is_dropped_on_load(tmp_path, plane):
    # regression: such a plane loaded, and re-opening the object raised into napari
    labels = np.zeros((4, 16, 16), np.uint16)
    s = AnnotationSession(labels)
    s.add_click(5, 5, True, Plane((1, 2), ((0, 1),)))
    s.commit(disk((16, 16), (5, 5), 3))
    tif, js = s.save(tmp_path / "a")
    doc = json.loads(js.read_text())
    doc["objects"][0]["plane"] = plane
    js.write_text(json.dumps(doc))
    t = AnnotationSession(np.zeros((4, 16, 16), np.uint16))
    import tifffile

    assert tifffile.TiffFile(tif).pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK  # not RGBA
    assert any("does not fit" in w for w in t.load(tif))
    assert t.records[1].plane is None and t.records[1].clicks == ()
    with pytest.raises(SessionError, match="lies outside"):
        t.reopen(1, Plane((1, 2), ((0, 9),)))
    assert t.reopen(1) is t.records[1] and t.plane == Plane((1, 2), ((0, 1),))  # where its pixels are


def test_reopening_an_object_without_provenance_goes_to_its_own_slice():
    # regression (audit 26): re-opened on the slice shown, where it had no pixels, the next
    # commit gave its id to two slices
    labels = np.zeros((6, 16, 16), np.uint16)
    labels[4, 2:8, 2:8] = 2  # loaded without its JSON, on z = 4
    labels[1:4, 10:14, 10:14] = 3  # painted in 3D
    s = AnnotationSession(labels)
    shown = Plane((1, 2), ((0, 0),))
    assert s.reopen(2, shown) is None and s.plane == Plane((1, 2), ((0, 4),))
    s.clear()
    assert s.reopen(3, Plane((1, 2), ((0, 2),))) is None and s.plane == Plane((1, 2), ((0, 2),))
    s.clear()
    with pytest.raises(SessionError, match="spans several.*axis 0: 1-3"):
        s.reopen(3, shown)
    # a flat object re-opened from a view crossing it (review 26): edited on its own plane
    assert s.reopen(2, Plane((0, 2), ((1, 4),))) is None and s.plane == Plane((1, 2), ((0, 4),))


def test_labels_saved_by_napari_with_a_channel_axis_load(tmp_path):
    # regression (audit 26): napari saves the committed layer of an image with a channel axis
    # with that axis kept, of length 1: (Z, 1, Y, X); the dock's Load refused it
    import tifffile

    labels = np.zeros((3, 1, 16, 16), np.uint16)
    labels[2, 0, 4:8, 4:8] = 6
    tifffile.imwrite(tmp_path / "napari.tif", labels)
    s = AnnotationSession(np.zeros((3, 16, 16), np.uint16))
    s.load(tmp_path / "napari.tif")
    assert s.labels.shape == (3, 16, 16) and s.labels[2, 5, 5] == 6
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((3, 2, 16, 16), np.uint16))
    with pytest.raises(SessionError, match="holds labels of shape"):
        s.load(tmp_path / "other.tif")


def test_negative_labels_painted_by_hand_save_and_load(tmp_path):
    # regression: a save holding -1 "ignore" pixels was refused by load
    labels = np.zeros((8, 8), np.int32)
    labels[0, :] = -1
    labels[4:6, 4:6] = 1
    s = AnnotationSession(labels)
    tif, _ = s.save(tmp_path / "neg")
    t = AnnotationSession(np.zeros((8, 8), np.uint16))
    t.load(tif)
    assert np.array_equal(t.labels, labels) and t.labels.dtype == np.int32


# --- audit fixes ----------------------------------------------------------------------------


def test_background_id_is_not_an_object():
    labels = np.zeros((20, 20), np.uint16)
    labels[2:8, 2:8] = 1
    s = AnnotationSession(labels)
    for bad in (0, -1):
        with pytest.raises(SessionError, match="start at 1"):
            s.reopen(bad, P2)
        with pytest.raises(SessionError, match="start at 1"):
            s.delete(bad)
    assert s.editing is None and (labels == 1).sum() == 36 and labels.sum() == 36
    with pytest.raises(SessionError, match="corrupt"):
        from napari_clickseg._napari.session import ObjectRecord

        ObjectRecord.from_json({"id": 0})


def test_attach_follows_the_new_array_and_drops_records_of_absent_ids():
    s = AnnotationSession(np.zeros((20, 20), np.uint16))
    for center in ((5, 5), (14, 14)):
        s.add_click(*center, True, P2)
        s.commit(disk((20, 20), center, 3))
    new = s.labels.copy()
    new[new == 2] = 0  # object 2 erased, a painted object 7 added
    new[0:2, 18:20] = 7
    assert s.attach(new) == [2]
    assert s.labels is new and set(s.records) == {1} and s.next_id() == 8
    s.add_click(10, 3, True, P2)
    assert s.commit(disk((20, 20), (10, 3), 1)).id == 8 and (new == 8).any()
    with pytest.raises(SessionError, match="do not fit"):
        s.attach(np.zeros((5, 5), np.uint16))
    with pytest.raises(SessionError, match="integer"):
        s.attach(np.zeros((20, 20), np.float32))
    assert s.labels is new and set(s.records) == {1, 8}  # a refused attach changes nothing


def test_records_of_objects_erased_or_overwritten_go_with_their_pixels(tmp_path):
    # audit 23: an object erased by hand kept its clicks, and re-open + commit of its id
    # (which napari's "new label" hands out again) wrote the old object back
    s = AnnotationSession(np.zeros((20, 20), np.uint16))
    for center in ((5, 5), (14, 14), (5, 14)):
        s.add_click(*center, True, P2)
        s.commit(disk((20, 20), center, 2))
    s.labels[s.labels == 3] = 0  # erased by hand
    assert s.drop_absent([1, 3, 99]) == [3] and set(s.records) == {1, 2}
    s.labels[s.labels == 2] = 0
    with pytest.raises(SessionError, match="no object 2"):
        s.reopen(2)  # no stale clicks come back
    s.add_click(5, 5, True, P2)
    assert s.commit(disk((20, 20), (5, 5), 4), overwrite=True).id == 2  # covers object 1
    assert set(s.records) == {2}
    s.labels[s.labels == 2] = 0
    s.save(tmp_path / "a.tif")
    assert json.loads((tmp_path / "a.json").read_text())["objects"] == [] and not s.unsaved


def test_unsaved_follows_commits_saves_loads_and_hand_edits(tmp_path):
    s = AnnotationSession(np.zeros((10, 10), np.uint16))
    assert not s.unsaved
    s.add_click(5, 5, True, P2)
    assert not s.unsaved  # clicks are not committed work
    s.commit(disk((10, 10), (5, 5), 2))
    assert s.unsaved
    s.save(tmp_path / "a.tif")
    assert not s.unsaved
    s.labels[0, 0] = 9  # painted by hand
    assert s.unsaved
    s.load(tmp_path / "a.tif")
    assert not s.unsaved and s.labels[0, 0] == 0
    s.delete(1)
    assert s.unsaved


def test_save_writes_the_chosen_name_and_never_a_foreign_json(tmp_path):
    s = AnnotationSession(np.ones((6, 6), np.uint16))
    (tmp_path / "cells.tif").write_bytes(b"ORIG")
    tif, js = s.save(tmp_path / "cells.tiff")
    assert tif == tmp_path / "cells.tiff" and js == tmp_path / "cells.json"
    assert (tmp_path / "cells.tif").read_bytes() == b"ORIG"
    assert json.loads(js.read_text())["labels_file"] == "cells.tiff"
    # cells.json is now the provenance of cells.tiff: saving cells.tif must not take it
    with pytest.raises(SessionError, match="provenance of cells.tiff"):
        s.save(tmp_path / "cells.tif")
    assert (tmp_path / "cells.tif").read_bytes() == b"ORIG"
    # a json the user owns is never overwritten
    (tmp_path / "x.json").write_text('{"mine": 1}')
    with pytest.raises(SessionError, match="not a napari-clickseg"):
        s.save(tmp_path / "x.tif")
    assert (tmp_path / "x.json").read_text() == '{"mine": 1}' and not (tmp_path / "x.tif").exists()
    for bad in ("x.json", "x.png", "x.tif.bak"):
        with pytest.raises(SessionError, match=r"\.tif or \.tiff"):
            s.save(tmp_path / bad)
    assert (tmp_path / "x.json").read_text() == '{"mine": 1}'
    # re-saving over our own files works; upper-case suffixes are kept as chosen
    assert s.save(tmp_path / "cells.tiff")[0] == tmp_path / "cells.tiff"
    assert s.save(tmp_path / "B.TIF") == (tmp_path / "B.TIF", tmp_path / "B.json")
    t = AnnotationSession(np.zeros((6, 6), np.uint16))
    assert t.load(tmp_path / "cells.tiff") == [] and t.labels.all()


def test_load_reads_files_saved_before_labels_file_was_recorded(tmp_path):
    s = AnnotationSession(np.zeros((8, 8), np.uint16))
    s.add_click(4, 4, True, P2)
    s.commit(disk((8, 8), (4, 4), 2))
    tif, js = s.save(tmp_path / "old.tif")
    doc = json.loads(js.read_text())
    del doc["labels_file"]  # as version 0.x wrote it
    js.write_text(json.dumps(doc))
    t = AnnotationSession(np.zeros((8, 8), np.uint16))
    assert t.load(tif) == [] and len(t.records[1].clicks) == 1
    # the same json does not describe old.tiff: loaded without provenance, with a warning
    tif.rename(tmp_path / "old.tiff")
    u = AnnotationSession(np.zeros((8, 8), np.uint16))
    assert any("provenance of old.tif" in w for w in u.load(tmp_path / "old.tiff"))
    assert u.records == {} and u.labels.any()


def test_an_edit_elsewhere_leaves_unchanged_objects_their_clicks(tmp_path):
    # regression (review, session 29): after a harmless edit elsewhere (re-saved as uint32, or a pixel
    # of another object erased), objects whose positive click does not lie on their own pixels (a
    # later commit with "overwrite" took it, or the mask never held it) lost their clicks
    import tifffile

    s = AnnotationSession(np.zeros((64, 64), np.uint16))
    s.add_click(20, 20, True, P2)
    s.commit(disk((64, 64), (20, 20), 6))
    s.add_click(20, 28, True, P2)
    s.commit(disk((64, 64), (20, 29), 9), overwrite=True)  # takes object 1's clicked pixel
    s.add_click(45, 40, True, P2)
    s.commit(disk((64, 64), (45, 45), 4))  # the mask does not hold the clicked pixel
    s.add_click(50, 10, True, P2)
    s.commit(disk((64, 64), (50, 10), 3))
    tif, _ = s.save(tmp_path / "ann")
    saved = tifffile.imread(tif)
    for edited in (saved.astype(np.uint32), np.where(np.arange(64)[:, None] == 52, 0, saved).astype(np.uint16)):
        tifffile.imwrite(tif, edited)
        t = AnnotationSession(np.zeros((64, 64), np.uint16))
        warnings = t.load(tif)
        assert len(warnings) == 1 and "was changed after it was saved" in warnings[0]
        assert {k: r.clicks for k, r in t.records.items()} == {k: r.clicks for k, r in s.records.items()}
        assert not t.unsaved
