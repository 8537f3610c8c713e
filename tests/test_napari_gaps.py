"""GUI tests of the dock on bad input, failures and recovery: branches the other dock tests
leave unrun (audit 26, coverage). Same fixtures and stub model as test_napari_widget.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile

import test_napari_widget as dock_tests  # skips this module too where there is no display
from napari_clickseg._napari.adapter import LOAD_FILE
from napari_clickseg._napari.finetune import FineTuneSpec
from napari_clickseg._napari.finetune_panel import FineTunePanel
from napari_clickseg._napari.widget import ClickSegWidget

pytestmark = pytest.mark.gui

FAST, DiskModel = dock_tests.FAST, dock_tests.DiskModel
mouse_click, n_points = dock_tests.mouse_click, dock_tests.n_points
fluo, open_dock = dock_tests.fluo, dock_tests.open_dock  # the fixtures


class BrokenModel(DiskModel):
    """Test stub: every forward pass fails, as a model out of memory does."""

    def decode(self, enc, image):
        raise RuntimeError("CUDA out of memory (stub)")


def dock(viewer, **models):
    widget = ClickSegWidget(
        viewer, models={"disk": DiskModel, **models}, allow_untrained=True, synchronous=True,
        predictor_kwargs=FAST,
    )
    viewer.window.add_dock_widget(widget, name="Click segmentation")
    return widget


# --- clicks that cannot be taken say why ------------------------------------------------------------


def test_clicks_that_cannot_be_taken_are_refused_with_a_reason(open_dock, fluo):
    viewer, w = open_dock(np.stack([fluo, fluo[::-1], fluo[:, ::-1]]))
    assert not w.add_click(70, 10, True) and w.last_status == "click outside the image: ignored"
    assert not w.add_click(10, -1, True) and w.session.clicks == ()
    assert not w.undo() and w.last_status == "nothing to undo"
    assert not w.redo() and w.last_status == "nothing to redo"
    assert not w.clear()
    assert w.commit() is None and "click on an object first" in w.last_status
    # 3D view: no plane to click on, from the dock's API or from points added by hand
    viewer.dims.ndisplay = 3
    assert not w.add_click(10, 10, True) and "switch the viewer to 2D" in w.last_status
    w.layers["positive"].add([1.0, 20.0, 20.0])
    assert w.session.clicks == () and "switch the viewer to 2D" in w.last_status
    w.layers["positive"].data = np.empty((0, 3))
    viewer.dims.ndisplay = 2
    # a channel axis that is one of the displayed axes: no plane either
    w.channel_combo.value = 2
    assert w.geometry.channel_axis == 2
    mouse_click(viewer, (1.0, 30.0, 30.0))
    assert w.session.clicks == () and "the channel axis (2) is displayed" in w.last_status
    # a channel axis that leaves fewer than two spatial axes: the dock stays as it was
    w.channel_combo.value = "auto"
    before = w.session
    w.bind(viewer.add_image(fluo, name="flat"), channel_axis=0)
    assert "cannot segment 'flat'" in w.last_status and "fewer than two spatial axes" in w.last_status
    assert w.image_layer.name == "image" and w.session is before
    assert w.add_click(30, 30, True) and w.commit() == 1
    # re-opening from a 3D view (no plane on screen) uses the object's recorded slice
    viewer.dims.ndisplay = 3
    assert w.reopen(1) and w.session.plane == w.session.records[1].plane
    assert n_points(w, "positive") == 1


# --- failures never write into the committed objects ----------------------------------------------


def test_a_failing_model_commits_nothing_and_another_model_recovers(make_napari_viewer, monkeypatch, fluo, tmp_path):
    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path / "no-weights"))
    viewer = make_napari_viewer()
    viewer.add_image(fluo, name="image")
    w = dock(viewer, broken=BrokenModel)
    assert w.select_model("custom: broken")
    assert w.add_click(30, 30, True)
    assert w.last_status == "prediction failed: CUDA out of memory (stub)"
    assert w.current_mask() is None and not w.layers["preview"].data.any()
    assert w.commit() is None and w.last_status == "nothing to commit: the prediction failed"
    assert not w.layers["committed"].data.any() and w.session.records == {}
    assert len(w.session.clicks) == 1  # the clicks wait for a model that works
    assert not w.select_model("custom: nope") and w.last_status == "unknown model 'custom: nope'"
    assert w.handle.choice.label == "custom: broken"
    assert w.select_model("custom: disk") and w.layers["preview"].data[30, 30] == 1
    assert w.commit() == 1 and w.session.records[1].model["name"] == "custom: disk"


def test_a_commit_whose_pixels_all_belong_to_other_objects_keeps_them(open_dock, fluo):
    viewer, w = open_dock(fluo)
    w.add_click(30, 30, True)
    assert w.commit() == 1
    first = w.layers["committed"].data.copy()
    w.add_click(30, 30, True)  # the same disk again
    assert w.commit() is None
    assert w.last_status == "nothing to commit: the current object is empty (all its pixels belong to other objects)"
    np.testing.assert_array_equal(w.layers["committed"].data, first)
    assert len(w.session.clicks) == 1  # still open: the user may allow overwriting
    w.overwrite_check.value = True
    assert w.commit() == 2 and not (w.layers["committed"].data == 1).any()
    assert set(w.session.records) == {2}  # object 1 lost every pixel: its record went too
    # deleting an object while its layer is gone brings the layer back without it
    viewer.layers.remove(w.layers["committed"])
    assert w.delete(2) and not w.layers["committed"].data.any() and w.session.records == {}


def test_ids_past_uint16_widen_the_committed_layer(open_dock, fluo, tmp_path):
    viewer, w = open_dock(fluo)
    layer = w.layers["committed"]
    assert layer.data.dtype == np.uint16
    layer.data[0:4, 0:4] = 65535  # painted by hand with the largest uint16 id
    w.add_click(30, 30, True)
    assert w.commit() == 65536
    assert w.layers["committed"] is layer and layer.data.dtype == np.uint32
    assert np.may_share_memory(layer.data, w.session.labels)
    assert (layer.data[0:4, 0:4] == 65535).all() and layer.data[30, 30] == 65536
    w.add_click(50, 50, True)
    assert w.commit() == 65537 and layer.data[50, 50] == 65537
    tif, _ = w.save_annotations(tmp_path / "big.tif")
    # loading such labels for another image (a new uint16 layer) widens that layer too
    w.bind(viewer.add_image(fluo.copy(), name="fresh"))
    assert w.layers["committed"] is not layer and w.layers["committed"].data.dtype == np.uint16
    assert w.load_annotations(tif)
    assert w.layers["committed"].data.dtype == np.uint32
    np.testing.assert_array_equal(w.layers["committed"].data, layer.data)
    assert np.may_share_memory(w.layers["committed"].data, w.session.labels)
    assert w.reopen(65537) and n_points(w, "positive") == 1


# --- save and load errors --------------------------------------------------------------------------


def test_save_and_load_errors_are_reported_and_keep_the_objects(open_dock, fluo, tmp_path, monkeypatch):
    viewer, w = open_dock(fluo)
    w.add_click(30, 30, True)
    assert w.commit() == 1
    objects = w.layers["committed"].data.copy()
    (tmp_path / "a-file").write_text("not a folder")
    assert w.save_annotations(tmp_path / "a-file" / "labels.tif") is None
    assert w.last_status.startswith("could not save:") and w.session.unsaved
    (tmp_path / "dir.tif").mkdir()
    assert w.save_annotations(tmp_path / "dir.tif") is None and "it is a folder" in w.last_status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dir.tif"]
    # loading: a wrong suffix, a labels file of another shape, an unreadable file
    tif, _ = w.save_annotations(tmp_path / "mine.tif")
    assert not w.load_annotations(tmp_path / "mine.png")
    assert "saved as a .tif or .tiff labels file" in w.last_status
    tifffile.imwrite(tmp_path / "small.tif", np.ones((8, 8), np.uint16))
    assert not w.load_annotations(tmp_path / "small.tif")
    assert "holds labels of shape (8, 8); this image needs (64, 64)" in w.last_status
    (tmp_path / "broken.tif").write_bytes(b"not a tiff: cut off in a download")
    assert not w.load_annotations(tmp_path / "broken.tif") and "cannot read labels file" in w.last_status
    np.testing.assert_array_equal(w.layers["committed"].data, objects)
    assert set(w.session.records) == {1} and not w.session.unsaved
    # the dialogs: cancelled, and a name of the wrong kind typed
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda *a: pytest.fail("nothing to ask"))
    monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a: "")
    w._status("before")
    w.save_button.clicked.emit()
    w.load_button.clicked.emit()
    assert w.last_status == "before"
    monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a: str(tmp_path / "labels.npy"))
    w.save_button.clicked.emit()
    assert w.last_status.startswith("could not save: annotations are saved as a .tif or .tiff")
    assert not (tmp_path / "labels.npy").exists() and not (tmp_path / "labels.json").exists()
    # with no image there is nothing to save or load into
    viewer.layers.remove("image")
    assert w.save_annotations(tmp_path / "x.tif") is None and w.last_status == "nothing to save: no image"
    assert not w.load_annotations(tif) and w.last_status == "load an image first"


# --- models ------------------------------------------------------------------------------------------


def test_the_load_file_entry_of_the_model_dropdown(open_dock, fluo, tmp_path, monkeypatch):
    import torch

    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    files, shas = [], []
    for sub, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        (tmp_path / sub).mkdir()
        files.append(tmp_path / sub / "w.safetensors")
        shas.append(save_weights(create_model("early", decoder_width=8), files[-1], trained=True))
    _, w = open_dock(fluo)
    w.add_click(30, 30, True)
    monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a, **k: "")  # the dialog is cancelled
    w.model_combo.value = LOAD_FILE
    assert w.model_combo.value == "custom: disk" and w.handle.choice.label == "custom: disk"
    for f in files:  # two files of one name, from two folders
        monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a, f=f, **k: str(f))
        w.model_combo.value = LOAD_FILE
    assert w.model_combo.value == "file: w.safetensors (2)"
    assert w.handle.provenance["weights_sha256"] == shas[1]
    assert w.handle.provenance["weights_path"] == str(files[1])
    w.model_combo.value = "file: w.safetensors"
    assert w.handle.provenance["weights_sha256"] == shas[0] and len(w.session.clicks) == 1
    # a broken file offered without selecting it (a fine-tune's result) is not listed
    bad = tmp_path / "run" / "last.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(b"truncated")
    assert not w.load_weights_file(bad, select=False) and w.last_status.startswith(f"cannot load {bad}")
    assert not any("last.safetensors" in label for label in w.model_labels())


# --- committed layers changed while the dock was away ----------------------------------------------


def test_a_committed_layer_edited_while_the_dock_was_closed(open_dock, fluo):
    viewer, w = open_dock(fluo)
    for rc in ((20, 20), (45, 45)):
        w.add_click(*rc, True)
        w.commit()
    layer = w.layers["committed"]
    next(iter(viewer.window._wrapped_dock_widgets.values())).destroyOnClose()
    edited = layer.data.copy()
    edited[edited == 2] = 0  # object 2 erased and new pixels painted, by hand or a script
    edited[0:3, 0:3] = 5
    layer.data = edited
    w2 = dock(viewer)
    assert w2.layers["committed"] is layer and w2.session.labels is layer.data
    assert set(w2.session.records) == {1}  # no clicks for an object that is gone
    assert w2.reopen(1) and n_points(w2, "positive") == 1
    w2.clear()
    w2.add_click(45, 45, True)
    assert w2.commit() == 6 and (layer.data == 5).sum() == 9


def park_and_replace(open_dock, fluo):
    """Object 1 on "image", the dock moved to image "B", then the parked layer of "image" given
    data of another shape. Returns (viewer, widget, parked layer, its session, its objects)."""
    viewer, w = open_dock(fluo)
    w.add_click(30, 30, True)
    w.commit()
    parked, session = w.layers["committed"], w.session
    objects = parked.data.copy()
    w.bind(viewer.add_image(fluo[::-1].copy(), name="B"))
    assert parked.name == "committed objects (image)"
    parked.data = np.zeros((10, 10), np.uint16)  # e.g. a script writing into the wrong layer
    return viewer, w, parked, session, objects


def test_a_parked_committed_layer_given_data_of_another_shape_keeps_its_objects(open_dock, fluo):
    viewer, w, parked, session, objects = park_and_replace(open_dock, fluo)
    assert "does not fit labels of shape (64, 64)" in w.last_status
    assert parked.name == "committed objects (image) (replaced data)"
    assert "clickseg_image_id" not in parked.metadata and (parked.data == 0).all()
    new = [la for la in viewer.layers if la.metadata.get("napari_clickseg_session") is session]
    assert len(new) == 1 and new[0] is not parked
    np.testing.assert_array_equal(new[0].data, objects)
    assert w.layers["committed"] is not new[0] and w.image_layer.name == "B"  # the dock stays on B
    w.bind(viewer.layers["image"])
    assert w.layers["committed"] is new[0] and set(w.session.records) == {1}
    assert w.reopen(1) and n_points(w, "positive") == 1


def test_the_layer_taking_over_a_parked_layers_objects_is_named_after_its_image(open_dock, fluo):
    viewer, w, parked, session, objects = park_and_replace(open_dock, fluo)
    new = next(la for la in viewer.layers if la.metadata.get("napari_clickseg_session") is session)
    assert new.name == "committed objects (image)"  # was "committed objects [1]"


def test_image_data_that_no_longer_fits_the_channel_axis_rebinds_without_it(open_dock, fluo):
    viewer, w = open_dock(np.stack([fluo, fluo[::-1], fluo[:, ::-1]]))
    w.channel_combo.value = 0
    w.add_click(30, 30, True)
    assert w.commit() == 1
    old = w.layers["committed"]
    w.image_layer.data = fluo.copy()  # 2D now: axis 0 would leave one spatial axis
    assert w.geometry.channel_axis is None and w.geometry.spatial_shape == (64, 64)
    assert w.channel_combo.value == "auto" and old.name == "committed objects (image, channels on axis 0)"
    assert (old.data == 1).any() and w.add_click(30, 30, True) and w.commit() == 1


# --- fine-tuning from the dock ---------------------------------------------------------------------


FAILING_TRAINER = "import sys; print('reading data'); print('DataError: boom', flush=True); sys.exit(3)"

CANCELLED_TRAINER = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(*_):
    if sys.argv[2] == "ckpt":
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint.pt").write_text("ckpt")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("iteration 0 | loss 0.5", flush=True)
time.sleep(30)
"""


