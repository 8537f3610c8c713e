"""Zoom-in (RITM style): crop boxes and the crop/resize/pad transform with its inverse.

The first click predicts on a window around it (the whole image when the image
is small); later clicks predict on the box around the current mask and all
clicks, expanded by 40 % with a minimum size, resized so its long side is a
fixed target and padded to the model's size divisor; a later click keeps the
previous box while the object still fits it (``keeps_box``). ``ZoomTransform``
maps images, masks and clicks into the crop and predictions back out of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor
from torch.nn import functional as F

from ..clicks import Click

__all__ = ["Box", "ZoomTransform", "first_click_box", "full_box", "keeps_box", "mask_bbox", "object_box"]


@dataclass(frozen=True)
class Box:
    """Half-open pixel box ``[y0, y1) x [x0, x1)`` in image coordinates."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        """Rows in the box."""
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        """Columns in the box."""
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Slices selecting the box in a (H, W, ...) array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def intersection(self, other: Box) -> Box | None:
        """The overlap of two boxes, or None when they do not overlap."""
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        return Box(y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None


def full_box(shape: tuple[int, int]) -> Box:
    """The box covering a whole (H, W) image."""
    return Box(0, 0, int(shape[0]), int(shape[1]))


def _place(center: float, size: int, limit: int) -> tuple[int, int]:
    """A span of ``size`` (at most ``limit``) centred on ``center``, shifted inside [0, limit)."""
    size = min(size, limit)
    start = int(round(center - size / 2.0))
    start = min(max(start, 0), limit - size)
    return start, start + size


def first_click_box(shape: tuple[int, int], click: Click, window: int) -> Box:
    """The whole image if its long side is at most ``window``, else a window around ``click``."""
    h, w = shape
    if max(h, w) <= window:
        return full_box(shape)
    y0, y1 = _place(click.row + 0.5, window, h)
    x0, x1 = _place(click.col + 0.5, window, w)
    return Box(y0, x0, y1, x1)


def mask_bbox(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Box | None:
    """Bounding box of the True pixels of ``mask`` (shifted by ``offset``), None if empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    oy, ox = offset
    return Box(oy + int(rows[0]), ox + int(cols[0]), oy + int(rows[-1]) + 1, ox + int(cols[-1]) + 1)


