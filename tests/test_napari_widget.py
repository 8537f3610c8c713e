"""GUI tests: the real dock widget in a real viewer (napari's make_napari_viewer, under Xvfb).

Fast by construction: small images, synchronous predictions (except the one test of the
worker), and a stub model whose output is a disk around the positive clicks (cut by the
negative ones), so every prediction is deterministic and non-empty. One test also runs the
random-initialised registered models, which is what the dock offers when
NAPARI_CLICKSEG_ALLOW_UNTRAINED=1.

Set CLICKSEG_SCREENSHOT=1 to write docs/screenshot.png.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

if sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
):
    pytest.skip(
        "GUI tests need a display: install Xvfb (pytest-xvfb starts it)", allow_module_level=True
    )

import torch  # noqa: E402
from torch import nn  # noqa: E402

from napari_clickseg._napari.finetune_panel import FineTunePanel  # noqa: E402
from napari_clickseg._napari.planes import Plane  # noqa: E402
from napari_clickseg._napari.sample_data import load_sample  # noqa: E402
from napari_clickseg._napari.widget import KEYS, LAYER_NAMES, ClickSegWidget  # noqa: E402
from napari_clickseg.models.base import ClickSegModel, ModelInputs  # noqa: E402

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]
FAST = {
    "device": "cpu",
    "dtype": "float32",
    "target_size": 64,
    "min_crop_size": 32,
    "first_window": 128,
    "max_upscale": 1.0,  # the stub models draw in crop pixels: keep crop and image pixels alike
}


class DiskModel(ClickSegModel):
    """Test stub: foreground = within ``radius`` crop pixels of a positive click and nearer
    to it than to any negative click. Not registered (stays out of the model registry)."""

    inputs = ModelInputs(encoding="distance")

    def __init__(self, radius: float = 6.0) -> None:
        super().__init__()
        self.radius = radius
        self.gain = nn.Parameter(torch.ones(()))

    @property
    def fbrs_channels(self) -> int:
        return 2

    def encode(self, image, image_feats, click_maps, prev_mask):
        return {"x": click_maps * self.gain}

    def decode(self, enc, image):
        pos, neg = enc["x"][:, :1] * 255, enc["x"][:, 1:2] * 255
        return {"logits": torch.minimum(self.radius - pos, neg - pos)}


@pytest.fixture
def fluo() -> np.ndarray:
    return load_sample("nuclei_fluorescence")[0][:64, :64]


@pytest.fixture
def open_dock(make_napari_viewer, monkeypatch, tmp_path_factory):
    """open_dock(image, **layer_kwargs) -> (viewer, widget) with the disk stub model selected
    (shipped weights, if any, are hidden so the tests do not depend on them).

    napari's canvas runs a full garbage collection on every layer removal (about 0.15 s each,
    half of these tests' time); here it is skipped (the tests of what is freed collect
    themselves)."""
    import types

    import napari._vispy.canvas as canvas

    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path_factory.mktemp("no-weights")))
    monkeypatch.setattr(canvas, "gc", types.SimpleNamespace(collect=lambda *a, **k: 0))

    def _open(image, sync=True, **layer_kwargs):
        viewer = make_napari_viewer()
        viewer.add_image(image, name="image", **layer_kwargs)
        widget = ClickSegWidget(
            viewer,
            models={"disk": DiskModel},
            allow_untrained=True,
            synchronous=sync,
            predictor_kwargs=FAST,
        )
        viewer.window.add_dock_widget(widget, name="Click segmentation")
        assert widget.model_combo.value == "custom: disk"
        return viewer, widget

    return _open


def unwrap(obj):
    return getattr(obj, "__wrapped__", obj)


def n_points(widget, key):
    return len(widget.layers[key].data)


class FakeMouse:
    """The attributes napari's mouse callbacks read."""

    def __init__(self, position, button=1, modifiers=(), pos=(100, 100)):
        self.position, self.button, self.modifiers, self.pos = (
            tuple(position),
            button,
            modifiers,
            pos,
        )
        self.type = "mouse_press"
        self.handled = False


