"""The dock's pure-Python parts on bad input and in recovery (no viewer, no Qt): branches the
other napari tests leave unrun (audit 26, coverage)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_clickseg._napari import finetune
from napari_clickseg._napari.adapter import (
    EngineHandle,
    ModelChoice,
    PredictionRequest,
    available_choices,
    run_prediction,
)
from napari_clickseg._napari.finetune import (
    AnnotatedImage,
    FineTuneSpec,
    TrainingProcess,
    export_committed,
    export_for_run,
)
from napari_clickseg._napari.planes import ImageGeometry, Plane
from napari_clickseg._napari.session import AnnotationSession, SessionError
from napari_clickseg.clicks import Click

P2 = Plane.full_2d()


def square(shape, r, c, half=4):
    m = np.zeros(shape, bool)
    m[r - half : r + half, c - half : c + half] = True
    return m


def session_with_two_objects(shape=(32, 32)):
    s = AnnotationSession(np.zeros(shape, np.uint16))
    for r, c in ((8, 8), (22, 22)):
        s.add_click(r, c, True, P2)
        s.commit(square(shape, r, c))
    return s


# --- loading files that are not what they claim ---------------------------------------------------


def test_load_refuses_unreadable_float_and_newer_files_and_keeps_the_objects(tmp_path):
    s = session_with_two_objects()
    before, records = s.labels.copy(), dict(s.records)

    def refused(path, match):
        with pytest.raises(SessionError, match=match):
            s.load(path)
        np.testing.assert_array_equal(s.labels, before)
        assert s.records == records

    (tmp_path / "garbage.tif").write_bytes(b"this is not a tiff file")
    refused(tmp_path / "garbage.tif", "cannot read labels file")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((32, 32), np.float32))
    refused(tmp_path / "float.tif", r"does not hold integer labels \(dtype float32\)")
    tif, js = AnnotationSession(before.copy()).save(tmp_path / "newer.tif")
    doc = json.loads(js.read_text())
    js.write_text(json.dumps({**doc, "version": 2}))
    refused(tif, r"newer napari-clickseg \(format 2\)")
    js.write_text(json.dumps({**doc, "version": True}))  # a bool is no version number
    refused(tif, "'version' must be an integer")


@pytest.mark.parametrize(
    "plane",
    [{"displayed": [1]}, {"displayed": [0, 0]}, {"displayed": "ab"}, {"index": [[0, 1]]}, [0, 1]],
)
def test_a_malformed_recorded_plane_is_a_session_error_naming_the_record(tmp_path, plane):
    s = session_with_two_objects()
    tif, js = s.save(tmp_path / "a.tif")
    doc = json.loads(js.read_text())
    doc["objects"][0]["plane"] = plane
    js.write_text(json.dumps(doc))
    fresh = AnnotationSession(np.zeros((32, 32), np.uint16))
    with pytest.raises(SessionError, match="corrupt object record"):
        fresh.load(tif)
    assert not fresh.labels.any() and fresh.records == {}


def test_plane_descriptions_and_views_are_checked():
    with pytest.raises(ValueError, match="two distinct displayed axes"):
        Plane.from_json({"displayed": [2, 2], "index": []})
    with pytest.raises(ValueError, match="not a plane description"):
        Plane.from_json({"displayed": [0, 1], "index": [[0]]})
    with pytest.raises(ValueError, match="plane of a 3D array used on a 2D array"):
        Plane((1, 2), ((0, 0),)).view(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"channel axis 3 outside the layer's 3 axes"):
        ImageGeometry((2, 8, 8), channel_axis=3)


@pytest.mark.parametrize(
    "labels, match",
    [
        ([[0, 1], [1, 0]], "must be a numpy array, got list"),
        (np.zeros(8, np.uint16), "at least 2 dimensions"),
        (np.zeros((4, 4), np.float32), "integer dtype"),
    ],
)
def test_a_session_needs_integer_label_arrays_and_attach_changes_nothing_otherwise(labels, match):
    with pytest.raises(SessionError, match=match):
        AnnotationSession(labels)
    s = session_with_two_objects()
    kept = s.labels
    with pytest.raises(SessionError, match=match):
        s.attach(labels)
    assert s.labels is kept and set(s.records) == {1, 2}


# --- committed objects are protected -----------------------------------------------------------------


def test_an_empty_commit_of_a_reopened_object_keeps_its_pixels():
    s = session_with_two_objects()
    before = s.labels.copy()
    s.reopen(1)
    with pytest.raises(SessionError, match="current object is empty"):
        s.commit(np.zeros((32, 32), bool))
    np.testing.assert_array_equal(s.labels, before)
    assert s.editing == 1 and s.records[1].revision == 1


def test_deleting_the_reopened_object_keeps_its_clicks_as_a_new_object():
    s = session_with_two_objects()
    s.reopen(2)
    s.add_click(20, 20, False, P2)
    assert s.delete(2) == 64
    # the clicks stay, but no undo step may bring back the deleted object as "being edited"
    assert s.editing is None and len(s.clicks) == 2 and not s.can_undo and not s.can_redo
    assert not s.undo() and 2 not in s.records and not (s.labels == 2).any()
    res = s.commit(square((32, 32), 22, 22))
    assert res.id == 2 and s.records[2].revision == 1 and len(s.records[2].clicks) == 2


def test_an_id_beyond_every_integer_type_is_refused_without_touching_the_labels():
    labels = np.zeros((8, 8), np.uint64)
    labels[0, 0] = np.iinfo(np.uint64).max
    s = AnnotationSession(labels)
    s.add_click(4, 4, True, P2)
    with pytest.raises(SessionError, match="does not fit any integer type"):
        s.commit(square((8, 8), 4, 4, half=2))
    assert s.labels is labels and np.count_nonzero(labels) == 1 and labels[0, 0] == np.iinfo(np.uint64).max
    assert s.records == {} and len(s.clicks) == 1  # the object is still open: nothing lost


def test_widening_signed_labels_keeps_their_negative_pixels():
    labels = np.zeros((16, 16), np.int8)
    labels[0, :] = -1
    labels[15, 15] = 127  # the largest id an int8 holds
    s = AnnotationSession(labels)
    s.add_click(8, 8, True, P2)
    assert s.commit(square((16, 16), 8, 8, half=2)).id == 128
    assert (s.labels[0] == -1).all() and s.next_id() == 129


# --- the engine adapter ------------------------------------------------------------------------------


def test_weights_files_of_one_name_get_their_own_dropdown_entries(tmp_path):
    files = [tmp_path / "a" / "w.safetensors", tmp_path / "b" / "w.safetensors",
             tmp_path / "c" / "w.safetensors", tmp_path / "run1" / "best.safetensors",
             tmp_path / "run2" / "best.safetensors"]
    choices = [c for c in available_choices(files=[str(f) for f in files]) if c.kind == "file"]
    assert [c.label for c in choices] == [
        "file: w.safetensors", "file: w.safetensors (2)", "file: w.safetensors (3)",
        "file: run1/best.safetensors", "file: run2/best.safetensors",
    ]
    assert [c.source for c in choices] == [str(f) for f in files]


class FlakyPredictor:
    """set_image fails the first time (e.g. out of memory), then works."""

    def __init__(self):
        self.set_images = 0
        self.predicts = 0

    def set_image(self, image, channel_axis=None, reference=None):
        self.set_images += 1
        if self.set_images == 1:
            raise MemoryError("out of memory")

    def predict(self, clicks, **options):
        self.predicts += 1
        return np.full((4, 4), 0.75, np.float64)


def test_a_failed_set_image_is_retried_by_the_next_request():
    pred = FlakyPredictor()
    h = EngineHandle(pred, ModelChoice("stub", "custom", "stub"), {})
    image = np.zeros((4, 4), np.uint8)

    def request(gen, clicks=(Click(1, 1, True),)):
        return PredictionRequest(gen, h, ("key",), image, None, tuple(clicks))

    first = run_prediction(request(1))
    assert first.prob is None and first.error == "out of memory" and h.image_key is None
    second = run_prediction(request(2))
    assert second.error is None and second.prob.dtype == np.float32 and second.prob[0, 0] == 0.75
    assert pred.set_images == 2 and h.image_key == ("key",) and second.set_image_seconds > 0
    third = run_prediction(request(3))  # same image: its features are reused
    assert pred.set_images == 2 and third.set_image_seconds == 0
    empty = run_prediction(request(4, clicks=()))  # no clicks: nothing to predict, no engine call
    assert empty.prob is None and empty.error is None and pred.predicts == 2


# --- fine-tuning --------------------------------------------------------------------------------------


def test_export_of_painted_objects_with_huge_ids_on_a_stack(tmp_path):
    # ids past 2**24 take the per-object bounding boxes (find_objects would list every id)
    data = (np.random.default_rng(0).random((3, 24, 24)) * 255).astype(np.uint8)
    labels = np.zeros((3, 24, 24), np.uint32)
    labels[1, 2:10, 2:10] = 3_000_000_000
    labels[2, 12:20, 12:20] = 20_000_000
    labels[0:3, 4:10, 14:20] = 4_000_000_000  # spans the three slices: no plane to train it on
    s = AnnotationSession(labels)
    g = ImageGeometry(data.shape)
    exported = export_committed([AnnotatedImage("img", s, g, data)], tmp_path / "d")
    assert exported[:3] == (2, 2, 1)
    got = {}
    for f in sorted((tmp_path / "d" / "labels").iterdir()):
        lab = tifffile.imread(f)
        img = tifffile.imread(tmp_path / "d" / "images" / f.name)
        ids = [int(i) for i in np.unique(lab) if i]
        assert len(ids) == 1 and lab.dtype == np.uint32
        z = next(z for z in range(3) if np.array_equal(img, data[z]))
        got[ids[0]] = z
    assert got == {3_000_000_000: 1, 20_000_000: 2}


def test_export_of_a_2d_image_leaves_out_pixels_painted_negative(tmp_path):
    from napari_clickseg.data.folder import FolderDataset

    data = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)
    labels = np.zeros((48, 48), np.int32)
    labels[0:4, :] = -1  # "ignore", painted by hand (saved and loaded as it is)
    s = AnnotationSession(labels)
    s.add_click(20, 20, True, P2)
    s.commit(square((48, 48), 20, 20, half=5))
    exported = export_committed([AnnotatedImage("img", s, ImageGeometry(data.shape), data)], tmp_path / "d")
    assert exported.objects == 1
    assert len(FolderDataset(tmp_path / "d").objects) == 1  # raised DataError: negative label values


class FixedClock:
    """Stands in for the ``datetime`` module in finetune: every run starts in one second."""

    class datetime:  # noqa: N801 (the module's name)
        @staticmethod
        def now(tz=None):
            import datetime as real

            return real.datetime(2030, 1, 2, 3, 4, 5)


def test_export_for_run_never_reuses_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(finetune, "_dt", FixedClock)
    s = session_with_two_objects()
    images = [AnnotatedImage("img", s, ImageGeometry((32, 32)), np.zeros((32, 32), np.uint8))]
    (tmp_path / "img-20300102-030405").mkdir()  # an earlier run's folder, with its weights
    (tmp_path / "img-20300102-030405" / "last.safetensors").write_bytes(b"weights")
    run_dir, data_dir, _ = export_for_run(images, tmp_path, "img")
    assert (run_dir.name, data_dir.name) == ("img-20300102-030405-1", "img-20300102-030405-1-data")
    assert (tmp_path / "img-20300102-030405" / "last.safetensors").read_bytes() == b"weights"
    for k in range(2, 1000):
        (tmp_path / f"img-20300102-030405-{k}").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OSError, match="no free run folder name for img-20300102-030405"):
        export_for_run(images, tmp_path, "img")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no data folder written


STUBBORN_TRAINER = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # e.g. stuck writing to a hung network disk
print("iteration 0 | loss 0.1", flush=True)
time.sleep(120)
"""


def test_at_exit_a_trainer_that_ignores_its_cancel_is_killed_not_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(FineTuneSpec, "command", lambda spec: [sys.executable, "-c", STUBBORN_TRAINER])
    proc = TrainingProcess(FineTuneSpec("early", "imagenet", [], str(tmp_path / "run")))
    try:
        assert next(proc.lines()).startswith("iteration 0")
        t0 = time.monotonic()
        finetune.stop_live(timeout=0.5)
        assert proc.cancelled and proc.proc.wait(timeout=5) == -9  # SIGKILL after the wait
        assert time.monotonic() - t0 < 5 and proc not in finetune._LIVE
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()


def test_progress_without_a_budget_is_unknown():
    spec = FineTuneSpec("early", "imagenet", [], "o", minutes=None, iterations=None)
    assert spec.progress("iteration 3 | loss 0.1", 30.0) is None