def _extent(mask_box: Box | None, clicks: Sequence[Click]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the box around ``mask_box`` and the clicks' pixels."""
    ys = [int(round(c.row)) for c in clicks]
    xs = [int(round(c.col)) for c in clicks]
    y0, y1 = min(ys), max(ys) + 1
    x0, x1 = min(xs), max(xs) + 1
    if mask_box is not None:
        y0, x0 = min(y0, mask_box.y0), min(x0, mask_box.x0)
        y1, x1 = max(y1, mask_box.y1), max(x1, mask_box.x1)
    return y0, x0, y1, x1


def object_box(
    shape: tuple[int, int],
    mask_box: Box | None,
    clicks: Sequence[Click],
    expansion: float = 1.4,
    min_size: int = 224,
) -> Box:
    """The zoom box of a later click: mask box and clicks, expanded, at least ``min_size``.

    Args:
        shape: (H, W) of the image.
        mask_box: bounding box of the current foreground, or None.
        clicks: all clicks (image coordinates).
        expansion: factor on the box's height and width (1.4 = +40 %).
        min_size: minimum height and width before clipping to the image.
    """
    h, w = shape
    y0, x0, y1, x1 = _extent(mask_box, clicks)
    bh = max(int(math.ceil((y1 - y0) * expansion)), min_size)
    bw = max(int(math.ceil((x1 - x0) * expansion)), min_size)
    ny0, ny1 = _place((y0 + y1) / 2.0, bh, h)
    nx0, nx1 = _place((x0 + x1) / 2.0, bw, w)
    return Box(ny0, nx0, ny1, nx1)


def keeps_box(shape: tuple[int, int], current: Box, mask_box: Box | None, clicks: Sequence[Click],
              proposed: Box, margin: float = 1.1, min_area_ratio: float = 0.7) -> bool:
    """Whether a later click may stay in the ``current`` zoom box instead of ``proposed``.

    It may when the mask and all clicks, grown by ``margin`` about their centre
    and clipped to the image of ``shape``, still fit inside ``current`` and
    ``proposed`` is not much smaller (area ratio at least ``min_area_ratio``):
    the view stays put while the object is worked on, and models that cache
    image features skip their image stream.
    """
    y0, x0, y1, x1 = _extent(mask_box, clicks)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    hh, hw = (y1 - y0) * margin / 2.0, (x1 - x0) * margin / 2.0
    need = (max(cy - hh, 0.0), max(cx - hw, 0.0), min(cy + hh, shape[0]), min(cx + hw, shape[1]))
    fits = need[0] >= current.y0 and need[1] >= current.x0 and need[2] <= current.y1 and need[3] <= current.x1
    area = current.height * current.width
    return fits and proposed.height * proposed.width >= min_area_ratio * area


def _ceil_to(n: int, d: int) -> int:
    return int(math.ceil(n / d) * d)


@dataclass(frozen=True)
class ZoomTransform:
    """Crop ``box``, resize it to ``size`` (H, W), pad bottom/right to ``padded``.

    Pixel centres map as ``(p - box_origin + 0.5) * scale - 0.5`` (the convention
    of bilinear resizing with ``align_corners=False``); ``inverse`` undoes it.
    """

    box: Box
    size: tuple[int, int]
    padded: tuple[int, int]

    @classmethod
    def make(cls, box: Box, scale: float, divisor: int) -> ZoomTransform:
        """Transform of ``box`` resized by ``scale`` and padded to multiples of ``divisor``."""
        th = max(1, int(round(box.height * scale)))
        tw = max(1, int(round(box.width * scale)))
        return cls(box, (th, tw), (_ceil_to(th, divisor), _ceil_to(tw, divisor)))

    @property
    def scale(self) -> tuple[float, float]:
        """(row, col) scale from image to crop pixels."""
        return self.size[0] / self.box.height, self.size[1] / self.box.width

    @property
    def key(self) -> tuple:
        """Hashable identity (feature-cache key)."""
        return (self.box.y0, self.box.x0, self.box.y1, self.box.x1, *self.size, *self.padded)

    def clicks(self, clicks: Sequence[Click]) -> list[Click]:
        """Clicks in crop coordinates."""
        sy, sx = self.scale
        return [
            Click((c.row - self.box.y0 + 0.5) * sy - 0.5, (c.col - self.box.x0 + 0.5) * sx - 0.5,
                  c.positive, c.order)
            for c in clicks
        ]

    def points(self, clicks: Sequence[Click]) -> list[tuple[float, float]]:
        """Crop coordinates of the image pixels the clicks fall on, clipped into the crop.

        Bilinear sampling of a crop map at these points gives exactly the value the
        pixel gets from ``inverse``.
        """
        th, tw = self.size
        sy, sx = self.scale
        out = []
        for c in clicks:
            r = (round(c.row) - self.box.y0 + 0.5) * sy - 0.5
            q = (round(c.col) - self.box.x0 + 0.5) * sx - 0.5
            out.append((min(max(r, 0.0), th - 1.0), min(max(q, 0.0), tw - 1.0)))
        return out

    def forward(self, region: Tensor, pad_value: float = 0.0) -> Tensor:
        """Resize a (N, C, box_h, box_w) region to the crop and pad it: (N, C, *padded)."""
        if tuple(region.shape[-2:]) != (self.box.height, self.box.width):
            raise ValueError(f"region shape {tuple(region.shape[-2:])} does not match box {self.box}")
        x = region
        if tuple(x.shape[-2:]) != self.size:
            down = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=down)
        ph, pw = self.padded[0] - self.size[0], self.padded[1] - self.size[1]
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=pad_value)
        return x

    def inverse(self, x: Tensor) -> Tensor:
        """Map a (N, C, *padded) crop result back to (N, C, box_h, box_w)."""
        x = x[..., : self.size[0], : self.size[1]]
        target = (self.box.height, self.box.width)
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        return x