def mouse_click(viewer, position, button=1, modifiers=()):
    """Press and release through napari's own callback dispatch."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    ev = FakeMouse(position, button, modifiers)
    mouse_press_callbacks(viewer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(viewer, ev)


# --- opening the dock ---------------------------------------------------------------------------


def test_dock_from_manifest_binds_to_image(make_napari_viewer, monkeypatch, fluo, tmp_path):
    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path))  # no shipped weights here
    monkeypatch.setenv("NAPARI_CLICKSEG_ALLOW_UNTRAINED", "1")
    monkeypatch.setenv("NAPARI_CLICKSEG_SYNC", "1")
    viewer = make_napari_viewer()
    layer = viewer.add_image(fluo, name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-clickseg", "Click segmentation")
    assert isinstance(widget, ClickSegWidget)
    # plugins get napari's PublicOnlyProxy of the viewer and its layers
    assert unwrap(widget.image_layer) is layer and unwrap(widget.image_combo.value) is layer
    names = [la.name for la in viewer.layers]
    for n in LAYER_NAMES.values():
        assert n in names
    pos, neg = widget.layers["positive"], widget.layers["negative"]
    assert pos.current_face_color != neg.current_face_color
    # only untrained models are offered (no shipped weights here), clearly labelled
    labels = widget.model_labels()
    assert labels and all(lab.startswith("UNTRAINED") for lab in labels if "custom" not in lab)
    assert "UNTRAINED" in widget.model_combo.value
    assert "cpu" in widget.device_label.value or "cuda" in widget.device_label.value
    # a plain click in the canvas through napari's mouse dispatch adds a positive point
    mouse_click(viewer, (30.0, 30.0))
    assert n_points(widget, "positive") == 1 and len(widget.session.clicks) == 1
    assert widget._result is not None and widget._result.prob is not None
    assert widget._result.prob.shape == (64, 64)
    # shift-click and right click are negative
    mouse_click(viewer, (10.0, 10.0), modifiers=("Shift",))
    mouse_click(viewer, (50.0, 12.0), button=2)
    assert n_points(widget, "negative") == 2
    assert [c.positive for c in widget.session.clicks] == [True, False, False]
    assert "ms" in widget.time_label.value
    # regression (docs audit, session 29): a commit read a private layer attribute through the
    # proxy, which napari warns about (a popup) and will refuse from 0.10
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        widget.commit()
    assert widget.layers["committed"].data.max() == 1


def test_dock_without_models_says_so(make_napari_viewer, monkeypatch, fluo):
    monkeypatch.delenv("NAPARI_CLICKSEG_ALLOW_UNTRAINED", raising=False)
    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", "/nonexistent-weights-dir")
    viewer = make_napari_viewer()
    viewer.add_image(fluo)
    widget = ClickSegWidget(viewer, synchronous=True)
    assert widget.model_labels() == [] and widget.handle is None
    assert "load" in widget.model_combo.value.lower()
    assert widget.add_click(10, 10, True)
    assert "no model" in widget.last_status
    assert widget.commit() is None


# --- clicking, predicting, committing --------------------------------------------------------------


def test_points_predict_and_commit_two_objects_without_overlap_loss(open_dock, fluo):
    viewer, w = open_dock(fluo)
    assert w.add_click(20, 20, True)
    preview = w.layers["preview"].data
    first = preview.sum()
    assert first > 0 and preview[20, 20] == 1
    assert w.add_click(20, 24, False)  # a negative click cuts the disk
    assert 0 < preview.sum() < first and preview[20, 24] == 0
    oid = w.commit()
    assert oid == 1 and w.session.clicks == ()
    committed = w.layers["committed"].data
    area1 = int((committed == 1).sum())
    assert area1 > 0 and preview.sum() == 0
    assert n_points(w, "positive") == 0 and n_points(w, "negative") == 0
    # second object overlapping the first: the first keeps all its pixels
    w.add_click(20, 28, True)
    assert w.commit() == 2
    assert int((committed == 1).sum()) == area1 and (committed == 2).sum() > 0
    assert "left to other objects" in w.last_status
    rec = w.session.records[2]
    assert rec.model["name"] == "custom: disk" and rec.settings["threshold"] == 0.5
    assert rec.settings["structural_integrity"] is True
    # with the setting on, a commit may take pixels from others
    w.overwrite_check.value = True
    w.add_click(20, 20, True)
    assert w.commit() == 3 and int((committed == 1).sum()) < area1


def test_threshold_and_settings_repredict(open_dock, fluo):
    _, w = open_dock(fluo)
    w.add_click(30, 30, True)
    gen = w._generation
    w.graphcut_check.value = True
    assert w._generation > gen and w._result.prob is not None
    area = w.layers["preview"].data.sum()
    gen = w._generation
    w.threshold_slider.value = 0.95  # post-processing judges by it: re-predicted from the history
    assert w._generation > gen and w.handle.predictor.last_stats["from_history"]
    assert w.layers["preview"].data.sum() <= area


def test_undo_redo_clear_and_keys(open_dock, fluo):
    viewer, w = open_dock(fluo)
    for r, c, p in ((10, 10, True), (30, 30, True), (12, 30, False)):
        w.add_click(r, c, p)
    assert w.undo() and n_points(w, "negative") == 0 and n_points(w, "positive") == 2
    assert w.redo() and n_points(w, "negative") == 1
    assert w.clear() and n_points(w, "positive") == 0 and w.layers["preview"].data.sum() == 0
    assert w.undo() and len(w.session.clicks) == 3 and w.layers["preview"].data.sum() > 0

    from napari.utils.key_bindings import coerce_keybinding

    def press(key):
        viewer.keymap[coerce_keybinding(key)](viewer)

    press(KEYS["undo"])
    assert len(w.session.clicks) == 2
    press(KEYS["redo"])
    assert len(w.session.clicks) == 3
    press(KEYS["clear"])
    assert w.session.clicks == ()
    press(KEYS["toggle"])
    assert w.negative_check.value
    mouse_click(viewer, (40.0, 40.0))
    assert n_points(w, "negative") == 1
    press(KEYS["toggle"])
    mouse_click(viewer, (20.0, 20.0))
    press(KEYS["commit"])
    assert w.session.records and w.session.clicks == ()
    # the image layer carries the bindings too (it is the active layer while clicking)
    assert coerce_keybinding(KEYS["commit"]) in w.image_layer.keymap


def test_editing_points_layers_by_hand(open_dock, fluo):
    _, w = open_dock(fluo)
    pos, neg = w.layers["positive"], w.layers["negative"]
    pos.add([15.0, 15.0])  # as napari's add mode does
    assert len(w.session.clicks) == 1 and w.layers["preview"].data[15, 15] == 1
    neg.add([15.0, 19.0])
    assert [c.positive for c in w.session.clicks] == [True, False]
    pos.data = np.array([[40.0, 40.0]])  # moved
    assert (w.session.clicks[0].row, w.session.clicks[0].positive) == (40, True)
    assert w.layers["preview"].data[40, 40] == 1 and w.layers["preview"].data[15, 15] == 0
    neg.selected_data = {0}
    neg.remove_selected()
    assert [c.positive for c in w.session.clicks] == [True]
    assert w.undo() and len(w.session.clicks) == 2  # hand edits are undoable too
    pos.add([500.0, 500.0])  # outside the image: ignored with a message
    assert len(w.session.clicks) == 2 and "outside" in w.last_status


def test_pasted_points_are_clicks_at_once(open_dock, fluo):
    # regression: napari's paste emits no data event, so pasted points waited for the next edit
    _, w = open_dock(fluo)
    pos = w.layers["positive"]
    pos.add([15.0, 15.0])
    w.layers["negative"].add([40.0, 40.0])
    pos.selected_data = {0}
    pos._copy_data()  # Ctrl+C, Ctrl+V (the paste lands on the same spot in 2D)
    pos._paste_data()
    assert len(pos.data) == 2 and len(w.session.clicks) == 3
    # the copy is the newest click (it kept the original's order, and came before the negative one)
    assert [c.positive for c in sorted(w.session.clicks, key=lambda c: c.order)] == [True, False, True]
    pos.events.set_data()  # a refresh with nothing new changes nothing
    assert len(w.session.clicks) == 3 and w.undo() and len(w.session.clicks) == 2


def test_reopen_and_delete(open_dock, fluo):
    _, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.add_click(20, 25, False)
    oid = w.commit()
    w.add_click(45, 45, True)
    w.commit()
    committed = w.layers["committed"].data
    before = committed == oid
    w.object_spin.value = oid
    w.reopen_button.clicked.emit()
    assert w.session.editing == oid
    assert n_points(w, "positive") == 1 and n_points(w, "negative") == 1
    w.add_click(20, 18, False)  # correct it
    assert w.commit() == oid
    after = committed == oid
    assert after.sum() < before.sum() and w.session.records[oid].revision == 2
    assert len(w.session.records[oid].clicks) == 3
    # picking an object with napari's label picker fills the id box
    w.layers["committed"].selected_label = 2
    assert w.object_spin.value == 2
    assert w.delete(2) and not (committed == 2).any() and 2 not in w.session.records
    assert not w.delete(2) and "no object" in w.last_status


def test_switch_model_keeps_clicks(open_dock, fluo):
    _, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.add_click(40, 40, False)
    disk_prob = w._result.prob.copy()
    untrained = next(lab for lab in w.model_labels() if lab.startswith("UNTRAINED early"))
    w.model_combo.value = untrained
    assert w.handle.choice.label == untrained and len(w.session.clicks) == 2
    assert w._result.prob is not None and not np.array_equal(w._result.prob, disk_prob)
    assert w.handle.provenance["trained"] is False
    w.refinement_combo.value = "f-BRS"  # refinement runs through the engine
    assert w._result.error is None and w._result.prob is not None
    w.refinement_combo.value = "off"
    w.model_combo.value = "custom: disk"
    assert np.array_equal(w._result.prob, disk_prob)


def test_load_weights_file_errors_keep_current_model(open_dock, fluo, tmp_path):
    _, w = open_dock(fluo)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    assert not w.load_weights_file(bad)
    assert "cannot load" in w.last_status and w.handle.choice.label == "custom: disk"
    assert w.model_combo.value == "custom: disk"
    # a random-init file is refused for use (files must hold trained weights)
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    f = tmp_path / "untrained.safetensors"
    save_weights(create_model("early"), f, trained=False)
    assert not w.load_weights_file(f) and "untrained" in w.last_status


def test_trained_weights_file_is_selectable(open_dock, fluo, tmp_path):
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    f = tmp_path / "mine.safetensors"
    sha = save_weights(create_model("early"), f, trained=True)
    _, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.load_weights_file(f)
    assert w.model_combo.value == "file: mine.safetensors"
    assert w.handle.provenance["weights_sha256"] == sha
    assert len(w.session.clicks) == 1 and w._result.prob is not None


# --- images as users have them ---------------------------------------------------------------


def test_3d_stack_segments_the_shown_slice(open_dock, fluo):
    stack = np.stack([np.roll(fluo, 3 * z, axis=1) for z in range(5)]).astype(np.uint16) * 200
    viewer, w = open_dock(stack, scale=(2.0, 1.0, 1.0))
    viewer.dims.set_point(0, 6.0)  # world z = 6 -> slice 3 at z spacing 2
    plane = w.current_plane()
    assert plane == Plane((1, 2), ((0, 3),))
    mouse_click(viewer, (6.0, 30.0, 30.0))
    assert w.session.plane == plane
    assert w.layers["positive"].data.tolist() == [[3.0, 30.0, 30.0]]
    prev = w.layers["preview"].data
    assert prev[3].sum() > 0 and prev[[0, 1, 2, 4]].sum() == 0
    oid = w.commit()
    lab = w.layers["committed"].data
    assert (
        lab.shape == stack.shape
        and (lab[3] == oid).sum() > 0
        and (lab[[0, 1, 2, 4]] == oid).sum() == 0
    )
    # another slice, another object; clicking elsewhere while an object is open is refused
    viewer.dims.set_point(0, 2.0)
    w.add_click(10, 10, True)
    viewer.dims.set_point(0, 8.0)
    assert not w.add_click(10, 10, True) and "another slice" in w.last_status
    viewer.dims.set_point(0, 2.0)
    assert w.commit() == 2 and (lab[1] == 2).sum() > 0
    # re-opening object 1 moves the viewer back to its slice
    w.reopen(oid)
    assert w.current_plane() == plane


def test_rgb_image(open_dock):
    he = load_sample("nuclei_he")[0][:64, :64]
    _, w = open_dock(he, rgb=True)
    assert w.geometry.rgb and w.geometry.spatial_shape == (64, 64)
    w.add_click(30, 30, True)
    _, image, ch, _ = w._plane_image(w.session.plane)
    assert image.shape == (64, 64, 3) and ch == 2
    assert w.commit() == 1 and w.layers["committed"].data.shape == (64, 64)


def test_multichannel_uint16_with_chosen_channel_axis(open_dock, fluo):
    data = np.stack([fluo.astype(np.uint16) * 257, (255 - fluo).astype(np.uint16) * 100, fluo * 3])
    viewer, w = open_dock(data)
    w.channel_combo.value = 0  # the user says axis 0 holds channels
    assert w.geometry.channel_axis == 0 and w.geometry.spatial_shape == (64, 64)
    assert w.layers["committed"].data.shape == (1, 64, 64)
    w.add_click(30, 30, True)
    _, image, ch, _ = w._plane_image(w.session.plane)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint16 and ch == 2
    assert w.commit() == 1 and (w.session.labels == 1).sum() > 0
    # the annotation layers show on every channel
    viewer.dims.set_point(0, 2)
    assert w.current_plane() == Plane((0, 1), ())
    assert w.layers["committed"]._slice.image.raw.max() == 1
    # each channel choice keeps its own committed layer, named after it while parked
    for axis in ("auto", 0, "auto"):
        w.channel_combo.value = axis
    names = sorted(la.name for la in viewer.layers if la.name.startswith("committed"))
    assert names == ["committed objects", "committed objects (image, channels on axis 0)"]
    w.channel_combo.value = 0
    assert w.session.object_ids() == [1]


def test_parked_layers_of_one_image_at_two_shapes_get_their_own_names(open_dock, fluo):
    # regression (review 25): the second was named "committed objects (image) [1]"
    viewer, w = open_dock(np.stack([fluo] * 3))
    w.add_click(30, 30, True)
    w.commit()
    viewer.layers["image"].data = np.stack([fluo] * 4)  # the image's data changes shape
    w.add_click(30, 30, True)
    w.commit()
    viewer.add_image(fluo, name="other")
    w.bind(viewer.layers["other"])
    names = sorted(la.name for la in viewer.layers if la.name.startswith("committed"))
    assert names == [
        "committed objects", "committed objects (image)", "committed objects (image, 4x64x64)"
    ]


def test_float_image(open_dock, fluo):
    _, w = open_dock(fluo.astype(np.float32) / 1000.0)
    w.add_click(30, 30, True)
    assert w.commit() == 1


# --- threads -----------------------------------------------------------------------------------


def test_worker_newer_click_supersedes_older(open_dock, fluo, qtbot):
    _, w = open_dock(fluo, sync=False)
    w.add_click(20, 20, True)
    w.add_click(40, 40, True)
    w.add_click(30, 50, False)
    assert w.busy
    qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert w._result is not None and w._result.generation == w._generation
    prev = w.layers["preview"].data
    assert prev[20, 20] == 1 and prev[40, 40] == 1 and prev[30, 50] == 0
    # commit while a prediction is pending computes it first
    w.add_click(10, 50, True)
    oid = w.commit()
    qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert oid == 1 and w.layers["committed"].data[10, 50] == 1


def test_finished_predictions_are_freed(open_dock, fluo, qtbot, monkeypatch):
    """A finished worker keeps neither its request (the image plane, the model) nor itself:
    a long session, model switches and removed images do not pile up in memory."""
    import gc
    import weakref

    from napari_clickseg._napari import widget as widget_module

    requests = []
    run = widget_module.run_prediction

    def recording(req):
        requests.append(weakref.ref(req))
        return run(req)

    monkeypatch.setattr(widget_module, "run_prediction", recording)
    _, w = open_dock(fluo, sync=False)
    for i in range(3):
        w.add_click(20 + 10 * i, 20, True)
        qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert w.commit() == 1
    qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert len(requests) >= 3
    qtbot.wait(50)
    gc.collect()
    assert [r for r in requests if r() is not None] == []


# --- fine-tuning ----------------------------------------------------------------------------------


def test_finetune_on_committed_objects(open_dock, fluo, tmp_path, monkeypatch):
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    viewer, w = open_dock(fluo)
    said = []
    status = ClickSegWidget._status
    monkeypatch.setattr(ClickSegWidget, "_status", lambda self, msg: said.append(msg) or status(self, msg))
    w.finetune.root = tmp_path / "ft"
    w.finetune.spec_options = {"iterations": 2, "batch_size": 2, "crop_size": 64, "device": "cpu"}
    assert not w.finetune.start() and "custom models cannot" in w.last_status
    base = tmp_path / "base.safetensors"
    save_weights(create_model("early"), base, trained=True)
    assert w.load_weights_file(base)
    assert not w.finetune.start() and "commit some objects" in w.last_status
    w.select_model("custom: disk")  # the stub gives non-empty masks to commit
    w.add_click(20, 20, True)
    w.commit()
    w.add_click(45, 40, True)
    w.commit()
    w.bind(viewer.add_image(fluo[::-1].copy(), name="second"))  # every image's objects are used
    w.add_click(20, 20, True)
    w.commit()
    w.bind(viewer.add_image(fluo.copy(), name="gone"))
    w.add_click(20, 20, True)
    w.commit()
    viewer.layers.remove("gone")  # its objects stay, parked, with no pixels to train on
    w.bind(viewer.layers["image"])
    w.model_combo.value = "file: base.safetensors"
    assert w.finetune.start(), w.last_status  # synchronous in tests: returns when done
    started = next(m for m in said if m.startswith("fine-tuning early on"))
    assert "on 3 objects (2 plane(s))" in started and "'committed objects (gone)'" in started
    runs = [p for p in (tmp_path / "ft").iterdir() if not p.name.endswith("-data")]
    assert len(runs) == 1 and (runs[0] / "last.safetensors").is_file(), w.last_status
    card = (runs[0] / "last.md").read_text()
    assert "3 committed objects on 2 plane(s) of image(s) 'image', 'second'" in card
    label = f"file: {runs[0].name}/last.safetensors"
    assert label in w.model_labels() and "model list" in w.last_status
    assert w.model_combo.value == "file: base.safetensors"  # annotation goes on with the same model
    assert w.finetune.start_button.enabled and not w.finetune.cancel_button.enabled


def test_finetune_data_comes_from_what_the_layers_show(open_dock, fluo, qtbot):
    # regressions (review 26): the bound image's objects were left out once its committed layer
    # was deleted; a parked layer whose data was replaced under a reopened dock gave the old labels;
    # a layer with no objects (a click, then Esc) was reported as left out once its image went
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    viewer.layers.remove(w.layers["committed"])  # by mistake: the dock still holds the object
    images, lost = w.annotated_images()
    assert [im.name for im in images] == ["image"] and images[0].session.labels[20, 20] == 1
    w.add_click(45, 45, True)  # brings the layer back
    parked = w.layers["committed"]
    second = viewer.add_image(fluo[::-1].copy(), name="second")
    w.bind(second)
    dock = next(iter(viewer.window._wrapped_dock_widgets.values()))
    dock.destroyOnClose()
    _, w2 = reopen_dock(viewer)
    assert unwrap(w2.image_layer) is unwrap(second)
    new = np.zeros_like(parked.data)
    new[40:50, 40:50] = 7  # corrected elsewhere and put back while another image is bound
    parked.data = new
    images, lost = w2.annotated_images()
    (a,) = [im for im in images if im.name == "image"]
    assert set(np.unique(a.session.labels)) == {0, 7} and lost == []
    w2.add_click(20, 20, True)
    w2.clear()  # nothing committed on "second", some undo history
    viewer.layers.remove(second)
    images, lost = w2.annotated_images()
    assert [im.name for im in images] == ["image"] and lost == []


def test_a_blank_layer_left_selected_is_not_found_again(open_dock, fluo, qtbot):
    # regression (review 26): its removal waits for Qt's next turn; binding the same image
    # meanwhile found it again, and the object committed on it went with it
    viewer, w = open_dock(fluo)
    committed = w.layers["committed"]
    viewer.layers.selection.active = committed
    w.bind(viewer.layers["image"])
    w.add_click(20, 20, True)
    assert w.commit() == 1
    qtbot.wait(50)
    assert _in(w.layers["committed"], viewer) and (w.layers["committed"].data == 1).any()
    assert not _in(committed, viewer)


def test_hand_painting_after_a_commit_gets_a_new_id(open_dock, fluo, tmp_path):
    # regression (audit 26): the layer's label stayed napari's 1, so a nucleus painted by hand
    # joined object 1 (and went with it when object 1 was deleted or committed again)
    viewer, w = open_dock(fluo)
    committed = w.layers["committed"]
    assert committed.selected_label == 1
    w.add_click(20, 20, True)
    assert w.commit() == 1 and committed.selected_label == 2 and w.object_spin.value == 1
    w.add_click(45, 45, True)
    assert w.commit() == 2 and committed.selected_label == 3
    tif, _ = w.save_annotations(tmp_path / "a")
    w.delete(2)
    assert committed.selected_label == 2
    assert w.load_annotations(tif, discard_unsaved=True) and committed.selected_label == 3
    w.bind(viewer.add_image(fluo.copy(), name="other"))
    assert w.layers["committed"].selected_label == 1
    w.bind(viewer.layers["image"])
    assert committed.selected_label == 3 and w.object_spin.value != 3  # the id box keeps an object
    committed.selected_label = 0  # the user erases by hand (review 26): the dock leaves it
    w.add_click(30, 50, True)
    assert w.commit() == 3 and committed.selected_label == 0
    committed.selected_label = 1  # and paints object 1 on purpose
    w.delete(3)
    assert committed.selected_label == 1


def test_the_paint_label_goes_past_the_last_id_of_the_labels_dtype(open_dock, fluo, tmp_path):
    # the paint label stayed on 65535 (the last object) until the next commit widened the labels
    import tifffile

    viewer, w = open_dock(fluo)
    labels = np.zeros(fluo.shape, np.uint16)
    labels[2:6, 2:6] = 65535
    tifffile.imwrite(tmp_path / "full.tif", labels)
    assert w.load_annotations(tmp_path / "full.tif", discard_unsaved=True), w.last_status
    committed = w.layers["committed"]
    assert committed.selected_label == 65536 and committed.data.dtype == np.uint32
    assert (committed.data == 65535).sum() == 16 and w.session.labels.dtype == np.uint32
    w.add_click(40, 40, True)
    assert w.commit() == 65536 and committed.selected_label == 65537


def test_a_reopened_dock_goes_on_moving_the_paint_label(open_dock, fluo):
    # regression (review 26): what a closed dock had set looked like the user's own choice
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1 and w.layers["committed"].selected_label == 2
    next(iter(viewer.window._wrapped_dock_widgets.values())).destroyOnClose()
    _, w2 = reopen_dock(viewer)
    w2.add_click(45, 45, True)
    assert w2.commit() == 2 and w2.layers["committed"].selected_label == 3


def test_reopen_and_undo_show_the_objects_own_view(open_dock, fluo):
    # regression (audit 26): an object committed on an XZ view was re-opened on the XY view
    # (every click then refused), and undo brought back clicks of another slice off screen
    stack = np.stack([fluo] * 8)
    viewer, w = open_dock(stack)
    viewer.dims.order = (1, 0, 2)  # XZ: z and x on screen, the slider on y
    viewer.dims.set_point(1, 30)
    w.add_click(4, 30, True)
    assert w.commit() == 1
    viewer.dims.order = (0, 1, 2)
    viewer.dims.set_point(0, 6)
    assert w.reopen(1)
    assert viewer.dims.displayed == (0, 2) and viewer.dims.point[1] == 30
    assert w.add_click(4, 34, True)  # a click on the view shown is taken
    w.clear()
    viewer.dims.order = (0, 1, 2)
    viewer.dims.set_point(0, 2)
    w.add_click(20, 20, True)
    w.clear()
    viewer.dims.set_point(0, 5)
    assert w.undo() and viewer.dims.point[0] == 2  # the clicks back are on z = 2


def test_deleting_all_layers_at_once(open_dock, fluo, qtbot):
    # regression (audit 26): the dock brought back the committed layer during napari's removal
    # of the selection and removed one of our layers napari was about to remove: ValueError
    viewer, w = open_dock(fluo)
    viewer.add_image(fluo[::-1].copy(), name="B")
    w.add_click(20, 20, True)
    w.commit()
    viewer.layers.select_all()
    order = ["committed objects", "image", "positive clicks", "negative clicks", "current object", "B"]
    snapshot = [viewer.layers[name] for name in order]  # napari's remove_selected: a set's order
    for layer in snapshot:
        viewer.layers.remove(layer)  # raises where the dock removed it already
    qtbot.wait(50)  # the dock's own removals, once napari's are done
    assert [la.name for la in viewer.layers] == ["committed objects (image)"]
    assert (viewer.layers[0].data == 1).any()


def test_status_messages_say_what_happened(open_dock, fluo, tmp_path):
    # regressions (audit 26): a refusal stayed on screen after the next click was taken; a save
    # counted only objects with clicks; a 2D image beside a stack shown transposed was told to
    # "switch the viewer to 2D"
    viewer, w = open_dock(fluo)
    assert not w.add_click(500, 500, True) and "outside" in w.last_status
    assert w.add_click(20, 20, True) and "outside" not in w.last_status
    w.commit()
    w.layers["committed"].data[50:56, 50:56] = 5  # painted by hand
    tif, _ = w.save_annotations(tmp_path / "a")
    assert "saved 2 object(s) (1 with clicks)" in w.last_status
    viewer.add_image(np.stack([fluo] * 4), name="stack")
    viewer.dims.order = (1, 0, 2)  # the stack's z and x on screen: one axis of the 2D image
    assert not w.add_click(20, 20, True)
    assert "only 1 of the image's axes is on screen" in w.last_status


def _in(layer, viewer):
    return any(unwrap(layer) is unwrap(la) for la in viewer.layers)


# --- save / load ------------------------------------------------------------------------------------


def test_save_and_reload_annotations(open_dock, fluo, tmp_path):
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    w.add_click(45, 45, True)
    w.add_click(45, 50, False)
    w.commit()
    saved = w.layers["committed"].data.copy()
    tif, js = w.save_annotations(tmp_path / "nuclei")
    assert tif.is_file() and js.is_file()
    w.delete(1)
    w.delete(2)
    w.add_click(30, 30, True)  # an open object is dropped by loading
    assert not w.load_annotations(tif) and "unsaved" in w.last_status  # the deletions
    assert w.load_annotations(tif, discard_unsaved=True)
    assert np.array_equal(w.layers["committed"].data, saved) and w.session.clicks == ()
    assert n_points(w, "positive") == 0
    assert len(w.session.records[2].clicks) == 2
    # a fresh dock on a new viewer resumes the session from the files
    viewer2, w2 = open_dock(fluo)
    assert w2.load_annotations(tmp_path / "nuclei.tif")
    assert w2.reopen(2) and n_points(w2, "negative") == 1
    assert not w2.load_annotations(tmp_path / "missing.tif") and "not found" in w2.last_status


# --- screenshot ---------------------------------------------------------------------------------


class IntensityStandIn(DiskModel):
    """Screenshot stand-in while no trained weights are shipped: foreground = pixels of the
    zoom crop brighter than its mean + 0.5 std, minus the disks of negative clicks (the
    engine's structural integrity keeps the part connected to a positive click)."""

    def decode(self, enc, image):
        gray = image.mean(1, keepdim=True)
        t = gray.mean((2, 3), keepdim=True) + 0.5 * gray.std((2, 3), keepdim=True)
        neg = enc["x"][:, 1:2] * 255
        return {"logits": torch.minimum(8 * (gray - t), neg - 4)}


@pytest.mark.skipif(not os.environ.get("CLICKSEG_SCREENSHOT"), reason="set CLICKSEG_SCREENSHOT=1")
def test_screenshot(make_napari_viewer, qtbot):
    """docs/screenshot.png: the dock after a few robot clicks on the fluorescence sample.

    Uses the default shipped model when weights are shipped, else a labelled stand-in.
    """
    from napari_clickseg.robot import next_click
    from napari_clickseg.weights import shipped_models

    image, gt = load_sample("nuclei_fluorescence")
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 980)
    viewer.add_image(image, name="nuclei (fluorescence)", colormap="gray")
    shipped = bool(shipped_models())
    w = ClickSegWidget(
        viewer,
        models=None if shipped else {"stand-in (no trained weights yet)": IntensityStandIn},
        synchronous=True,
        predictor_kwargs={"device": "cpu"},
    )
    viewer.window.add_dock_widget(w, name="Click segmentation", area="right")
    # four isolated nuclei near the centre: three committed, the last one still open
    from scipy import ndimage

    ids = [i for i in np.unique(gt) if i]
    centre = np.array(gt.shape) / 2
    dist = {i: np.linalg.norm(np.argwhere(gt == i).mean(0) - centre) for i in ids}
    isolated = [
        i
        for i in ids
        if not np.any(ndimage.binary_dilation(gt == i, iterations=4) & (gt != i) & (gt != 0))
    ]
    done = 0
    for oid in sorted(isolated, key=dist.get):
        obj = gt == oid
        pred = np.zeros_like(obj)
        for _ in range(3 if done < 3 else 1):
            c = next_click(obj, pred)
            if c is None:
                break
            w.add_click(c.row, c.col, c.positive)
            pred = w.current_mask()
        if (pred & obj).sum() < 0.8 * (pred | obj).sum():  # the stand-in cannot do this one
            w.clear()
            continue
        if done == 3:
            break
        assert w.commit() is not None, w.last_status
        done += 1
    viewer.layers.selection.active = w.image_layer
    viewer.reset_view()
    qtbot.wait(300)
    out = REPO / "docs" / "screenshot.png"
    out.parent.mkdir(exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    assert out.stat().st_size > 10_000


def test_layer_transforms_and_image_removal(open_dock, fluo):
    viewer, w = open_dock(fluo, scale=(0.5, 0.5), translate=(10.0, 20.0))
    for key in ("positive", "preview", "committed"):
        assert np.allclose(w.layers[key].scale, (0.5, 0.5))
        assert np.allclose(w.layers[key].translate, (10.0, 20.0))
    mouse_click(viewer, (10.0 + 15.0, 20.0 + 16.0))  # world -> data (30, 32)
    assert (w.session.clicks[0].row, w.session.clicks[0].col) == (30.0, 32.0)
    assert w.layers["preview"].data[30, 32] == 1
    other = viewer.add_image(fluo[:32, :32], name="other")
    viewer.layers.remove(w.image_layer)
    assert unwrap(w.image_layer) is other and w.session.labels.shape == (32, 32)
    viewer.layers.remove(other)
    assert w.image_layer is None and not w.add_click(1, 1, True)


def test_annotation_layers_follow_the_image_when_it_moves(open_dock, fluo):
    """Setting a pixel size after opening the dock moves clicks and objects with the image."""
    viewer, w = open_dock(fluo)
    w.add_click(30, 32, True)
    w.commit()
    w.image_layer.scale = (0.5, 2.0)
    w.image_layer.translate = (10.0, -5.0)
    for key in ("positive", "negative", "preview", "committed"):
        assert np.allclose(w.layers[key].scale, (0.5, 2.0)), key
        assert np.allclose(w.layers[key].translate, (10.0, -5.0)), key
    world = (10.0 + 0.5 * 30, -5.0 + 2.0 * 32)  # where data pixel (30, 32) is drawn now
    assert w.layers["committed"].get_value(world, world=True) == 1
    mouse_click(viewer, (10.0 + 0.5 * 12, -5.0 + 2.0 * 40))
    assert (w.session.clicks[0].row, w.session.clicks[0].col) == (12.0, 40.0)
    # the committed layer of another image follows its image when the dock comes back to it
    other = viewer.add_image(fluo[:32, :32], name="other")
    w.bind(other)
    first = viewer.layers[0]
    first.translate = (0.0, 0.0)
    w.bind(first)
    assert np.allclose(w.layers["committed"].translate, (0.0, 0.0))
    assert w.session.object_ids() == [1]


def test_switching_images_moves_the_click_layers_over_the_new_image(open_dock, fluo):
    viewer, w = open_dock(fluo)
    a = w.image_layer
    w.add_click(30, 32, True)
    mine = {k: w.layers[k] for k in ("positive", "negative", "preview")}
    mine["positive"].visible = mine["preview"].visible = False  # hidden by the user on A
    mine["negative"].name = "my negatives"
    b = viewer.add_image(fluo[:40, :50].copy(), name="B", scale=(2.0, 0.5))  # above our layers
    w.bind(b)
    # the same layers (napari pays a garbage collection per removed layer), emptied, on top,
    # placed over B
    assert all(w.layers[k] is layer for k, layer in mine.items())
    names = [la.name for la in viewer.layers]
    assert names[-4:] == [LAYER_NAMES[k] for k in ("positive", "negative", "preview", "committed")]
    assert names.index("B") < names.index(LAYER_NAMES["positive"])
    assert n_points(w, "positive") == 0 and not w.session.clicks
    assert w.layers["preview"].data.shape == (40, 50) and not w.layers["preview"].data.any()
    for key in mine:
        assert np.allclose(w.layers[key].scale, (2.0, 0.5)), key
        assert w.layers[key].visible, key  # as new layers would be
    w.add_click(10, 40, True)
    assert w.commit() == 1 and w.session.labels[10, 40] == 1
    # back on A: the object left open there is back, clicks and all (audit 23: it was cleared)
    w.bind(a)
    assert np.allclose(w.layers["positive"].scale, (1.0, 1.0)) and n_points(w, "positive") == 1
    assert len(w.session.clicks) == 1 and "its open object is back (1 click(s))" in w.last_status
    assert w.commit() == 1 and w.session.labels.shape == fluo.shape and w.session.labels[30, 32] == 1
    # a stack needs 3D click layers: new ones
    w.bind(viewer.add_image(np.stack([fluo] * 3), name="stack"))
    assert w.layers["positive"] is not mine["positive"] and w.layers["positive"].ndim == 3
    assert not any(la is mine["positive"] for la in viewer.layers)


def test_napari_undo_on_the_committed_layer_never_replays_edits_from_before_a_commit(open_dock, fluo):
    # audit 23: erase object 1 by hand, segment it again (object 2), Ctrl+Z with the labels
    # layer selected: napari wrote object 1's pixels back over object 2
    viewer, w = open_dock(fluo)
    w.add_click(30, 32, True)
    assert w.commit() == 1
    layer = w.layers["committed"]
    layer.fill((30, 32), 0)
    w.add_click(30, 32, True)
    oid = w.commit()
    before = layer.data.copy()
    layer.undo()
    layer.redo()
    np.testing.assert_array_equal(layer.data, before)
    assert (layer.data == oid).any()


def commit_two_objects(w):
    """Commit objects 1 and 2 (one click each, at (20, 20) and (45, 45)); the committed layer."""
    for center in ((20, 20), (45, 45)):
        w.add_click(*center, True)
        w.commit()
    return w.layers["committed"]


def test_an_object_erased_by_hand_loses_its_clicks_unless_the_erase_is_undone(open_dock, fluo, tmp_path):
    viewer, w = open_dock(fluo)
    layer = commit_two_objects(w)
    layer.fill((45, 45), 0)
    layer.undo()  # napari's Ctrl+Z on the layer: the pixels and their record are back
    assert (layer.data == 2).any() and w.reopen(2) and len(w.session.clicks) == 1
    w.clear()
    layer.fill((45, 45), 0)
    assert not w.reopen(2)  # no clicks of an erased object come back
    w.save_annotations(tmp_path / "a.tif")
    assert set(w.session.records) == {1}


def test_a_label_chosen_to_paint_after_an_erase_gets_no_old_clicks(open_dock, fluo):
    # napari's "new label" (M) hands out the largest id again once that object is erased
    viewer, w = open_dock(fluo)
    layer = commit_two_objects(w)
    layer.selected_label = 1
    layer.fill((45, 45), 0)
    layer.selected_label = 2  # chosen to paint a new object by hand
    assert set(w.session.records) == {1} and "erased by hand" in w.last_status
    layer.paint((10, 50), 2)
    assert w.reopen(2) and not w.session.clicks  # a painted object, no clicks
    # the eraser leaves label 1 chosen: going back to painting is the moment
    w.clear()
    layer.selected_label = 1
    layer.mode = "erase"
    layer.data[layer.data == 1] = 0  # (stands in for the eraser's strokes)
    assert 1 in w.session.records
    layer.mode = "paint"
    assert 1 not in w.session.records


def test_an_erased_id_painted_again_through_the_api_gets_no_old_clicks(open_dock, fluo):
    # left out in session 26: layer.paint with an explicit label changes no chosen label
    viewer, w = open_dock(fluo)
    layer = commit_two_objects(w)
    layer.paint((45, 45), 2)  # touching up object 2: its record stays
    assert set(w.session.records) == {1, 2}
    layer.fill((45, 45), 0)
    assert set(w.session.records) == {1, 2}  # erased: napari's undo could bring it back
    layer.paint((10, 50), 2)  # id 2 painted anew
    assert set(w.session.records) == {1} and "painted anew" in w.last_status
    assert w.reopen(2) and not w.session.clicks
    w.clear()
    layer.fill((20, 20), 0)
    layer.data_setitem((np.array([5, 5]), np.array([60, 61])), 1)  # napari's other kind of edit
    assert w.session.records == {}


def test_coming_back_to_a_stack_shows_the_open_objects_slice(open_dock, fluo):
    stack = np.stack([fluo, fluo[::-1], fluo[:, ::-1], fluo])
    viewer, w = open_dock(stack)
    a = w.image_layer
    viewer.dims.set_point(0, 2)
    w.add_click(30, 32, True)
    w.bind(viewer.add_image(fluo.copy(), name="B"))
    viewer.dims.set_point(0, 0)
    w.bind(a)
    assert viewer.dims.point[0] == 2 and len(w.session.clicks) == 1
    assert w.layers["preview"].data[2].any() and w.add_click(20, 20, True)


def test_an_open_object_survives_deleting_its_empty_committed_layer_and_switching(open_dock, fluo):
    viewer, w = open_dock(fluo)
    a = w.image_layer
    w.add_click(30, 32, True)
    viewer.layers.remove(w.layers["committed"])
    w.bind(viewer.add_image(fluo[:40, :50].copy(), name="B"))
    w.bind(a)
    assert len(w.session.clicks) == 1


def test_renaming_the_image_keeps_the_dock_on_it(open_dock, fluo, qtbot):
    viewer, w = open_dock(fluo)
    w.add_click(30, 32, True)
    image = w.image_layer
    image.name = "cells day 1"
    qtbot.wait(50)
    assert w.image_layer is image and unwrap(w.image_combo.value) is unwrap(image)
    assert len(w.session.clicks) == 1 and w.add_click(10, 10, False)


def test_a_deleted_committed_layer_is_kept_when_the_dock_leaves_its_image(open_dock, fluo):
    viewer, w = open_dock(fluo)
    b = viewer.add_image(fluo[::-1].copy(), name="B")
    w.bind(viewer.layers["image"])
    w.add_click(30, 30, True)
    w.commit()
    viewer.layers.remove(w.layers["committed"])
    w.bind(b)  # switching images brings the image's objects back, parked beside it
    assert [la.name for la in committed_layers(viewer)].count("committed objects (image)") == 1
    w.bind(viewer.layers["image"])
    assert w.session.object_ids() == [1] and (w.layers["committed"].data == 1).any()
    viewer.layers.remove(w.layers["committed"])
    viewer.layers.remove(viewer.layers["image"])  # removing the image too keeps exactly one copy
    kept = [la for la in committed_layers(viewer) if la.metadata.get("clickseg_image") == "image"]
    assert len(kept) == 1 and (kept[0].data == 1).any()


def test_points_with_a_nan_slice_coordinate_are_ignored(open_dock, fluo):
    stack = np.stack([fluo] * 3)
    viewer, w = open_dock(stack)
    viewer.dims.set_point(0, 1.0)
    w.add_click(30, 30, True)
    w.layers["positive"].add([[np.nan, 20.0, 20.0]])
    assert len(w.session.clicks) == 1 and "ignored 1 point" in w.last_status


def test_a_transposed_view_of_the_same_slice_keeps_the_object(open_dock, fluo):
    viewer, w = open_dock(fluo)
    w.add_click(20, 40, True)
    viewer.dims.transpose()
    assert w.add_click(45, 22, False)  # row 45, col 22 on screen = data (22, 45)
    assert [(c.row, c.col, c.positive) for c in w.session.clicks] == [
        (20.0, 40.0, True),
        (22.0, 45.0, False),
    ]
    assert w.layers["negative"].data.tolist() == [[22.0, 45.0]]


def test_a_click_in_a_3d_view_says_to_switch_to_2d(open_dock, fluo):
    viewer, w = open_dock(np.stack([fluo] * 3))
    viewer.dims.ndisplay = 3
    mouse_click(viewer, (1.0, 30.0, 30.0))
    assert not w.session.clicks and "switch the viewer to 2D" in w.last_status


# --- audit fixes: never lose or mix up annotations --------------------------------------------


def committed_layers(viewer):
    from napari.layers import Labels

    return [
        la for la in viewer.layers if isinstance(la, Labels) and "clickseg_image_id" in la.metadata
    ]


def test_each_image_layer_keeps_its_own_committed_objects(open_dock, fluo, tmp_path):
    viewer, w = open_dock(fluo)
    a = unwrap(w.image_layer)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    a_layer, a_session = w.layers["committed"], w.session
    a_data = a_layer.data.copy()
    # an image of the same shape gets its own, empty layer and session
    b = viewer.add_image(fluo[::-1].copy(), name="B")
    w.bind(b)
    assert w.layers["committed"] is not a_layer and w.session is not a_session
    assert not w.layers["committed"].data.any() and w.session.records == {}
    w.add_click(45, 45, True)
    assert w.commit() == 1
    assert (
        np.array_equal(a_layer.data, a_data) and a_session.records[1].settings["image"] == "image"
    )
    assert (
        a_layer.name == "committed objects (image)"
        and a_layer.metadata["clickseg_image"] == "image"
    )
    # through an image of another shape and back: A's layer, objects and records come back
    w.bind(viewer.add_image(fluo[:40, :30].copy(), name="C"))
    assert w.session.labels.shape == (40, 30)
    w.bind(a)
    assert w.layers["committed"] is a_layer and w.session is a_session
    assert a_layer.name == LAYER_NAMES["committed"] and set(w.session.records) == {1}
    # C's blank layer went with the dock: nothing to keep
    assert sorted(la.name for la in committed_layers(viewer)) == [
        "committed objects", "committed objects (B)"
    ]
    assert w.reopen(1) and n_points(w, "positive") == 1
    tif, _ = w.save_annotations(tmp_path / "a.tif")
    import tifffile

    assert np.array_equal(tifffile.imread(tif), a_data)


def test_replacing_committed_data_keeps_the_session_on_what_is_shown(open_dock, fluo, tmp_path):
    import tifffile

    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    w.add_click(45, 45, True)
    w.commit()
    layer = w.layers["committed"]
    new = layer.data.copy()
    new[new == 2] = 0  # object 2 erased, object 7 painted
    new[0:3, 0:3] = 7
    layer.data = new
    assert w.session.labels is new and set(w.session.records) == {1}
    assert "dropped the provenance" in w.last_status
    w.add_click(30, 50, True)
    assert w.commit() == 8 and (layer.data == 8).any()
    tif, _ = w.save_annotations(tmp_path / "x.tif")
    saved = tifffile.imread(tif)
    assert np.array_equal(saved, layer.data) and set(np.unique(saved)) == {0, 1, 7, 8}
    # data that cannot hold the annotations: the layer is let go, the objects stay shown
    w.add_click(10, 50, True)  # the open object survives too
    layer.data = np.zeros((8, 8), np.uint8)
    assert "does not fit" in w.last_status and "clickseg_image_id" not in layer.metadata
    assert unwrap(w.layers["committed"]) is not unwrap(layer)
    assert np.array_equal(w.layers["committed"].data, saved) and len(w.session.clicks) == 1
    assert w.layers["committed"].name == LAYER_NAMES["committed"]
    assert layer.name.endswith("(replaced data)") and (layer.data == 0).all()


def test_save_names_and_object_ids(open_dock, fluo, tmp_path):
    _, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    (tmp_path / "cells.tif").write_bytes(b"ORIG")
    tif, js = w.save_annotations(tmp_path / "cells.tiff")
    assert tif.name == "cells.tiff" and tif.is_file() and js.name == "cells.json"
    assert (tmp_path / "cells.tif").read_bytes() == b"ORIG"
    assert w.save_annotations(tmp_path / "x.json") is None and ".tif or .tiff" in w.last_status
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "x.json").exists()
    # id 0 is the background: no re-open, no delete, and the id box starts at 1
    assert w.object_spin.min == 1 and w.object_spin.value >= 1
    w.overwrite_check.value = True
    assert not w.reopen(0) and "start at 1" in w.last_status and w.session.editing is None
    assert not w.delete(0) and (w.layers["committed"].data == 1).any()


