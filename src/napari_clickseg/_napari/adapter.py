"""The dock's one doorway into the engine: model choices, loading, and one call per prediction.

No Qt here. The widget builds a ``PredictionRequest`` per event and hands it to
``run_prediction`` (in a worker thread or synchronously); that function is the only
place the GUI calls ``Predictor.set_image`` / ``Predictor.predict``.

Models offered: every model with shipped, trained weights, plus weights files the
user loads. Random-initialised models exist only for tests and debugging and are
offered only when asked for explicitly (``allow_untrained=True`` on the widget or
``NAPARI_CLICKSEG_ALLOW_UNTRAINED=1``), labelled as untrained.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..clicks import Click

__all__ = [
    "ENV_ALLOW_UNTRAINED",
    "EngineHandle",
    "ModelChoice",
    "PredictionRequest",
    "PredictionResult",
    "allow_untrained_from_env",
    "available_choices",
    "load_model",
    "run_prediction",
]

ENV_ALLOW_UNTRAINED = "NAPARI_CLICKSEG_ALLOW_UNTRAINED"
UNTRAINED_PREFIX = "UNTRAINED "
LOAD_FILE = "load weights file..."
REFINEMENTS = {"off": "off", "BRS": "brs", "f-BRS": "fbrs"}


def allow_untrained_from_env() -> bool:
    """True when ``NAPARI_CLICKSEG_ALLOW_UNTRAINED`` is set to 1/true/yes."""
    return os.environ.get(ENV_ALLOW_UNTRAINED, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model dropdown.

    Attributes:
        label: text shown.
        kind: ``"shipped"`` (a shipped model name), ``"file"`` (a weights file),
            ``"custom"`` (a model object given to the widget, e.g. from a notebook) or
            ``"untrained"`` (a random initialisation of a registered architecture).
        source: the shipped name, the file path, or the architecture name.
        model: the model object (or a callable returning it) of a custom entry.
    """

    label: str
    kind: str
    source: str
    model: Any = field(default=None, compare=False, repr=False)


def available_choices(
    allow_untrained: bool = False,
    files: Sequence[str] = (),
    custom: dict[str, Any] | None = None,
) -> list[ModelChoice]:
    """Dropdown entries: shipped models, loaded files, custom models, then (only if
    allowed) untrained ones."""
    from ..weights import WeightsError, shipped_models

    try:
        shipped = shipped_models()
    except WeightsError:
        shipped = []
    out = [ModelChoice(name, "shipped", name) for name in shipped]
    seen: set[str] = set()
    for f in files:
        name = os.path.basename(f)
        if name in ("best.safetensors", "last.safetensors"):  # training runs: name the run
            name = f"{os.path.basename(os.path.dirname(os.path.abspath(f)))}/{name}"
        label, k = f"file: {name}", 2
        while label in seen:
            label, k = f"file: {name} ({k})", k + 1
        seen.add(label)
        out.append(ModelChoice(label, "file", str(f)))
    out += [ModelChoice(f"custom: {k}", "custom", k, model=m) for k, m in (custom or {}).items()]
    if allow_untrained:
        from ..models import list_models

        out += [
            ModelChoice(f"{UNTRAINED_PREFIX}{arch} (random weights, testing only)", "untrained", arch)
            for arch in list_models()
        ]
    return out


class EngineHandle:
    """A loaded predictor plus the key of the image it holds; predictions are serialised.

    Attributes:
        predictor: the engine's ``Predictor``.
        choice: the dropdown entry it came from.
        provenance: what is recorded with each committed object (name, arch, sha256...).
    """

    def __init__(self, predictor: Any, choice: ModelChoice, provenance: dict[str, Any]) -> None:
        self.predictor = predictor
        self.choice = choice
        self.provenance = provenance
        self.image_key: Any = None
        self.lock = threading.Lock()

    @property
    def info(self) -> dict[str, Any]:
        """The predictor's ``info`` (device, dtype, ...), empty if it has none."""
        try:
            return dict(getattr(self.predictor, "info", {}) or {})
        except Exception:  # an engine property failing must not break the dock
            return {}

    def describe(self) -> str:
        """One line for the dock: device and dtype in use."""
        info = self.info
        dev = info.get("device", "?")
        dtype = str(info.get("dtype", "?")).replace("torch.", "")
        return f"{dev}, {dtype}"


