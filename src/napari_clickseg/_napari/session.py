"""The annotation session: clicks, undo/redo, commit/reopen/delete, provenance, save/load.

Pure Python and numpy (no napari, no Qt), so it is tested without a viewer and the
dock widget only maps layers and events onto it.

One session annotates one spatial labels array (2D, 3D, time stacks...). The
*current object* is a list of clicks on one 2D ``Plane`` of that array, possibly a
re-opened committed object (``editing``). Every change of the current object is
undoable; a commit writes the object's mask into the labels under the next free id
(or the re-opened id), without touching pixels of other objects unless asked, and
keeps its provenance (clicks, plane, model, weights sha256, settings).

Annotations are saved as the chosen ``<stem>.tif`` / ``<stem>.tiff`` (the labels) plus
the sidecar ``<stem>.json`` (format ``napari-clickseg-annotations`` version 1, the
provenance of every object; its ``labels_file`` names the labels file it describes).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..clicks import Click, as_clicks
from ..files import replacing
from .planes import Plane, plane_of_box

__all__ = ["AnnotationSession", "CommitResult", "ObjectRecord", "SessionError"]

FORMAT = "napari-clickseg-annotations"
FORMAT_VERSION = 1
MAX_UNDO = 1000


def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the bounding box of a 2D boolean mask, None if it is empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _union(
    a: tuple[slice, slice] | None, b: tuple[slice, slice] | None
) -> tuple[slice, slice] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without its length-1 axes."""
    return tuple(n for n in shape if n != 1)


class SessionError(ValueError):
    """An operation on the session cannot be done (the message says why)."""


def _labels_digest(labels: np.ndarray) -> str:
    """A hash of a labels array's shape, dtype and values (byte order aside)."""
    a = np.ascontiguousarray(labels, dtype=labels.dtype.newbyteorder("="))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.data)
    return h.hexdigest()