def test_load_asks_before_discarding_unsaved_objects(open_dock, fluo, tmp_path, monkeypatch):
    _, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    tif, _ = w.save_annotations(tmp_path / "one.tif")
    w.add_click(45, 45, True)
    w.commit()  # object 2 is not saved
    assert not w.load_annotations(tif) and "unsaved" in w.last_status
    assert set(w.session.records) == {1, 2}
    answers = []
    # patched on the class: magicgui containers treat instance attributes as widgets
    monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a: str(tif))
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda *a: answers.append(a) or False)
    w.load_button.clicked.emit()  # the user says No
    assert len(answers) == 1 and set(w.session.records) == {1, 2}
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda *a: True)
    w.load_button.clicked.emit()  # the user says Yes
    assert set(w.session.records) == {1} and not (w.layers["committed"].data == 2).any()
    monkeypatch.setattr(
        ClickSegWidget, "_confirm", lambda *a: pytest.fail("nothing unsaved to ask about")
    )
    w.load_button.clicked.emit()
    assert "loaded 1 object" in w.last_status
    w.add_click(45, 45, True)  # an open object's clicks are not dropped without asking either
    assert not w.load_annotations(tif) and "object being segmented" in w.last_status
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda *a: answers.append(a) or False)
    w.load_button.clicked.emit()
    assert len(w.session.clicks) == 1 and "1 click(s)" in answers[-1][2]
    assert w.delete(1) and w.session.unsaved and w.session.clicks  # now both
    w.load_button.clicked.emit()  # the question names both (audit 23: it named only the objects)
    assert "changed since they were last saved and the object being segmented has 1 click(s)" in answers[-1][2]


