"""The Predictor: ``set_image`` once, then ``predict(clicks)`` after every click.

State of one click prefix is its zoom box and the probability inside it (zero
outside), so results are assembled without full-image work and undo is exact:
a prefix already computed comes from the history; a list that extends a known
prefix by one click costs one forward (two for a first click that zooms in);
any other list is replayed click by click from its longest known prefix, which
gives the same result as a replay from scratch.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checks import ENGINE_LIMITS, check_number
from ..clicks import Click, ClickLike, as_clicks, encode_clicks, validate_clicks
from ..models.base import ClickSegModel
from . import postprocess
from .device import autocast, pick_device, pick_dtype
from .fuse import fold_batchnorm
from .image import LazyImage, Normalizer, sample_box, standardize, validate_image
from .refine import BRS_MODES, refine
from .zoom import Box, ZoomTransform, first_click_box, full_box, keeps_box, mask_bbox, object_box

__all__ = ["Predictor"]

_Key = tuple[tuple[float, float, bool], ...]
#: attributes a state depends on besides the clicks: changing one is never answered from history
_SETTINGS = ("zoom_in", "target_size", "min_crop_size", "first_window", "expansion", "max_upscale",
             "full_max_side", "brs_max_evals", "brs_time_cap")

#: the first click gets a second, zoomed pass when the object it found is small (its long
#: side under this fraction of ``target_size``) and the zoom magnifies at least this much more
_SMALL_OBJECT = 0.25
_FIRST_ZOOM_GAIN = 1.25
#: image features (and network inputs) kept for this many zoom boxes, most recent first
_FEATURE_CACHE = 4


def _float32(x: Any) -> Any:
    """``x`` with its floating-point tensors (also inside dicts, lists and tuples) in float32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_float32(v) for v in x)
    return x


@dataclass(frozen=True)
class _State:
    """Prediction after one click prefix: probability ``patch`` inside ``box``, 0 outside."""

    box: Box
    patch: np.ndarray
    transform: ZoomTransform
    refine_iterations: int = 0
    passes: int = 1


