"""Image validation and normalisation shared by the engine, training and evaluation.

Every image, whatever its dtype, bit depth or channel count, becomes a float32
(H, W, 3) array in [0, 1]:

- values are scaled by robust percentiles (0.5 and 99.5) taken jointly over all
  channels, so uint16 and float data keep their full dynamic range and dim
  fluorescence is stretched (never a silent uint8 cast that clips);
- gray images are repeated to three channels; two channels become
  (c0, c1, mean), except gray + alpha, opaque everywhere, which is gray; RGBA drops
  alpha (uint8 always, other dtypes when it is opaque everywhere); other images with more than three channels are coloured by their
  first three principal components (luminance and two opponent colours, on one
  scale, so weak components stay faint).
"""

from __future__ import annotations

import numpy as np

__all__ = ["prepare_image", "standardize", "validate_image"]

PERCENTILES = (0.5, 99.5)
_MAX_SAMPLES = 1 << 20
_F32_SAFE = 1e30
MAX_CHANNELS = 64


def validate_image(image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """Check a 2D image and return it as (H, W, C) (a view where possible).

    Args:
        image: (H, W) or (H, W, C); with ``channel_axis`` the channels may sit elsewhere.
        channel_axis: axis holding channels for 3D input (default: last).

    Raises:
        ValueError: wrong ndim, too small, unsupported dtype, NaN or inf values; a 3D
            image that looks channels-first, (C, H, W) with C <= 64, C < W and W > 4, given without
            ``channel_axis`` (pass ``channel_axis=0``, or ``-1`` if it really is that thin).
    """
    if type(image) is not np.ndarray:  # lists, array-likes, and subclasses such as np.matrix
        try:
            image = np.asarray(image)
        except Exception:
            raise ValueError(f"image must be an array, got {type(image).__name__}") from None
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"unsupported image dtype {image.dtype}; use an integer or float type")
    if channel_axis is not None and (isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer))):
        raise ValueError(f"channel_axis must be an integer axis, got {channel_axis!r}")
    if image.ndim == 2:
        if channel_axis is not None and channel_axis not in (-1, 2):  # -1 / 2: one channel, last
            raise ValueError(f"channel_axis={channel_axis} given, but the image is 2D {image.shape}: it has no channels")
        image = image[..., None]
    elif image.ndim == 3:
        if channel_axis is not None:
            if not -3 <= channel_axis < 3:
                raise ValueError(f"channel_axis={channel_axis} is not an axis of the image {image.shape}")
            image = np.moveaxis(image, int(channel_axis), -1)
        else:
            _refuse_channels_first(image.shape)
    else:
        raise ValueError(
            f"image must be 2D: (H, W) or (H, W, C); got shape {image.shape}. "
            "For stacks, pass one plane."
        )
    h, w, c = image.shape
    if h < 2 or w < 2:
        raise ValueError(f"image is too small: {h}x{w} pixels (need at least 2x2)")
    if c < 1 or c > MAX_CHANNELS:
        hint = (
            " (is the channel axis right? for channels first pass channel_axis=0)" if channel_axis is None
            else f" (is channel_axis={channel_axis} right?)"
        )
        raise ValueError(f"image has {c} channels; expected 1 to {MAX_CHANNELS}{hint}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    return image


def _refuse_channels_first(shape: tuple[int, ...]) -> None:
    """Raise if a 3D shape given without a channel axis looks like (C, H, W).

    The rule of ``data.io.read_array``: a first axis of at most 64 that is shorter than
    a last axis of more than 4 is read as channels first, rather than silently as an
    image a few pixels tall with many channels.
    """
    if shape[0] < shape[-1] and shape[0] <= MAX_CHANNELS and shape[-1] > 4:
        raise ValueError(
            f"image of shape {shape} looks channels-first (C, H, W); pass channel_axis=0 "
            "(or channel_axis=-1 if it really is (H, W, C))"
        )


def _scale(x: np.ndarray) -> np.ndarray:
    """Robust joint percentile scaling to [0, 1]."""
    flat = x.reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    sample = flat[::step].astype(np.float64)
    peak = float(np.abs(sample).max())
    if peak > _F32_SAFE:  # a global factor changes nothing here and keeps hi - lo finite
        x, sample = x / peak, sample / peak
    lo, hi = np.percentile(sample, PERCENTILES)
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    # float32 holds uint8, uint16 and float32 values exactly; wider types lose the offset in
    # float64 first, so contrast riding on a large value (0.01 on 1e6) is kept
    work = np.float32 if np.can_cast(x.dtype, np.float32) else np.float64
    out = x.astype(work)  # a copy: the caller's array is never written
    out -= work(lo)
    out /= work(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _pca3(x: np.ndarray) -> np.ndarray:
    """Colour an (H, W, C) image by its first three principal components.

    The first component is the luminance (signed so that bright stays bright, scaled
    to [0, 1] like any gray image); the second and third add opponent colours on the
    same scale. Components with little variance therefore change little: copies of
    one channel, or one channel beside empty ones, come out gray as that channel
    alone would, instead of as stretched rounding noise.
    """
    h, w, c = x.shape
    src = x.reshape(-1, c)
    step = max(1, src.shape[0] // _MAX_SAMPLES)
    if np.can_cast(src.dtype, np.float32):
        # a global scale (which PCA ignores) keeps float32 values and their squares finite
        peak = float(np.abs(src).max()) if src.dtype.kind == "f" else 0.0
        flat = (src / peak).astype(np.float32) if peak > 1e6 else src.astype(np.float32)
    else:
        # wider types (float64, 32/64-bit integers) are centred and scaled in float64 first, in
        # row blocks, so contrast riding on a large offset (0.01 on 1e6) survives float32
        sample = src[::step].astype(np.float64)
        centre = np.median(sample, 0)
        dev = np.abs(sample - centre)
        spread = float(np.percentile(dev, 99.9)) or float(dev.max()) or 1.0  # robust to no-data values
        flat = np.empty(src.shape, dtype=np.float32)
        for i in range(0, src.shape[0], _MAX_SAMPLES):
            block = (src[i : i + _MAX_SAMPLES].astype(np.float64) - centre) / spread
            # outliers (e.g. -3.4e38 no-data pixels) are capped: they stay finite in float32
            flat[i : i + _MAX_SAMPLES] = np.clip(block, -1e6, 1e6)
    sample = flat[::step]
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    vt = vt[:3].copy()
    if vt[0].sum() < 0:
        vt[0] = -vt[0]
    proj = (flat - mean) @ vt.T
    lo, hi = np.percentile(proj[::step, 0], PERCENTILES)
    if hi <= lo:
        return np.zeros((h, w, 3), dtype=np.float32)
    proj /= hi - lo
    lum = proj[:, :1] - lo / (hi - lo)
    a, b = proj[:, 1:2], proj[:, 2:3] * (np.sqrt(3) / 2)
    rgb = np.concatenate([lum + a, lum - a / 2 + b, lum - a / 2 - b], 1)
    return np.clip(rgb, 0.0, 1.0).reshape(h, w, 3).astype(np.float32, copy=False)


def _opaque(alpha: np.ndarray) -> bool:
    """Whether a 4th channel is an opaque alpha: the dtype's maximum (1.0 for floats) everywhere."""
    full = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
    return bool((alpha == full).all())


def prepare_image(image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """Validate and normalise an image to float32 (H, W, 3) in [0, 1] (see module docstring)."""
    x = validate_image(image, channel_axis)
    c = x.shape[-1]
    if c == 4 and (x.dtype == np.uint8 or _opaque(x[..., 3])):
        x, c = x[..., :3], 3  # RGBA: alpha carries no image
    elif c == 2 and _opaque(x[..., 1]):
        x, c = x[..., :1], 1  # gray + opaque alpha
    if c == 1:
        s = _scale(x[..., 0])
        return np.repeat(s[..., None], 3, axis=-1)
    if c == 2:
        s = _scale(x)
        return np.concatenate([s, s.mean(-1, keepdims=True)], -1)
    if c == 3:
        return _scale(x)
    return _pca3(x)


def standardize(image01: np.ndarray, normalization: dict) -> np.ndarray:
    """Apply a model's mean/std to a prepared (H, W, 3) image; returns (3, H, W) float32."""
    mean = np.asarray(normalization["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(normalization["std"], dtype=np.float32)[:, None, None]
    return (np.moveaxis(image01, -1, 0) - mean) / std