def test_deleting_the_committed_layer_keeps_objects_and_clicks(open_dock, fluo):
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    w.add_click(45, 45, True)
    viewer.layers.remove(w.layers["committed"])
    assert len(w.session.clicks) == 1
    w.add_click(45, 48, True)  # the layer comes back with the session's objects
    assert len(w.session.clicks) == 2 and n_points(w, "positive") == 2
    committed = w.layers["committed"]
    assert (committed.data == 1).any() and set(w.session.records) == {1}
    viewer.layers.remove(committed)
    assert w.commit() == 2  # a commit shows it again too
    assert (w.layers["committed"].data == 2).any() and (w.layers["committed"].data == 1).any()


def test_a_duplicated_committed_layer_is_a_plain_copy(open_dock, fluo):
    # regression: napari's "Duplicate Layer" copied the session into the copy's metadata; after
    # deleting the original the dock adopted the stale copy and lost the later objects
    from napari.layers._layer_actions import _duplicate_layer

    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    original = w.layers["committed"]
    viewer.layers.selection = {original}
    _duplicate_layer(viewer.layers)
    copy = next(la for la in viewer.layers if la is not original and la.name.startswith("committed objects"))
    assert "napari_clickseg_session" not in copy.metadata and "napari_clickseg_session" in original.metadata
    w.add_click(45, 45, True)
    assert w.commit() == 2
    viewer.layers.remove(original)
    w.add_click(10, 50, True)
    assert w.commit() == 3
    assert w.layers["committed"] is not copy and w.layers["committed"].data[45, 45] == 2
    assert sorted(w.session.records) == [1, 2, 3] and not (copy.data == 2).any()


