"""Training augmentation: a crop around one object with scale jitter, flips, rotations, colour.

The crop is square: its side is chosen so that the object's bounding-box long
side covers a log-uniform fraction (``object_scale``, default 15-80 %) of it,
but never magnifies the image more than ``max_upscale`` times (tiny nuclei
stay at a plausible scale) and is never larger than the image's short side
unless the object needs it (big objects in small images would otherwise sit in
a mostly padded crop). The crop keeps the object's box inside where it
fits (with some extra positional jitter) and is resized to ``crop_size`` with
anti-aliasing; outside the image it is zero-padded. The crop always keeps part
of the object (``min_object_px`` pixels after resizing); otherwise it is
drawn again, falling back to a centred crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["AugmentConfig", "color_jitter", "object_crop"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (see module docstring)."""

    crop_size: int = 320
    object_scale: tuple[float, float] = (0.15, 0.8)
    max_upscale: float = 3.0
    position_jitter: float = 0.25
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    color_prob: float = 0.8
    min_object_px: int = 16


def _crop_resize(layers: list[np.ndarray], top: int, left: int, side: int, size: int) -> np.ndarray:
    """The square window (top, left, side) of (H, W, C_i) layers, resized to (size, size, sum C_i).

    Only the part of the window inside the image is converted and resized (with
    anti-aliasing); the rest stays zero. This keeps large windows around big
    objects cheap.
    """
    h, w = layers[0].shape[:2]
    channels = sum(a.shape[2] for a in layers)
    out = np.zeros((size, size, channels), dtype=np.float32)
    scale = size / side
    rs, cs = max(top, 0), max(left, 0)
    re, ce = min(top + side, h), min(left + side, w)
    if re <= rs or ce <= cs:
        return out
    ts, tss = int(round((rs - top) * scale)), int(round((cs - left) * scale))
    te, tse = int(round((re - top) * scale)), int(round((ce - left) * scale))
    te, tse = min(max(te, ts + 1), size), min(max(tse, tss + 1), size)
    if te <= ts or tse <= tss:
        return out
    region = np.concatenate([a[rs:re, cs:ce].astype(np.float32) for a in layers], axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(region.transpose(2, 0, 1)))[None]
    if t.shape[-2:] != (te - ts, tse - tss):
        t = F.interpolate(t, size=(te - ts, tse - tss), mode="bilinear", align_corners=False, antialias=True)
    out[ts:te, tss:tse] = t[0].numpy().transpose(1, 2, 0)
    return out


def _crop_geometry(
    bbox: tuple[int, int, int, int], shape: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[int, int, int]:
    r0, c0, r1, c1 = bbox
    h, w = shape
    long_side = max(r1 - r0, c1 - c0, 1)
    lo, hi = cfg.object_scale
    frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    # no larger than the image's short side (mostly padding otherwise) unless the
    # object needs more room to fit at the largest fraction
    side_max = max(min(h, w), long_side / hi)
    side = max(min(long_side / frac, side_max), cfg.crop_size / cfg.max_upscale, 8.0)
    side = int(round(side))
    centre = np.array([(r0 + r1) / 2.0, (c0 + c1) / 2.0])
    extent = np.array([r1 - r0, c1 - c0], dtype=float)
    # keep the box inside the crop where it fits, then some extra jitter
    slack = np.maximum(side - extent, 0.0) / 2.0
    offset = rng.uniform(-slack, slack) + rng.uniform(-1, 1, 2) * cfg.position_jitter * extent
    top, left = centre + offset - side / 2.0
    # slide the window into the image where the image is large enough
    top = np.clip(top, 0, h - side) if h >= side else top
    left = np.clip(left, 0, w - side) if w >= side else left
    return int(round(top)), int(round(left)), side


def color_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Gamma, contrast and brightness jitter of an (H, W, 3) image in [0, 1] (kept in [0, 1])."""
    if rng.random() >= cfg.color_prob:
        return image
    out = np.clip(image, 0.0, 1.0)
    if cfg.gamma > 0:
        out = out ** np.float32(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    if cfg.contrast > 0:
        mean = out.mean()
        out = (out - mean) * np.float32(1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    if cfg.brightness > 0:
        out = out + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def object_crop(
    image: np.ndarray,
    mask: np.ndarray,
    ignore: np.ndarray,
    bbox: tuple[int, int, int, int],
    cfg: AugmentConfig,
    rng: np.random.Generator,
    *,
    augment: bool = True,
    others: np.ndarray | None = None,
    tries: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop around an object, resize to ``cfg.crop_size`` and augment.

    Args:
        image: (H, W, 3) in [0, 1], an array or anything sliced like one (a ``NormalizedView``).
        mask, ignore: (H, W) bool object and ignore masks.
        bbox: the object's box (r0, c0, r1, c1), end exclusive.
        cfg: settings.
        rng: random generator (the only source of randomness).
        augment: False gives a deterministic centred crop (object box = 40 % of the side)
            without flips or colour changes (validation).
        others: optional (H, W) bool mask (other objects) cropped alike.

    Returns:
        image (S, S, 3) float32 in [0, 1], mask, ignore, others and inside (S, S) bool
        (others None when not given; inside: the pixels within the image, not its zero padding,
        where no user could click).
    """
    s = cfg.crop_size
    geometries = []
    if augment:
        geometries = [_crop_geometry(bbox, mask.shape, cfg, rng) for _ in range(tries)]
    r0, c0, r1, c1 = bbox
    side = int(round(max(max(r1 - r0, c1 - c0) / 0.4, s / cfg.max_upscale, 8.0)))
    geometries.append((int(round((r0 + r1 - side) / 2)), int(round((c0 + c1 - side) / 2)), side))
    for top, left, side in geometries:
        layers = [image, mask[..., None], ignore[..., None]]
        if others is not None:
            layers.append(others[..., None])
        layers.append(np.broadcast_to(np.ones((1, 1, 1), np.float32), (*mask.shape, 1)))  # inside the image
        out = _crop_resize(layers, top, left, side, s)
        m = out[..., 3] > 0.5
        if m.sum() >= min(cfg.min_object_px, max(1, int(mask.sum()))):
            break
    if not m.any() and out[..., 3].max() > 0:  # a thin object shrunk below half a pixel's width
        m = out[..., 3] >= 0.5 * out[..., 3].max()
    img, ign = out[..., :3], (out[..., 4] > 0.5) & ~m  # a thin object's pixels stay the object's
    oth = out[..., 5] > 0.5 if others is not None else None
    inside = out[..., -1] > 0.5
    if augment:
        if cfg.flips and rng.random() < 0.5:
            img, m, ign, inside = img[:, ::-1], m[:, ::-1], ign[:, ::-1], inside[:, ::-1]
            oth = oth[:, ::-1] if oth is not None else None
        if cfg.rot90:
            k = int(rng.integers(4))
            if k:
                img, m, ign, inside = np.rot90(img, k), np.rot90(m, k), np.rot90(ign, k), np.rot90(inside, k)
                oth = np.rot90(oth, k) if oth is not None else None
        img = color_jitter(img, cfg, rng)
    if oth is not None:
        oth = np.ascontiguousarray(oth)
    return (np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(m), np.ascontiguousarray(ign), oth,
            np.ascontiguousarray(inside))
