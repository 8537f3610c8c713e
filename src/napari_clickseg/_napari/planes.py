"""Where the 2D plane being segmented lies in an nD image, labels array and points layer.

Pure numpy, no napari: the widget turns the viewer's state (displayed dims,
current point, the layer's rgb flag and the chosen channel axis) into these
objects, and everything else (session, tests) works on arrays.

Terms:

- *layer axes*: the axes of the image layer as napari counts them (``layer.ndim``;
  the RGB(A) axis of an rgb layer is not one of them, a user-chosen channel axis is).
- *spatial axes*: the layer axes without the channel axis. Labels arrays have the
  spatial shape.
- a ``Plane`` names the two displayed spatial axes (rows, cols) and the index of
  every other spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..clicks import Click

__all__ = ["ImageGeometry", "Plane", "PlaneView", "plane_of_box"]

#: a pyramid's plane gives the engine's intensity statistics from its coarsest level with
#: at least this many pixels (about what the engine samples of a large image)
STATISTICS_PIXELS = 1 << 20


@dataclass(frozen=True)
class Plane:
    """A 2D plane of an nD spatial array.

    Attributes:
        displayed: the spatial axes shown as (rows, cols); may be in either order.
        index: ``(axis, position)`` for every other spatial axis, sorted by axis.
    """

    displayed: tuple[int, int]
    index: tuple[tuple[int, int], ...] = ()

    @classmethod
    def full_2d(cls) -> Plane:
        """The plane of a 2D array."""
        return cls((0, 1), ())

    @property
    def ndim(self) -> int:
        """Number of spatial axes of the arrays this plane lies in."""
        return 2 + len(self.index)

    def check(self, shape: Sequence[int]) -> None:
        """Raise ValueError unless this plane lies in an array of ``shape``.

        The displayed and indexed axes must together be every axis once, and each
        index must lie inside its axis.
        """
        axes = [*self.displayed, *(a for a, _ in self.index)]
        if len(shape) != self.ndim or sorted(axes) != list(range(len(shape))):
            raise ValueError(f"plane {self.to_json()} does not fit an array of shape {tuple(shape)}")
        for axis, pos in self.index:
            if not 0 <= pos < shape[axis]:
                raise ValueError(f"slice {pos} of axis {axis} lies outside shape {tuple(shape)}")

    def view(self, array: np.ndarray) -> np.ndarray:
        """The (rows, cols) view of ``array`` at this plane (writes go through).

        Raises:
            ValueError: if ``array`` does not have the plane's number of axes or an index
                lies outside it.
        """
        if array.ndim != self.ndim:
            raise ValueError(f"plane of a {self.ndim}D array used on a {array.ndim}D array")
        idx: list[Any] = [slice(None)] * array.ndim
        for axis, pos in self.index:
            if not 0 <= pos < array.shape[axis]:
                raise ValueError(f"slice {pos} of axis {axis} lies outside shape {array.shape}")
            idx[axis] = pos
        v = array[tuple(idx)]
        return v.T if self.displayed[0] > self.displayed[1] else v

    def shape_in(self, shape: Sequence[int]) -> tuple[int, int]:
        """(rows, cols) of this plane in an array of ``shape``."""
        return int(shape[self.displayed[0]]), int(shape[self.displayed[1]])

    def describe(self) -> str:
        """Short human-readable description, e.g. ``axis 0 = 3``."""
        if not self.index:
            return "2D"
        return ", ".join(f"axis {a} = {i}" for a, i in self.index)

    def to_json(self) -> dict[str, Any]:
        """The plane as it is saved in an object's record."""
        return {"displayed": list(self.displayed), "index": [list(p) for p in self.index]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plane:
        """A plane read back from ``to_json``'s dict (ValueError if malformed)."""
        try:
            displayed = tuple(int(a) for a in d["displayed"])
            index = tuple(sorted((int(a), int(i)) for a, i in d.get("index", [])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not a plane description: {d!r}") from None
        if len(displayed) != 2 or displayed[0] == displayed[1]:
            raise ValueError(f"a plane needs two distinct displayed axes, got {displayed}")
        return cls(displayed, index)  # type: ignore[arg-type]


def plane_of_box(box: Sequence[slice]) -> Plane | None:
    """The plane holding everything in the bounding box ``box`` of a spatial array, or None
    when the box is more than one pixel thick along three or more axes. Its displayed axes
    are the box's thick ones, completed with the last axes (a slice of a z-stack: (y, x))."""
    thick = [a for a, sl in enumerate(box) if sl.stop - sl.start > 1]
    if len(thick) > 2:
        return None
    pad = [a for a in range(len(box) - 1, -1, -1) if a not in thick]
    displayed = tuple(sorted([*thick, *pad][:2]))
    return Plane(displayed, tuple((a, box[a].start) for a in range(len(box)) if a not in displayed))


class PlaneView:
    """One plane of an nD array, (rows, cols[, channels]), read only where it is sliced:
    a lazy image for ``Predictor.set_image`` (dask, zarr and multiscale data).

    Args:
        data: the layer's data (numpy or any array with numpy-style basic indexing).
        index: a data index: positions on the plane's other axes, ``slice(None)`` on the rest.
        order: the data axes the view's axes come from, in the view's order.
    """

    def __init__(self, data: Any, index: tuple[Any, ...], order: tuple[int, ...]) -> None:
        self._data, self._index, self._order = data, index, order
        self.shape = tuple(int(data.shape[a]) for a in order)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(order)

    @property
    def channel_axis(self) -> int | None:
        """The view's channel axis (None for a gray plane)."""
        return None if self.ndim == 2 else 2

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        """The pixels of ``key`` (one slice per view axis; missing ones take everything)."""
        key = tuple(key) if isinstance(key, tuple) else (key,)
        if len(key) > self.ndim or not all(isinstance(k, slice) for k in key):
            raise IndexError(f"a plane view takes up to {self.ndim} slices, got {key!r}")
        index = list(self._index)
        for a, k in zip(self._order, key):
            index[a] = k
        sub = np.asarray(self._data[tuple(index)])
        # the kept data axes, in data order, put in the view's order
        kept = sorted(self._order)
        return np.transpose(sub, [kept.index(a) for a in self._order])

    def read(self) -> np.ndarray:
        """The whole plane (a view of numpy data, no copy)."""
        return self[()]


@dataclass(frozen=True)
class ImageGeometry:
    """How an image layer's data maps to spatial labels and to click layers.

    Attributes:
        data_shape: shape of the layer's data (with the RGB axis for rgb layers).
        rgb: the layer is rgb (channels are the last data axis, not a layer axis).
        channel_axis: a layer axis holding channels (non-rgb multichannel data), or None.
    """

    data_shape: tuple[int, ...]
    rgb: bool = False
    channel_axis: int | None = None

    def __post_init__(self) -> None:
        if self.rgb and self.channel_axis is not None:
            raise ValueError(
                "an rgb layer has its channels in the rgb axis; choose no channel axis"
            )
        if self.channel_axis is not None and not 0 <= self.channel_axis < self.layer_ndim:
            raise ValueError(
                f"channel axis {self.channel_axis} outside the layer's {self.layer_ndim} axes"
            )
        if len(self.spatial_shape) < 2:
            raise ValueError(f"image of shape {self.data_shape} has fewer than two spatial axes")

    @property
    def layer_ndim(self) -> int:
        """Axes of the layer's data, an RGB(A) axis not counted."""
        return len(self.data_shape) - int(self.rgb)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Layer axes that are spatial (all but the channel axis)."""
        return tuple(a for a in range(self.layer_ndim) if a != self.channel_axis)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the labels arrays."""
        return tuple(self.data_shape[a] for a in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        """Channels of the image (1 when it has no channel axis)."""
        if self.rgb:
            return int(self.data_shape[-1])
        return 1 if self.channel_axis is None else int(self.data_shape[self.channel_axis])

    def to_spatial_axis(self, layer_axis: int) -> int:
        """The labels array's axis for a spatial axis of the layer."""
        return self.spatial_axes.index(layer_axis)

    # --- the plane on screen ---------------------------------------------------------------

    def plane_at(
        self, displayed_layer_axes: Sequence[int], data_position: Sequence[float]
    ) -> Plane:
        """The plane shown when the layer's ``displayed_layer_axes`` are on screen.

        Args:
            displayed_layer_axes: the two layer axes shown as (rows, cols).
            data_position: the viewer's current point in the layer's data coordinates.

        Raises:
            ValueError: if not exactly two axes are displayed or one is the channel axis.
        """
        disp = tuple(int(a) for a in displayed_layer_axes)
        if len(disp) > 2:
            raise ValueError(
                f"{len(disp)} axes of the image are displayed; switch the viewer to 2D to click"
            )
        if len(disp) < 2:  # another layer's axes are on screen (e.g. a stack shown transposed)
            raise ValueError(
                f"only {len(disp)} of the image's axes {'is' if len(disp) == 1 else 'are'} on screen: "
                "show two of its axes (napari's 'transpose' / axis order) to click"
            )
        if self.channel_axis in disp:
            raise ValueError(
                f"the channel axis ({self.channel_axis}) is displayed; choose another channel axis "
                "or change the displayed dimensions"
            )
        index = []
        for a in self.spatial_axes:
            if a in disp:
                continue
            n = self.data_shape[a]
            pos = int(np.clip(np.round(float(data_position[a])), 0, n - 1))
            index.append((self.to_spatial_axis(a), pos))
        return Plane((self.to_spatial_axis(disp[0]), self.to_spatial_axis(disp[1])), tuple(index))

    def plane_view(self, data: Any, plane: Plane) -> PlaneView:
        """The image of ``plane`` as a ``PlaneView``: read only where sliced."""
        idx: list[Any] = [slice(None)] * len(self.data_shape)
        for s_axis, pos in plane.index:
            idx[self.spatial_axes[s_axis]] = pos
        # remaining axes, in data order: the two displayed axes, the channel axis, the rgb axis
        remaining = [a for a in range(len(self.data_shape)) if isinstance(idx[a], slice)]
        rows, cols = (self.spatial_axes[a] for a in plane.displayed)
        order = [rows, cols]
        if self.channel_axis is not None:
            order.append(self.channel_axis)
        if self.rgb:
            order.append(len(self.data_shape) - 1)
        assert sorted(order) == remaining
        return PlaneView(data, tuple(idx), tuple(order))

    def plane_image(self, data: Any, plane: Plane) -> tuple[np.ndarray, int | None]:
        """The image of ``plane``: ``(array, channel_axis)`` ready for ``Predictor.set_image``.

        The array is (rows, cols) or (rows, cols, channels) at raw dtype; for numpy data
        it is a view (no copy).
        """
        view = self.plane_view(data, plane)
        return view.read(), view.channel_axis

    def coarse_plane(self, levels: Sequence[Any], plane: Plane) -> np.ndarray | None:
        """``plane``'s image in the coarsest of a pyramid's ``levels`` whose plane still has
        ``STATISTICS_PIXELS``, or None when that is level 0 or the levels do not share this
        image's layout. Positions on other axes are scaled."""
        if any(len(lv.shape) != len(self.data_shape) for lv in levels):
            return None
        chosen = None
        for level in levels[1:]:
            try:
                g = ImageGeometry(tuple(int(n) for n in level.shape), self.rgb, self.channel_axis)
            except ValueError:
                return None
            if g.n_channels != self.n_channels:
                return None
            index = tuple(
                (a, min(g.spatial_shape[a] - 1, pos * g.spatial_shape[a] // self.spatial_shape[a]))
                for a, pos in plane.index
            )
            scaled = Plane(plane.displayed, index)
            if np.prod(scaled.shape_in(g.spatial_shape)) < STATISTICS_PIXELS:
                break
            chosen = (level, g, scaled)
        if chosen is None:
            return None
        level, g, scaled = chosen
        return g.plane_image(level, scaled)[0]

    # --- clicks <-> points -----------------------------------------------------------------

    def clicks_from_points(
        self, coords: np.ndarray, positive: Sequence[bool], orders: Sequence[float], plane: Plane
    ) -> tuple[list[Click], int]:
        """Clicks of the points lying on ``plane``, sorted by order.

        Args:
            coords: (N, layer_ndim) point coordinates in the image layer's data space (the
                channel coordinate is ignored).
            positive: sign of each point.
            orders: click order of each point.
            plane: the object's plane.

        Returns:
            The clicks and how many points lay on other planes or had a non-finite slice
            coordinate (ignored).
        """
        coords = np.asarray(coords, dtype=float).reshape(-1, self.layer_ndim)
        rows_ax, cols_ax = (self.spatial_axes[a] for a in plane.displayed)
        picked, off_plane = [], 0
        for p, pos, order in zip(coords, positive, orders):
            on = all(
                np.isfinite(p[self.spatial_axes[s]]) and int(np.round(p[self.spatial_axes[s]])) == i
                for s, i in plane.index
            )
            if not on:
                off_plane += 1
                continue
            picked.append((float(order), Click(float(p[rows_ax]), float(p[cols_ax]), bool(pos))))
        picked.sort(key=lambda t: t[0])
        clicks = [Click(c.row, c.col, c.positive, i) for i, (_, c) in enumerate(picked)]
        return clicks, off_plane

    def points_from_clicks(self, clicks: Sequence[Click], plane: Plane) -> np.ndarray:
        """(N, layer_ndim) coordinates of ``clicks`` on ``plane`` (channel coordinate 0)."""
        out = np.zeros((len(clicks), self.layer_ndim), dtype=float)
        rows_ax, cols_ax = (self.spatial_axes[a] for a in plane.displayed)
        for k, c in enumerate(clicks):
            for s, i in plane.index:
                out[k, self.spatial_axes[s]] = i
            out[k, rows_ax] = c.row
            out[k, cols_ax] = c.col
        return out

    def annotation_transform(
        self, scale: Sequence[float], translate: Sequence[float]
    ) -> tuple[list[float], list[float]]:
        """Scale and translate for labels and points layers over this image.

        Without a channel axis they are the image layer's. With one, the annotation layers
        keep that axis with size 1, stretched over all channels, so they show whichever
        channel the slider is on.
        """
        scale, translate = [float(s) for s in scale], [float(t) for t in translate]
        c = self.channel_axis
        if c is not None:
            n = self.data_shape[c]
            translate[c] = translate[c] + (n - 1) / 2 * scale[c]
            scale[c] = scale[c] * n
        return scale, translate

    @property
    def layer_labels_shape(self) -> tuple[int, ...]:
        """Shape of the Labels layer data (the spatial shape, plus a size-1 channel axis)."""
        shape = list(self.spatial_shape)
        if self.channel_axis is not None:
            shape.insert(self.channel_axis, 1)
        return tuple(shape)

    def layer_labels_view(self, labels: np.ndarray) -> np.ndarray:
        """The spatial ``labels`` as napari's Labels layer data (a view; writes go through)."""
        if self.channel_axis is None:
            return labels
        return np.expand_dims(labels, self.channel_axis)

    def labels_from_layer(self, layer_data: np.ndarray) -> np.ndarray:
        """Inverse of ``layer_labels_view``."""
        if self.channel_axis is None:
            return layer_data
        return layer_data[(slice(None),) * self.channel_axis + (0,)]