def test_huge_object_ids_and_read_only_labels_do_not_break_the_dock(open_dock, fluo):
    viewer, w = open_dock(fluo)
    layer = w.layers["committed"]
    big = np.zeros(layer.data.shape, np.uint32)
    big[:5, :5] = 3_000_000_000  # beyond the id box's 2**31 - 1
    big.flags.writeable = False  # e.g. a memory-mapped file
    layer.data = big
    assert layer.data.flags.writeable and w.session.labels.flags.writeable
    w.add_click(40, 40, True)
    assert w.commit() == 3_000_000_001
    layer.selected_label = 3_000_000_000  # raised from the id box before
    assert w.delete(3_000_000_001)


def test_deleting_one_click_layer_keeps_its_clicks(open_dock, fluo):
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.add_click(30, 40, False)
    viewer.layers.remove(w.layers["negative"])
    pos = w.layers["positive"]
    pos.data = pos.data + 1  # nudge the positive point
    assert [c.positive for c in w.session.clicks] == [True, False]
    assert n_points(w, "negative") == 1  # the layer is back with its click


def test_a_2d_image_offers_no_channel_axis(open_dock, fluo):
    viewer, w = open_dock(fluo)
    assert [c[1] if isinstance(c, tuple) else c for c in w.channel_combo.choices] == ["auto"]
    stack = viewer.add_image(np.stack([fluo, fluo]), name="two")
    w.bind(stack)
    assert len(w.channel_combo.choices) == 4


def test_scrolling_a_lazy_stack_does_not_reread_the_open_object(open_dock, fluo, monkeypatch):
    # regression: every slider step re-read the open object's plane of a dask/zarr image in
    # the GUI thread (slow for remote or compressed data)
    import dask.array as da

    from napari_clickseg._napari.planes import ImageGeometry

    viewer, w = open_dock(da.from_array(np.stack([fluo] * 6), chunks=(1, 64, 64)))
    w.add_click(30, 30, True)
    reads = []
    real = ImageGeometry.plane_view
    monkeypatch.setattr(ImageGeometry, "plane_view", lambda g, *a: reads.append(1) or real(g, *a))
    for z in (1, 2, 3, 4):
        viewer.dims.set_current_step(0, z)
    assert reads == []
    viewer.layers["image"].data = viewer.layers["image"].data  # the documented way after edits
    assert len(reads) >= 1


