"""Clicks and their encodings into interaction maps.

A click is a (row, col) position with a label (positive = on the object) and
its order in the click sequence. Encodings turn a click list into a stack of
float32 maps of the image's shape, one per channel:

- ``distance``: Euclidean distance to the nearest positive / negative click,
  truncated at 255 (FCTSFN, iFCN). Without negatives that map is all 255.
  Models receive it scaled to [0, 1] (``/ 255``).
- ``gaussian``: Gaussians of sigma 10 around positive / negative clicks
  (multi-stage fusion, FCA-Net), maximum over clicks.
- ``disk``: binary disks of radius 5 (RITM).
- ``multiscale``: Gaussians at three scales, sigma 5, 10, 20, positive and
  negative ("getting to 99%").

``encode_clicks`` adds, on request, a ``first click`` channel: a Gaussian of
three times the radius around the first positive click (FCA-Net).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Click",
    "ENCODINGS",
    "as_clicks",
    "disk_maps",
    "distance_maps",
    "encode_clicks",
    "encoding_channels",
    "first_click_map",
    "gaussian_maps",
    "multiscale_gaussian_maps",
    "validate_clicks",
]

DISTANCE_TRUNCATION = 255.0
GAUSSIAN_SIGMA = 10.0
DISK_RADIUS = 5.0
MULTISCALE_SIGMAS = (5.0, 10.0, 20.0)
FIRST_CLICK_SCALE = 3.0


@dataclass(frozen=True)
class Click:
    """One user click.

    Attributes:
        row: Row (y) coordinate in pixels of the 2D image.
        col: Column (x) coordinate in pixels.
        positive: True for a click on the object, False for background.
        order: Position of the click in the sequence (0 = first).
    """

    row: float
    col: float
    positive: bool
    order: int = 0

    def shifted(self, drow: float, dcol: float, scale: float = 1.0) -> Click:
        """Return the click mapped by ``(p - (drow, dcol)) * scale``."""
        return Click((self.row - drow) * scale, (self.col - dcol) * scale, self.positive, self.order)


ClickLike = Click | Sequence


def _as_positive(value: object, i: int) -> bool:
    """The positive flag of click ``i``: a bool (Python or numpy) or a number equal to 0 or 1."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    raise ValueError(
        f"click {i} has positive={value!r}; expected True/False (or 1/0), not {type(value).__name__}"
    )


def as_clicks(clicks: Iterable[ClickLike]) -> list[Click]:
    """Normalise clicks given as ``Click`` or ``(row, col, positive)`` tuples.

    ``positive`` must be a bool (numpy bools included) or a number equal to 1 or 0;
    strings such as ``"+"`` or ``"-"`` are rejected rather than guessed (parse them
    first, e.g. with ``napari_clickseg.segment.parse_click``). Orders are reassigned
    from the position in the list.

    Raises:
        ValueError: if an item is not a click, has non-finite coordinates or a positive
            flag that is not a bool, 0 or 1.
    """
    out: list[Click] = []
    for i, c in enumerate(clicks):
        if isinstance(c, Click):
            row, col, pos = c.row, c.col, c.positive
        else:
            try:
                row, col, pos = c  # type: ignore[misc]
            except (TypeError, ValueError):
                raise ValueError(
                    f"click {i} must be a Click or a (row, col, positive) tuple, got {c!r}"
                ) from None
        try:
            row, col = float(row), float(col)
        except (TypeError, ValueError):
            raise ValueError(f"click {i} has non-numeric coordinates: {c!r}") from None
        except OverflowError:  # an int beyond float's range
            raise ValueError(f"click {i} has non-finite coordinates: {c!r}") from None
        if not (np.isfinite(row) and np.isfinite(col)):
            raise ValueError(f"click {i} has non-finite coordinates: {c!r}")
        out.append(Click(row, col, _as_positive(pos, i), i))
    return out


