"""The robot-user evaluation loop of ``docs/PROTOCOL.md``.

For every object: the robot user (``napari_clickseg.robot.next_click``) clicks,
the predictor predicts from all clicks so far (it keeps the previous prediction
itself where its model uses one), foreground is ``prob >= 0.5``, and the IoU is
recorded; up to ``max_clicks`` (20) clicks. Objects are whole-image samples:
every object of an instance map (>= 30 px) is one sample on the full image,
never a crop cut around it by the evaluator. Each image is set once
(``set_image``) and all of its objects are run on the cached features.

``stop_iou``: by default every object gets all ``max_clicks`` clicks, which the
mIoU@k curve needs. With ``stop_iou`` (e.g. 0.99) an object stops once its IoU
reaches it and the rest of its curve repeats the last IoU. That saves time and
leaves NoC at thresholds <= ``stop_iou`` exact (so it must be >= 0.90), but the
curve after the stop is an assumption (a model could still drift); the result
records ``stop_iou`` and how many objects stopped, and the shares above 95 % /
99 % after the last click are then n/a.
An object whose prediction has no error left stops the same way (exact).

``evaluate(predictor_or_name, dataset, ...)`` is the Python API used by the
CLI, the trainer and the tests.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import BRS_MODES
from ..clicks import Click
from ..data.io import MIN_OBJECT_PX
from ..robot import next_click
from . import metrics as M

__all__ = ["BRS_MODES", "EvalSet", "evaluate", "load_eval_set", "load_predictor"]

#: clicks at which the decidability index is recorded
DI_AT = (1, 5, 10)


@dataclass
class EvalSet:
    """Objects to evaluate, grouped by image.

    Attributes:
        name: dataset name for reports (e.g. ``"dsb2018/val"``).
        path: folder it came from (None for in-memory data).
        split: ``train``/``val``/``test`` when the folder says so, else ``"all"``.
        kind: ``"labels"`` (instance maps), ``"masks"`` (binary) or ``"arrays"``.
        n_images: images in the dataset.
        n_objects_total: objects (>= min size) before sampling.
        items: ``(image_index, image_name, object_id)`` per selected object, in image order.
        get_image: image for an image index.
        get_object: ``(gt, ignore)`` masks for an item.
        channel_axis: where the images hold their channels (None: the predictor's guess).
    """

    name: str
    path: str | None
    split: str
    kind: str
    n_images: int
    n_objects_total: int
    items: list[tuple[int, str, int]]
    get_image: Callable[[int], np.ndarray]
    get_object: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]
    skipped_small: int = 0
    channel_axis: int | None = None
    sampled: bool = False
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-ready description (no arrays)."""
        return {
            "name": self.name,
            "path": self.path,
            "split": self.split,
            "kind": self.kind,
            "n_images": self.n_images,
            "n_objects_total": self.n_objects_total,
            "n_objects": len(self.items),
            "n_images_used": len({i for i, _, _ in self.items}),
            "skipped_small_objects": self.skipped_small,
            "sampled": self.sampled,
            "sample_seed": self.seed,
            **self.extra,
        }


def _dataset_name(root: Path) -> tuple[str, str]:
    split = root.name if root.name in ("train", "val", "valid", "validation", "test") else "all"
    name = f"{root.parent.name}/{root.name}" if split != "all" else root.name
    return name, split


def _sample(items: list, max_objects: int | None, seed: int) -> tuple[list, bool]:
    if max_objects is None or max_objects >= len(items):
        return items, False
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    if seed < 0:
        raise ValueError(f"the sampling seed must be >= 0, got {seed}")
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=max_objects, replace=False))
    return [items[i] for i in idx], True


def _from_folder(ds: Any, max_objects: int | None, seed: int) -> EvalSet:
    """EvalSet over a ``napari_clickseg.data.folder.FolderDataset``."""
    root = Path(ds.root).resolve()
    # named as given ("." and ".." spelled out, symlinks kept): resolve() would name a link's target
    name, split = _dataset_name(Path(os.path.abspath(ds.root)))
    objs = list(range(len(ds.objects)))
    chosen, sampled = _sample(objs, max_objects, seed)
    items = [(ds.objects[k].image, ds.names[ds.objects[k].image], ds.objects[k].label) for k in chosen]
    index = {(o.image, o.label): k for k, o in enumerate(ds.objects)}  # items name the files' own labels

    def get_image(i: int) -> np.ndarray:
        return ds.images[i]  # as read, (H, W, C): the pixels the napari dock would get

    def get_object(i: int, label: int) -> tuple[np.ndarray, np.ndarray | None]:
        _, mask, ignore = ds.object_masks(index[(i, label)])
        return mask, (ignore if ignore.any() else None)

    return EvalSet(
        name=name,
        path=str(root),
        split=split,
        kind=ds.kind,
        n_images=len(ds.names),
        n_objects_total=len(ds.objects),
        items=items,
        get_image=get_image,
        get_object=get_object,
        skipped_small=int(getattr(ds, "skipped_small", 0)),
        sampled=sampled,
        seed=seed if sampled else None,
        channel_axis=-1,
        extra={"images": "as read from the files; the predictor normalises them"},
    )