@pytest.mark.parametrize("lazy", [True, False])
def test_a_pyramid_is_read_around_the_clicks_with_statistics_from_a_coarser_level(open_dock, fluo, lazy, monkeypatch):
    # regression (audit 26): the first click on a multiscale image read and normalised all of
    # level 0 (2.6 s and 2 GB at 8192^2); now the engine reads the zoom boxes of a lazy plane
    import dask.array as da

    from napari_clickseg._napari import planes
    from napari_clickseg.engine.image import LazyImage

    monkeypatch.setattr(planes, "STATISTICS_PIXELS", 64 * 64)  # small test levels
    base = np.tile(np.stack([fluo, fluo // 2]), (1, 4, 4))  # (Z, 256, 256)
    levels = [base] + [base[:, :: 2**k, :: 2**k] for k in (1, 2, 3)]
    if lazy:
        levels = [da.from_array(lv, chunks=(1, 64, 64)) for lv in levels]
    viewer, w = open_dock(levels, multiscale=True)
    viewer.dims.set_current_step(0, 1)
    assert w.add_click(100, 120, True)
    req = w._make_request()
    assert LazyImage.accepts(req.image) == lazy and req.image.shape == (256, 256)
    # the coarsest level whose plane still has 64 x 64 pixels, on the same slice
    np.testing.assert_array_equal(req.reference, base[1, ::4, ::4])
    mask = w.current_mask()
    assert mask is not None and mask[100, 120] and mask.sum() > 50
    assert w.commit() == 1
    assert (viewer.layers["committed objects"].data[1] == 1).sum() == mask.sum()


def test_the_preview_is_drawn_and_cleared_in_the_zoom_box(open_dock, fluo):
    # a click on a large image thresholded and drew the whole plane (150 ms at 8192^2)
    big = np.tile(fluo, (4, 4))
    viewer, w = open_dock(big)
    preview = viewer.layers["current object"]
    w.add_click(30, 30, True)
    first = w._result
    assert first.box is not None and first.box[2] - first.box[0] < big.shape[0]
    np.testing.assert_array_equal(w.current_mask(), first.prob >= 0.5)
    np.testing.assert_array_equal(preview.data == 1, first.prob >= 0.5)
    w.clear()
    w.add_click(200, 220, True)  # another object, far away: nothing of the first is left
    np.testing.assert_array_equal(preview.data == 1, w._result.prob >= 0.5)
    assert preview.data[:64, :64].max() == 0 and preview.data[200, 220] == 1
    w.threshold_slider.value = 0.9
    np.testing.assert_array_equal(preview.data == 1, w._result.prob >= 0.9)


# --- audit fixes: closing the dock or the viewer, changing the image --------------------------


def reopen_dock(viewer):
    widget = ClickSegWidget(
        viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
        predictor_kwargs=FAST,
    )
    dock = viewer.window.add_dock_widget(widget, name="Click segmentation")
    return dock, widget


def test_closing_the_viewer_cancels_finetune(open_dock, fluo, tmp_path, monkeypatch, qtbot):
    from napari_clickseg._napari.finetune import FineTuneSpec
    from test_napari_finetune import fake_command

    monkeypatch.setattr(FineTuneSpec, "command", fake_command)
    viewer, w = open_dock(fluo, sync=False)
    w.finetune.root = tmp_path / "ft"
    monkeypatch.setattr(FineTunePanel, "init_weights", lambda self: "imagenet")
    w.add_click(20, 20, True)
    qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert w.commit() == 1
    assert w.finetune.start(), w.last_status
    proc = w.finetune.training
    qtbot.waitUntil(lambda: w.finetune.progress.value > 0 or len(proc.lines_seen) > 2, timeout=20000)
    viewer.close()  # napari asks its tasks to cancel: the dock's run is one
    qtbot.waitUntil(lambda: proc.returncode is not None, timeout=20000)
    assert proc.cancelled and (Path(proc.spec.out) / "checkpoint.pt").is_file()
    assert w._on_mouse not in viewer.mouse_drag_callbacks
    qtbot.waitUntil(lambda: w.finetune.training is None, timeout=20000)  # late signals are ignored


QUIET_TRAINER = """
import pathlib, shutil, signal, sys, time
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
def stop(*_):
    if len(sys.argv) > 3:  # stopped after some steps
        print("interrupted at iteration 3: writing a checkpoint (continue with --resume)", flush=True)
    shutil.copy(sys.argv[2], out / "last.safetensors")  # written at step 0 too
    (out / "checkpoint.pt").write_text("ckpt")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("reading data", flush=True)
time.sleep(1.5)
print("training early (focal loss, iterative clicks) on cpu x1, 1 threads", flush=True)
time.sleep(60)  # no line for a long while, as on a slow CPU
"""


def test_finetune_progress_moves_between_lines_and_a_cancelled_run_offers_its_weights(
    open_dock, fluo, tmp_path, monkeypatch, qtbot
):
    # regression (audit 25): the bar moved only on the trainer's lines (about every 77 s on a
    # laptop) and counted the data loading; a cancelled run's last.safetensors was not offered;
    # the log lines became the bar's label and widened the dock
    import time

    from napari_clickseg._napari.finetune import FineTuneSpec
    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    base = tmp_path / "base.safetensors"
    save_weights(create_model("early"), base, trained=True)
    steps = ["after steps"]
    monkeypatch.setattr(
        FineTuneSpec, "command", lambda spec: [sys.executable, "-c", QUIET_TRAINER, spec.out, str(base), *steps]
    )
    monkeypatch.setattr(FineTunePanel, "init_weights", lambda self: "imagenet")
    viewer, w = open_dock(fluo, sync=False)
    ft = w.finetune
    ft.root, ft.minutes.value = tmp_path / "ft", 0.5
    w.add_click(20, 20, True)
    qtbot.waitUntil(lambda: not w.busy, timeout=60000)
    assert w.commit() == 1
    assert ft.start(), w.last_status
    proc = ft.training
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: any(x.startswith("training ") for x in proc.lines_seen), timeout=20000)
    assert ft.progress.value < 20  # the data loading is not the budget's
    qtbot.waitUntil(lambda: ft.progress.value >= 70, timeout=20000)  # 2 s of 30, with no new line
    assert time.monotonic() - t0 < 25 and ft.progress.label == "training"
    assert "training early" in ft.progress.tooltip
    ft.cancel()
    qtbot.waitUntil(lambda: ft.training is None, timeout=20000)
    label = f"file: {Path(proc.spec.out).name}/last.safetensors"
    assert label in w.model_labels() and "weights so far" in w.last_status and "--resume" in w.last_status
    assert "cancelled before its end" in (Path(proc.spec.out) / "last.md").read_text()
    steps.clear()  # cancelled before its first step: last.safetensors is the base model
    assert ft.start(), w.last_status
    proc = ft.training
    qtbot.waitUntil(lambda: any(x.startswith("training ") for x in proc.lines_seen), timeout=20000)
    ft.cancel()
    qtbot.waitUntil(lambda: ft.training is None, timeout=20000)
    assert "its checkpoint is in" in w.last_status and not (Path(proc.spec.out) / "last.md").exists()
    assert f"file: {Path(proc.spec.out).name}/last.safetensors" not in w.model_labels()


def test_closing_the_dock_unhooks_it_and_reopening_reuses_the_layers(open_dock, fluo):
    viewer, w = open_dock(fluo)
    dock = next(iter(viewer.window._wrapped_dock_widgets.values()))
    w.add_click(20, 20, True)
    assert w.commit() == 1
    w.add_click(45, 45, True)  # an open object
    committed = w.layers["committed"]
    dock.destroyOnClose()  # what the dock's X button does
    names = [la.name for la in viewer.layers]
    assert names == ["image", "committed objects (image)"] and (committed.data == 1).any()
    assert w._on_mouse not in viewer.mouse_drag_callbacks
    assert not any(getattr(f, "clickseg_owner", None) is w for f in viewer.keymap.values())
    mouse_click(viewer, (10.0, 10.0))  # nothing reacts
    assert [la.name for la in viewer.layers] == names
    _, w2 = reopen_dock(viewer)
    names = [la.name for la in viewer.layers]
    assert sorted(names) == sorted(["image", *LAYER_NAMES.values()]), names  # no "[1]" copies
    assert unwrap(w2.layers["committed"]) is unwrap(committed) and set(w2.session.records) == {1}
    assert n_points(w2, "positive") == 1  # the open object came back
    mouse_click(viewer, (10.0, 10.0))
    assert n_points(w2, "positive") == 2 and len(w2.session.clicks) == 2
    assert w2.commit() == 2 and (committed.data == 2).any()


def test_keys_stay_only_on_the_bound_image_and_leave_with_the_dock(open_dock, fluo):
    viewer, w = open_dock(fluo)
    first = w.image_layer
    second = viewer.add_image(fluo[::-1].copy(), name="second")

    def ours(target):
        return [k for k, f in target.keymap.items() if getattr(f, "clickseg_owner", None) is w]

    assert ours(first)
    w.bind(second)
    assert ours(second) and not ours(first)  # C on the image left would commit on another
    w.bind(first)
    assert ours(first) and not ours(second)
    def mine(layer):
        pass

    second.bind_key("T", mine, overwrite=True)  # the user's own key on an image
    w.bind(second)
    w.bind(first)
    assert second.keymap[next(k for k in second.keymap if str(k) == "T")] is mine  # back (review 26)
    dock = next(iter(viewer.window._wrapped_dock_widgets.values()))
    dock.destroyOnClose()
    assert [la.name for la in viewer.layers if ours(la)] == [] and not ours(viewer)


def test_image_data_changes_rebind_or_repredict(open_dock, fluo):
    viewer, w = open_dock(fluo)
    layer = unwrap(w.image_layer)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    old = w.layers["committed"]
    kept = old.data.copy()
    w.add_click(45, 45, True)
    w.add_click(45, 48, True)
    assert w._result.set_image_seconds == 0  # same image: cached features
    layer.data[...] = fluo.max() - layer.data  # in place, then refreshed
    layer.refresh()
    assert w._result is not None and w._result.set_image_seconds > 0  # re-predicted
    assert w.handle.image_key == w._last_image_key
    layer.data = fluo[::-1].copy()  # same shape: re-predicted on the new pixels
    assert w._result.set_image_seconds > 0 and len(w.session.clicks) == 2
    layer.data = fluo[:32, :48].copy()  # new shape: rebound, the old objects parked intact
    assert w.session.labels.shape == (32, 48) and w.session.clicks == ()
    assert old.name == "committed objects (image)" and np.array_equal(old.data, kept)
    assert w.layers["committed"] is not old and w.layers["committed"].data.shape == (32, 48)
    assert w.add_click(10, 40, True) and w.commit() == 1, w.last_status
    assert np.array_equal(old.data, kept)


def test_the_plane_checksum_is_taken_once_per_plane_not_per_click(open_dock, fluo, monkeypatch):
    # regression: every click hashed the whole plane in the GUI thread (0.1 s at 4096 px
    # channels-first, more than the network)
    import napari_clickseg._napari.widget as widget_module

    calls = []
    digest = widget_module._plane_digest
    monkeypatch.setattr(widget_module, "_plane_digest", lambda image: calls.append(1) or digest(image))
    _, w = open_dock(fluo)
    for i in range(4):
        w.add_click(20, 20 + 3 * i, True)
    assert len(calls) == 1 and len(w.session.clicks) == 4
    unwrap(w.image_layer).refresh()  # the layer's set_data event: pixels may have changed
    w.add_click(30, 30, True)
    assert len(calls) == 2


def test_removing_the_image_clears_the_clicks_and_preview(open_dock, fluo, qtbot):
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    w.add_click(45, 45, True)
    viewer.layers.remove("image")
    assert [la.name for la in viewer.layers] == ["committed objects (image)"]
    assert (viewer.layers[0].data == 1).any()
    assert w.image_layer is None
    qtbot.wait(50)  # the note comes once napari's removal is done
    assert "1 object(s), not saved, stay in 'committed objects (image)'" in w.last_status
    viewer.add_image(fluo, name="again")
    w.add_click(20, 20, True)
    w.commit()
    viewer.layers.remove(w.layers["committed"])  # deleted earlier: the dock brings it back
    viewer.layers.remove("again")
    qtbot.wait(50)
    assert "stay in 'committed objects (again)'" in w.last_status
    # the image and its committed layer deleted together, in either order (napari's "delete
    # selected layers" goes in a set's order): the unsaved objects stay (review 26)
    for first in ("image", "committed"):
        viewer.add_image(fluo, name="both")
        w.add_click(20, 20, True)
        w.commit()
        committed = w.layers["committed"]
        viewer.layers.selection = {viewer.layers["both"], committed}
        for layer in ([viewer.layers["both"], committed] if first == "image" else [committed, viewer.layers["both"]]):
            viewer.layers.remove(layer)
        qtbot.wait(50)
        kept = [la for la in viewer.layers if la.name == "committed objects (both)"]
        assert len(kept) == 1 and (kept[0].data == 1).any(), first
        assert "stay in 'committed objects (both)'" in w.last_status
        viewer.layers.remove(kept[0])  # deleted on its own, a parked layer goes
        qtbot.wait(50)
        assert "committed objects (both)" not in [la.name for la in viewer.layers]
    assert not w.add_click(1, 1, True)
    viewer.add_image(fluo, name="next")  # a new image binds, with its own layers
    assert unwrap(w.image_layer) is viewer.layers["next"] and w.session.records == {}


def test_an_image_opened_again_gets_its_objects_back(open_dock, fluo, qtbot, tmp_path):
    import tifffile

    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    w.add_click(45, 45, True)  # an open object too
    viewer.layers.remove("image")
    qtbot.wait(50)
    viewer.add_image(fluo[:, :40], name="image")  # another shape: not the same image
    assert w.session.records == {} and "committed objects (image)" in [la.name for la in viewer.layers]
    viewer.layers.remove("image")
    viewer.add_image(fluo, name="other")  # another name: not the same image
    assert w.session.records == {}
    viewer.layers.remove("other")
    viewer.add_image(255 - fluo, name="image")  # other pixels (review 27): not the same image
    assert w.session.records == {}
    viewer.layers.remove("image")
    viewer.add_image(fluo.copy(), name="image")  # the same image again
    assert set(w.session.records) == {1} and len(w.session.clicks) == 1
    assert "the 1 object(s) it had when it was removed are back" in w.last_status
    assert (w.layers["committed"].data == 1).any() and w.layers["committed"].name == "committed objects"
    assert w.commit() == 2

    # from files: the same path (not only the same name) is the same image
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "cells.tif", fluo if name == "a" else fluo[::-1].copy())
    (first,) = viewer.open(tmp_path / "a" / "cells.tif")
    w.bind(first)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    viewer.layers.remove(first)
    (second,) = viewer.open(tmp_path / "b" / "cells.tif")  # same name and shape, another file
    w.bind(second)
    assert w.session.records == {}
    viewer.layers.remove(second)
    parked = viewer.layers["committed objects (cells)"]
    (again,) = viewer.open(tmp_path / "a" / "cells.tif")
    w.bind(again)
    assert set(w.session.records) == {1} and w.layers["committed"] is parked
    viewer.layers.remove(again)
    parked.name = "my keeper"  # renamed by the user: theirs, never adopted
    (again,) = viewer.open(tmp_path / "a" / "cells.tif")
    w.bind(again)
    assert w.session.records == {} and w.layers["committed"] is not parked


def test_what_counts_as_the_same_image_opened_again(open_dock, fluo, tmp_path):
    # review 27b: a file overwritten with another image, data replaced before the removal,
    # and channels the pixel checksum skipped
    import tifffile

    viewer, w = open_dock(fluo)
    snap = tmp_path / "snap.tif"
    tifffile.imwrite(snap, fluo)
    (a,) = viewer.open(snap)
    w.bind(a)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    viewer.layers.remove(a)
    tifffile.imwrite(snap, (255 - fluo[::-1]).copy())  # the next acquisition overwrote snap.tif
    (b,) = viewer.open(snap)
    w.bind(b)
    assert w.session.records == {}
    w.add_click(20, 20, True)
    assert w.commit() == 1
    tifffile.imwrite(snap, fluo)  # overwritten again while b is still shown (review 27c)
    os.utime(snap, ns=(1, 10**18))
    viewer.layers.remove(b)
    (c,) = viewer.open(snap)
    w.bind(c)
    assert w.session.records == {}
    viewer.layers.remove(c)
    from napari_clickseg._napari.widget import _image_identity

    (folder,) = viewer.open(tmp_path, stack=True)  # a folder's stat misses rewritten files
    assert _image_identity(folder) is None
    viewer.layers.remove(folder)

    img = viewer.layers["image"]
    w.bind(img)
    w.add_click(20, 20, True)
    assert w.commit() == 1
    brighter = np.clip(fluo.astype(int) * 2, 0, 255).astype(np.uint8)
    img.data = brighter  # replaced (same shape): the objects stay with the image
    viewer.layers.remove(img)
    viewer.add_image(brighter.copy(), name="image")  # the image as it was when removed
    assert set(w.session.records) == {1}
    viewer.layers.remove("image")

    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    w.bind(viewer.add_image(rgb, name="colour", rgb=True))
    w.add_click(20, 20, True)
    assert w.commit() == 1
    viewer.layers.remove("colour")
    other = rgb.copy()
    other[..., 1:] = 255 - other[..., 1:]  # the same red channel, other green and blue
    w.bind(viewer.add_image(other, name="colour", rgb=True))
    assert w.session.records == {}


def test_a_deleted_committed_layer_comes_back_with_its_own_objects(open_dock, fluo):
    # review 27b: showing the bound image's deleted layer again adopted a parked layer of a
    # removed image of the same name and pixels instead, and the bound image's objects were lost
    viewer, w = open_dock(fluo)
    first = viewer.layers["image"]
    w.add_click(20, 20, True)
    assert w.commit() == 1
    first.name = "image v1"
    w.bind(viewer.add_image(fluo.copy(), name="image"))
    for r, c in ((40, 40), (50, 15)):
        w.add_click(r, c, True)
        w.commit()
    mine = w.layers["committed"]
    viewer.layers.remove(first)  # its objects stay parked
    viewer.layers.remove(mine)
    w.add_click(10, 50, True)  # the dock shows the bound image's objects again
    assert set(w.session.records) == {1, 2}
    assert set(np.unique(w.layers["committed"].data)) == {0, 1, 2}
    assert "committed objects (image v1)" in [la.name for la in viewer.layers]  # still parked


def test_widening_a_full_layer_is_no_unsaved_change(open_dock, fluo, tmp_path):
    import tifffile

    viewer, w = open_dock(fluo)
    labels = np.zeros(fluo.shape, np.uint16)
    labels[2:6, 2:6] = 65535
    tifffile.imwrite(tmp_path / "full.tif", labels)
    assert w.load_annotations(tmp_path / "full.tif", discard_unsaved=True)
    assert w.session.labels.dtype == np.uint32 and not w.session.unsaved
    tifffile.imwrite(tmp_path / "other.tif", np.zeros(fluo.shape, np.uint16))
    assert w.load_annotations(tmp_path / "other.tif"), w.last_status  # nothing to ask about


def test_removing_an_image_with_nothing_annotated_leaves_no_layer(open_dock, fluo):
    # regression (audit 25): every image removed parked an empty "committed objects (...)"
    viewer, w = open_dock(fluo)
    for i in range(3):
        viewer.add_image(fluo, name=f"blank {i}")
        viewer.layers.remove("image" if i == 0 else f"blank {i - 1}")
    assert [la.name for la in viewer.layers] == ["blank 2", *LAYER_NAMES.values()]
    w.add_click(20, 20, True)  # an open object is kept: it comes back with its image
    viewer.add_image(fluo, name="clicked")
    viewer.layers.remove("blank 2")
    assert "committed objects (blank 2)" in [la.name for la in viewer.layers]
    layer = viewer.add_image(fluo, name="painted")
    w.bind(layer)
    w.layers["committed"].data[5:9, 5:9] = 3  # painted by hand, nothing committed
    viewer.layers.remove("painted")
    assert "committed objects (painted)" in [la.name for la in viewer.layers]


def test_dock_settings_reach_the_engine_and_the_threshold_cuts_the_commit(open_dock, fluo, monkeypatch):
    # regression (audit 21): a preview and commit that ignored the slider, or options hard-coded
    # to their defaults, passed every widget test
    from napari_clickseg.engine import Predictor

    _, w = open_dock(fluo)
    seen = []
    real = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, clicks, **kw: seen.append(kw) or real(self, clicks, **kw))
    w.add_click(30, 30, True)
    area = int(w.layers["preview"].data.sum())
    w.threshold_slider.value = 0.95
    high = w.layers["preview"].data.copy()
    assert 0 < high.sum() < area  # the disk stub's logits fall off with distance: fewer pixels >= 0.95
    oid = w.commit()
    np.testing.assert_array_equal(w.layers["committed"].data == oid, high.astype(bool))
    w.add_click(30, 30, True)
    w.refinement_combo.value = "f-BRS"
    w.integrity_check.value = False
    w.graphcut_check.value = True
    assert seen[-1] == {"brs": "fbrs", "structural_integrity": False, "graph_cut": True, "threshold": 0.95}