def load_model(choice: ModelChoice, **predictor_kwargs: Any) -> EngineHandle:
    """Build the predictor for a dropdown entry.

    Args:
        choice: the dropdown entry.
        **predictor_kwargs: passed to ``Predictor`` (device, dtype, target_size...).

    Raises:
        napari_clickseg.weights.WeightsError: missing, corrupt or untrained weights.
        ValueError: unknown architecture.
    """
    from ..engine import Predictor

    kw = {k: v for k, v in predictor_kwargs.items() if v is not None}
    if choice.kind == "untrained":
        from ..models import create_model

        model = create_model(choice.source)
        predictor = Predictor(model, **kw)
        prov = {
            "name": choice.label,
            "arch": choice.source,
            "weights_sha256": None,
            "trained": False,
        }
        return EngineHandle(predictor, choice, prov)
    if choice.kind == "custom":
        from torch import nn

        model = choice.model if isinstance(choice.model, nn.Module) else choice.model()
        predictor = Predictor(model, **kw)
        prov = {
            "name": choice.label,
            "arch": getattr(model, "arch_name", "") or type(model).__name__,
            "weights_sha256": None,
            "trained": None,
        }
        return EngineHandle(predictor, choice, prov)
    predictor = Predictor.from_pretrained(choice.source, **kw)
    info = dict(getattr(predictor, "info", {}) or {})
    prov = {
        "name": choice.source if choice.kind == "shipped" else os.path.basename(choice.source),
        "arch": info.get("arch", getattr(getattr(predictor, "model", None), "arch_name", None)),
        "weights_sha256": info["weights_sha256"],  # from_pretrained always has it
        "trained": True,
    }
    if choice.kind == "file":
        prov["weights_path"] = os.path.abspath(choice.source)
    return EngineHandle(predictor, choice, prov)


@dataclass(frozen=True)
class PredictionRequest:
    """Everything one prediction needs, captured when the event happened.

    Attributes:
        generation: increases with every request; older results are dropped.
        handle: the predictor to use.
        image_key: identifies the 2D image (layer, plane, channel axis, data version).
        image: the 2D image, (H, W) or (H, W, C), raw dtype: numpy, or a lazy array
            (a ``PlaneView`` of dask, zarr or multiscale data) read only around the clicks.
        channel_axis: channel axis of ``image`` (None for gray).
        clicks: the clicks on that image.
        options: ``brs``, ``structural_integrity``, ``graph_cut`` for ``Predictor.predict``.
        reference: the same plane in a coarser pyramid level, for the intensity statistics.
    """

    generation: int
    handle: EngineHandle
    image_key: Any
    image: Any
    channel_axis: int | None
    clicks: tuple[Click, ...]
    options: dict[str, Any] = field(default_factory=dict)
    reference: np.ndarray | None = None


@dataclass(frozen=True)
class PredictionResult:
    """A prediction or its error.

    Attributes:
        generation: the request's generation.
        prob: float32 (H, W) foreground probability; None on error or without clicks.
        seconds: wall time of the engine calls.
        set_image_seconds: part of it spent on ``set_image`` (0 when cached).
        error: message of a failure, or None.
        box: (row0, col0, row1, col1) outside which ``prob`` is 0 (the engine's zoom box), or
            None when unknown: a large image's mask is then made in the box alone.
    """

    generation: int
    prob: np.ndarray | None
    seconds: float = 0.0
    set_image_seconds: float = 0.0
    error: str | None = None
    box: tuple[int, int, int, int] | None = None


def run_prediction(req: PredictionRequest) -> PredictionResult:
    """Run one request: ``set_image`` when the image changed, then ``predict``.

    Errors become a result with ``error`` set (the worker never raises into Qt).
    """
    if not req.clicks:
        return PredictionResult(req.generation, None)
    h = req.handle
    t0 = time.perf_counter()
    t_img = 0.0
    try:
        with h.lock:
            if h.image_key != req.image_key:
                h.image_key = None
                h.predictor.set_image(req.image, channel_axis=req.channel_axis, reference=req.reference)
                h.image_key = req.image_key
                t_img = time.perf_counter() - t0
            prob = h.predictor.predict(list(req.clicks), **req.options)
            box = getattr(h.predictor, "last_stats", {}).get("box")
    except (ValueError, RuntimeError, MemoryError) as e:
        return PredictionResult(req.generation, None, time.perf_counter() - t0, t_img, str(e))
    prob = np.asarray(prob, dtype=np.float32)
    return PredictionResult(
        req.generation, prob, time.perf_counter() - t0, t_img, box=None if box is None else tuple(map(int, box))
    )