def _object_digests(labels: np.ndarray, ids: Iterable[int]) -> dict[str, str]:
    """Per object id: a hash of where its pixels are (dtype and other objects aside), so a
    load can tell the objects an edit elsewhere left alone from those it changed."""
    flat = np.ravel(labels)
    where = np.flatnonzero(np.isin(flat, np.fromiter(ids, dtype=np.int64)))
    values = flat[where]
    order = np.argsort(values, kind="stable")
    where, values = where[order], values[order]
    found, starts = np.unique(values, return_index=True)
    ends = [*starts[1:], len(values)] if len(starts) else []
    return {
        str(int(v)): hashlib.blake2b(where[a:b].astype("<i8").tobytes(), digest_size=8).hexdigest()
        for v, a, b in zip(found, starts, ends, strict=True)
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ObjectRecord:
    """Provenance of one committed object.

    Attributes:
        id: label value in the labels array.
        clicks: the clicks that produced it (empty for objects without provenance).
        plane: the 2D plane it was segmented on (None if unknown).
        model: model description (name, arch, weights sha256, trained...).
        settings: prediction settings (refinement, post-processing, threshold...).
        area: pixels written at the last commit.
        created, modified: ISO timestamps (UTC).
        revision: 1 at the first commit, +1 per re-commit after re-opening.
    """

    id: int
    clicks: tuple[Click, ...] = ()
    plane: Plane | None = None
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    area: int = 0
    created: str = ""
    modified: str = ""
    revision: int = 1

    def to_json(self) -> dict[str, Any]:
        """The record as it is saved in the annotation JSON."""
        return {
            "id": self.id,
            "clicks": [{"row": c.row, "col": c.col, "positive": c.positive} for c in self.clicks],
            "plane": None if self.plane is None else self.plane.to_json(),
            "model": self.model,
            "settings": self.settings,
            "area": self.area,
            "created": self.created,
            "modified": self.modified,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObjectRecord:
        """A record read back from ``to_json``'s dict (ValueError if malformed)."""
        try:
            clicks = as_clicks((c["row"], c["col"], c["positive"]) for c in d.get("clicks", []))
            plane = None if d.get("plane") is None else Plane.from_json(d["plane"])
            if int(d["id"]) < 1:
                raise ValueError("object ids start at 1")
            return cls(
                id=int(d["id"]),
                clicks=tuple(clicks),
                plane=plane,
                model=dict(d.get("model") or {}),
                settings=dict(d.get("settings") or {}),
                area=int(d.get("area", 0)),
                created=str(d.get("created", "")),
                modified=str(d.get("modified", "")),
                revision=int(d.get("revision", 1)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            shown = repr(d) if len(repr(d)) <= 120 else repr(d)[:117] + "..."
            raise SessionError(f"corrupt object record {shown}: {e}") from None


@dataclass(frozen=True)
class _State:
    clicks: tuple[Click, ...]
    plane: Plane | None
    editing: int | None


@dataclass(frozen=True)
class CommitResult:
    """What a commit did.

    Attributes:
        id: the object's label.
        written: pixels now carrying ``id`` on the plane.
        kept: pixels of the mask left to other objects (not overwritten).
        overwritten: pixels taken from other objects (only with ``overwrite``).
    """

    id: int
    written: int
    kept: int
    overwritten: int


class AnnotationSession:
    """Clicks and committed objects of one labels array (see module docstring).

    Args:
        labels: the spatial labels array, modified in place (integer dtype, >= 2D). When
            an id outgrows its dtype the session continues on a wider copy (read
            ``labels`` after ``commit``).
    """

    def __init__(self, labels: np.ndarray) -> None:
        self._labels = self._check_labels(labels)
        self.records: dict[int, ObjectRecord] = {}
        self._state = _State((), None, None)
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._saved = self._digest()

    # --- state ---------------------------------------------------------------------------

    @staticmethod
    def _check_labels(labels: np.ndarray) -> np.ndarray:
        if not isinstance(labels, np.ndarray):
            raise SessionError(f"labels must be a numpy array, got {type(labels).__name__}")
        if labels.ndim < 2:
            raise SessionError(f"labels must have at least 2 dimensions, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise SessionError(f"labels must have an integer dtype, got {labels.dtype}")
        return labels

    @property
    def labels(self) -> np.ndarray:
        """The labels array (the same object the session writes into)."""
        return self._labels

    def attach(self, labels: np.ndarray) -> list[int]:
        """Use another array of the same shape (e.g. after the layer's data was replaced).

        Provenance follows the pixels: records of ids absent from ``labels`` are dropped
        (their object is gone; an id reused later must not inherit its clicks).

        Returns:
            The ids whose records were dropped, sorted.

        Raises:
            SessionError: not an integer numpy array of the session's shape (nothing changes).
        """
        labels = self._check_labels(labels)
        if labels.shape != self._labels.shape:
            raise SessionError(f"labels of shape {labels.shape} do not fit {self._labels.shape}")
        self._labels = labels
        return self.drop_absent()

    def drop_absent(self, ids: Iterable[int] | None = None) -> list[int]:
        """Drop the records of objects with no pixel left (of ``ids``; default: all).

        Provenance follows the pixels: an object erased by hand or overwritten by another
        loses its clicks, so an id given to a new object later never inherits them. Called
        where the records are used (re-open, save, a commit's overwrite; the dock also calls
        it when a label is chosen to paint with), not on each hand edit: undoing an erase in
        napari brings the pixels back, and their record is still there.

        Returns:
            The ids whose records were dropped, sorted.
        """
        wanted = set(self.records) if ids is None else {int(i) for i in ids} & set(self.records)
        if not wanted:
            return []
        check = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
        present = set(np.unique(self._labels[np.isin(self._labels, check)]).tolist())
        gone = sorted(k for k in wanted if k not in present)
        for k in gone:
            del self.records[k]
        self.forget_in_history(gone)
        return gone

    def object_ids_present(self) -> list[int]:
        """Ids with at least one pixel in the labels array, sorted."""
        return [int(i) for i in np.unique(self._labels) if i > 0]

    def _digest(self) -> str:
        """The labels' hash and the provenance, as text (what a save writes)."""
        return _labels_digest(self._labels) + repr(sorted(self.records.items()))

    @property
    def unsaved(self) -> bool:
        """Labels or provenance changed since the session started, was saved or loaded."""
        return self._digest() != self._saved

    @property
    def has_objects(self) -> bool:
        """Some object is recorded or has pixels."""
        return bool(self.records) or bool(self._labels.any())

    @property
    def blank(self) -> bool:
        """Nothing to keep: no objects, clicks, or changes to undo or redo."""
        return not (self._state.clicks or self._undo or self._redo or self.has_objects)

    @property
    def clicks(self) -> tuple[Click, ...]:
        """Clicks of the current object, in order."""
        return self._state.clicks

    @property
    def plane(self) -> Plane | None:
        """Plane of the current object (None before the first click)."""
        return self._state.plane

    @property
    def editing(self) -> int | None:
        """Id of the re-opened object being edited, or None for a new object."""
        return self._state.editing

    @property
    def can_undo(self) -> bool:
        """There is a click change to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """There is an undone click change to redo."""
        return bool(self._redo)

    def _push(self, new: _State) -> bool:
        if new == self._state:
            return False
        self._undo.append(self._state)
        del self._undo[:-MAX_UNDO]
        self._redo.clear()
        self._state = new
        return True

    def _check_plane(self, plane: Plane) -> None:
        try:
            plane.check(self._labels.shape)
        except ValueError as e:
            raise SessionError(str(e)) from None

    # --- clicks --------------------------------------------------------------------------

    def set_clicks(self, clicks: Sequence[Click], plane: Plane | None = None) -> bool:
        """Replace the clicks of the current object (one undo step); True if anything changed.

        Args:
            clicks: the new clicks (orders are renumbered from their position).
            plane: their plane; required when the current object has none yet.
        """
        clicks = tuple(as_clicks(clicks))
        plane = plane if plane is not None else self.plane
        if plane is None:
            if clicks:
                raise SessionError("the first click needs a plane")
        else:
            self._check_plane(plane)
        if not clicks and self.editing is None:
            plane = None
        return self._push(replace(self._state, clicks=clicks, plane=plane))

    def add_click(self, row: float, col: float, positive: bool, plane: Plane | None = None) -> bool:
        """Append one click (one undo step).

        Raises:
            SessionError: if ``plane`` differs from the current object's plane.
        """
        if self.plane is not None and plane is not None and plane != self.plane:
            raise SessionError(
                f"the current object lies on another slice ({self.plane.describe()}); "
                "commit or clear it before clicking here"
            )
        return self.set_clicks([*self.clicks, Click(row, col, positive)], plane)

    def undo(self) -> bool:
        """Go back one change of the current object; False if there is none."""
        if not self._undo:
            return False
        self._redo.append(self._state)
        self._state = self._undo.pop()
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change; False if there is none."""
        if not self._redo:
            return False
        self._undo.append(self._state)
        self._state = self._redo.pop()
        return True

    def clear(self) -> bool:
        """Drop the current object (its clicks; a re-opened object stays as committed)."""
        return self._push(_State((), None, None))

    # --- objects -------------------------------------------------------------------------

    def object_ids(self) -> list[int]:
        """Ids present in the labels array or in the provenance, sorted."""
        return sorted(set(self.object_ids_present()) | set(self.records))

    def next_id(self) -> int:
        """The next free label: one more than the largest id in the labels or the records."""
        top = int(self._labels.max(initial=0))
        if self.records:
            top = max(top, max(self.records))
        return top + 1

    def make_room(self, oid: int) -> None:
        """Widen the labels dtype (a new array) when ``oid`` does not fit it.

        Raises:
            SessionError: no integer type holds ``oid``.
        """
        if oid <= np.iinfo(self._labels.dtype).max:
            return
        signed = np.issubdtype(self._labels.dtype, np.signedinteger)  # keeps negative pixels
        for dt in (np.int16, np.int32, np.int64) if signed else (np.uint16, np.uint32, np.uint64):
            if oid <= np.iinfo(dt).max and np.dtype(dt).itemsize > self._labels.dtype.itemsize:
                clean = not self.unsaved
                self._labels = self._labels.astype(dt)
                if clean:  # the same objects in a wider type: nothing new to save
                    self._saved = self._digest()
                return
        raise SessionError(f"object id {oid} does not fit any integer type")

    def current_id(self) -> int:
        """The id the current object will get when committed."""
        return self.editing if self.editing is not None else self.next_id()

    def commit(
        self,
        mask: np.ndarray,
        *,
        model: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> CommitResult:
        """Write the current object's ``mask`` into the labels and start a new object.

        Pixels of other objects are kept unless ``overwrite``; a re-opened object is
        replaced on its plane and keeps its id. Undo/redo history restarts.

        Args:
            mask: boolean (rows, cols) mask on the current plane.
            model: model provenance (name, arch, weights_sha256, ...).
            settings: prediction settings to record.
            overwrite: take pixels from other objects.

        Raises:
            SessionError: no current object, wrong mask shape, empty result.
        """
        plane = self.plane
        if plane is None:
            raise SessionError("nothing to commit: click on an object first")
        mask = np.asarray(mask, dtype=bool)
        shape = plane.view(self._labels).shape
        if mask.shape != shape:
            raise SessionError(f"mask of shape {mask.shape} does not fit the plane {shape}")
        oid = self.current_id()
        self.make_room(oid)  # may replace self._labels by a wider copy
        full = plane.view(self._labels)
        # work inside the box of the mask (and of the re-opened object's old pixels)
        box = _bbox(mask)
        if self.editing is not None:
            box = _union(box, _bbox(full == oid))
        if box is None:
            raise SessionError("nothing to commit: the current object is empty")
        view, mask = full[box], mask[box]
        others = (view != 0) & (view != oid)
        take = mask if overwrite else mask & ~others
        written = int(take.sum())
        if written == 0:
            raise SessionError(
                "nothing to commit: the current object is empty"
                + ("" if not mask.any() else " (all its pixels belong to other objects)")
            )
        clash = int((mask & others).sum())
        kept, overwritten = (0, clash) if overwrite else (clash, 0)
        taken = np.unique(view[take & others]) if overwritten else ()
        view[(view == oid) & ~take] = 0
        view[take] = oid
        self.drop_absent(taken)  # objects overwritten entirely
        now = _now()
        old = self.records.get(oid)
        self.records[oid] = ObjectRecord(
            id=oid,
            clicks=self.clicks,
            plane=plane,
            model=dict(model or {}),
            settings=dict(settings or {}),
            area=written,
            created=old.created if old and old.created else now,
            modified=now,
            revision=old.revision + 1 if old else 1,
        )
        self._state = _State((), None, None)
        self._undo.clear()
        self._redo.clear()
        return CommitResult(oid, written, kept, overwritten)

    @staticmethod
    def _check_id(oid: int) -> int:
        """``oid`` as an int; raises SessionError for the background (0) and negative ids."""
        oid = int(oid)
        if oid < 1:
            raise SessionError(f"object ids start at 1 ({oid} is the background, not an object)")
        return oid

    def reopen(self, oid: int, plane: Plane | None = None) -> ObjectRecord | None:
        """Make committed object ``oid`` the current object, with its clicks (one undo step).

        Args:
            oid: the object's id.
            plane: for an object without provenance (painted or loaded) that lies in no one
                plane, the plane to edit it on (it must have pixels there); else ignored.

        Returns:
            Its provenance record, or None for an object without one (no clicks come back).

        Raises:
            SessionError: an id < 1 or unknown, or an object without provenance that is not on
                ``plane`` and spans several planes.
        """
        oid = self._check_id(oid)
        self.drop_absent([oid])  # erased by hand: its clicks are gone with it
        record = self.records.get(oid)
        if record is None and not np.any(self._labels == oid):
            raise SessionError(f"there is no object {oid}")
        if record is not None and record.plane is not None:
            plane = record.plane
        else:
            if plane is not None:
                self._check_plane(plane)
            plane = self._plane_holding(oid, plane)
        self._check_plane(plane)
        clicks = record.clicks if record is not None else ()
        self._push(_State(tuple(clicks), plane, oid))
        return record

    def _plane_holding(self, oid: int, shown: Plane | None = None) -> Plane:
        """The one plane holding all of object ``oid``'s pixels; for an object spanning
        planes, ``shown`` if it holds some of them.

        Raises:
            SessionError: no such pixels, or they span several planes and ``shown`` has none.
        """
        where = np.nonzero(self._labels == oid)
        if not where[0].size:
            raise SessionError(f"there is no object {oid}")
        box = [slice(int(w.min()), int(w.max()) + 1) for w in where]
        plane = plane_of_box(box)
        if plane is None and shown is not None and np.any(shown.view(self._labels) == oid):
            return shown
        if plane is None:
            spans = ", ".join(f"axis {a}: {sl.start}-{sl.stop - 1}" for a, sl in enumerate(box))
            raise SessionError(
                f"object {oid} has no recorded slice and spans several ({spans}): "
                "show a slice holding some of it and re-open"
            )
        return plane

    def delete(self, oid: int) -> int:
        """Remove object ``oid`` from the labels and the provenance; returns pixels cleared.

        Raises:
            SessionError: an id < 1, or no such object.
        """
        oid = self._check_id(oid)
        hit = self._labels == oid
        n = int(hit.sum())
        if n == 0 and oid not in self.records:
            raise SessionError(f"there is no object {oid}")
        self._labels[hit] = 0
        self.records.pop(oid, None)
        if self.editing == oid:
            self._state = replace(self._state, editing=None)
            self._undo.clear()
            self._redo.clear()
        self.forget_in_history([oid])
        return n

    def forget_in_history(self, ids: Iterable[int]) -> None:
        """Undo/redo states re-opening one of ``ids`` (deleted, erased, painted anew) become new
        objects: the id may belong to another object now."""
        ids = set(ids)
        self._undo = [replace(st, editing=None) if st.editing in ids else st for st in self._undo]
        self._redo = [replace(st, editing=None) if st.editing in ids else st for st in self._redo]

    # --- save / load ---------------------------------------------------------------------

    def to_json(
        self, image: dict[str, Any] | None = None, labels_file: str | None = None
    ) -> dict[str, Any]:
        """The provenance document saved beside the labels (``labels_file``: its name)."""
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "napari_clickseg": __version__,
            "saved": _now(),
            "labels_shape": list(self._labels.shape),
            "labels_dtype": str(self._labels.dtype),
            "labels_digest": _labels_digest(self._labels),  # tells labels edited elsewhere apart
            "object_digests": _object_digests(self._labels, self.records),  # and which objects it changed
            "image": image or {},
            "objects": [self.records[k].to_json() for k in sorted(self.records)],
        }
        if labels_file is not None:
            doc["labels_file"] = labels_file
        return doc

    @staticmethod
    def paths(path: str | os.PathLike) -> tuple[Path, Path]:
        """(labels tif, provenance json) for ``path``.

        The labels go to ``path`` itself when it ends in .tif or .tiff (any case), to
        ``path`` + ".tif" when it has no suffix; the provenance to ``<stem>.json`` beside.

        Raises:
            SessionError: any other suffix (a .json is never taken for the labels).
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == "":
            p = p.with_name(p.name + ".tif")
        elif suffix not in (".tif", ".tiff"):
            raise SessionError(
                f"annotations are saved as a .tif or .tiff labels file, not {p.name!r} "
                "(the .json provenance is written beside it)"
            )
        return p, p.with_suffix(".json")

    @staticmethod
    def sidecar_owner(js: Path) -> str | None:
        """The labels file name an existing ``js`` describes; None if it is not ours.

        Files written before ``labels_file`` was recorded describe ``<stem>.tif``.
        """
        try:
            doc = json.loads(js.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return None
        return str(doc.get("labels_file") or js.with_suffix(".tif").name)

    def save(
        self, path: str | os.PathLike, image: dict[str, Any] | None = None
    ) -> tuple[Path, Path]:
        """Write the labels (tif) and the provenance (json); returns both paths.

        See ``paths`` for the names. Files are written to temporary names first and then
        renamed, so a failed save never leaves a half-written file under the final name.

        Raises:
            SessionError: a bad suffix, or the json name is taken by a file that is not
                the provenance of these labels (nothing is written).
        """
        import tifffile

        tif, js = self.paths(path)
        if js.exists() and self.sidecar_owner(js) != tif.name:
            owner = self.sidecar_owner(js)
            what = (
                f"the provenance of {owner}" if owner else "not a napari-clickseg provenance file"
            )
            raise SessionError(f"not saved: {js} already exists and is {what}; choose another name")
        self.drop_absent()  # objects erased by hand since: no provenance for absent pixels
        with replacing(tif) as tmp_tif, replacing(js) as tmp_js:  # both or neither
            # minisblack: a stack of 3 or 4 slices is not an RGB(A) image
            tifffile.imwrite(tmp_tif, self._labels, compression="zlib", photometric="minisblack")
            tmp_js.write_text(json.dumps(self.to_json(image, tif.name), indent=1))
        self._saved = self._digest()
        return tif, js

    def load(self, path: str | os.PathLike) -> list[str]:
        """Replace labels and provenance by a saved annotation; returns warnings.

        The current object is dropped. The labels are copied into the session's array
        when its dtype holds them, else the session gets a new array (read ``labels``).
        A json beside that describes another labels file is ignored (with a warning).

        Raises:
            SessionError: missing or unreadable files, or a shape that does not fit.
        """
        import tifffile

        tif, js = self.paths(path)
        if not tif.is_file():
            raise SessionError(f"labels file not found: {tif}")
        try:
            data = tifffile.imread(tif)
        except Exception as e:
            raise SessionError(f"cannot read labels file {tif}: {e}") from None
        if data.shape != self._labels.shape and _squeezed(data.shape) == _squeezed(self._labels.shape):
            data = data.reshape(self._labels.shape)  # e.g. napari's save of the layer: (Z, 1, Y, X)
        if data.shape != self._labels.shape:
            raise SessionError(
                f"{tif} holds labels of shape {data.shape}; this image needs {self._labels.shape}"
            )
        if not np.issubdtype(data.dtype, np.integer):
            raise SessionError(f"{tif} does not hold integer labels (dtype {data.dtype})")
        warnings: list[str] = []
        records: dict[int, ObjectRecord] = {}
        dropped: list[int] = []
        if js.is_file():
            try:
                doc = json.loads(js.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise SessionError(f"cannot read provenance file {js}: {e}") from None
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise SessionError(f"{js} is not a napari-clickseg annotation file")
            version, objects = doc.get("version", 0), doc.get("objects", [])
            if isinstance(version, bool) or not isinstance(version, int) or not isinstance(objects, list):
                raise SessionError(f"{js}: 'version' must be an integer and 'objects' a list")
            if version > FORMAT_VERSION:
                raise SessionError(f"{js} was written by a newer napari-clickseg (format {version})")
            owner = self.sidecar_owner(js)
            recorded = doc.get("labels_digest")
            edited = owner == tif.name and isinstance(recorded, str) and recorded != _labels_digest(data)
            if edited:
                warnings.append(
                    f"{tif.name} was changed after it was saved with {js.name} (edited in another "
                    "program?): an object's recorded clicks may no longer match its pixels; check "
                    "an object before re-opening it"
                )
            if owner != tif.name:
                warnings.append(
                    f"{js.name} is the provenance of {owner}, not of {tif.name}; "
                    "objects have no recorded clicks"
                )
                objects = []
            for d in objects:
                if not isinstance(d, dict):
                    raise SessionError(f"{js}: an object record must be a mapping, got {d!r:.60}")
                r = ObjectRecord.from_json(d)
                if r.plane is not None:
                    try:
                        r.plane.check(data.shape)
                    except ValueError:
                        warnings.append(
                            f"object {r.id}: recorded plane does not fit the labels; dropped it"
                        )
                        r = replace(r, plane=None, clicks=())
                records[r.id] = r
            if edited:  # an object renumbered or removed in the other program keeps no clicks
                saved_objects = doc.get("object_digests")
                now = _object_digests(data, records) if isinstance(saved_objects, dict) else {}
                for oid, r in records.items():
                    same = now.get(str(oid)) is not None and saved_objects.get(str(oid)) == now[str(oid)]
                    if not same and not self._clicks_on_object(data, r):
                        records[oid] = replace(r, plane=None, clicks=())
                        dropped.append(oid)
            if dropped:
                warnings.append(
                    f"object(s) {', '.join(map(str, dropped))}: recorded clicks no longer lie on their "
                    "pixels; kept without clicks"
                )
        else:
            warnings.append(f"no provenance file {js.name}; objects have no recorded clicks")
        info = np.iinfo(self._labels.dtype)
        if info.min <= int(data.min(initial=0)) and int(data.max(initial=0)) <= info.max:
            self._labels[...] = data
        else:  # e.g. negative values painted by hand (saved as they were) in unsigned labels
            self._labels = data.copy()
        self.records = records
        self.drop_absent()  # records of objects the labels no longer hold
        self._state = _State((), None, None)
        self._undo.clear()
        self._redo.clear()
        self._saved = self._digest()
        return warnings

    @staticmethod
    def _clicks_on_object(labels: np.ndarray, r: ObjectRecord) -> bool:
        """Whether a positive click of record ``r`` lies on a pixel of its id (or it has none)."""
        if r.plane is None or not any(c.positive for c in r.clicks):
            return True
        view = r.plane.view(labels)
        for c in r.clicks:
            y, x = int(round(c.row)), int(round(c.col))
            if c.positive and 0 <= y < view.shape[0] and 0 <= x < view.shape[1] and view[y, x] == r.id:
                return True
        return False