class _History:
    """LRU map from (brs mode and settings, click prefix) to ``_State``, bounded in entries and bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._d: OrderedDict[tuple[tuple, _Key], _State] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[tuple, _Key]) -> _State | None:
        s = self._d.get(key)
        if s is not None:
            self._d.move_to_end(key)
        return s

    def put(self, key: tuple[tuple, _Key], state: _State) -> None:
        if key in self._d:
            self._bytes -= self._d.pop(key).patch.nbytes
        self._d[key] = state
        self._bytes += state.patch.nbytes
        while len(self._d) > 1 and (len(self._d) > self.max_entries or self._bytes > self.max_bytes):
            _, old = self._d.popitem(last=False)
            self._bytes -= old.patch.nbytes

    def clear(self) -> None:
        self._d.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._d)


def _folded_copy(model: ClickSegModel, device: torch.device) -> ClickSegModel:
    """An eval-mode copy with BatchNorm folded into its convolutions (1.4x faster on CPU).
    The caller's model is never modified; the copy is float32 (precision is ``dtype``'s job)."""
    folded = copy.deepcopy(model).float().to(device).eval()
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules()):
        return folded
    s = 2 * int(getattr(folded, "size_divisor", 32))
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, s, s, generator=g).to(device)
    maps = torch.rand(1, folded.inputs.click_channels, s, s, generator=g).to(device)
    prev = torch.rand(1, 1, s, s, generator=g).to(device)

    def run() -> object:
        feats = folded.encode_image(image) if folded.caches_image_features else {}
        return folded(image, maps, prev, feats)

    fold_batchnorm(folded, run)
    return folded


class Predictor:
    """Interactive segmentation of one image with a ``ClickSegModel``.

    Args:
        model: any ``ClickSegModel`` (random-init, trained, custom). A model with
            BatchNorm runs as a folded eval-mode copy (``engine.fuse``); the
            caller's model is left as it was.
        device: "cpu", "cuda", "mps", a ``torch.device``, or None for the best available.
        dtype: "auto", "float32" or "bfloat16" (autocast); see ``engine.device``.
        zoom_in: RITM zoom-in (crop around the object after the first click).
        target_size: long side of every view fed to the network (192, the shipped
            weights' training crop: objects then appear at the scale they were
            trained at; on 10 objects per dataset and 10 clicks, NoC@90 with 192 vs 256:
            ph2/val 1.8 vs 3.3, GrabCut 8.2 vs 8.3, dsb2018/val 5.1 vs 4.5, at 0.56x
            the compute. Round-8 ``hires`` on 150 dsb2018/val objects with an 80-px
            minimum crop: 256 needed 0.61 more clicks, interval +0.09 to +1.17).
        min_crop_size: minimum side of the zoom box in image pixels (48: small
            nuclei are magnified 4x, ``max_upscale``). How much magnification
            helps depends on the weights: on 150 dsb2018/val objects (seed 1),
            NoC@90 with 40 / 48 / 64 / 80 / 96 / 128 (max_upscale = 192 / that)
            was 7.21 / 6.64 / 6.35 / 6.01 / 6.10 / 6.68 for round-8 ``hires``,
            8.05 (48) / 8.67 (80) for ``fca``, 9.56 / 10.37 for ``two_stream``,
            9.27 / 9.69 for ``early``, 8.21 / 8.21 for ``multi_stage``. Weights
            may carry their own value (``from_pretrained``): the shipped ``hires``
            uses 80 px with ``max_upscale`` 2.4 and ``expansion`` 1.8.
        first_window: the first click sees the whole image if its long side is at
            most this, else a window of this size around the click; that view is
            resized to ``target_size`` to find the object; when the object found is
            small (under a quarter of ``target_size``), a second pass zooms in on it:
            nuclei are segmented magnified, large objects in one pass.
        expansion: zoom box = box of mask and clicks times this factor.
        max_upscale: largest magnification of a zoom crop.
        click_radius: a click the network contradicts gets its label back in a disk
            of up to this many view pixels, reaching no further than the nearest
            pixel that already has that label (``postprocess.honour_clicks``). A
            network that ignores a click would otherwise give the same mask however
            often the user clicks there. With the round-2 multi_stage weights, 15
            objects per dataset and 20 clicks, NoC@90 without -> with (radius 5):
            dsb2018/val 10.53 -> 8.60, ph2/val 3.07 -> 2.87, GrabCut 14.13 -> 13.13.
            0 returns the network's map as it is.
        full_max_side: without zoom-in, images are downscaled to this long side.
        brs_max_evals, brs_time_cap: caps of BRS / f-BRS (evaluations, seconds).
        normalization: image mean/std (default: the model's).
        weights_meta: metadata of the weights file (set by ``from_pretrained``).
        max_history, max_history_bytes: bounds of the per-prefix history.
    """

    def __init__(
        self,
        model: ClickSegModel,
        *,
        device: str | torch.device | None = None,
        dtype: str = "auto",
        zoom_in: bool = True,
        target_size: int = 192,
        min_crop_size: int = 48,
        first_window: int = 640,
        expansion: float = 1.4,
        max_upscale: float = 4.0,
        click_radius: float = 5.0,
        full_max_side: int = 1024,
        brs_max_evals: int = 20,
        brs_time_cap: float = 10.0,
        normalization: dict | None = None,
        weights_meta: dict | None = None,
        max_history: int = 256,
        max_history_bytes: int = 512 << 20,
    ) -> None:
        if not isinstance(model, ClickSegModel):
            raise ValueError(f"model must be a ClickSegModel, got {type(model).__name__}")
        self.zoom_in = bool(zoom_in)
        # checked by __setattr__, here and whenever a caller changes one
        self.target_size, self.min_crop_size = target_size, min_crop_size
        self.first_window, self.expansion = first_window, expansion
        self.max_upscale, self.full_max_side = max_upscale, full_max_side
        self.click_radius = click_radius
        self.brs_max_evals, self.brs_time_cap = brs_max_evals, brs_time_cap
        from ..weights import check_normalization
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self._channels_last = self.device.type == "cpu"
        model = _folded_copy(model, self.device)
        model.to(self.device)
        if self._channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        try:
            self.normalization = check_normalization(normalization or model.normalization)
        except ValueError as e:  # WeightsError; this is an argument here
            raise ValueError(str(e)) from None
        self.weights_meta = dict(weights_meta or {})
        self._history = _History(max_history, max_history_bytes)
        self._features: OrderedDict[tuple, tuple[torch.Tensor, dict]] = OrderedDict()
        self._lock = threading.RLock()
        self._image: Any = None  # validated (H, W, C) numpy view or LazyImage
        self._normalizer: Normalizer | None = None
        self.last_stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = "default", *, device: str | torch.device | None = None,
        dtype: str = "auto", **kwargs: Any,
    ) -> Predictor:
        """A predictor with trained weights: a shipped model name, "default", or a file.

        Settings the weights carry (their ``engine`` metadata, e.g. the zoom's
        ``min_crop_size`` and ``max_upscale``) apply unless ``kwargs`` name them.

        Raises:
            WeightsError: no trained weights for the name, a missing or corrupt
                file, or a file holding untrained (random) weights.
            TypeError: ``normalization`` or ``weights_meta`` given: they come from the file.
        """
        from ..weights import load_weights, resolve_weights

        if taken := sorted({"normalization", "weights_meta"} & kwargs.keys()):
            raise TypeError(
                f"from_pretrained takes {' and '.join(taken)} from the weights file (the network was "
                "trained with its normalisation); to use others, build Predictor(model, ...) yourself"
            )
        path, sha = resolve_weights(name_or_path)
        model, meta = load_weights(path, expected_sha256=sha)
        norm = meta.get("normalization") or None
        settings = {**meta.get("engine", {}), **kwargs}
        return cls(model, device=device, dtype=dtype, normalization=norm, weights_meta=meta, **settings)

    @property
    def info(self) -> dict[str, Any]:
        """Provenance: arch, weights sha256, device, dtype, zoom-in settings, threads."""
        return {
            "arch": getattr(self.model, "arch_name", "") or type(self.model).__name__,
            "arch_kwargs": dict(getattr(self.model, "arch_kwargs", {}) or {}),
            "weights_sha256": self.weights_meta.get("sha256"),
            "weights_path": self.weights_meta.get("path"),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "zoom_in": self.zoom_in,
            "target_size": self.target_size,
            "min_crop_size": self.min_crop_size,
            "max_upscale": self.max_upscale,
            "expansion": self.expansion,
            "click_radius": self.click_radius,
            "threads": torch.get_num_threads(),
        }

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ENGINE_LIMITS:  # numeric settings are checked whenever one is set
            kind, low, strict = ENGINE_LIMITS[name]
            value = check_number(name, value, kind, low, strict)
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ image
    def set_image(self, image: Any, channel_axis: int | None = None, reference: Any = None) -> None:
        """Validate and keep ``image``; clears the history and caches.

        The image is read, not copied: only the zoom boxes the clicks need are normalised,
        so a large image costs little memory. Call ``set_image`` again after editing it.

        Args:
            image: (H, W) or (H, W, C) numpy array, or a lazy array (dask, zarr, anything
                with ``shape``, ``dtype`` and numpy slicing) of which only those boxes are read.
            channel_axis: axis of ``image`` holding channels (default: last, for 3D).
            reference: a smaller copy of the same image with the same layout (a coarser
                pyramid level): intensity statistics are taken from it instead of from a
                strided sample of ``image``, which reads every chunk of a lazy array once.

        Raises:
            ValueError: unsupported shape, dtype or values (see ``engine.image``); NaN in a
                lazy image is reported when a box holding it is read.
        """
        if LazyImage.accepts(image):
            raw: Any = LazyImage(image, channel_axis)
        else:
            raw = validate_image(image, channel_axis)
        if reference is None:
            sample = raw[sample_box(raw.shape)]
        else:
            sample = validate_image(reference, channel_axis)
            if sample.shape[-1] != raw.shape[-1]:
                raise ValueError(
                    f"the reference image has {sample.shape[-1]} channels, the image {raw.shape[-1]}"
                )
        normalizer = Normalizer.fit(sample, raw.dtype)
        with self._lock:
            self._image, self._normalizer = raw, normalizer
            self.reset()

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(H, W) of the current image, None before ``set_image``."""
        return None if self._image is None else tuple(self._image.shape[:2])

    def reset(self) -> None:
        """Forget the click history and cached features (keeps the image)."""
        with self._lock:
            self._history.clear()
            self._features.clear()

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        clicks: Iterable[ClickLike],
        brs: str = "off",
        structural_integrity: bool = True,
        graph_cut: bool = False,
        threshold: float = 0.5,
    ) -> np.ndarray:
        """Foreground probability after ``clicks``.

        Args:
            clicks: ``Click`` objects or (row, col, positive) tuples, in order.
            brs: "off", "brs" or "fbrs" (test-time refinement at every click).
            structural_integrity: drop foreground not 8-connected to a positive click.
            graph_cut: refine the output with a min-cut (result is 0/1).
            threshold: the foreground threshold the caller will apply; click honouring,
                structural integrity and the graph cut (within 0.01-0.99) judge foreground by it.

        Returns:
            A new float32 (H, W) array in [0, 1]. Post-processing (click honouring,
            see ``click_radius``, then graph cut, then structural integrity) shapes
            only the returned map; the next click sees the raw prediction.

        Raises:
            ValueError: no image set, no clicks, clicks outside the image or not
                finite, an unknown ``brs`` mode, or a threshold outside (0, 1].
        """
        if not isinstance(brs, str) or brs not in BRS_MODES:
            raise ValueError(f"brs must be one of {BRS_MODES}, got {brs!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
        if isinstance(clicks, (str, bytes)) or not isinstance(clicks, Iterable):
            raise ValueError(f"clicks must be a sequence of (row, col, positive), got {type(clicks).__name__}")
        clicks = as_clicks(clicks)
        with self._lock:
            if self._image is None:
                raise ValueError("no image: call set_image(image) before predict(clicks)")
            shape = self.image_shape
            validate_clicks(clicks, shape)
            t0 = time.perf_counter()
            state, forwards, iters = self._state_for(clicks, brs, threshold)
            out = np.zeros(shape, dtype=np.float32)  # calloc: untouched pages stay free
            out[state.box.slices] = self._postprocess(state, clicks, structural_integrity, graph_cut, threshold)
            self.last_stats = {
                "forwards": forwards,
                "from_history": forwards == 0,
                "refine_iterations": iters,
                "box": (state.box.y0, state.box.x0, state.box.y1, state.box.x1),
                "crop_size": state.transform.padded,
                "seconds": time.perf_counter() - t0,
            }
            return out

    def _state_for(self, clicks: list[Click], brs: str, threshold: float = 0.5) -> tuple[_State, int, int]:
        key: _Key = tuple((c.row, c.col, c.positive) for c in clicks)
        # a refined map depends on the threshold its clicks must be satisfied at; an unrefined one does not
        mode = (brs, None if brs == "off" else threshold, *(getattr(self, name) for name in _SETTINGS))
        k = len(key)
        while k > 0 and self._history.get((mode, key[:k])) is None:
            k -= 1
        state = self._history.get((mode, key[:k])) if k else None
        forwards = iters = 0
        for i in range(k + 1, len(key) + 1):
            state = self._step(state, clicks[:i], brs, threshold)
            self._history.put((mode, key[:i]), state)
            forwards += state.passes
            iters += state.refine_iterations
        # touch the ancestors so undo stays cheap under LRU eviction
        for i in range(1, len(key)):
            self._history.get((mode, key[:i]))
        assert state is not None
        return state, forwards, iters

    def _transform(self, parent: _State | None, clicks: list[Click]) -> ZoomTransform:
        shape = self.image_shape
        assert shape is not None
        div = int(getattr(self.model, "size_divisor", 32))
        if not self.zoom_in:
            box = full_box(shape)
            return ZoomTransform.make(box, min(1.0, self.full_max_side / max(shape)), div)
        if parent is None:
            box = first_click_box(shape, clicks[-1], self.first_window)
            return ZoomTransform.make(box, min(1.0, self.target_size / max(box.height, box.width)), div)
        mbox = mask_bbox(parent.patch >= 0.5, (parent.box.y0, parent.box.x0))
        box = object_box(shape, mbox, clicks, self.expansion, self.min_crop_size)
        if parent.transform.box == parent.box and keeps_box(shape, parent.box, mbox, clicks, box):
            return parent.transform
        scale = min(self.target_size / max(box.height, box.width), self.max_upscale)
        return ZoomTransform.make(box, scale, div)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def _region(self, box: Box) -> np.ndarray:
        """The image inside ``box``, float32 (h, w, 3) in [0, 1]."""
        assert self._image is not None and self._normalizer is not None
        return self._normalizer(self._image[box.slices])

    def _image_features(self, tr: ZoomTransform) -> tuple[torch.Tensor, dict]:
        hit = self._features.get(tr.key)
        if hit is not None:
            self._features.move_to_end(tr.key)
            return hit
        region = standardize(self._region(tr.box), self.normalization)
        image = tr.forward(torch.from_numpy(region)[None].to(self.device))
        image = self._to_device(image)
        feats: dict = {}
        if self.model.caches_image_features:
            with autocast(self.device, self.dtype):
                feats = self.model.encode_image(image)
        self._features[tr.key] = (image, feats)
        while len(self._features) > _FEATURE_CACHE:
            self._features.popitem(last=False)
        return image, feats

    @torch.no_grad()
    def _step(self, parent: _State | None, clicks: list[Click], brs: str, threshold: float = 0.5) -> _State:
        if not self.model.training:  # the usual case; eval() walks every module (~6 ms for hires)
            return self._step_eval(parent, clicks, brs, threshold)
        self.model.eval()
        try:
            return self._step_eval(parent, clicks, brs, threshold)
        finally:
            self.model.train()

    def _step_eval(self, parent: _State | None, clicks: list[Click], brs: str, threshold: float = 0.5) -> _State:
        tr = self._transform(parent, clicks)
        if parent is not None or not self.zoom_in:
            return self._forward(tr, parent, clicks, brs, threshold)
        # first click: localise on the (downscaled) window, then zoom in on what was found
        first = self._forward(tr, None, clicks, "off")
        found = mask_bbox(first.patch >= 0.5)
        if found is None or max(found.height, found.width) * tr.scale[0] < _SMALL_OBJECT * self.target_size:
            zoom = self._transform(first, clicks)
            if zoom.scale[0] > _FIRST_ZOOM_GAIN * tr.scale[0]:
                # the box comes from the first pass; its map is no previous mask (the first click
                # has none, in the paper and in training)
                return dataclasses.replace(self._forward(zoom, None, clicks, brs, threshold), passes=2)
        if brs == "off":
            return first
        return dataclasses.replace(self._forward(tr, None, clicks, brs, threshold), passes=2)

    def _forward(
        self, tr: ZoomTransform, parent: _State | None, clicks: list[Click], brs: str, threshold: float = 0.5
    ) -> _State:
        image, feats = self._image_features(tr)
        inputs = self.model.inputs
        maps = encode_clicks(tr.clicks(clicks), tr.padded, inputs.encoding, inputs.first_click)
        maps_t = self._to_device(torch.from_numpy(maps)[None])
        prev = torch.zeros((1, 1, *tr.padded), device=self.device)
        if inputs.prev_mask and parent is not None:
            overlap = parent.box.intersection(tr.box)
            if overlap == tr.box:  # the parent covers the whole box (the usual kept box): a view
                region = parent.patch[tr.box.y0 - parent.box.y0 : tr.box.y1 - parent.box.y0,
                                      tr.box.x0 - parent.box.x0 : tr.box.x1 - parent.box.x0]
                if tr.size == tr.padded == (tr.box.height, tr.box.width):
                    region = region.copy()  # forward would hand the history's own pixels to the model
                prev = tr.forward(torch.from_numpy(region)[None, None].to(self.device))
            elif overlap is not None:
                region = np.zeros((tr.box.height, tr.box.width), dtype=np.float32)
                region[overlap.y0 - tr.box.y0 : overlap.y1 - tr.box.y0, overlap.x0 - tr.box.x0 : overlap.x1 - tr.box.x0] = (
                    parent.patch[overlap.y0 - parent.box.y0 : overlap.y1 - parent.box.y0,
                                 overlap.x0 - parent.box.x0 : overlap.x1 - parent.box.x0]
                )
                prev = tr.forward(torch.from_numpy(region)[None, None].to(self.device))
        prev = self._to_device(prev)
        iters = 0
        if brs == "off":
            with autocast(self.device, self.dtype):
                logits = self.model(image, maps_t, prev, feats)["logits"]
        else:
            # in float32: bfloat16 energies jitter in their third digit, and the line search stalls
            res = refine(
                brs, self.model, _float32(image), _float32(feats), _float32(maps_t), _float32(prev),
                tr.points(clicks), [c.positive for c in clicks], max_evals=self.brs_max_evals,
                time_cap=self.brs_time_cap, threshold=threshold,
            )
            logits, iters = res.logits, res.iterations
        # in place: nothing reads the logits again, and a box-size second tensor costs page faults
        prob = tr.inverse(logits.detach().float()).sigmoid_()[0, 0]
        patch = np.ascontiguousarray(prob.cpu().numpy(), dtype=np.float32)
        if not np.isfinite(patch).all():
            raise RuntimeError("the model returned NaN probabilities (check the image's values and the weights)")
        return _State(tr.box, patch, tr, iters)

    def _postprocess(
        self, state: _State, clicks: list[Click], structural: bool, graph_cut: bool, threshold: float
    ) -> np.ndarray:
        patch = state.patch
        if not (structural or graph_cut or self.click_radius > 0):
            return patch
        local = [c.shifted(state.box.y0, state.box.x0) for c in clicks]
        if self.click_radius > 0:
            patch = postprocess.honour_clicks(
                patch, local, self.click_radius / min(state.transform.scale), threshold
            )
        if graph_cut:
            patch = postprocess.graph_cut(patch, self._region(state.box), local, threshold=threshold)
        if structural:
            patch = postprocess.structural_integrity(patch, local, threshold)
        return patch
