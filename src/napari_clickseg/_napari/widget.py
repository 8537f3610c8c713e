"""The dock widget: maps napari layers, mouse clicks and keys onto the session and the engine.

All state lives in ``AnnotationSession`` (clicks, undo, objects, provenance) and all
model work goes through ``adapter.run_prediction``; this module only reads and writes
layers. Keys (bound on the viewer and the image/click layers):

- click: positive point; Shift/Ctrl-click or right click: negative; ``T`` toggles
  the sign of plain clicks
- ``C``: commit the current object; ``Escape``: clear it
- ``Control-Z`` / ``Control-Shift-Z``: undo / redo the last click change

Closing the dock (its X button) or the viewer unhooks the dock: mouse callback, keys,
layer events, predictions, and a running fine-tune (cancelled: it writes a checkpoint).
The fine-tune controls are ``finetune_panel.FineTunePanel`` (``ClickSegWidget.finetune``).
"""

from __future__ import annotations

import os
import re
import weakref
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    PushButton,
    SpinBox,
)

from ..clicks import Click
from ..files import same_file
from . import workers
from .adapter import (
    LOAD_FILE,
    REFINEMENTS,
    EngineHandle,
    ModelChoice,
    PredictionRequest,
    PredictionResult,
    allow_untrained_from_env,
    available_choices,
    load_model,
    run_prediction,
)
from .finetune import AnnotatedImage
from .finetune_panel import FineTunePanel
from .planes import ImageGeometry, Plane
from .session import AnnotationSession, SessionError

if TYPE_CHECKING:
    import napari

__all__ = ["ClickSegWidget", "LAYER_NAMES"]

ENV_SYNC = "NAPARI_CLICKSEG_SYNC"
LAYER_NAMES = {
    "positive": "positive clicks",
    "negative": "negative clicks",
    "preview": "current object",
    "committed": "committed objects",
}
POSITIVE_COLOR = "#00e000"
NEGATIVE_COLOR = "#ff2080"
PREVIEW_COLOR = "#ffd000"
NO_MODEL = "(no trained weights shipped: load a file)"
SESSION_KEY = "napari_clickseg_session"
IMAGE_ID_KEY = "clickseg_image_id"  # unique_id of the image layer a committed layer belongs to
GEOMETRY_KEY = "clickseg_geometry"
BRUSH_KEY = "clickseg_brush"  # the paint label the dock last set on a committed layer
IDENTITY_KEY = "clickseg_image_identity"  # how the same image opened again is recognised
_OUR_KEYS = (SESSION_KEY, IMAGE_ID_KEY, GEOMETRY_KEY, "clickseg_image", BRUSH_KEY, IDENTITY_KEY)
KEYS = {
    "commit": "C",
    "clear": "Escape",
    "undo": "Control-Z",
    "redo": "Control-Shift-Z",
    "toggle": "T",
}
_DATA_DONE = ("added", "removed", "changed")


