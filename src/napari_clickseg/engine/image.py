"""Image validation and normalisation shared by the engine, training and evaluation.

Every image, whatever its dtype, bit depth or channel count, becomes a float32
(H, W, 3) array in [0, 1]:

- values are scaled by robust percentiles (0.5 and 99.5) taken jointly over all
  channels, so uint16 and float data keep their full dynamic range and dim
  fluorescence is stretched (never a silent uint8 cast that clips); where objects
  cover too little of the image to reach a percentile (a few nuclei in a large
  field), that end moves out to the objects (``_widen_sparse``);
- gray images are repeated to three channels; two channels become
  (c0, c1, mean), except gray + alpha, opaque everywhere, which is gray; RGBA drops
  alpha (uint8 always, other dtypes when it is opaque everywhere); other images with more than three channels are coloured by their
  first three principal components (luminance and two opponent colours, on one
  scale, so weak components stay faint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LazyImage", "Normalizer", "prepare_image", "sample_box", "standardize", "validate_image"]

PERCENTILES = (0.5, 99.5)
SPARSE_SIGMAS = 8.0  # objects lie this many robust standard deviations off the median (see _widen_sparse)
_MAX_SAMPLES = 1 << 20
_F32_SAFE = 1e30
MAX_CHANNELS = 64


def _layout(shape: tuple[int, ...], dtype: np.dtype, channel_axis: int | None) -> int | None:
    """Check a 2D image's shape and dtype; return the axis holding its channels (None: none).

    Raises:
        ValueError: as ``validate_image`` (everything but NaN and inf values).
    """
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype.kind == "b"):
        raise ValueError(f"unsupported image dtype {dtype}; use an integer or float type")
    if channel_axis is not None and (isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer))):
        raise ValueError(f"channel_axis must be an integer axis, got {channel_axis!r}")
    axis: int | None = None
    if len(shape) == 2:
        if channel_axis is not None and channel_axis not in (-1, 2):  # -1 / 2: one channel, last
            raise ValueError(f"channel_axis={channel_axis} given, but the image is 2D {shape}: it has no channels")
        h, w, c = *shape, 1
    elif len(shape) == 3:
        if channel_axis is not None:
            if not -3 <= channel_axis < 3:
                raise ValueError(f"channel_axis={channel_axis} is not an axis of the image {shape}")
            axis = int(channel_axis) % 3
        else:
            _refuse_channels_first(shape)
            axis = 2
        h, w = (n for a, n in enumerate(shape) if a != axis)
        c = shape[axis]
    else:
        raise ValueError(
            f"image must be 2D: (H, W) or (H, W, C); got shape {shape}. "
            "For stacks, pass one plane."
        )
    if h < 2 or w < 2:
        raise ValueError(f"image is too small: {h}x{w} pixels (need at least 2x2)")
    if c < 1 or c > MAX_CHANNELS:
        hint = (
            " (is the channel axis right? for channels first pass channel_axis=0)" if channel_axis is None
            else f" (is channel_axis={channel_axis} right?)"
        )
        raise ValueError(f"image has {c} channels; expected 1 to {MAX_CHANNELS}{hint}")
    return axis


def _to_hwc(x: np.ndarray, axis: int | None) -> np.ndarray:
    """(H, W, C) of an image whose channels sit on ``axis`` (None: a 2D image)."""
    x = x[..., None] if axis is None else np.moveaxis(x, axis, -1)
    return x.astype(np.uint8) if x.dtype == bool else x


def _check_finite(x: np.ndarray, where: str = "") -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"image contains NaN or infinite values{where}")


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
    image = _to_hwc(image, _layout(image.shape, image.dtype, channel_axis))
    _check_finite(image)
    return image


class LazyImage:
    """An (H, W, C) view of a lazy 2D image (dask, zarr, or anything with ``shape``,
    ``dtype`` and numpy slicing) that reads only the regions it is sliced for.

    Raises:
        ValueError: as ``validate_image`` for the layout; NaN or inf values when a region
            holding them is read.
    """

    def __init__(self, data: Any, channel_axis: int | None = None) -> None:
        shape = tuple(int(n) for n in data.shape)
        self._axis = _layout(shape, np.dtype(data.dtype), channel_axis)
        self._data = data
        if self._axis is None:
            self.shape = (*shape, 1)
        else:
            self.shape = (*(n for a, n in enumerate(shape) if a != self._axis), shape[self._axis])
        self.dtype = np.dtype(np.uint8) if np.dtype(data.dtype) == bool else np.dtype(data.dtype)

    @staticmethod
    def accepts(image: Any) -> bool:
        """Whether ``image`` is a lazy array this class reads (not numpy, lists or tensors)."""
        if isinstance(image, np.ndarray) or not all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
            return False
        try:
            np.dtype(image.dtype)
        except TypeError:
            return False
        return True

    def __getitem__(self, box: tuple[slice, slice]) -> np.ndarray:
        """The pixels of ``box`` (two slices of rows and columns) as numpy (h, w, C)."""
        index = list(box)
        if self._axis is not None:
            index.insert(self._axis, slice(None))
        region = _to_hwc(np.asarray(self._data[tuple(index)]), self._axis)
        _check_finite(region, " (in pixels read from the lazy image)")
        return region


def _refuse_channels_first(shape: tuple[int, ...]) -> None:
    """Raise if a 3D shape given without a channel axis looks like (C, H, W).

    The rule of ``data.io.read_array``: a first axis of at most 64 that is shorter than
    a last axis of more than 4 is read as channels first, rather than silently as an
    image a few pixels tall with many channels.
    """
    if shape[0] < shape[-1] and shape[0] <= MAX_CHANNELS and shape[-1] > 4:
        raise ValueError(
            f"image of shape {shape} looks channels-first (C, H, W); pass channel_axis=0 "
            "(or channel_axis=-1 if it really is (H, W, C)); a z-stack or time series is "
            "segmented plane by plane: pass one plane, e.g. image[z]"
        )


def sample_box(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Every s-th row and column of an image of ``shape``: all of it up to 2048 x 2048
    pixels, about 1-4M pixels beyond (what ``Normalizer.fit`` is given)."""
    s = max(1, int(np.sqrt(shape[0] * shape[1] / _MAX_SAMPLES)))
    return slice(None, None, s), slice(None, None, s)