def _from_arrays(samples: Sequence, max_objects: int | None, seed: int, min_object_px: int) -> EvalSet:
    """EvalSet over in-memory ``(image, gt)`` or ``(image, gt, ignore)`` tuples, one object each."""
    images: list[np.ndarray] = []
    objects: list[tuple[np.ndarray, np.ndarray | None]] = []
    items_all: list[tuple[int, str, int]] = []
    skipped = 0
    for i, s in enumerate(samples):
        if not isinstance(s, (tuple, list)) or len(s) not in (2, 3):
            raise ValueError(f"sample {i} must be (image, gt) or (image, gt, ignore)")
        image, gt = np.asarray(s[0]), np.asarray(s[1])
        values = np.unique(gt[gt != 0])
        if values.size > 1:
            raise ValueError(
                f"sample {i}: gt holds {values.size} labels; give one binary mask per object "
                "(or a folder with labels/ for instance maps)"
            )
        gt = gt.astype(bool)
        ignore = None if len(s) == 2 or s[2] is None else np.asarray(s[2], dtype=bool)
        if gt.shape != image.shape[:2]:
            raise ValueError(f"sample {i}: gt shape {gt.shape} does not match image {image.shape}")
        images.append(image)
        objects.append((gt, ignore))
        if np.count_nonzero(gt & ~ignore if ignore is not None else gt) < min_object_px:
            skipped += 1
            continue
        items_all.append((i, f"sample{i}", i))
    if not items_all:
        raise ValueError(f"no sample has an object of at least {min_object_px} pixels (outside its ignore mask)")
    items, sampled = _sample(items_all, max_objects, seed)
    return EvalSet(
        name="arrays",
        path=None,
        split="all",
        kind="arrays",
        n_images=len(images),
        n_objects_total=len(items_all),
        items=items,
        get_image=lambda i: images[i],
        get_object=lambda i, k: objects[k],
        skipped_small=skipped,
        sampled=sampled,
        seed=seed if sampled else None,
    )


def load_eval_set(
    dataset: Any,
    max_objects: int | None = None,
    seed: int = 0,
    min_object_px: int = MIN_OBJECT_PX,
    progress: Callable[[str], None] | None = None,
) -> EvalSet:
    """Turn a dataset into an ``EvalSet``.

    Args:
        dataset: a folder (``images/`` + ``labels/`` or ``masks/``), a
            ``FolderDataset``, an ``EvalSet``, or a sequence of ``(image, gt[, ignore])``.
        max_objects: evaluate a deterministic random sample of this many objects.
        seed: sampling seed (the same seed gives the same objects).
        min_object_px: smaller objects are skipped (PROTOCOL.md: 30 px).
        progress: callback for loading messages.
    """
    if isinstance(dataset, EvalSet):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        from ..data.folder import FolderDataset

        dataset = FolderDataset(dataset, min_object_px=min_object_px, progress=progress)
    if hasattr(dataset, "objects") and hasattr(dataset, "object_masks") and hasattr(dataset, "images"):
        return _from_folder(dataset, max_objects, seed)
    if isinstance(dataset, Sequence):
        return _from_arrays(dataset, max_objects, seed, min_object_px)
    raise ValueError(f"unsupported dataset type {type(dataset).__name__}")


def load_predictor(
    model: Any,
    *,
    device: str | None = None,
    zoom_in: bool | None = None,
    click_radius: float | None = None,
    dtype: str = "auto",
) -> Any:
    """A predictor for a shipped model name, a weights file, ``random_walker``, a model or a predictor.

    Anything with ``set_image`` and ``predict`` is returned unchanged. ``zoom_in`` and
    ``click_radius`` (None: the predictor's defaults) apply to predictors that have them;
    ``dtype`` ("auto", "float32", "bfloat16") to the ones built here.
    """
    if hasattr(model, "set_image") and hasattr(model, "predict"):
        _configure(model, zoom_in, click_radius)
        return model
    if isinstance(model, str) and model == "random_walker":
        from .baseline import RandomWalkerPredictor

        return RandomWalkerPredictor()
    from ..engine import Predictor

    kwargs: dict[str, Any] = {}
    if isinstance(model, (str, os.PathLike)):
        ctor = Predictor.from_pretrained
        arg: Any = str(model)
    else:  # a ClickSegModel
        ctor, arg = Predictor, model
    params = _params(ctor) | _params(Predictor)
    if device is not None:
        kwargs["device"] = device
    kwargs["dtype"] = dtype
    if zoom_in is not None and "zoom_in" in params:
        kwargs["zoom_in"] = zoom_in
    p = ctor(arg, **kwargs)
    _configure(p, zoom_in, click_radius)
    return p