def test_dragging_to_pan_or_painting_adds_no_click(open_dock, fluo):
    # (audit 21: these guards never ran under the tests)
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    viewer, w = open_dock(fluo)
    ev = FakeMouse((30.0, 30.0), pos=(100, 100))
    mouse_press_callbacks(viewer, ev)
    ev.type, ev.pos, ev.is_dragging = "mouse_move", (140, 100), True  # a 40-px drag pans the canvas
    mouse_move_callbacks(viewer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(viewer, ev)
    assert w.session.clicks == ()
    layer = w.layers["committed"]
    viewer.layers.selection.active = layer
    layer.mode = "paint"  # touching up the labels by hand
    mouse_click(viewer, (20.0, 20.0))
    assert w.session.clicks == ()
    layer.mode = "pan_zoom"
    mouse_click(viewer, (20.0, 20.0))
    assert len(w.session.clicks) == 1


def test_deleting_the_image_together_with_the_docks_layers(open_dock, fluo, qtbot):
    # regression (audit 21): napari's "delete selected layers" removes a snapshot of the
    # selection one by one; when the image came first, the dock removed its click and preview
    # layers inside that loop and napari raised "... is not in list"
    viewer, w = open_dock(fluo)
    w.add_click(20, 20, True)
    w.commit()
    w.add_click(40, 40, True)
    viewer.layers.select_all()
    image = w.image_layer
    for layer in [image, *(la for la in list(viewer.layers) if la is not image)]:  # the failing order
        viewer.layers.remove(layer)
    qtbot.wait(20)
    assert w.image_layer is None and w.session is None
    # its unsaved objects are put back (review 26): deleting layers is no way to lose them
    assert [la.name for la in viewer.layers] == ["committed objects (image)"]


def test_the_finetune_reader_gives_its_thread_pool_slot_back(qapp):
    # regression (audit 21): the reader of the trainer's output held a slot of Qt's global pool
    # for the whole run; where the pool has one thread (1 CPU, cpusets) no prediction ran until
    # the fine-tune ended
    from types import SimpleNamespace

    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    proc = SimpleNamespace(returncode=0, lines=lambda: iter(["a", "b"]))
    before = pool.activeThreadCount()
    reader = FineTunePanel._read_output(proc)
    assert next(reader) == "a" and pool.activeThreadCount() == before - 1  # while it waits
    assert list(reader) == ["b"] and pool.activeThreadCount() == before  # taken back at the end
    reader = FineTunePanel._read_output(proc, pooled=False)  # the synchronous path gives nothing back
    next(reader)
    assert pool.activeThreadCount() == before
    reader.close()


def test_saving_never_replaces_the_images_own_file_or_asks_about_another_name(
    make_napari_viewer, monkeypatch, fluo, tmp_path
):
    # regression (audit 21): typing "cells" in the save dialog (no suffix) asked nothing, since
    # "cells" did not exist, and the labels replaced the raw image cells.tif
    import tifffile

    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path / "no-weights"))
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, fluo)
    viewer = make_napari_viewer()
    viewer.open(str(src), plugin="napari")  # the layer knows its file (layer.source.path)
    w = ClickSegWidget(viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
                       predictor_kwargs=FAST)
    viewer.window.add_dock_widget(w, name="Click segmentation")  # closed with the viewer
    w.add_click(20, 20, True)
    assert w.commit() == 1
    for name in (src, tmp_path / "cells"):
        assert w.save_annotations(name) is None and "image's own file" in w.last_status
    np.testing.assert_array_equal(tifffile.imread(src), fluo)
    other = tmp_path / "other.tif"
    other.write_bytes(b"mine")
    asked: list[str] = []
    monkeypatch.setattr(ClickSegWidget, "_ask_path", lambda *a: str(tmp_path / "other"))
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda self, title, text: asked.append(text) or False)
    w._save_dialog()
    assert asked == ["other.tif already exists. Replace it with these labels?"]
    assert other.read_bytes() == b"mine" and w.last_status == "not saved"
    monkeypatch.setattr(ClickSegWidget, "_confirm", lambda self, title, text: True)
    w._save_dialog()
    assert (tifffile.imread(other) == 1).sum() == (w.layers["committed"].data == 1).sum() > 0



def run_script(script: str, tmp_path: Path, *args: str):
    """Run ``script`` in a fresh Python (argv: this folder, then ``args``) and return the
    completed process. No shipped weights, and napari's settings stay in ``tmp_path``."""
    import subprocess

    env = {**os.environ, "NAPARI_CLICKSEG_WEIGHTS": str(tmp_path / "no-weights"), "OMP_NUM_THREADS": "1",
           "NAPARI_CONFIG": str(tmp_path / "napari-settings.yaml")}
    return subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), *args],
        capture_output=True, text=True, timeout=300, env=env,
    )