@dataclass(frozen=True)
class Normalizer:
    """Maps raw (h, w, C) pixels to float32 (h, w, 3) in [0, 1] (see the module docstring).

    Its statistics are fitted once on a whole image (or a coarser copy of it) and applied
    pixel by pixel, so a crop comes out as it would inside the whole image: the engine
    normalises only the zoom box it reads.

    Attributes:
        channels: raw channels, C (the layout the normaliser applies to).
        keep: leading channels used (an opaque alpha is dropped).
        peak: a global divisor for values beyond float32's safe range (1.0: none).
        lo, hi: the percentile window (of the first principal component for more than 3
            channels); ``hi <= lo`` maps everything to 0.
        centre, spread: wide-dtype pre-scaling before the principal components (or None).
        mean, components: the principal components (None for 1 to 3 channels).
    """

    channels: int
    keep: int
    peak: float = 1.0
    lo: float = 0.0
    hi: float = 1.0
    centre: np.ndarray | None = None
    spread: float | None = None
    mean: np.ndarray | None = None
    components: np.ndarray | None = None

    @classmethod
    def fit(cls, image: np.ndarray, dtype: np.dtype | None = None) -> Normalizer:
        """Fit on a validated (H, W, C) image (see ``validate_image``) or a sample of one
        (``image[sample_box(image.shape)]``), or a coarser copy of it.

        Args:
            dtype: the image's dtype where ``image`` is a copy of another (a pyramid level of
                means is float): whether a 4th or 2nd channel is alpha is judged by it.
        """
        x = image
        dtype = np.dtype(x.dtype if dtype is None else dtype)
        if dtype.kind == "b":
            dtype = np.dtype(np.uint8)
        c = x.shape[-1]
        keep = c
        if c == 4 and (dtype == np.uint8 or _opaque(x[..., 3], dtype)):
            keep = 3  # RGBA: alpha carries no image
        elif c == 2 and _opaque(x[..., 1], dtype):
            keep = 1  # gray + opaque alpha
        x = x[..., :keep]
        if keep <= 3:
            return cls(c, keep, *_percentile_window(x))
        return cls(c, keep, *_pca_fit(x))

    def __call__(self, region: np.ndarray) -> np.ndarray:
        """Normalise raw (h, w, C) pixels of the image it was fitted on (or of its layout)."""
        if region.ndim != 3 or region.shape[-1] != self.channels:
            raise ValueError(f"pixels of shape {region.shape} do not fit a normaliser of {self.channels} channels")
        x = region[..., : self.keep]
        if self.keep == 1:
            s = self._window(x[..., 0])
            return np.repeat(s[..., None], 3, axis=-1)
        if self.keep == 2:
            s = self._window(x)
            return np.concatenate([s, s.mean(-1, keepdims=True)], -1)
        if self.keep == 3:
            return self._window(x)
        return self._pca(x)

    def _window(self, x: np.ndarray) -> np.ndarray:
        if self.hi <= self.lo:
            return np.zeros(x.shape, dtype=np.float32)
        if self.peak != 1.0:  # a global factor changes nothing here and keeps hi - lo finite;
            x = x.astype(np.float64) / self.peak  # in float64: tiny values do not underflow
        # float32 holds uint8, uint16 and float32 values exactly; wider types lose the offset in
        # float64 first, so contrast riding on a large value (0.01 on 1e6) is kept
        work = np.float32 if np.can_cast(x.dtype, np.float32) else np.float64
        out = x.astype(work)  # a copy: the caller's array is never written
        out -= work(self.lo)
        out /= work(self.hi - self.lo)
        return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)

    def _pca(self, x: np.ndarray) -> np.ndarray:
        h, w, c = x.shape
        src = x.reshape(-1, c)
        if self.hi <= self.lo:
            return np.zeros((h, w, 3), dtype=np.float32)
        assert self.mean is not None and self.components is not None
        flat = _pca_input(src, self.centre, self.spread)
        proj = (flat - self.mean) @ self.components.T
        proj /= self.hi - self.lo
        np.clip(proj, -1e6, 1e6, out=proj)  # outliers: no inf - inf below
        lum = proj[:, :1] - self.lo / (self.hi - self.lo)
        a, b = proj[:, 1:2], proj[:, 2:3] * (np.sqrt(3) / 2)
        rgb = np.concatenate([lum + a, lum - a / 2 + b, lum - a / 2 - b], 1)
        return np.clip(rgb, 0.0, 1.0).reshape(h, w, 3).astype(np.float32, copy=False)