def _params(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _configure(predictor: Any, zoom_in: bool | None, click_radius: float | None) -> None:
    if zoom_in is not None and hasattr(predictor, "zoom_in"):
        predictor.zoom_in = bool(zoom_in)
    if click_radius is not None and hasattr(predictor, "click_radius"):
        predictor.click_radius = click_radius  # the predictor validates it


def _info(predictor: Any) -> dict:
    info = dict(getattr(predictor, "info", {}) or {})
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


class _Caller:
    """Calls ``predictor.predict`` with the options it accepts (and checks the rest are defaults)."""

    def __init__(self, predictor: Any, options: dict[str, Any]):
        self.predictor = predictor
        params = _params(predictor.predict)
        takes_kwargs = any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            for p in inspect.signature(predictor.predict).parameters.values()
        ) if params else True
        self.kwargs = {}
        for k, v in options.items():
            if k in params or takes_kwargs:
                self.kwargs[k] = v
            elif v not in (None, False, "off"):
                raise ValueError(f"{type(predictor).__name__}.predict does not support {k}={v!r}")

    def __call__(self, clicks: list[Click]) -> np.ndarray:
        return self.predictor.predict(clicks, **self.kwargs)


def run_object(
    predict: Callable[[list[Click]], np.ndarray],
    gt: np.ndarray,
    ignore: np.ndarray | None,
    max_clicks: int = 20,
    stop_iou: float | None = None,
    corrective: bool = True,
) -> dict:
    """Robot-user clicks on one object; returns its IoU curve, clicks, times and extras."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros(gt.shape, dtype=bool)
    clicks: list[Click] = []
    ious: list[float] = []
    seconds: list[float] = []
    corr: list[float] = []
    di: dict[str, float] = {}
    stopped = "max_clicks"
    for k in range(max_clicks):
        click = next_click(gt, pred, ignore, order=k)
        if click is None:
            stopped = "no_error"
            break
        clicks.append(click)
        t0 = time.perf_counter()
        prob = predict(list(clicks))
        seconds.append(time.perf_counter() - t0)
        prob = np.asarray(prob)
        if prob.shape != gt.shape:
            raise ValueError(f"predictor returned shape {prob.shape}, expected {gt.shape}")
        if not np.isfinite(prob).all():
            raise ValueError(f"predictor returned non-finite probabilities (NaN or inf) at click {k + 1}")
        new = prob >= 0.5
        ious.append(M.iou(new, gt, ignore))
        if corrective:
            corr.append(M.corrective_accuracy(pred, new, gt, int(click.row), int(click.col), ignore))
        if k + 1 in DI_AT:
            di[str(k + 1)] = M.decidability_index(prob, clicks, gt, ignore=ignore)
        pred = new
        if stop_iou is not None and ious[-1] >= stop_iou:
            # a prediction with no error left ends the object as a full run would (exact)
            stopped = "no_error" if next_click(gt, pred, ignore) is None else "stop_iou"
            break
    if not ious:  # no error at all before the first click: nothing to segment
        ious = [M.iou(pred, gt, ignore)]
    return {
        "ious": ious,
        "clicks": [[c.row, c.col, c.positive] for c in clicks],
        "seconds": seconds,
        "corrective": corr,
        "di": di,
        "stopped": stopped,
    }


def evaluate(
    predictor_or_name: Any,
    dataset: Any,
    *,
    max_clicks: int = 20,
    brs: str = "off",
    structural_integrity: bool = False,
    zoom_in: bool | None = None,
    click_radius: float | None = None,
    graph_cut: bool = False,
    stop_iou: float | None = None,
    max_objects: int | None = None,
    seed: int = 0,
    device: str | None = None,
    corrective: bool = True,
    keep_objects: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Robot-user evaluation of one predictor on one dataset (PROTOCOL.md).

    Args:
        predictor_or_name: a predictor (``set_image``/``predict``), a ``ClickSegModel``,
            a shipped model name, a weights file, or ``"random_walker"``.
        dataset: see ``load_eval_set``.
        max_clicks: click budget per object (20 in the protocol).
        brs: ``"off"``, ``"brs"`` or ``"fbrs"`` test-time refinement.
        structural_integrity: keep only foreground connected to a positive click.
        zoom_in: zoom-in on the object (None: the predictor's default).
        click_radius: the engine's click honouring radius in view pixels, 0 = off
            (None: the predictor's default; see ``Predictor``).
        graph_cut: graph-cut post-processing.
        stop_iou: stop an object once its IoU reaches this (see module docstring).
        max_objects: evaluate a deterministic sample of this many objects.
        seed: sampling seed.
        device: device for a predictor built here.
        corrective: record corrective-click accuracy.
        keep_objects: include per-object curves and clicks in the result.
        progress: callback receiving one-line progress messages.

    Returns:
        JSON-ready dict with ``model``, ``dataset``, ``settings``, ``metrics``
        (see ``metrics.summarize``), ``decidability_index``, ``set_image_seconds``,
        ``wall_seconds`` and, with ``keep_objects``, ``objects``.
    """
    if brs not in BRS_MODES:
        raise ValueError(f"brs must be one of {BRS_MODES}, got {brs!r}")
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if stop_iou is not None and not 0.9 <= stop_iou <= 1.0:
        raise ValueError(
            f"stop_iou must be in [0.9, 1] (NoC@90 and NoF@90 need objects clicked until 0.90), got {stop_iou}"
        )
    started = time.perf_counter()
    predictor = load_predictor(predictor_or_name, device=device, zoom_in=zoom_in, click_radius=click_radius)
    evalset = load_eval_set(dataset, max_objects=max_objects, seed=seed, progress=progress)
    call = _Caller(
        predictor,
        {"brs": brs, "structural_integrity": structural_integrity, "graph_cut": graph_cut},
    )
    info = _info(predictor)
    settings = {
        "max_clicks": max_clicks,
        "brs": brs,
        "structural_integrity": bool(structural_integrity),
        "zoom_in": getattr(predictor, "zoom_in", None),  # None: the predictor has no zoom-in
        "zoom_expansion": getattr(predictor, "expansion", None),
        "zoom_min_crop": getattr(predictor, "min_crop_size", None),
        "zoom_max_upscale": getattr(predictor, "max_upscale", None),
        "click_radius": getattr(predictor, "click_radius", None),
        "graph_cut": bool(graph_cut),
        "stop_iou": stop_iou,
        "threshold": 0.5,
        "max_objects": max_objects,
        "seed": seed,
    }

    curves: list[list[float]] = []
    seconds: list[float] = []
    set_image_s: list[float] = []
    corr: list[list[float]] = []
    di: dict[str, list[float]] = {str(k): [] for k in DI_AT if k <= max_clicks}
    objects: list[dict] = []
    n_stopped = 0
    current = None
    n = len(evalset.items)
    for j, (img_idx, img_name, obj_id) in enumerate(evalset.items):
        if img_idx != current:
            image = evalset.get_image(img_idx)
            t0 = time.perf_counter()
            if evalset.channel_axis is not None and "channel_axis" in _params(predictor.set_image):
                predictor.set_image(image, channel_axis=evalset.channel_axis)
            else:
                predictor.set_image(image)
            set_image_s.append(time.perf_counter() - t0)
            current = img_idx
        # no reset between objects: the engine keys its history by the click list,
        # so a new object's first click starts from an empty previous mask
        gt, ignore = evalset.get_object(img_idx, obj_id)
        rec = run_object(call, gt, ignore, max_clicks, stop_iou, corrective)
        n_stopped += rec["stopped"] == "stop_iou"
        curves.append(rec["ious"])
        seconds.extend(rec["seconds"])
        corr.append(rec["corrective"])
        for k, v in rec["di"].items():
            di[k].append(v)
        if keep_objects:
            objects.append(
                {
                    "image": img_name,
                    "object": int(obj_id),
                    "area": int(np.count_nonzero(gt)),
                    "ious": [round(float(v), 6) for v in rec["ious"]],
                    "clicks": rec["clicks"],
                    "stopped": rec["stopped"],
                }
            )
        if progress is not None:
            progress(
                f"{info.get('arch', type(predictor).__name__)} {evalset.name}: object {j + 1}/{n} "
                f"IoU@{len(rec['ious'])}={rec['ious'][-1]:.3f}"
            )

    summary = M.summarize(curves, seconds, max_clicks, corr if corrective else None)
    summary["stopped_at_stop_iou"] = n_stopped
    if n_stopped:  # shares "after the last click" of objects that never got it are not known
        summary["above95"] = summary["above99"] = None
    from .. import __version__

    result = {
        "napari_clickseg_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": info,
        "dataset": evalset.describe(),
        "settings": settings,
        "metrics": summary,
        "decidability_index": {k: _finite_mean(v) for k, v in di.items()},
        "set_image_seconds": M.time_stats(set_image_s),
        "wall_seconds": time.perf_counter() - started,
    }
    if keep_objects:
        result["objects"] = objects
    return result


def _finite_mean(values: Sequence[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