def test_finetune_guards_failures_and_cancelled_runs(open_dock, fluo, tmp_path, monkeypatch):
    said = []
    status = ClickSegWidget._status
    monkeypatch.setattr(ClickSegWidget, "_status", lambda self, msg: said.append(msg) or status(self, msg))
    stack = np.stack([fluo, fluo[::-1], fluo[:, ::-1]])
    viewer, w = open_dock(stack)
    ft = w.finetune
    ft.root = tmp_path / "ft"
    w.select_model(next(lab for lab in w.model_labels() if lab.startswith("UNTRAINED early")))
    assert ft.init_weights() == "imagenet"  # an untrained model starts from ImageNet features
    w.select_model("custom: disk")
    viewer.dims.set_point(0, 1)
    w.add_click(30, 30, True)
    assert w.commit() == 1
    w.layers["committed"].data[:, 5:12, 5:12] = 9  # painted through every slice: no plane for it
    ft.training = object()  # a run in progress: a second one is refused, nothing exported
    assert not ft.start() and w.last_status == "a training run is in progress"
    ft.training = None
    assert not (tmp_path / "ft").exists()
    # a failing trainer: its last lines are shown and the buttons come back
    seen = []
    monkeypatch.setattr(FineTuneSpec, "command", lambda spec: seen.append(spec) or [sys.executable, "-c", FAILING_TRAINER])
    monkeypatch.setattr(FineTunePanel, "init_weights", lambda self: "imagenet")
    extra = tmp_path / "my-data"
    extra.mkdir()
    ft.folder.value = extra  # the user's own training folder joins the exported one
    assert ft.start()
    assert seen[-1].data_dirs[1] == str(extra) and seen[-1].data_dirs[0].endswith("-data")
    started = next(m for m in said if m.startswith("fine-tuning"))
    assert "on 1 objects (1 plane(s))" in started and "left out: 1 spanning several planes" in started
    assert w.last_status == "training failed (exit 3): reading data | DataError: boom"
    assert ft.training is None and ft.start_button.enabled and not ft.cancel_button.enabled
    # cancelled runs, with and without a checkpoint: said so, and no weights join the list
    ft.folder.value = None
    real_progress = FineTunePanel._on_progress
    monkeypatch.setattr(FineTunePanel, "_on_progress", lambda self, line: real_progress(self, line) or self.cancel())
    labels = w.model_labels()
    for mode, expected in (("ckpt", "training cancelled; its checkpoint is in "),
                           ("none", "training cancelled before it wrote a checkpoint")):
        monkeypatch.setattr(FineTuneSpec, "command",
                            lambda spec, m=mode: [sys.executable, "-c", CANCELLED_TRAINER, spec.out, m])
        assert ft.start()
        assert w.last_status.startswith(expected) and not ft.progress.visible
        assert w.model_labels() == labels and ft.start_button.enabled
    assert len(list((tmp_path / "ft").glob("*/checkpoint.pt"))) == 1


def test_finetune_without_a_model_says_so(make_napari_viewer, monkeypatch, fluo, tmp_path):
    monkeypatch.delenv("NAPARI_CLICKSEG_ALLOW_UNTRAINED", raising=False)
    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path / "no-weights"))
    viewer = make_napari_viewer()
    viewer.add_image(fluo)
    w = ClickSegWidget(viewer, synchronous=True)
    w.finetune.root = tmp_path / "ft"
    assert w.handle is None
    assert not w.finetune.start()
    assert w.last_status == "fine-tuning needs a model: choose one or load a weights file"
    assert not (tmp_path / "ft").exists()