def _percentile_window(x: np.ndarray) -> tuple[float, float, float]:
    """(peak, lo, hi): robust joint percentiles of ``x``'s values (see ``_widen_sparse``)."""
    pixels = x.reshape(-1, x.shape[-1])
    step = max(1, pixels.size // _MAX_SAMPLES)  # whole pixels: a step over values could keep one channel
    sample = pixels[::step].reshape(-1).astype(np.float64)
    peak = float(np.abs(sample).max())
    if peak > _F32_SAFE:
        sample = sample / peak
    else:
        peak = 1.0
    lo, q25, q50, q75, hi = np.percentile(sample, (PERCENTILES[0], 25, 50, 75, PERCENTILES[1]))
    if hi <= lo:
        return peak, float(sample.min()), float(sample.max())
    lo, hi = _widen_sparse(lambda: x / peak if peak != 1.0 else x, lo, hi, q50, (q75 - q25) / 1.349,
                           (float(sample.min()), float(sample.max())))
    return peak, float(lo), float(hi)


def _widen_sparse(
    planes: Any, lo: float, hi: float, median: float, sigma: float, extremes: tuple[float, float]
) -> tuple[float, float]:
    """Move an end of the percentile window that objects too few to reach it leave in the background.

    When bright objects cover under 0.5 % of the pixels (a few nuclei in a large field), the
    99.5th percentile falls in the background noise, and the objects' blurred edges saturate
    to 1 (masks came out about 45 % too large). Objects here are pixels whose whole 3x3
    neighbourhood lies ``SPARSE_SIGMAS`` robust standard deviations beyond the background
    (so isolated noise and hot pixels do not count). Where they cover under 0.5 % of the
    pixels, ``hi`` rises to their 90th percentile (it never falls); likewise ``lo`` for sparse
    dark objects. Images with denser objects, bright or faint (3x3 means 3 standard deviations
    out on 0.5 % of the pixels, apart from the bright ones and what joins them), keep the
    percentile window.

    Args:
        planes: a callable giving the (h, w) or (h, w, k) values the window applies to
            (computed only when something lies beyond an end of the window).
        median, sigma: the values' median and robust standard deviation (interquartile
            range / 1.349).
        extremes: the values' (or a sample's) minimum and maximum.
    """
    if extremes[1] <= hi and extremes[0] >= lo:  # nothing beyond the window (e.g. saturated uint8)
        return lo, hi
    from scipy import ndimage

    v = np.asarray(planes())  # in its own dtype: the filters need no float copy
    v = v[..., None] if v.ndim == 2 else v
    if min(v.shape[:2]) < 3:
        return lo, hi
    if v.dtype.kind in "iub":
        sigma = max(sigma, 1.0)  # quantised values: at least one step
    margin = SPARSE_SIGMAS * sigma
    if v.dtype == np.float16:  # scipy.ndimage has no float16 filters
        v = v.astype(np.float32)
    channels = [v[..., c] for c in range(v.shape[-1])]
    work = np.float32 if np.can_cast(v.dtype, np.float32) else np.float64  # 0.01 on 1e6 survives
    means: list[np.ndarray] = []  # 3x3 means, computed once for both ends when needed
    new_lo, new_hi = lo, hi
    for side in (1.0, -1.0):  # the bright end, then the dark one
        if (extremes[1] <= hi) if side > 0 else (extremes[0] >= lo):
            continue
        # objects: pixels whose 3x3 neighbourhood lies wholly beyond the margin
        level = median + side * margin
        objects = np.zeros(v.shape[:2], dtype=bool)
        values = []
        for ch in channels:
            core = ndimage.minimum_filter(ch, 3) if side > 0 else ndimage.maximum_filter(ch, 3)
            hit = core > level if side > 0 else core < level
            values.append(core[hit])
            objects |= hit
        count = sum(x.size for x in values)
        if not 0 < count < 0.005 * objects.size * len(channels):
            continue
        # fainter content (3x3 means 3 sigmas out) covering 0.5 % apart from those objects is dense
        # enough for the percentile to lie on it already (dim cells beside one bright bead); faint
        # content joined to the objects (their blurred edges, an out-of-focus glow) is theirs
        if not means:
            means = [ndimage.uniform_filter(ch.astype(work), 3) for ch in channels]
        faint = np.zeros(v.shape[:2], dtype=bool)
        for m in means:
            faint |= m > median + 3 * sigma if side > 0 else m < median - 3 * sigma
        near = ndimage.binary_dilation(objects, iterations=3)
        lab, _ = ndimage.label(faint | near)
        faint &= ~np.isin(lab, np.unique(lab[near]))
        if faint.mean() >= 0.005:
            continue
        values = np.concatenate(values)
        if side > 0:
            new_hi = max(hi, float(np.percentile(values, 90)))
        else:
            new_lo = min(lo, float(np.percentile(values, 10)))
    return new_lo, new_hi


def _pca_input(src: np.ndarray, centre: np.ndarray | None, spread: float | None) -> np.ndarray:
    """(N, C) raw pixels as float32 on the scale the principal components were fitted on."""
    if centre is None:
        # values the statistics did not see (a no-data pixel off the sample) are capped so that
        # the projection stays finite
        flat = src.astype(np.float32)
        return np.clip(flat, -1e30, 1e30, out=flat) if src.dtype.kind == "f" else flat
    # wider types (float64, 32/64-bit integers) and floats beyond 1e6 are centred and scaled in
    # float64 first, in row blocks, so contrast riding on a large offset (0.01 on 1e6) survives
    # float32
    assert spread is not None
    flat = np.empty(src.shape, dtype=np.float32)
    for i in range(0, src.shape[0], _MAX_SAMPLES):
        block = (src[i : i + _MAX_SAMPLES].astype(np.float64) - centre) / spread
        # outliers (e.g. -3.4e38 no-data pixels) are capped: they stay finite in float32
        flat[i : i + _MAX_SAMPLES] = np.clip(block, -1e6, 1e6)
    return flat


def _pca_fit(x: np.ndarray) -> tuple:
    """(peak, lo, hi, centre, spread, mean, components) of an (H, W, C > 3) image.

    The first component is the luminance (signed so that bright stays bright, scaled
    to [0, 1] like any gray image); the second and third add opponent colours on the
    same scale. Components with little variance therefore change little: copies of
    one channel, or one channel beside empty ones, come out gray as that channel
    alone would, instead of as stretched rounding noise.
    """
    src = x.reshape(-1, x.shape[-1])
    step = max(1, src.shape[0] // _MAX_SAMPLES)
    centre, spread = None, None
    wide = not np.can_cast(src.dtype, np.float32)
    if wide or (src.dtype.kind == "f" and float(np.abs(src).max()) > 1e6):
        # wide types, and floats with values beyond 1e6 (often a no-data value such as -3.4e38)
        sample = src[::step].astype(np.float64)
        centre = np.median(sample, 0)
        dev = np.abs(sample - centre)
        spread = float(np.percentile(dev, 99.9)) or float(dev.max()) or 1.0  # robust to no-data values
    sample = _pca_input(src[::step], centre, spread)
    if centre is not None:  # outliers (no-data pixels) are left out of the fit
        inliers = (np.abs(sample) < 1000).all(1)  # far beyond any object: sparse bright ones stay
        sample = sample[inliers] if inliers.any() else sample
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    vt = vt[:3].copy()
    if vt[0].sum() < 0:
        vt[0] = -vt[0]
    lum = (sample - mean) @ vt[0]
    lo, q25, q50, q75, hi = np.percentile(lum, (PERCENTILES[0], 25, 50, 75, PERCENTILES[1]))

    def planes() -> np.ndarray:  # the luminance of every sampled pixel, no-data ones at the median
        flat = _pca_input(src, centre, spread)
        plane = (flat - mean) @ vt[0]
        if centre is not None:
            plane[~(np.abs(flat) < 1000).all(1)] = q50
        return plane.reshape(x.shape[:2])

    if hi > lo:
        lo, hi = _widen_sparse(planes, lo, hi, q50, (q75 - q25) / 1.349, (float(lum.min()), float(lum.max())))
    return 1.0, float(lo), float(hi), centre, spread, mean, vt


def _opaque(alpha: np.ndarray, dtype: np.dtype) -> bool:
    """Whether a 4th channel is an opaque alpha: ``dtype``'s maximum (1.0 for floats) everywhere."""
    full = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return bool((alpha == full).all())


def prepare_image(image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """Validate and normalise an image to float32 (H, W, 3) in [0, 1] (see module docstring)."""
    x = validate_image(image, channel_axis)
    return Normalizer.fit(x[sample_box(x.shape)])(x)


def standardize(image01: np.ndarray, normalization: dict) -> np.ndarray:
    """Apply a model's mean/std to a prepared (H, W, 3) image; returns (3, H, W) float32."""
    mean = np.asarray(normalization["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(normalization["std"], dtype=np.float32)[:, None, None]
    return (np.moveaxis(image01, -1, 0) - mean) / std