def validate_clicks(clicks: Sequence[Click], shape: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless there is a click and all lie inside ``shape``."""
    if len(clicks) == 0:
        raise ValueError("at least one click is needed")
    h, w = shape
    for c in clicks:
        if not (-0.5 <= c.row < h - 0.5 and -0.5 <= c.col < w - 0.5):
            raise ValueError(
                f"click {c.order} at (row={c.row:g}, col={c.col:g}) lies outside the image "
                f"of shape {h}x{w}"
            )


def _coords(clicks: Sequence[Click], positive: bool) -> np.ndarray:
    pts = [(c.row, c.col) for c in clicks if c.positive == positive]
    return np.asarray(pts, dtype=np.float32).reshape(-1, 2)


def _sq_dist_min(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Squared distance from every pixel to the nearest point (inf if none)."""
    h, w = shape
    out = np.full((h, w), np.inf, dtype=np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    for r, c in points:
        np.minimum(out, (rows - r) ** 2 + (cols - c) ** 2, out=out)
    return out


def distance_maps(
    clicks: Sequence[Click], shape: tuple[int, int], truncate: float = DISTANCE_TRUNCATION
) -> np.ndarray:
    """Positive and negative Euclidean distance maps, truncated at ``truncate``.

    Returns:
        float32 array (2, H, W) in [0, truncate]; a map with no clicks is all ``truncate``.
    """
    maps = [
        np.minimum(np.sqrt(_sq_dist_min(_coords(clicks, pos), shape)), truncate)
        for pos in (True, False)
    ]
    return np.stack(maps).astype(np.float32)


def gaussian_maps(
    clicks: Sequence[Click], shape: tuple[int, int], sigma: float = GAUSSIAN_SIGMA
) -> np.ndarray:
    """Positive and negative Gaussian maps (maximum over clicks), float32 (2, H, W) in [0, 1]."""
    maps = [
        np.exp(-_sq_dist_min(_coords(clicks, pos), shape) / (2.0 * sigma**2))
        for pos in (True, False)
    ]
    return np.stack(maps).astype(np.float32)


def disk_maps(
    clicks: Sequence[Click], shape: tuple[int, int], radius: float = DISK_RADIUS
) -> np.ndarray:
    """Positive and negative binary disk maps, float32 (2, H, W) in {0, 1}."""
    maps = [_sq_dist_min(_coords(clicks, pos), shape) <= radius**2 for pos in (True, False)]
    return np.stack(maps).astype(np.float32)


def multiscale_gaussian_maps(
    clicks: Sequence[Click],
    shape: tuple[int, int],
    sigmas: Sequence[float] = MULTISCALE_SIGMAS,
) -> np.ndarray:
    """Gaussians at several scales: channels (pos s0, neg s0, pos s1, neg s1, ...)."""
    sq = [_sq_dist_min(_coords(clicks, pos), shape) for pos in (True, False)]
    maps = [np.exp(-d / (2.0 * s**2)) for s in sigmas for d in sq]
    return np.stack(maps).astype(np.float32)


def first_click_map(
    clicks: Sequence[Click],
    shape: tuple[int, int],
    sigma: float = GAUSSIAN_SIGMA * FIRST_CLICK_SCALE,
) -> np.ndarray:
    """Gaussian around the first positive click (FCA-Net), float32 (1, H, W); zeros if none."""
    first = next((c for c in sorted(clicks, key=lambda c: c.order) if c.positive), None)
    if first is None:
        return np.zeros((1, *shape), dtype=np.float32)
    d = _sq_dist_min(np.array([[first.row, first.col]], dtype=np.float32), shape)
    return np.exp(-d / (2.0 * sigma**2))[None].astype(np.float32)


def _scaled_distance(clicks: Sequence[Click], shape: tuple[int, int]) -> np.ndarray:
    return distance_maps(clicks, shape) / DISTANCE_TRUNCATION


# name -> (function giving model-ready maps in [0, 1], number of channels)
ENCODINGS: dict[str, tuple[Callable[[Sequence[Click], tuple[int, int]], np.ndarray], int]] = {
    "distance": (_scaled_distance, 2),
    "gaussian": (gaussian_maps, 2),
    "disk": (disk_maps, 2),
    "multiscale": (multiscale_gaussian_maps, 2 * len(MULTISCALE_SIGMAS)),
}


def encoding_channels(encoding: str, first_click: bool = False) -> int:
    """Number of channels ``encode_clicks`` returns for this encoding."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown click encoding {encoding!r}; valid: {sorted(ENCODINGS)}")
    return ENCODINGS[encoding][1] + int(first_click)


def encode_clicks(
    clicks: Sequence[Click], shape: tuple[int, int], encoding: str, first_click: bool = False
) -> np.ndarray:
    """Model-ready interaction maps in [0, 1], float32 (C, H, W).

    Args:
        clicks: the clicks, in image coordinates of ``shape``.
        shape: (H, W) of the maps.
        encoding: one of ``ENCODINGS``.
        first_click: append the FCA-Net first-click Gaussian as the last channel.
    """
    encoding_channels(encoding)  # validates the name
    maps = ENCODINGS[encoding][0](clicks, shape)
    if first_click:
        maps = np.concatenate([maps, first_click_map(clicks, shape)], axis=0)
    return maps