def _unwrap(obj: Any) -> Any:
    """The object behind napari's PublicOnlyProxy (plugins receive proxied viewers)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return a is not None and _unwrap(a) is _unwrap(b)


def _image_id(layer: Any) -> str:
    """A stable id of a layer for this program run (napari's ``unique_id``)."""
    return str(_unwrap(layer).unique_id)


def _image_identity(layer: Any) -> str | None:
    """What tells an image opened again from another of its name and shape: the file it was
    read from, else a checksum of its in-memory pixels (None for lazy data not from a file)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        try:
            st = os.stat(path)  # the same path with other contents is another image
        except OSError:
            return None
        if os.path.isdir(path):  # a folder (of planes, a zarr store) changes no stat when rewritten
            return None
        return f"file:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
    if not isinstance(data, np.ndarray):
        return None
    # short axes (channels, slices, time points) whole, long ones strided: about 64k values
    short = [n for n in data.shape if n <= 64]
    long = [n for n in data.shape if n > 64]
    budget = max(1.0, 65536 / max(1, int(np.prod(short))))
    step = max(1, int(np.ceil((np.prod(long) / budget) ** (1 / len(long))))) if long else 1
    sample = np.ascontiguousarray(data[tuple(slice(None, None, step if n > 64 else 1) for n in data.shape)])
    return f"pixels:{data.dtype}:{data.shape}:{zlib.crc32(sample.view(np.uint8))}"


#: a committed layer's name as the dock gives it (napari adds " [1]" where the name is taken)
_DEFAULT_COMMITTED_NAME = re.compile(re.escape(LAYER_NAMES["committed"]) + r"( \[\d+\])?")

#: image layer events that move it in the world
_TRANSFORM_EVENTS = ("scale", "translate", "rotate", "shear", "affine", "units")


def _apply_transform(layer: Any, transform: dict[str, Any]) -> None:
    """Set ``layer``'s scale, translate, affine, units (and rotate, shear) as ``transform`` says."""
    for name, value in transform.items():
        setattr(layer, name, value)


def _placed_as(layer: Any, transform: dict[str, Any]) -> bool:
    """Whether ``layer`` already has ``transform`` (see ``_apply_transform``)."""
    for name, value in transform.items():
        have = getattr(layer, name)
        if name == "units":
            if tuple(have) != tuple(value):
                return False
        elif name == "affine":
            if not np.allclose(have.affine_matrix, value.affine_matrix):
                return False
        elif np.shape(have) != np.shape(value) or not np.allclose(have, value):
            return False
    return True


def _keeps_axis(img: Any, axis: int) -> bool:
    """Whether ``img``'s rotate and shear leave data axis ``axis`` alone (turn only the others)."""
    from napari.utils.transforms import Affine

    lin = Affine(rotate=img.rotate, shear=img.shear, ndim=img.ndim).linear_matrix
    unit = np.eye(img.ndim)[axis]
    return bool(np.allclose(lin[axis], unit) and np.allclose(lin[:, axis], unit))


def _unit_factors(layer: Any, world_units: Any, ndim: int) -> np.ndarray:
    """Per world axis, how many of ``layer``'s units one world unit is (1 where none are set)."""
    out = np.ones(ndim)
    units = getattr(layer, "units", None)
    if world_units is not None and units is not None and 0 < len(units) <= min(len(world_units), ndim):
        import pint

        reg = pint.get_application_registry()
        n = len(units)
        out[-n:] = [reg.get_base_units(w)[0] / reg.get_base_units(u)[0] for w, u in zip(world_units[-n:], units)]
    return out


def _data_to_world(layer: Any, pos: Any, world_units: Any) -> np.ndarray:
    """The inverse of ``_world_to_data``."""
    world = np.asarray(layer.data_to_world(np.asarray(pos, dtype=float)), dtype=float)
    return world / _unit_factors(layer, world_units, len(world))


def _world_to_data(layer: Any, world: Any, world_units: Any) -> np.ndarray:
    """``layer.world_to_data`` of a point given in the viewer's world units.

    napari draws a layer whose units differ from the world's (mm in a um world) scaled to them,
    but ``world_to_data`` ignores units: the point is converted to the layer's units first.
    """
    world = np.asarray(world, dtype=float)
    return np.asarray(layer.world_to_data(world * _unit_factors(layer, world_units, len(world))), dtype=float)


def _in_viewer(layer: Any, viewer: Any) -> bool:
    return layer is not None and any(_same(layer, la) for la in viewer.layers)


def _plane_digest(image: np.ndarray) -> int:
    """A cheap fingerprint of a plane's pixels (tells in-place edits apart)."""
    return zlib.crc32(np.ascontiguousarray(image).view(np.uint8).reshape(-1))


def _parent_watcher(on_parent: Any) -> Any:
    """A Qt event filter calling ``on_parent(new_parent)`` when its widget's parent changes.

    napari closes a dock (its X button, ``remove_dock_widget``) with ``setParent(None)``:
    the widget is neither closed nor destroyed, so this is the signal that it left.
    """
    from qtpy.QtCore import QEvent, QObject

    class _Watcher(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.ParentChange:
                on_parent(obj.parent())
            return False

    return _Watcher()


class ClickSegWidget(Container):
    """Click-based segmentation dock (see module docstring).

    Args:
        napari_viewer: the viewer (npe2 passes it).
        allow_untrained: offer random-initialised models, labelled UNTRAINED (tests,
            debugging); default from ``NAPARI_CLICKSEG_ALLOW_UNTRAINED``.
        synchronous: predict, and read a fine-tune's output for the whole run, in the GUI
            thread instead of worker threads (tests, debugging); default from
            ``NAPARI_CLICKSEG_SYNC``.
        predictor_kwargs: passed to the engine's ``Predictor`` (device, dtype,
            target_size, ...); default: the engine's choices.
        models: extra models for the dropdown, ``{name: ClickSegModel or factory}``
            (a model trained in a notebook, a test stub); listed as "custom: name".
    """

    _live: weakref.WeakSet = weakref.WeakSet()  # docks not garbage-collected

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        *,
        allow_untrained: bool | None = None,
        synchronous: bool | None = None,
        predictor_kwargs: dict | None = None,
        models: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.allow_untrained = (
            allow_untrained_from_env() if allow_untrained is None else allow_untrained
        )
        self.synchronous = (
            os.environ.get(ENV_SYNC, "") in ("1", "true", "yes")
            if synchronous is None
            else synchronous
        )
        self._predictor_kwargs = dict(predictor_kwargs or {})
        self._custom_models = dict(models or {})

        # state
        self.image_layer: Any = None
        self.geometry: ImageGeometry | None = None
        self.session: AnnotationSession | None = None
        self.layers: dict[str, Any] = {}
        self.handle: EngineHandle | None = None
        self._choices: dict[str, ModelChoice] = {}
        self._files: list[str] = []
        self._generation = 0
        self._result: PredictionResult | None = None
        self._preview_plane: tuple[Plane, tuple[slice, slice]] | None = None  # where the preview is drawn
        self._worker: Any = None
        self._removal_selection: list[Any] | None = None  # while napari removes the bound image
        self._removed_parked: list[Any] = []  # layers with unsaved objects removed in this Qt turn
        self._pending: PredictionRequest | None = None
        self._syncing = False
        self._placing = False  # the dock itself is placing its layers (see _on_own_layer_moved)
        self._points_seen: tuple[int, int] = (-1, -1)  # points layers' sizes at the last sync
        self._writing_committed = False
        self._order = 0
        self._image_cache: tuple[Any, Any, int | None, np.ndarray | None, tuple[int, ...]] | None = None
        self._image_version = 0  # bumped when the bound image's data is replaced
        self._last_image_key: Any = None
        self._adopted: str | None = None  # what _adopt_orphan brought back, for the status
        self._closed = False  # the dock was closed: it no longer touches Qt or the viewer
        self._docked = False
        self._model_label: str | None = None
        self.last_status = ""

        # one dock per viewer: a second one would share the image's session with its own click
        # and preview layers, which the first dock's commits leave stale (and both get the clicks)
        for other in list(ClickSegWidget._live):
            if _same(other.viewer, napari_viewer) and not other.__dict__.get("_closed", True):
                other.close_dock()
        ClickSegWidget._live.add(self)

        self._build()
        self._connect()
        self._refresh_model_choices()
        self._select_initial_model()
        self._bind_to(self._default_image())

    # --- construction --------------------------------------------------------------------

    def _build(self) -> None:
        self.image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.channel_combo = ComboBox(label="channels", choices=self._channel_choices)
        self.model_combo = ComboBox(label="model", choices=self._model_choice_list)
        self.device_label = Label(label="device", value="-")
        self.refinement_combo = ComboBox(label="refinement", choices=list(REFINEMENTS), value="off")
        self.integrity_check = CheckBox(text="structural integrity", value=True)
        self.graphcut_check = CheckBox(text="graph cut", value=False)
        self.threshold_slider = FloatSlider(
            label="threshold", min=0.05, max=0.95, step=0.05, value=0.5
        )
        self.negative_check = CheckBox(
            text=f"plain clicks are negative ({KEYS['toggle']})", value=False
        )
        self.overwrite_check = CheckBox(text="commit may overwrite other objects", value=False)
        self.time_label = Label(label="time per click", value="-")
        self.commit_button = PushButton(text=f"Commit object ({KEYS['commit']})")
        self.undo_button = PushButton(text="Undo (Ctrl+Z)")
        self.redo_button = PushButton(text="Redo (Ctrl+Shift+Z)")
        self.clear_button = PushButton(text="Clear (Esc)")
        self.object_spin = SpinBox(label="object id", min=1, max=2**31 - 1, value=1)
        self.reopen_button = PushButton(text="Re-open")
        self.delete_button = PushButton(text="Delete")
        self.save_button = PushButton(text="Save annotations...")
        self.load_button = PushButton(text="Load annotations...")
        self.status_label = Label(value="")
        self.finetune = FineTunePanel(self)
        edit_row = Container(
            widgets=[self.undo_button, self.redo_button, self.clear_button],
            layout="horizontal",
            labels=False,
        )
        object_row = Container(
            widgets=[self.object_spin, self.reopen_button, self.delete_button],
            layout="horizontal",
            labels=False,
        )
        file_row = Container(
            widgets=[self.save_button, self.load_button], layout="horizontal", labels=False
        )
        for row in (edit_row, object_row, file_row):
            row.margins = (0, 0, 0, 0)
        self.extend(
            [
                self.image_combo,
                self.channel_combo,
                self.model_combo,
                self.device_label,
                self.refinement_combo,
                self.integrity_check,
                self.graphcut_check,
                self.threshold_slider,
                self.negative_check,
                self.overwrite_check,
                self.time_label,
                self.commit_button,
                edit_row,
                object_row,
                file_row,
                self.status_label,
                *self.finetune.widgets,
            ]
        )
        self.status_label.native.setWordWrap(True)
        self.tooltip = (
            "Click: positive point. Shift/Ctrl-click or right click: negative point. "
            "C: commit, Esc: clear, Ctrl+Z / Ctrl+Shift+Z: undo / redo."
        )

    def _connect(self) -> None:
        v = self.viewer
        v.layers.events.inserted.connect(self._on_layers_changed)
        v.layers.events.removed.connect(self._on_layer_removed)
        v.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys(v)
        self.image_combo.changed.connect(self._on_image_changed)
        self.channel_combo.changed.connect(self._on_channel_changed)
        self.model_combo.changed.connect(self._on_model_changed)
        # the threshold reaches post-processing and refinement too; unrefined clicks come from the history
        for w in (self.refinement_combo, self.integrity_check, self.graphcut_check, self.threshold_slider):
            w.changed.connect(lambda *_: self.request_prediction())
        self.commit_button.changed.connect(lambda *_: self.commit())
        self.undo_button.changed.connect(lambda *_: self.undo())
        self.redo_button.changed.connect(lambda *_: self.redo())
        self.clear_button.changed.connect(lambda *_: self.clear())
        self.reopen_button.changed.connect(lambda *_: self.reopen(self.object_spin.value))
        self.delete_button.changed.connect(lambda *_: self.delete(self.object_spin.value))
        self.save_button.changed.connect(lambda *_: self._save_dialog())
        self.load_button.changed.connect(lambda *_: self._load_dialog())
        self.native.destroyed.connect(lambda *_: self.close_dock(remove_layers=False))
        self._watcher = _parent_watcher(self._on_parent_changed)
        self.native.installEventFilter(self._watcher)

    def _on_parent_changed(self, parent: Any) -> None:
        """Docked (a parent) or closed (the parent taken away after docking)."""
        if parent is not None:
            self._docked = True
        elif self._docked:
            self.close_dock()

    def close_dock(self, remove_layers: bool = True) -> None:
        """Unhook the dock from the viewer (napari closed the dock, or the viewer); idempotent.

        Cancels a running fine-tune (the trainer writes its checkpoint) and drops pending
        predictions. ``remove_layers``: also remove the click and preview layers (the
        committed layers stay: they hold the annotations, and a reopened dock finds them).
        """
        if self.__dict__.get("_closed", True):  # closed, or already torn down by the garbage collector
            return
        if (finetune := self.__dict__.get("finetune")) is not None:  # None: __init__ failed in _build
            finetune.shutdown()
        v = self.viewer
        try:
            if self._on_mouse in v.mouse_drag_callbacks:
                v.mouse_drag_callbacks.remove(self._on_mouse)
            for target in (v, *v.layers, *self.layers.values()):
                self._unbind_keys(target)
            v.layers.events.inserted.disconnect(self._on_layers_changed)
            v.layers.events.removed.disconnect(self._on_layer_removed)
            if remove_layers:
                self._unbind(remove_layers=True)
            else:
                self._cancel_pending()
                self._watch_image(None)
            for layer in list(v.layers):
                if IMAGE_ID_KEY in layer.metadata:
                    layer.events.selected_label.disconnect(self._on_selected_label)
                    layer.events.data.disconnect(self._on_committed_data)
                    layer.events.mode.disconnect(self._on_committed_mode)
                    layer.events.paint.disconnect(self._on_committed_paint)
        except (RuntimeError, ValueError, AttributeError):  # viewer already gone
            pass
        self._closed = True

    def _bind_keys(self, target: Any) -> None:
        """Bind this dock's keys on ``target``, keeping what they replace for ``_unbind_keys``."""
        for name, key in KEYS.items():
            action = self._key_action(name)
            old = target.bind_key(key, action, overwrite=True)
            if getattr(old, "clickseg_owner", None) is self:  # bound again: keep the first one's
                old = getattr(old, "clickseg_replaced", None)
            action.clickseg_replaced = old  # type: ignore[attr-defined]

    def _unbind_keys(self, target: Any) -> None:
        """Remove this dock's key bindings from ``target``, putting back what they replaced
        (the user's own, another dock's); another dock's stay."""
        if target is None:
            return
        for key in KEYS.values():
            func = target.bind_key(key, None)
            if getattr(func, "clickseg_owner", None) is self:
                func = getattr(func, "clickseg_replaced", None)  # else not ours: it stays
            if func is not None:
                target.bind_key(key, func, overwrite=True)

    def _key_action(self, name: str):
        def action(_target: Any) -> None:
            if name == "toggle":
                self.negative_check.value = not self.negative_check.value
            else:
                getattr(self, name)()

        action.clickseg_owner = self  # type: ignore[attr-defined]
        action.__name__ = f"clickseg_{name}"
        action.__doc__ = f"napari-clickseg: {name}"
        return action

    # --- status --------------------------------------------------------------------------

    def _status(self, msg: str) -> None:
        self.last_status = msg
        if self._closed:
            return
        self.status_label.value = msg
        self.viewer.status = f"clickseg: {msg}" if msg else ""

    # --- image binding -------------------------------------------------------------------

    def _image_choices(self, _w: Any = None) -> list[Any]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _channel_choices(self, _w: Any = None) -> list[Any]:
        layer = self.image_layer
        out: list[Any] = [("from layer (rgb or none)", "auto")]
        if layer is not None and not layer.rgb and layer.ndim >= 3:  # 2 spatial axes must remain
            out += [(f"axis {a} (size {layer.data.shape[a]})", a) for a in range(layer.ndim)]
        return out

    def _default_image(self) -> Any:
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        return images[-1] if images else None

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._closed:
            return
        self._untie_copies(event)
        self.image_combo.reset_choices()
        if self.image_layer is None:
            layer = self._default_image()
            if layer is not None:
                self._bind_to(layer)

    def _on_layer_removed(self, event: Any) -> None:
        if self._closed:
            return
        removed = event.value
        for layer in self.viewer.layers:  # its objects are named after it as it was when removed
            if layer.metadata.get(IMAGE_ID_KEY) == _image_id(removed):
                layer.metadata["clickseg_image"] = removed.name
        if _same(removed, self.image_layer):
            # napari may be removing a snapshot of the selection, and bringing back a deleted
            # committed layer changes the selection: what napari goes on to remove is what is
            # selected now
            self._removal_selection = list(self.viewer.layers.selection)
            session = self.session
            try:
                self._unbind()
            finally:
                self._removal_selection = None
            nxt = self._default_image()
            if nxt is not None:
                self._bind_to(nxt)
            if session is not None and session.unsaved and session.has_objects:
                from qtpy.QtCore import QTimer

                parked = next((la for la in self.viewer.layers if la.metadata.get(SESSION_KEY) is session), None)
                name = removed.name
                QTimer.singleShot(0, lambda: self._keep_objects(name, session, parked, nxt is None))
        else:
            for k, layer in list(self.layers.items()):
                if _same(layer, removed):
                    del self.layers[k]
            self._keep_parked_objects(removed)
        # the image as it was when removed (its data may have been replaced since its
        # committed layer was made) is the one that, opened again, gets its objects back
        key = _image_id(removed)
        tied = [la for la in self.viewer.layers if la.metadata.get(IMAGE_ID_KEY) == key]
        # (a file's identity stays as it was when the layer was made: the file may have been
        # overwritten since, and the layer still shows the old pixels)
        if tied and not getattr(getattr(removed, "source", None), "path", None):
            identity = _image_identity(removed)
            for layer in tied:
                layer.metadata[IDENTITY_KEY] = identity
        self.image_combo.reset_choices()

    def _keep_parked_objects(self, removed: Any) -> None:
        """Unsaved objects of an image the dock is not on survive the deletion of that image
        with their layer (in either order): a layer holding them is remembered for this Qt
        turn, and a removed image's are put back once napari's removal is done."""
        from napari.layers import Image
        from qtpy.QtCore import QTimer

        def unsaved(layer: Any) -> AnnotationSession | None:
            session = layer.metadata.get(SESSION_KEY)
            return session if session is not None and session.unsaved and session.has_objects else None

        if unsaved(removed) is not None:
            if not self._removed_parked:
                QTimer.singleShot(0, self._removed_parked.clear)
            self._removed_parked.append(removed)
        if not isinstance(_unwrap(removed), Image):
            return
        key, name = _image_id(removed), removed.name
        for layer in [*self.viewer.layers, *self._removed_parked]:
            session = unsaved(layer)
            if session is not None and layer.metadata.get(IMAGE_ID_KEY) == key:
                QTimer.singleShot(0, lambda s=session, la=layer: self._keep_objects(name, s, la, False))

    def _keep_objects(self, image: str, session: AnnotationSession, parked: Any, no_image: bool) -> None:
        """Once napari's removal of image ``image`` is done: its unsaved objects stay in a
        layer (put back if the same deletion took it: deleting layers is no way to lose
        annotations), and the status says where, as the dock saves only the bound image's."""
        if self._closed or parked is None:
            return
        layer = next((la for la in self.viewer.layers if la.metadata.get(SESSION_KEY) is session), None)
        if layer is None:
            self.viewer.add_layer(parked)
            layer = parked
        self._status(
            f"{image!r} was removed; its {len(session.object_ids())} object(s), not saved, stay in "
            f"{layer.name!r} (napari's File > Save Selected Layers saves their pixels)"
            + ("; add or select an image to go on" if no_image else "")
        )

    def _on_image_changed(self, layer: Any) -> None:
        if self._syncing or _same(layer, self.image_layer):
            return
        if layer is None and _in_viewer(self.image_layer, self.viewer):
            # renaming the bound image empties the dropdown for a moment: it stays bound
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._show_bound_image)
            return
        self._bind_to(layer)

    def _show_bound_image(self) -> None:
        if self._closed or self.image_layer is None:
            return
        self._syncing = True
        try:
            self.image_combo.reset_choices()
            self.image_combo.value = self.image_layer
        finally:
            self._syncing = False

    def _on_channel_changed(self, value: Any) -> None:
        if self.image_layer is not None and not self._syncing:
            self._bind_to(self.image_layer, channel=value)

    def _unbind(self, remove_layers: bool = True) -> None:
        """Leave the image: no clicks or preview on screen; the committed layer stays.

        The session (with the open object's clicks) stays in the committed layer's metadata.
        """
        self._cancel_pending()
        self._restore_committed()
        self._watch_image(None)
        if remove_layers:
            for key in ("positive", "negative", "preview"):
                self._remove_soon(self.layers.pop(key, None))
            self._park(self.layers.get("committed"))
        self.layers.pop("committed", None)
        self.image_layer = None
        self.geometry = None
        self.session = None
        self._image_cache = None
        self._result = None
        self._preview_plane = None
        self._update_buttons()
        self._status("no image: add or select one")

    def _remove_soon(self, layer: Any) -> None:
        """Remove one of our layers; a selected one once napari's own removal is done (its
        "delete selected layers" goes on to remove it: removing it now breaks that loop)."""
        if not _in_viewer(layer, self.viewer):
            return
        selection = self._removal_selection
        if selection is None:
            selection = list(self.viewer.layers.selection)
        if not any(_same(layer, la) for la in selection):
            self.viewer.layers.remove(layer)
            return
        from qtpy.QtCore import QTimer

        viewer = self.viewer

        def later() -> None:
            if _in_viewer(layer, viewer):
                viewer.layers.remove(layer)

        QTimer.singleShot(0, later)

    def _restore_committed(self) -> None:
        """Bring back the bound image's committed layer if the user deleted it.

        Called before the dock leaves the image: the session lives in that layer's
        metadata, so without the layer its objects would be lost.
        """
        s, img, g = self.session, self.image_layer, self.geometry
        if s is None or img is None or g is None or "committed" in self.layers:
            return
        if s.records or s.labels.any() or s.clicks:
            syncing, self._syncing = self._syncing, True  # adding it must not rebind the dock
            try:
                self.layers["committed"] = self._new_committed(img, g, s)
            finally:
                self._syncing = syncing

    def _watch_image(self, layer: Any) -> None:
        """Follow ``layer``'s data changes (None: stop following the bound image); the image
        left keeps none of our keys (its C would commit on another image)."""
        old = self.image_layer
        if old is not None:
            self._unbind_keys(old)
            old.events.data.disconnect(self._on_image_data)
            old.events.set_data.disconnect(self._on_image_data)
            for name in _TRANSFORM_EVENTS:
                getattr(old.events, name).disconnect(self._on_image_transform)
        if layer is not None:
            layer.events.data.connect(self._on_image_data)
            layer.events.set_data.connect(self._on_image_data)
            for name in _TRANSFORM_EVENTS:
                getattr(layer.events, name).connect(self._on_image_transform)

    def _on_image_transform(self, event: Any = None) -> None:
        """The bound image moved (scale, translate, rotate, shear, affine): our layers follow."""
        if self.image_layer is None or self.geometry is None or self._closed:
            return
        transform = self._transform(self.image_layer, self.geometry)
        self._placing = True  # not a user moving our layers
        try:
            for layer in self.layers.values():
                if _in_viewer(layer, self.viewer):
                    _apply_transform(layer, transform)
        finally:
            self._placing = False

    def _on_image_data(self, event: Any) -> None:
        """The bound image changed: rebind on a new shape, else re-predict if its pixels did.

        ``data`` events (the array replaced) and ``set_data`` events (``layer.refresh()``,
        slicing) are seen. Numpy pixels edited in place are caught by a checksum of the
        plane taken at such an event (call ``layer.refresh()`` after editing, as napari needs
        to show the edit); for other arrays (dask, zarr) assign the data again
        (``layer.data = layer.data``) after editing it in place.
        """
        layer = self.image_layer
        if layer is None or self._closed:
            return
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        if getattr(event, "type", "") == "data":
            self._image_version += 1
            if self.geometry is None or tuple(data.shape) != self.geometry.data_shape:
                self._rebind_new_shape(layer)
                return
        elif not isinstance(data, np.ndarray):
            return  # napari re-slicing a lazy array (every slider step): its pixels are as they were
        self._image_cache = None
        s = self.session
        if s is None or not s.clicks or s.plane is None:
            return
        try:
            key = self._plane_image(s.plane)[0]
        except (ValueError, IndexError):
            key = None
        if key != self._last_image_key:
            self.request_prediction()

    def _rebind_new_shape(self, layer: Any) -> None:
        """Bind ``layer`` again after its data changed shape (the old objects stay parked)."""
        g = self.geometry
        axis = None if g is None else g.channel_axis
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        shape = tuple(data.shape)
        self._bind_to(layer, channel="auto" if axis is None or axis >= len(shape) else axis)
        if self.geometry is None or self.geometry.data_shape != shape:
            self._bind_to(layer)  # the channel axis does not fit the new data
        if self.geometry is None or self.geometry.data_shape != shape:
            self._unbind()
            self._status(f"cannot segment {layer.name!r} with its new data: add or select an image")

    def bind(self, layer: Any, channel_axis: int | str | None = "auto") -> None:
        """Segment ``layer`` (an Image layer), with ``channel_axis`` a layer axis or "auto"."""
        self._bind_to(layer, channel=channel_axis)

    def _bind_to(self, layer: Any, channel: Any = "auto") -> None:
        if self._closed:
            return
        if layer is None:
            self._unbind()
            return
        channel_axis = None if channel in ("auto", None) else int(channel)
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        try:
            geometry = ImageGeometry(tuple(data.shape), bool(layer.rgb), channel_axis)
        except ValueError as e:
            self._status(f"cannot segment {layer.name!r}: {e}")
            return
        self._cancel_pending()  # the open object stays in its session, for when the dock comes back
        self._restore_committed()
        old_committed = self.layers.get("committed")
        self._watch_image(layer)
        self.image_layer = layer
        self.geometry = geometry
        self._image_cache = None
        self._result = None
        self._preview_plane = None
        self._syncing = True
        try:
            self.image_combo.reset_choices()
            self.image_combo.value = layer
            self.channel_combo.reset_choices()
            self.channel_combo.value = "auto" if channel_axis is None else channel_axis
        finally:
            self._syncing = False
        self._park(old_committed)  # before a new layer would take its name
        self._make_layers()
        reopened = self.session is not None and bool(self.session.clicks)
        if reopened:  # left open when the dock left this image or was closed
            self._after_session_change()
            self._show_plane(self.session.plane)  # after: the points layers hold its clicks
        self.viewer.layers.selection.active = layer
        size = " x ".join(map(str, geometry.spatial_shape))
        channels = f", {geometry.n_channels} channels" if geometry.n_channels > 1 else ""
        todo = (
            f"its open object is back ({len(self.session.clicks)} click(s))" if reopened
            else "click on an object"
        )
        adopted, self._adopted = self._adopted, None
        self._status(f"bound to {layer.name!r} ({size}{channels}): {todo}" + (f"; {adopted}" if adopted else ""))

    def _transform(self, img: Any, g: ImageGeometry) -> dict[str, Any]:
        """Layer kwargs placing annotation layers of geometry ``g`` over image ``img``."""
        scale, translate = g.annotation_transform(img.scale, img.translate)
        common = {"scale": scale, "translate": translate, "affine": img.affine, "units": img.units}
        if g.channel_axis is None or _keeps_axis(img, g.channel_axis):
            # (a rotation or shear mixing in the stretched channel axis cannot be matched: skipped)
            common.update(rotate=img.rotate, shear=img.shear)
        return common

    def _make_layers(self, session: AnnotationSession | None = None) -> None:
        """Set up the click and preview layers and find or create the committed layer.

        Click and preview layers of the right dimensionality still in the viewer (those of
        the image the dock leaves) are emptied, shown, given their names again, placed over
        the image and moved to the top: removing a layer costs napari a garbage collection
        (about 0.2 s each).

        Args:
            session: the session a new committed layer gets (when the image's layer was
                deleted); default: the found layer's session, or a new one.
        """
        from napari.utils.colormaps import DirectLabelColormap

        g, img, v = self.geometry, self.image_layer, self.viewer
        assert g is not None
        common = self._transform(img, g)
        preview = np.zeros(g.spatial_shape, dtype=np.uint8)
        preview_view = g.layer_labels_view(preview)
        ndims = {"positive": g.layer_ndim, "negative": g.layer_ndim, "preview": preview_view.ndim}
        kept = {}
        for key, ndim in ndims.items():
            old = self.layers.pop(key, None)
            # with a channel axis the layers get no rotate/shear to set: fresh ones (unrotated)
            if _in_viewer(old, v) and old.ndim == ndim and "rotate" in common:
                kept[key] = old
            elif _in_viewer(old, v):
                v.layers.remove(old)
        size = max(3.0, min(g.spatial_shape[-2:]) / 50)
        syncing, self._syncing = self._syncing, True  # emptying a kept layer is no user edit
        try:
            for key, color in (("positive", POSITIVE_COLOR), ("negative", NEGATIVE_COLOR)):
                pts = kept.get(key)
                if pts is not None:
                    pts.visible, pts.name = True, LAYER_NAMES[key]  # as a new layer would be
                    pts.selected_data = set()  # napari keeps a selection past its points
                    pts.data = np.empty((0, g.layer_ndim))
                    pts.current_size = size
                    _apply_transform(pts, common)
                    v.layers.move(v.layers.index(pts), len(v.layers))
                else:
                    pts = v.add_points(
                        np.empty((0, g.layer_ndim)),
                        ndim=g.layer_ndim,
                        name=LAYER_NAMES[key],
                        face_color=color,
                        border_color="white",
                        border_width=0.15,
                        size=size,
                        features={"order": np.empty(0, dtype=float)},
                        feature_defaults={"order": -1.0},
                        **common,
                    )
                    pts.events.data.connect(self._on_points_data)
                    pts.events.set_data.connect(self._on_points_set_data)
                    self._hook_placement(pts)
                self.layers[key] = pts
            layer = kept.get("preview")
            if layer is not None:
                layer.visible, layer.name = True, LAYER_NAMES["preview"]
                layer.data = preview_view
                _apply_transform(layer, common)
                v.layers.move(v.layers.index(layer), len(v.layers))
            else:
                layer = v.add_labels(
                    preview_view,
                    name=LAYER_NAMES["preview"],
                    opacity=0.55,
                    colormap=DirectLabelColormap(
                        color_dict={None: "transparent", 0: "transparent", 1: PREVIEW_COLOR}
                    ),
                    **common,
                )
                layer.events.paint.connect(self._on_preview_paint)
                self._hook_placement(layer)
            self.layers["preview"] = layer
        finally:
            self._syncing = syncing
        self._preview_array = preview
        committed = self._find_committed(img, g)
        if committed is None and session is None:  # a deleted layer shown again keeps its session
            committed = self._adopt_orphan(img, g)
        if committed is None:
            if session is None or session.labels.shape != g.spatial_shape:
                # uint16 draws fast in napari; the session widens it past 65535 objects
                session = AnnotationSession(np.zeros(g.spatial_shape, dtype=np.uint16))
            committed = self._new_committed(img, g, session)
        else:
            labels = self._writable_labels(committed, g)
            session = committed.metadata.get(SESSION_KEY)
            if not isinstance(session, AnnotationSession) or session.labels.shape != labels.shape:
                session = AnnotationSession(labels)
                committed.metadata[SESSION_KEY] = session
            elif not np.may_share_memory(session.labels, labels):
                session.attach(labels)
            if committed.name.startswith(LAYER_NAMES["committed"] + " ("):
                committed.name = LAYER_NAMES["committed"]
            _apply_transform(committed, common)  # the image may have moved meanwhile
            if v.layers.index(committed) < v.layers.index(img):  # back with its image: drawn above it
                v.layers.move(v.layers.index(committed), v.layers.index(img) + 1)
            self._hook_committed(committed)  # a layer made by a dock that was closed
        self.session = session
        self.layers["committed"] = committed
        self._brush_new_id(committed)
        # keys work whichever of our layers is selected (Ctrl+Z on the labels layer stays napari's)
        for layer in (
            img,
            self.layers["positive"],
            self.layers["negative"],
            self.layers["preview"],
        ):
            self._bind_keys(layer)

    def _new_committed(self, img: Any, g: ImageGeometry, session: AnnotationSession) -> Any:
        """A committed-objects layer showing ``session``'s labels, tied to image ``img``."""
        layer = self.viewer.add_labels(
            g.layer_labels_view(session.labels),
            name=LAYER_NAMES["committed"],
            opacity=0.5,
            **self._transform(img, g),
        )
        layer.metadata.update(
            {
                SESSION_KEY: session,
                IMAGE_ID_KEY: _image_id(img),
                GEOMETRY_KEY: g,
                "clickseg_image": img.name,
                IDENTITY_KEY: _image_identity(img),
            }
        )
        self._hook_committed(layer)
        return layer

    def _hook_committed(self, layer: Any) -> None:
        """Follow a committed layer's label selection, data and placement (once)."""
        layer.events.selected_label.connect(self._on_selected_label)
        layer.events.data.connect(self._on_committed_data)
        layer.events.mode.connect(self._on_committed_mode)
        layer.events.paint.connect(self._on_committed_paint)
        self._hook_placement(layer)

    def _hook_placement(self, layer: Any) -> None:
        for name in _TRANSFORM_EVENTS:
            getattr(layer.events, name).connect(self._on_own_layer_moved)

    def _on_own_layer_moved(self, event: Any) -> None:
        """One of the dock's layers was moved off its image (napari's transform mode, or its
        scale set by hand): it is put back, as clicks and objects are written under the image's
        pixels and must be drawn, and hand-painted, there."""
        layer = getattr(event, "source", None)
        if self._placing or self._closed or self.image_layer is None or self.geometry is None:
            return
        if not any(_same(layer, la) for la in self.layers.values()):
            return  # a parked layer of another image: it follows that image, not ours
        transform = self._transform(self.image_layer, self.geometry)
        if _placed_as(layer, transform):
            return
        self._placing = True
        try:
            _apply_transform(layer, transform)
        finally:
            self._placing = False
        self._status(f"{layer.name!r} stays over {self.image_layer.name!r}: move the image instead, its "
                     "annotation layers follow it")

    def annotated_images(self) -> tuple[list[AnnotatedImage], list[str]]:
        """Every image with committed objects (the bound image first, even with its layer
        deleted), and the names of committed layers holding objects that cannot be used:
        their image was removed or no longer has the shape they were made for, or the layer
        holds data that no longer fits them."""
        from napari.layers import Image

        def pixels(img: Any) -> Any:
            return img.data[0] if getattr(img, "multiscale", False) else img.data

        found: list[AnnotatedImage] = []
        if self.session is not None and self.geometry is not None and self.image_layer is not None:
            found.append(AnnotatedImage(self.image_layer.name, self.session, self.geometry, pixels(self.image_layer)))
        images = {_image_id(la): la for la in self.viewer.layers if isinstance(_unwrap(la), Image)}
        lost: list[str] = []
        for layer in list(self.viewer.layers):
            session, g = layer.metadata.get(SESSION_KEY), layer.metadata.get(GEOMETRY_KEY)
            if not isinstance(session, AnnotationSession) or g is None or session is self.session:
                continue
            img = images.get(layer.metadata.get(IMAGE_ID_KEY))
            data = None if img is None else pixels(img)
            usable = data is not None and tuple(data.shape) == g.data_shape and bool(img.rgb) == g.rgb
            if usable and not np.may_share_memory(session.labels, layer.data):
                try:  # its data was replaced while no dock followed the layer
                    if not isinstance(layer.data, np.ndarray) or tuple(layer.data.shape) != g.layer_labels_shape:
                        raise SessionError("the layer's data does not fit its image")
                    session.attach(self._writable_labels(layer, g))
                except SessionError:
                    usable = False
            if usable:
                found.append(AnnotatedImage(img.name, session, g, data))
            elif session.has_objects:
                lost.append(layer.name)
        return found, lost

    def _find_committed(self, img: Any, g: ImageGeometry) -> Any:
        """The committed-objects layer of image layer ``img`` with geometry ``g``, if any.

        Layers are tied to the image layer's identity (its napari ``unique_id``), never to
        names: another image of the same shape never gets them.
        """
        from napari.layers import Labels

        key = _image_id(img)
        found = [
            layer
            for layer in self.viewer.layers
            if isinstance(_unwrap(layer), Labels)
            and layer.metadata.get(IMAGE_ID_KEY) == key
            and layer.metadata.get(GEOMETRY_KEY) == g
            and isinstance(layer.data, np.ndarray)
            and np.issubdtype(layer.data.dtype, np.integer)
            and tuple(layer.data.shape) == g.layer_labels_shape
        ]
        for layer in found:  # the layer showing its session's own array, not a copy of it
            session = layer.metadata.get(SESSION_KEY)
            if isinstance(session, AnnotationSession) and np.may_share_memory(session.labels, layer.data):
                return layer
        return found[0] if found else None

    def _adopt_orphan(self, img: Any, g: ImageGeometry) -> Any:
        """The parked committed layer of a removed image that ``img`` is (the same file
        opened again: the same name, geometry and file path, or, for images not from a file,
        the same pixels), tied to ``img`` now; None unless there is exactly one. Layers the
        user renamed or emptied are left alone."""
        from napari.layers import Labels

        live = {_image_id(la) for la in self.viewer.layers}
        identity = _image_identity(img)
        orphans = [
            layer
            for layer in self.viewer.layers
            if isinstance(_unwrap(layer), Labels)
            and layer.metadata.get(IMAGE_ID_KEY) not in live
            and layer.metadata.get("clickseg_image") == img.name
            and layer.metadata.get(GEOMETRY_KEY) == g
            and identity is not None
            and layer.metadata.get(IDENTITY_KEY) == identity
            and layer.name.startswith(LAYER_NAMES["committed"] + " (")
            and isinstance(layer.data, np.ndarray)
            and tuple(layer.data.shape) == g.layer_labels_shape
        ]
        sessions = [la.metadata.get(SESSION_KEY) for la in orphans]
        if len(orphans) != 1 or not isinstance(sessions[0], AnnotationSession):
            return None
        layer, session = orphans[0], sessions[0]
        n = len(session.object_ids_present())
        if not (n or session.clicks):
            return None
        layer.metadata[IMAGE_ID_KEY] = _image_id(img)
        if n:
            self._adopted = f"the {n} object(s) it had when it was removed are back"
        return layer

    def _untie_copies(self, event: Any) -> None:
        """A copy of a committed layer (napari's "Duplicate Layer") becomes a plain labels
        layer: it shares the original's metadata, session included, but not its pixels."""
        layer = getattr(event, "value", None)
        session = getattr(layer, "metadata", {}).get(SESSION_KEY)
        if session is None:
            return
        if any(
            other is not layer and getattr(other, "metadata", {}).get(SESSION_KEY) is session
            for other in self.viewer.layers
        ):
            layer.metadata = {k: v for k, v in layer.metadata.items() if k not in _OUR_KEYS}
            if np.may_share_memory(np.asarray(layer.data), session.labels):  # a deleted layer put back
                layer.data = np.array(layer.data)  # its pixels are its own from now on
            self._status(f"{layer.name!r} is a copy: a plain labels layer, not annotated by the dock")

    def _park(self, layer: Any) -> None:
        """Name the committed layer of an image the dock is leaving after that image (and
        its channel axis, as each channel choice of one image keeps its own layer, and its
        data's shape where an earlier shape of that image already has the name); a blank one
        (nothing committed, painted or clicked) is removed instead."""
        if not _in_viewer(layer, self.viewer) or not _DEFAULT_COMMITTED_NAME.fullmatch(layer.name):
            return  # renamed by the user: theirs to name
        session = layer.metadata.get(SESSION_KEY)
        if isinstance(session, AnnotationSession) and session.blank:
            # untied at once: a selected layer goes only on Qt's next turn, and the dock must
            # not find it again meanwhile (coming back to the image makes a new one)
            layer.metadata = {k: v for k, v in layer.metadata.items() if k not in _OUR_KEYS}
            layer.name = f"{LAYER_NAMES['committed']} (blank, removed)"  # frees the name now
            self._remove_soon(layer)
            return
        key = layer.metadata.get(IMAGE_ID_KEY)
        names = [la.name for la in self.viewer.layers if _image_id(la) == key]
        image = names[0] if names else layer.metadata.get("clickseg_image", "old image")
        g = layer.metadata.get(GEOMETRY_KEY)
        axis = getattr(g, "channel_axis", None)
        channels = "" if axis is None else f", channels on axis {axis}"
        name = f"{LAYER_NAMES['committed']} ({image}{channels})"
        if g is not None and any(la.name == name for la in self.viewer.layers if la is not layer):
            name = name[:-1] + f", {'x'.join(map(str, g.data_shape))})"  # the image had another shape
        layer.name = name

    def _on_committed_data(self, event: Any) -> None:
        """A committed layer's data was replaced: its session follows the new array.

        Data that cannot hold the annotations (another shape, not a numpy array) leaves
        the layer as a plain labels layer and puts the session's labels in a new layer.
        """
        layer = event.source
        session = layer.metadata.get(SESSION_KEY)
        g = layer.metadata.get(GEOMETRY_KEY)
        if self._writing_committed or not isinstance(session, AnnotationSession) or g is None:
            return
        data = layer.data
        try:
            if not isinstance(data, np.ndarray) or tuple(data.shape) != g.layer_labels_shape:
                raise SessionError(
                    f"new data of shape {tuple(getattr(data, 'shape', ()))} "
                    f"({type(data).__name__}) does not fit labels of shape {g.layer_labels_shape}"
                )
            gone = session.attach(self._writable_labels(layer, g))
        except SessionError as e:
            self._detach_committed(layer, session, g, str(e))
            return
        if gone:
            ids = ", ".join(map(str, gone))
            self._status(
                f"committed labels replaced: dropped the provenance of absent object(s) {ids}"
            )
        if session is self.session:
            self._update_buttons()

    def _writable_labels(self, layer: Any, g: ImageGeometry) -> np.ndarray:
        """The spatial labels of a committed layer; read-only data (e.g. a memory-mapped
        file) is first replaced in the layer by a writable copy."""
        if not layer.data.flags.writeable:
            self._writing_committed = True
            try:
                layer.data = np.array(layer.data)
            finally:
                self._writing_committed = False
        return g.labels_from_layer(layer.data)

    def _detach_committed(
        self, layer: Any, session: AnnotationSession, g: ImageGeometry, why: str
    ) -> None:
        """Untie ``layer`` from its image and show ``session``'s labels in a new layer."""
        key = layer.metadata.get(IMAGE_ID_KEY)
        for k in (SESSION_KEY, IMAGE_ID_KEY, GEOMETRY_KEY):
            layer.metadata.pop(k, None)
        old_name = layer.name
        layer.name = f"{old_name} (replaced data)"
        if _same(layer, self.layers.get("committed")):
            del self.layers["committed"]
            self._ensure_layers()
        else:
            img = next((la for la in self.viewer.layers if _image_id(la) == key), None)
            if img is not None:
                self._park(self._new_committed(img, g, session))
        self._status(
            f"{old_name!r}: {why}; it is now a plain labels layer and the annotations "
            "stay in a new committed layer"
        )

    def _on_selected_label(self, event: Any) -> None:
        layer = self.layers.get("committed")
        if layer is not None and layer.selected_label > 0:
            self._show_id(int(layer.selected_label))
        self._forget_erased_label(event.source)

    def _on_committed_mode(self, event: Any) -> None:
        if str(event.source.mode) in ("paint", "fill"):
            self._forget_erased_label(event.source)

    def _on_committed_paint(self, event: Any) -> None:
        """A recorded id painted where it had no pixel left (its object erased, then the id
        painted again, e.g. through ``layer.paint`` with no label chosen): a new object,
        which does not inherit the erased one's clicks."""
        session = event.source.metadata.get(SESSION_KEY)
        if not isinstance(session, AnnotationSession) or not session.records:
            return
        painted: dict[int, int] = {}
        try:
            # napari's history atoms end with (old values of the changed pixels, new value(s))
            for atom in event.value:
                new = np.asarray(atom[-1])
                if new.ndim == 0:  # one label (a brush, a fill): every stored old value changed
                    if int(new) in session.records:
                        painted[int(new)] = painted.get(int(new), 0) + int(np.asarray(atom[-2]).size)
                    continue
                old = np.asarray(atom[-2])
                ids, counts = np.unique(new[new != old], return_counts=True)
                for oid, n in zip(ids.tolist(), counts.tolist()):
                    if oid in session.records:
                        painted[oid] = painted.get(oid, 0) + n
        except (TypeError, ValueError, IndexError):  # another napari's history: the records stay
            return
        fresh = [oid for oid, n in painted.items() if np.count_nonzero(session.labels == oid) <= n]
        for oid in fresh:
            del session.records[oid]
        session.forget_in_history(fresh)
        if fresh:
            self._status(
                f"object(s) {', '.join(map(str, fresh))} painted anew: a new object, without the erased "
                "one's clicks (napari's undo does not bring them back)"
            )

    def _forget_erased_label(self, layer: Any) -> None:
        """The label of an object erased since its commit is chosen (napari's "new label"
        hands out the largest id again) or about to be painted with: its record goes, so a
        new object painted by hand does not inherit the old one's clicks. Undoing an erase
        before that keeps the record."""
        session = layer.metadata.get(SESSION_KEY)
        oid = int(layer.selected_label)
        if isinstance(session, AnnotationSession) and oid in session.records:
            if session.drop_absent([oid]):
                self._status(
                    f"object {oid} was erased by hand: a new object {oid} painted now gets no clicks"
                )

    def _show_id(self, oid: int) -> None:
        """Put ``oid`` in the object-id box (whose Qt spin box stops at 2**31 - 1)."""
        if self.object_spin.min <= oid <= self.object_spin.max:
            self.object_spin.value = oid

    # --- the plane on screen -------------------------------------------------------------

    def current_plane(self) -> Plane:
        """The 2D plane of the image shown now (viewer's current point, layer's transform).

        Raises:
            ValueError: the viewer shows 3D, or the displayed axes include the channel axis.
        """
        if self.image_layer is None or self.geometry is None:
            raise ValueError("no image layer: add or select an image")
        img, dims = self.image_layer, self.viewer.dims
        offset = dims.ndim - img.ndim
        disp = [d - offset for d in dims.displayed if d >= offset]
        pos = _world_to_data(img, dims.point, dims.units)
        g = self.geometry
        for a in g.spatial_axes:  # napari shows nothing of the image on a slice it lacks
            if a not in disp and not 0 <= int(np.round(float(pos[a]))) < g.data_shape[a]:
                raise ValueError(
                    f"{img.name!r} has no slice here (axis {a} at {float(pos[a]):.1f}; it has "
                    f"{g.data_shape[a]}): move the slider onto one of its slices"
                )
        return g.plane_at(disp, pos)

    def _plane_image(self, plane: Plane) -> tuple[tuple[Any, ...], Any, int | None, np.ndarray | None]:
        """(key, image, channel axis, reference) of ``plane`` for a ``PredictionRequest``.

        Numpy data gives a view; lazy data (dask, zarr) a ``PlaneView`` that the engine reads
        only around the clicks; a pyramid also gives the plane of a coarser level, from which
        the engine takes its intensity statistics.
        """
        img, g = self.image_layer, self.geometry
        assert g is not None
        multiscale = getattr(img, "multiscale", False)
        data = img.data[0] if multiscale else img.data
        key: tuple[Any, ...] = (id(_unwrap(img)), id(data), self._image_version, g.channel_axis, plane)
        if self._image_cache is None or self._image_cache[0] != key:
            view = g.plane_view(data, plane)
            image = view.read() if isinstance(data, np.ndarray) else view
            reference = g.coarse_plane(list(img.data), plane) if multiscale else None
            # an in-memory plane's checksum tells in-place edits apart: taken once per plane and
            # again after the layer's data / set_data event (a refresh), not on every click
            digest = (_plane_digest(image),) if isinstance(data, np.ndarray) else ()
            self._image_cache = (key, image, view.channel_axis, reference, digest)
        _, image, ch, reference, digest = self._image_cache
        return (*key, *digest), image, ch, reference

    # --- clicks --------------------------------------------------------------------------

    def _on_mouse(self, viewer: Any, event: Any):
        """Press-release without drag adds a click; a drag pans as usual."""
        if self.image_layer is None or event.button not in (1, 2):
            return
        active = viewer.layers.selection.active
        if active is not None and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return
        start_pos = np.asarray(event.position, dtype=float)
        start_px = np.asarray(getattr(event, "pos", (0, 0)), dtype=float)
        names = {str(getattr(m, "name", m)) for m in (event.modifiers or ())}
        dragged = False
        yield
        while event.type == "mouse_move":
            px = np.asarray(getattr(event, "pos", start_px), dtype=float)
            if np.hypot(*(px - start_px)) > 4:
                dragged = True
            yield
        if dragged:
            return
        if viewer.dims.ndisplay != 2:  # a drag turns the camera; a click says why it adds nothing
            self._status("clicks are added in 2D: switch the viewer to 2D to click")
            return
        negative = event.button == 2 or bool(names & {"Shift", "Control", "Meta"})
        if self.negative_check.value and event.button == 1 and not names:
            negative = True
        self.add_click_world(start_pos, positive=not negative)

    def add_click_world(self, world_position: Any, positive: bool = True) -> bool:
        """Add a click at a viewer (world) position on the plane shown; False if refused."""
        if self.image_layer is None or self.geometry is None or self.session is None:
            self._status("no image layer: add or select an image")
            return False
        try:
            plane = self.current_plane()
        except ValueError as e:
            self._status(str(e))
            return False
        pos = _world_to_data(self.image_layer, world_position, self.viewer.dims.units)
        rows_ax, cols_ax = (self.geometry.spatial_axes[a] for a in plane.displayed)
        return self.add_click(float(pos[rows_ax]), float(pos[cols_ax]), positive, plane)

    def add_click(
        self, row: float, col: float, positive: bool = True, plane: Plane | None = None
    ) -> bool:
        """Add a click at (row, col) of ``plane`` (default: the plane shown); False if refused."""
        if self.geometry is None or self.session is None:
            self._status("no image layer: add or select an image")
            return False
        if plane is None:
            try:
                plane = self.current_plane()
            except ValueError as e:
                self._status(str(e))
                return False
        current = self.session.plane
        if current is not None and plane == Plane(current.displayed[::-1], current.index):
            row, col, plane = col, row, current  # the same slice, shown transposed
        h, w = plane.shape_in(self.geometry.spatial_shape)
        if not (-0.5 <= row < h - 0.5 and -0.5 <= col < w - 0.5):
            self._status("click outside the image: ignored")
            return False
        if current is not None and plane != current:
            self._status(
                f"the current object is on another slice ({self.session.plane.describe()}): "
                "commit (C) or clear (Esc) it first"
            )
            return False
        layer = self._points_layer(positive)
        coords = self.geometry.points_from_clicks([Click(row, col, positive)], plane)
        self._order += 1
        self._syncing = True
        try:
            layer.add(coords)
            feats = layer.features
            feats.loc[feats.index[-1], "order"] = float(self._order)
            layer.selected_data = set()
        finally:
            self._syncing = False
        self._status(f"{'positive' if positive else 'negative'} click at ({row:.0f}, {col:.0f})")  # over a refusal
        self._sync_from_layers(plane)
        return True

    def _points_layer(self, positive: bool) -> Any:
        self._ensure_layers()
        return self.layers["positive" if positive else "negative"]

    def _ensure_layers(self) -> None:
        """Re-create our layers if the user deleted one.

        The session keeps the clicks and the committed objects: a deleted committed layer
        comes back with them (deleting a layer is no way to lose annotations).
        """
        if self.image_layer is None or all(
            k in self.layers for k in ("positive", "negative", "preview", "committed")
        ):
            return
        self._make_layers(session=self.session)
        self._sync_to_layers()
        self._show_preview()

    def _on_points_data(self, event: Any) -> None:
        if self._syncing:
            return
        action = str(getattr(event, "action", "changed"))
        if action in _DATA_DONE:
            self._sync_from_layers()
            self._ensure_layers()  # a deleted points layer comes back with its clicks

    def _on_points_set_data(self, event: Any) -> None:
        """napari's paste (Ctrl+V) adds points with no data event: notice them by their count."""
        if self._syncing or self.session is None:
            return
        if self._point_counts() != self._points_seen:
            self._sync_from_layers()

    def _point_counts(self) -> tuple[int, int]:
        return tuple(len(lay.data) if (lay := self.layers.get(k)) is not None else -1 for k in ("positive", "negative"))

    def _read_points(self) -> tuple[np.ndarray, list[bool], list[float]]:
        coords, signs, orders = [], [], []
        for key, positive in (("positive", True), ("negative", False)):
            layer = self.layers.get(key)
            if layer is None and self.session is not None and self.session.plane is not None:
                # its layer was deleted: those clicks stay as they are (the layer comes back)
                mine = [c for c in self.session.clicks if c.positive == positive]
                if mine and self.geometry is not None:
                    coords.append(self.geometry.points_from_clicks(mine, self.session.plane))
                    signs += [positive] * len(mine)
                    orders += [float(c.order) for c in mine]
                continue
            if layer is None or len(layer.data) == 0:
                continue
            feats = layer.features
            if "order" not in feats or len(feats) != len(layer.data):
                order = np.full(len(layer.data), -1.0)
            else:
                order = feats["order"].to_numpy(dtype=float, na_value=-1.0)
            new = order < 0
            _, first = np.unique(order, return_index=True)
            new[np.setdiff1d(np.arange(len(order)), first)] = True  # a pasted copy repeats an order
            if new.any():  # points added by hand or pasted: give them the next orders
                order = order.copy()
                order[new] = self._order + 1 + np.arange(int(new.sum()))
                self._order += int(new.sum())
                if "order" in feats and len(feats) == len(layer.data):
                    feats["order"] = order
            coords.append(np.asarray(layer.data, dtype=float))
            signs += [positive] * len(layer.data)
            orders += list(order)
        if not coords:
            return np.empty((0, self.geometry.layer_ndim if self.geometry else 2)), [], []
        return np.concatenate(coords), signs, orders

    def _sync_from_layers(self, plane: Plane | None = None) -> None:
        """Points layers -> session clicks -> prediction."""
        if self.session is None or self.geometry is None:
            return
        coords, signs, orders = self._read_points()
        self._points_seen = self._point_counts()
        if plane is None:
            plane = self.session.plane
        if plane is None and len(coords):
            try:
                plane = self.current_plane()
            except ValueError as e:
                self._status(str(e))
                return
        if plane is None:
            changed = self.session.set_clicks([])
        else:
            clicks, off = self.geometry.clicks_from_points(coords, signs, orders, plane)
            h, w = plane.shape_in(self.geometry.spatial_shape)
            inside = [c for c in clicks if -0.5 <= c.row < h - 0.5 and -0.5 <= c.col < w - 0.5]
            if off or len(inside) < len(clicks):
                self._status(
                    f"ignored {off + len(clicks) - len(inside)} point(s) off the current object's "
                    f"slice ({plane.describe()}) or outside the image"
                )
            changed = self.session.set_clicks(inside, plane)
        if changed:
            self._update_buttons()
            self.request_prediction()

    def _sync_to_layers(self) -> None:
        """Session clicks -> points layers (without re-entering the layer handlers)."""
        if self.session is None or self.geometry is None:
            return
        clicks, plane = self.session.clicks, self.session.plane
        self._syncing = True
        try:
            for positive in (True, False):
                layer = self._points_layer(positive)
                mine = [c for c in clicks if c.positive == positive]
                coords = (
                    self.geometry.points_from_clicks(mine, plane)
                    if plane is not None and mine
                    else np.empty((0, self.geometry.layer_ndim))
                )
                layer.selected_data = set()
                layer.data = coords
                layer.features = {"order": np.array([float(c.order) for c in mine], dtype=float)}
        finally:
            self._syncing = False
        self._order = len(clicks)
        self._points_seen = self._point_counts()

    # --- prediction ----------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "brs": REFINEMENTS[self.refinement_combo.value],
            "structural_integrity": bool(self.integrity_check.value),
            "graph_cut": bool(self.graphcut_check.value),
            "threshold": float(self.threshold_slider.value),
        }

    def settings(self) -> dict[str, Any]:
        """Settings recorded with each committed object."""
        g = self.geometry
        return {
            **self._options(),
            "overwrite": bool(self.overwrite_check.value),
            "image": None if self.image_layer is None else self.image_layer.name,
            "channel_axis": None if g is None else g.channel_axis,
            "rgb": None if g is None else g.rgb,
        }

    def _make_request(self) -> PredictionRequest | None:
        s = self.session
        if s is None or not s.clicks or s.plane is None or self.handle is None:
            return None
        key, image, ch, reference = self._plane_image(s.plane)
        self._last_image_key = key
        return PredictionRequest(
            self._generation, self.handle, key, image, ch, tuple(s.clicks), self._options(), reference
        )

    def request_prediction(self) -> None:
        """Predict the current object from its clicks (newer requests supersede older ones)."""
        self._generation += 1
        try:
            req = self._make_request()
        except (ValueError, IndexError) as e:
            self._status(f"cannot read the image: {e}")
            req = None
        if req is None:
            self._pending = None
            self._result = PredictionResult(self._generation, None)
            self._show_preview()
            if self.handle is None and self.session is not None and self.session.clicks:
                self._status("no model loaded: choose one or load a weights file")
            return
        if self.synchronous:
            self._on_result(run_prediction(req))
        elif self._worker is not None:
            self._pending = req  # replaces any older pending request
        else:
            self._start_worker(req)

    def _start_worker(self, req: PredictionRequest) -> None:
        # superqt's worker, not napari's: napari lists each in its task manager, which keeps
        # every finished worker, with its request (image plane, model), for the session
        from superqt.utils import create_worker

        worker = create_worker(run_prediction, req, _start_thread=False)
        worker.returned.connect(self._on_result)
        worker.finished.connect(self._on_worker_finished)
        self._worker = worker
        workers.start(worker)

    def _on_worker_finished(self) -> None:
        self._worker = None
        req, self._pending = self._pending, None
        if req is not None and req.generation == self._generation:
            self._start_worker(req)

    def _cancel_pending(self) -> None:
        self._pending = None
        self._generation += 1

    @property
    def busy(self) -> bool:
        """A prediction is running or waiting."""
        return self._worker is not None or self._pending is not None

    def _on_result(self, res: PredictionResult) -> None:
        if res.generation != self._generation or self._closed:
            return  # superseded by a newer click
        self._result = res
        if res.error:
            self._status(f"prediction failed: {res.error}")
        elif res.prob is not None:
            extra = (
                f" (+{res.set_image_seconds * 1000:.0f} ms image features)"
                if res.set_image_seconds
                else ""
            )
            self.time_label.value = f"{(res.seconds - res.set_image_seconds) * 1000:.0f} ms{extra}"
        self._show_preview()

    def current_mask(self) -> np.ndarray | None:
        """Binary mask of the latest prediction at the threshold, or None."""
        found = self._box_mask()
        if found is None:
            return None
        box, inside = found
        mask = np.zeros(self._result.prob.shape, dtype=bool)  # calloc: free outside the box
        mask[box] = inside
        return mask

    def _box_mask(self) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """(box, mask inside it) of the latest prediction, outside which it is empty: the
        zoom box, so a click on a large image thresholds only the region it changed."""
        res = self._result
        if res is None or res.prob is None or res.generation != self._generation:
            return None
        if res.box is None:
            box = (slice(None), slice(None))
        else:
            y0, x0, y1, x1 = res.box
            box = (slice(y0, y1), slice(x0, x1))
        return box, res.prob[box] >= float(self.threshold_slider.value)

    def _show_preview(self) -> None:
        layer = self.layers.get("preview")
        if layer is None:
            return
        arr = self._preview_array
        if self._preview_plane is not None:
            plane, box = self._preview_plane
            try:
                plane.view(arr)[box] = 0
            except ValueError:
                arr[...] = 0
            self._preview_plane = None
        found = self._box_mask()
        plane = self.session.plane if self.session is not None else None
        if found is not None and plane is not None:
            box, inside = found
            view = plane.view(arr)
            if view.shape == self._result.prob.shape:
                view[box][inside] = 1
                self._preview_plane = (plane, box)
        layer.refresh()

    def _on_preview_paint(self, event: Any = None) -> None:
        """The current object shows the prediction: strokes painted on it are taken back
        (once written: napari announces a stroke before it writes it)."""
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._retake_preview)

    def _retake_preview(self) -> None:
        arr = getattr(self, "_preview_array", None)
        if self._closed or arr is None:
            return
        arr[...] = 0
        self._preview_plane = None
        if self._result is not None:
            self._show_preview()
        else:
            self.layers["preview"].refresh()
        self._status(
            f"{LAYER_NAMES['preview']!r} follows the clicks: correct it with clicks, or paint on "
            f"{LAYER_NAMES['committed']!r} after committing"
        )

    # --- objects -------------------------------------------------------------------------

    def _after_session_change(self, predict: bool = True) -> None:
        self._sync_to_layers()
        if predict:
            self.request_prediction()
        self._update_buttons()

    def _update_buttons(self) -> None:
        s = self.session
        self.undo_button.enabled = bool(s and s.can_undo)
        self.redo_button.enabled = bool(s and s.can_redo)

    def undo(self) -> bool:
        """Undo the last change of the current object's clicks."""
        if self.session is None or not self.session.undo():
            self._status("nothing to undo")
            return False
        self._after_session_change()
        self._show_plane(self.session.plane)  # the clicks back may be on another slice
        self._status(f"undo: {len(self.session.clicks)} click(s)")
        return True

    def redo(self) -> bool:
        """Redo the last undone change."""
        if self.session is None or not self.session.redo():
            self._status("nothing to redo")
            return False
        self._after_session_change()
        self._show_plane(self.session.plane)
        self._status(f"redo: {len(self.session.clicks)} click(s)")
        return True

    def clear(self) -> bool:
        """Drop the current object's clicks and preview (undoable)."""
        if self.session is None or not self.session.clear():
            return False
        self._after_session_change()
        self._status("cleared the current object (Ctrl+Z brings it back)")
        return True

    def commit(self) -> int | None:
        """Write the current object into the committed labels; returns its id or None."""
        s = self.session
        if s is None or s.plane is None or not s.clicks:
            self._status("nothing to commit: click on an object first")
            return None
        if self.current_mask() is None:  # the latest prediction is not in yet: compute it now
            req = self._make_request()
            if req is None:
                self._status("no model loaded: choose one or load a weights file")
                return None
            self._pending = None
            self._on_result(run_prediction(req))
        mask = self.current_mask()
        if mask is None:
            self._status("nothing to commit: the prediction failed")
            return None
        model = dict(self.handle.provenance) if self.handle is not None else {}
        before = s.labels
        try:
            res = s.commit(
                mask, model=model, settings=self.settings(), overwrite=self.overwrite_check.value
            )
        except SessionError as e:
            self._status(str(e))
            return None
        self._generation += 1
        self._result = None
        self._after_session_change(predict=False)
        self._show_preview()
        self._refresh_committed(replaced=s.labels is not before)
        self._show_id(res.id)
        note = f"; {res.kept} px left to other objects" if res.kept else ""
        note += f"; took {res.overwritten} px from other objects" if res.overwritten else ""
        self._status(f"committed object {res.id} ({res.written} px{note})")
        return res.id

    def reopen(self, oid: int) -> bool:
        """Make committed object ``oid`` the current object again, with its clicks."""
        s = self.session
        if s is None:
            return False
        try:
            plane = self.current_plane()
        except ValueError:
            plane = None
        try:
            record = s.reopen(int(oid), plane)
        except SessionError as e:
            self._status(str(e))
            return False
        self._show_plane(s.plane)
        self._after_session_change()
        n = len(s.clicks)
        self._status(
            f"re-opened object {oid} with {n} click(s); correct it and commit (C) to replace it"
            if record is not None
            else f"re-opened object {oid} (no recorded clicks): click to re-segment it, then commit"
        )
        return True

    def delete(self, oid: int) -> bool:
        """Delete committed object ``oid``."""
        s = self.session
        if s is None:
            return False
        try:
            n = s.delete(int(oid))
        except SessionError as e:
            self._status(str(e))
            return False
        self._refresh_committed()
        self._update_buttons()
        self._status(f"deleted object {oid} ({n} px)")
        return True

    def _refresh_committed(self, replaced: bool = False) -> None:
        """Redraw the committed labels; ``replaced``: the session holds a new array."""
        if self.session is None or self.geometry is None:
            return
        if "committed" not in self.layers:
            self._ensure_layers()  # shows the session's labels again
            return
        layer = self.layers["committed"]
        if replaced:
            self._writing_committed = True
            try:
                layer.data = self.geometry.layer_labels_view(self.session.labels)
            finally:
                self._writing_committed = False
        else:
            layer.refresh()
        # napari's own undo on this layer (Ctrl+Z with it selected) would replay hand edits
        # made before this write as old pixel values, over the dock's objects: it starts over
        reset = getattr(_unwrap(layer), "_reset_history", None)  # napari has no public call for this
        if callable(reset):
            reset()
        self._brush_new_id(layer)

    def _brush_new_id(self, layer: Any) -> None:
        """Hand painting on the committed layer makes a new object: napari's label stays 1
        otherwise, and a nucleus painted with it joins object 1 (on any slice). A label the
        user chose (another id, 0 to erase, one shown alone) is theirs: it stays."""
        if self.session is None or not np.issubdtype(layer.data.dtype, np.integer):
            return
        if layer.selected_label != layer.metadata.get(BRUSH_KEY, 1) or getattr(layer, "show_selected_label", False):
            return
        oid = self.session.next_id()
        if oid > np.iinfo(layer.data.dtype).max and self.geometry is not None:
            # every id of the dtype is taken (65535 objects in uint16): widen now, not at the
            # next commit, or painting would join the last object
            before = self.session.labels
            try:
                self.session.make_room(oid)
            except SessionError:
                return
            if self.session.labels is not before:
                self._writing_committed = True
                try:
                    layer.data = self.geometry.layer_labels_view(self.session.labels)
                finally:
                    self._writing_committed = False
        if oid <= np.iinfo(layer.data.dtype).max:
            shown = self.object_spin.value
            layer.selected_label = oid
            layer.metadata[BRUSH_KEY] = oid  # with the layer: a reopened dock goes on from it
            self._show_id(shown)  # the id box keeps its object

    def _show_plane(self, plane: Plane | None) -> None:
        """Show ``plane``: its two axes on screen (a 2D view) and the sliders at its slice."""
        if plane is None or not plane.index or self.geometry is None:
            return
        img, g = self.image_layer, self.geometry
        dims = self.viewer.dims
        offset = dims.ndim - img.ndim
        shown = [g.spatial_axes[d] + offset for d in plane.displayed]
        if dims.ndisplay == 2 and set(dims.displayed) != set(shown):  # e.g. committed on an XZ view
            dims.order = tuple([a for a in dims.order if a not in shown] + shown)
        pos = _world_to_data(img, dims.point, dims.units)
        for s_axis, idx in plane.index:
            pos[g.spatial_axes[s_axis]] = idx
        world = _data_to_world(img, pos, dims.units)
        offset = self.viewer.dims.ndim - img.ndim
        for a, val in enumerate(world):
            if a not in (g.spatial_axes[d] for d in plane.displayed):
                self.viewer.dims.set_point(a + offset, val)

    # --- models --------------------------------------------------------------------------

    def _refresh_model_choices(self) -> None:
        choices = available_choices(self.allow_untrained, self._files, self._custom_models)
        self._choices = {c.label: c for c in choices}
        self._syncing = True
        try:
            self.model_combo.reset_choices()
            if self._model_label in self._choices:
                self.model_combo.value = self._model_label
        finally:
            self._syncing = False

    def _model_choice_list(self, _w: Any = None) -> list[str]:
        return [*(list(self._choices) or [NO_MODEL]), LOAD_FILE]

    def _select_initial_model(self) -> None:
        from ..weights import WeightsError, shipped_manifest

        if not self._choices:
            self._status("no trained weights are shipped: load a weights file (model dropdown)")
            return
        try:
            default = shipped_manifest().get("default")
        except WeightsError:
            default = None
        label = default if default in self._choices else next(iter(self._choices))
        self.select_model(label)

    def model_labels(self) -> list[str]:
        """Labels of the models in the dropdown (without the load-file entry)."""
        return list(self._choices)

    def select_model(self, label: str) -> bool:
        """Switch to the model with dropdown label ``label``; keeps the clicks and re-predicts."""
        from ..weights import WeightsError

        choice = self._choices.get(label)
        if choice is None:
            self._status(f"unknown model {label!r}")
            return False
        try:
            handle = load_model(choice, **self._predictor_kwargs)
        except (WeightsError, ValueError, RuntimeError, OSError) as e:
            self._status(f"cannot load {label}: {e}")
            self._set_model_value(self._model_label)
            return False
        self.handle = handle
        self._model_label = label
        self._set_model_value(label)
        self.device_label.value = handle.describe()
        untrained = choice.kind == "untrained"
        self._status(
            f"model: {label}" + (" - UNTRAINED, predictions are meaningless" if untrained else "")
        )
        self.request_prediction()
        return True

    def _set_model_value(self, label: str | None) -> None:
        self._syncing = True
        try:
            self.model_combo.value = (
                label if label in self._choices else self.model_combo.choices[0]
            )
        finally:
            self._syncing = False

    def _on_model_changed(self, value: str) -> None:
        if self._syncing:
            return
        if value == LOAD_FILE:
            path = self._ask_path(
                "Load napari-clickseg weights", "Weights (*.safetensors)", save=False
            )
            if path:
                self.load_weights_file(path)
            else:
                self._set_model_value(self._model_label)
            return
        if value in self._choices:
            self.select_model(value)
        else:
            self._set_model_value(self._model_label)

    def load_weights_file(self, path: str | os.PathLike, select: bool = True) -> bool:
        """Add a weights file to the model list and (by default) switch to it."""
        from ..weights import WeightsError, read_metadata

        path = str(path)
        if not select:
            try:
                read_metadata(path)
            except WeightsError as e:
                self._status(f"cannot load {path}: {e}")
                return False
        if path not in self._files:
            self._files.append(path)
        self._refresh_model_choices()
        if not select:
            return True
        label = next(
            c.label for c in self._choices.values() if c.kind == "file" and c.source == path
        )
        ok = self.select_model(label)
        if not ok:
            self._files.remove(path)
            self._refresh_model_choices()
        return ok

    # --- save / load ---------------------------------------------------------------------

    def _ask_path(self, title: str, filt: str, save: bool) -> str:
        from qtpy.QtWidgets import QFileDialog

        fn = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = fn(self.native, title, "", filt)
        return path

    def _save_dialog(self) -> None:
        path = self._ask_path(
            "Save annotations (labels .tif + provenance .json beside)", "TIFF (*.tif *.tiff)", True
        )
        if not path:
            return
        try:
            tif = AnnotationSession.paths(path)[0]
        except SessionError as e:
            self._status(f"could not save: {e}")
            return
        # the dialog asked about the name typed; with no suffix the labels go to <name>.tif
        if tif != Path(path) and tif.exists() and not self._confirm(
            "Replace file?", f"{tif.name} already exists. Replace it with these labels?"
        ):
            self._status("not saved")
            return
        self.save_annotations(path)

    def _confirm(self, title: str, text: str) -> bool:
        """Ask a yes/no question (No is the default)."""
        from qtpy.QtWidgets import QMessageBox

        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        answer = QMessageBox.question(
            self.native, title, text, buttons, QMessageBox.StandardButton.No
        )
        return answer == QMessageBox.StandardButton.Yes

    def _load_dialog(self) -> None:
        path = self._ask_path("Load annotations", "TIFF (*.tif *.tiff)", False)
        if not path:
            return
        discard = False
        s = self.session
        if s is not None and (s.unsaved or s.clicks):
            what = []
            if s.unsaved:
                what.append(
                    f"the committed objects of {self.image_layer.name!r} changed since they were last saved"
                )
            if s.clicks:
                what.append(f"the object being segmented has {len(s.clicks)} click(s)")
            said = " and ".join(what)
            drops = " and drops the object being segmented" if s.clicks else ""
            discard = self._confirm(
                "Discard unsaved annotations?",
                f"{said[:1].upper() + said[1:]}. Loading {Path(path).name} replaces the "
                f"committed objects{drops}. Discard?",
            )
            if not discard:
                self._status(
                    "not loaded: save the committed objects first" if s.unsaved
                    else "not loaded: commit (C) or clear (Esc) the object being segmented first"
                )
                return
        self.load_annotations(path, discard_unsaved=discard)

    def save_annotations(self, path: str | os.PathLike) -> tuple[Any, Any] | None:
        """Save the committed labels to ``path`` (.tif/.tiff) and their provenance beside it.

        The provenance goes to ``<stem>.json``; a save that would overwrite a json that is
        not the provenance of these labels is refused (see ``AnnotationSession.save``).
        """
        if self.session is None or self.geometry is None:
            self._status("nothing to save: no image")
            return None
        try:
            tif = AnnotationSession.paths(path)[0]
        except SessionError as e:
            self._status(f"could not save: {e}")
            return None
        source = getattr(getattr(self.image_layer, "source", None), "path", None)
        if source and same_file(tif, source):
            self._status(f"not saved: {tif} is the image's own file; choose another name")
            return None
        info = {
            "name": self.image_layer.name,
            "data_shape": list(self.geometry.data_shape),
            "rgb": self.geometry.rgb,
            "channel_axis": self.geometry.channel_axis,
        }
        try:
            tif, js = self.session.save(path, image=info)
        except (OSError, SessionError) as e:
            self._status(f"could not save: {e}")
            return None
        s = self.session
        with_clicks = sum(1 for r in s.records.values() if r.clicks)
        self._status(f"saved {len(s.object_ids())} object(s) ({with_clicks} with clicks) to {tif} and {js.name}")
        return tif, js

    def load_annotations(self, path: str | os.PathLike, discard_unsaved: bool = False) -> bool:
        """Replace the committed labels and provenance by saved ones (drops the current object).

        Args:
            path: the labels .tif/.tiff (its provenance json is read from beside it).
            discard_unsaved: replace committed objects that were not saved and drop the
                clicks of the object being segmented; without it loading is refused while
                there are any.
        """
        s, g = self.session, self.geometry
        if s is None or g is None:
            self._status("load an image first")
            return False
        try:
            tif = s.paths(path)[0]
        except SessionError as e:
            self._status(str(e))
            return False
        if not tif.is_file():  # said first: there is nothing to ask about
            self._status(f"labels file not found: {tif}")
            return False
        source = getattr(getattr(self.image_layer, "source", None), "path", None)
        if source and same_file(tif, source):
            self._status(f"not loaded: {tif} is the image's own file, not its annotations")
            return False
        if s.unsaved and not discard_unsaved:
            self._status(
                "not loaded: the committed objects have unsaved changes; save them first "
                "(or confirm discarding them)"
            )
            return False
        if s.clicks and not discard_unsaved:
            self._status("not loaded: commit (C) or clear (Esc) the object being segmented first")
            return False
        before = s.labels
        try:
            warnings = s.load(path)
        except SessionError as e:
            self._status(str(e))
            return False
        self._generation += 1
        self._result = None
        self._after_session_change(predict=False)
        self._show_preview()
        self._refresh_committed(replaced=s.labels is not before)
        msg = f"loaded {len(s.object_ids())} object(s) from {path}"
        self._status(msg + ("; " + "; ".join(warnings) if warnings else ""))
        return True