EXIT_IN_FLIGHT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import napari
from test_napari_widget import FAST, DiskModel, ClickSegWidget, load_sample

class SlowDisk(DiskModel):
    def forward(self, *args, **kwargs):
        time.sleep(1.5)
        return super().forward(*args, **kwargs)

v = napari.Viewer(show=False)
v.add_image(load_sample("nuclei_fluorescence")[0][:64, :64], name="image")
w = ClickSegWidget(v, models={"disk": SlowDisk}, allow_untrained=True, synchronous=False,
                   predictor_kwargs=FAST)
v.window.add_dock_widget(w)
w.add_click(20, 20, True)  # predicted in a worker thread
v.close()
print("in flight at exit:", w.busy, flush=True)
"""


def test_a_script_that_ends_with_a_prediction_in_flight_exits_cleanly(tmp_path):
    """A worker still running at interpreter exit emitted on deleted Qt signals, and PyQt
    aborted the process (exit status 134) after the script had done its work."""
    run = run_script(EXIT_IN_FLIGHT, tmp_path)
    assert "in flight at exit: True" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stderr[-2000:]
    assert "has been deleted" not in run.stderr, run.stderr[-2000:]


EXIT_TRAINING = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import napari
from qtpy.QtWidgets import QApplication
from test_napari_widget import FAST, DiskModel, ClickSegWidget, load_sample
from test_napari_finetune import fake_command
from napari_clickseg._napari import workers
from napari_clickseg._napari.finetune import FineTuneSpec
from napari_clickseg._napari.finetune_panel import FineTunePanel

FineTuneSpec.command = fake_command  # a stand-in trainer: a checkpoint on SIGTERM, else 60 s
FineTunePanel.init_weights = lambda self: "imagenet"
workers.EXIT_WAIT_SECONDS = 600
v = napari.Viewer(show=False)
v.add_image(load_sample("nuclei_fluorescence")[0][:64, :64], name="image")
w = ClickSegWidget(v, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
                   predictor_kwargs=FAST)
w.add_click(20, 20, True)
assert w.commit() == 1
w.synchronous = False  # the fine-tune's output is read in a worker thread
w.finetune.root = Path(sys.argv[2])
assert w.finetune.start(), w.last_status
t0 = time.monotonic()
while len(w.finetune.training.lines_seen) < 3 and time.monotonic() - t0 < 60:
    QApplication.processEvents()
    time.sleep(0.05)
print("training at exit", flush=True)
"""


def test_a_script_that_ends_while_the_dock_fine_tunes_cancels_the_run(tmp_path):
    """At exit the trainer is cancelled (it writes its checkpoint) before the dock's threads
    are awaited: the thread reading its output ends only with it."""
    run = run_script(EXIT_TRAINING, tmp_path, str(tmp_path / "ft"))
    assert "training at exit" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stderr[-2000:]
    assert [p.read_text() for p in (tmp_path / "ft").rglob("checkpoint.pt")] == ["ckpt"]


# --- journeys (audit, session 29) ---------------------------------------------------------------


def _three_objects(w):
    for c in ((30, 30), (70, 70), (100, 40)):
        w.add_click(*c, True)
        w.commit()


@pytest.mark.parametrize("how", ["delete", "erase"])
def test_undo_never_reopens_an_id_that_was_freed(open_dock, how):
    # regression: re-open 3, Esc, free id 3 (Delete, or erase it by hand), paint a new object 3,
    # Ctrl+Z in the dock: the old object 3's clicks came back as "editing 3", and C erased the
    # hand-painted object and gave its record the old clicks
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    _, w = open_dock(image)
    lab = w.layers["committed"]
    _three_objects(w)
    assert w.reopen(3) and w.clear()
    if how == "delete":
        assert w.delete(3)
    else:
        lab.fill((100, 40), 0)
    lab.paint((20, 100), 3)
    new_obj = lab.data == 3
    assert new_obj.any()
    assert w.undo()
    assert w.session.editing is None  # a new object, not object 3
    oid = w.commit()
    assert oid != 3 and (lab.data[new_obj] == 3).all()


def test_a_lazy_image_replaced_while_the_dock_is_away_is_read_again(make_napari_viewer, monkeypatch, tmp_path):
    # regression: dask image A with an open object; the dock goes to B; A's data is replaced by a
    # new array of the same shape; back on A the preview (and a commit) came from the old pixels
    import dask.array as da

    from napari_clickseg.engine.predictor import Predictor

    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path))
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    viewer = make_napari_viewer()
    a = viewer.add_image(da.from_array(image.copy(), chunks=64), name="A")
    b = viewer.add_image(image[::-1].copy(), name="B")
    w = ClickSegWidget(viewer, models={"bright": IntensityStandIn}, synchronous=True, predictor_kwargs=FAST)
    viewer.window.add_dock_widget(w)
    w.bind(a)
    w.add_click(64, 64, True)
    w.bind(b)
    new = np.ascontiguousarray(255 - image)
    a.data = da.from_array(new, chunks=64)
    w.bind(a)
    oid = w.commit()
    p = Predictor(IntensityStandIn(), **FAST)
    p.set_image(new)
    expected = p.predict(list(w.session.records[oid].clicks)) >= 0.5
    np.testing.assert_array_equal(w.session.labels == oid, expected)


def test_a_renamed_image_removed_and_opened_again_gets_its_objects_back(open_dock, qtbot):
    # regression: the parked layer kept the name the image had when the dock first saw it, and
    # the image opened again under its new name did not get its objects back
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    viewer, w = open_dock(image)
    w.add_click(30, 30, True)
    assert w.commit() == 1
    w.image_layer.name = "cells day 1"
    qtbot.wait(20)
    viewer.layers.remove("cells day 1")
    qtbot.wait(50)
    assert "committed objects (cells day 1)" in [la.name for la in viewer.layers]
    viewer.add_image(image.copy(), name="cells day 1")
    qtbot.wait(20)
    assert w.session.object_ids() == [1]


@pytest.mark.parametrize("bound", [False, True])
def test_deleting_an_image_with_its_committed_layer_keeps_unsaved_objects(open_dock, qtbot, bound):
    # regression: deleted together with its committed layer, an image the dock was NOT on lost
    # its unsaved objects (the dock's own image had them put back)
    from napari.layers import Labels

    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    viewer, w = open_dock(image)
    a = w.image_layer
    w.add_click(30, 30, True)
    assert w.commit() == 1
    b = viewer.add_image(image[::-1].copy(), name="B")
    if bound:
        committed = w.layers["committed"]
    else:
        w.bind(b)
        w.add_click(60, 60, True)
        assert w.commit() == 1
        committed = viewer.layers["committed objects (image)"]
    viewer.layers.selection = {a, committed}
    viewer.layers.remove_selected()
    qtbot.wait(50)
    kept = [la for la in viewer.layers if isinstance(unwrap(la), Labels) and la.metadata.get("clickseg_image") == "image"]
    assert len(kept) == 1 and (kept[0].data == 1).any()
    assert "not saved, stay in" in w.last_status


def test_strokes_painted_on_the_current_object_are_taken_back(open_dock, qtbot):
    # regression: the preview is a Labels layer; strokes painted on it were ignored by the commit
    # and those outside the zoom box stayed on screen as if part of the next object
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    viewer, w = open_dock(image)
    w.add_click(30, 30, True)
    prev = w.layers["preview"]
    shown = prev.data.copy()
    prev.brush_size = 5
    prev.paint((90, 90), 1)
    qtbot.wait(20)
    np.testing.assert_array_equal(prev.data, shown)
    assert "follows the clicks" in w.last_status
    w.commit()
    assert prev.data.sum() == 0 and w.layers["committed"].data[90, 90] == 0


def test_a_click_on_a_slice_the_stack_does_not_have_is_refused(open_dock):
    # regression (journeys audit 2, session 29): with a deeper stack beside it, a click on slice 9 of
    # a 4-slice stack (where napari draws nothing of it) was committed on its slice 3
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    stack = np.stack([np.roll(image, 5 * z, axis=1) for z in range(4)])
    viewer, w = open_dock(stack)
    viewer.add_image(np.zeros((12, 128, 128), np.uint8), name="deep", opacity=0.0)
    w.bind(viewer.layers["image"])
    viewer.dims.set_point(0, 9)
    mouse_click(viewer, (9.0, 30.0, 30.0))
    assert not w.session.clicks and "has no slice here" in w.last_status
    viewer.dims.set_point(0, 2)
    mouse_click(viewer, (2.0, 30.0, 30.0))
    assert len(w.session.clicks) == 1 and w.commit() == 1
    assert sorted(set(np.nonzero(w.session.labels)[0])) == [2]


def test_the_images_own_file_is_not_loaded_as_annotations(make_napari_viewer, monkeypatch, tmp_path):
    # regression (journeys audit 2, session 29): picking the image itself in the load dialog read its
    # grey values as objects (saving there was already refused)
    import tifffile

    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path / "no-weights"))
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    tifffile.imwrite(tmp_path / "cells.tif", image)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "cells.tif"), plugin="napari")
    w = ClickSegWidget(viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
                       predictor_kwargs=FAST)
    viewer.window.add_dock_widget(w)
    w.add_click(30, 30, True)
    assert w.commit() == 1
    assert not w.load_annotations(tmp_path / "cells.tif", discard_unsaved=True)
    assert "is the image's own file" in w.last_status and w.session.object_ids() == [1]


def test_a_second_dock_on_the_same_viewer_closes_the_first(open_dock):
    # regression (journeys audit 2, session 29): two docks (from a script) shared the image's session,
    # both took every click, and the first one's preview and click stayed after a commit
    image = load_sample("nuclei_fluorescence")[0][:128, :128]
    viewer, w1 = open_dock(image)
    w1.add_click(30, 30, True)
    assert w1.commit() == 1
    w2 = ClickSegWidget(viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
                        predictor_kwargs=FAST)
    viewer.window.add_dock_widget(w2, name="Click segmentation 2")
    assert w1._closed and w2.session.object_ids() == [1]
    mouse_click(viewer, (70.0, 70.0))
    assert len(w2.session.clicks) == 1 and w2.commit() == 2
    previews = [la for la in viewer.layers if la.name.startswith("current object")]
    points = [la for la in viewer.layers if la.name.startswith(("positive clicks", "negative clicks"))]
    assert all(not np.asarray(la.data).any() for la in previews) and all(len(la.data) == 0 for la in points)


def test_a_dock_whose_construction_failed_does_not_break_the_next(make_napari_viewer, monkeypatch, tmp_path):
    # regression (review, session 29): the next dock closes older live docks on its viewer, and
    # closing one whose _build had failed raised AttributeError (no fine-tune panel yet)
    import gc

    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(tmp_path / "none"))
    viewer = make_napari_viewer()
    viewer.add_image(load_sample("nuclei_fluorescence")[0][:64, :64], name="image")
    build = ClickSegWidget._build

    def boom(self):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(ClickSegWidget, "_build", boom)
    gc.disable()  # the half-built dock stays alive until the next one is made
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            ClickSegWidget(viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True)
        monkeypatch.setattr(ClickSegWidget, "_build", build)
        w = ClickSegWidget(viewer, models={"disk": DiskModel}, allow_untrained=True, synchronous=True,
                           predictor_kwargs=FAST)
        viewer.window.add_dock_widget(w)
        assert w.add_click(30, 30, True) and w.commit() == 1
    finally:
        gc.enable()
