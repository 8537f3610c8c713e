"""``napari-clickseg demo``: try the plugin on a sample image.

With a display it opens napari with the click-segmentation dock and a sample image.
Without one (no ``$DISPLAY``/``$WAYLAND_DISPLAY`` on Linux, or ``--headless``) the robot
user (``napari_clickseg.robot``, the same simulator evaluation uses) clicks a few
objects of the sample against its ground truth, through the same session and engine
adapter the dock uses, and writes the committed labels (``labels.tif``), their
provenance (``labels.json``) and an overlay (``overlay.png``) into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ._napari.planes import Plane
    from ._napari.session import AnnotationSession

__all__ = ["add_arguments", "run"]

SAMPLE_NAMES = ("nuclei_fluorescence", "nuclei_he", "nuclei_stack")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``napari-clickseg demo``."""
    parser.add_argument(
        "--sample", choices=SAMPLE_NAMES, default="nuclei_fluorescence", help="sample image"
    )
    parser.add_argument(
        "--model",
        default="default",
        help="shipped model name, 'default', or a .safetensors weights file",
    )
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="if no trained weights are available, run a random-initialised model (shows the "
        "pipeline only: its masks are meaningless)",
    )
    parser.add_argument(
        "--headless", action="store_true", help="no window, even if a display exists"
    )
    parser.add_argument("--out", default="clickseg-demo", help="output folder of the headless demo")
    parser.add_argument(
        "--objects", type=int, default=5, help="objects the robot segments (headless)"
    )
    parser.add_argument("--clicks", type=int, default=5, help="most clicks per object (headless)")
    parser.add_argument(
        "--iou", type=float, default=0.9, help="stop clicking an object at this IoU"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def has_display() -> bool:
    """False on Linux without an X11 or Wayland display; True elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code.

    Raises:
        ValueError: bad options or no usable model (the CLI prints the message).
    """
    if args.objects < 1 or args.clicks < 1:
        raise ValueError("--objects and --clicks must be at least 1")
    if not 0.0 < args.iou <= 1.0:
        raise ValueError("--iou must be in (0, 1]")
    if args.headless or not has_display():
        return run_headless(args)
    return run_gui(args)


# --- model --------------------------------------------------------------------------------


def _load_handle(args: argparse.Namespace):
    """The engine handle for ``--model``, or an untrained one when allowed; says which."""
    from ._napari.adapter import ModelChoice, load_model
    from .weights import WeightsError, shipped_models

    kind = "file" if args.model.endswith(".safetensors") or os.sep in args.model else "shipped"
    kw = {"device": args.device} if args.device else {}
    try:
        return load_model(ModelChoice(args.model, kind, args.model), **kw), None
    except WeightsError as e:
        if not args.allow_untrained:
            shipped = shipped_models()
            listed = "" if shipped and str(shipped) in str(e) else f" Shipped models: {shipped or 'none yet'}."
            raise ValueError(
                f"{e}.{listed} Pass --model FILE, or "
                "--allow-untrained to see the pipeline run with random weights."
            ) from None
        warning = (
            f"WARNING: {e}; running an UNTRAINED random-initialised 'early' model: the masks "
            "show the pipeline working, not segmentation quality."
        )
        return load_model(ModelChoice("UNTRAINED early", "untrained", "early"), **kw), warning


# --- headless -----------------------------------------------------------------------------


def _pick_objects(gt, n: int) -> list[int]:
    """``n`` objects nearest the image centre (at least ``MIN_OBJECT_PX`` pixels each)."""
    import numpy as np
    from scipy import ndimage

    from .data.io import MIN_OBJECT_PX

    ids = np.unique(gt)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(gt), gt, ids)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(gt), gt, ids)).reshape(-1, 2)
    dist = np.linalg.norm(centres - np.asarray(gt.shape) / 2, axis=1)
    order = [int(ids[i]) for i in np.argsort(dist) if sizes[i] >= MIN_OBJECT_PX]
    return order[:n]


OUTPUTS = ("labels.tif", "labels.json", "overlay.png")
#: recorded with the image in the demo's labels.json: the mark of files a re-run may replace
WRITTEN_BY = "napari-clickseg demo"


def _written_by_demo(js: Path) -> bool:
    """Whether ``js`` is the labels.json of an earlier demo (the dock's saves are not)."""
    import json

    from ._napari.session import AnnotationSession

    if AnnotationSession.sidecar_owner(js) != "labels.tif":
        return False
    image = json.loads(js.read_text()).get("image")
    return isinstance(image, dict) and image.get("written_by") == WRITTEN_BY


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` whose files an earlier demo did not write (a re-run replaces its own).

    Raises:
        ValueError: ``out`` is a file, or holds labels.tif, labels.json or overlay.png
            beside no labels.json that an earlier demo wrote.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the demo's results")
    taken = [name for name in OUTPUTS if (out / name).exists()]
    if taken and not _written_by_demo(out / "labels.json"):
        raise ValueError(
            f"{out} holds {', '.join(taken)}, not written by an earlier demo; "
            "choose another --out (nothing was written)"
        )
    if (out / "labels.tif").exists() and not _unchanged_since_demo(out):
        raise ValueError(
            f"{out / 'labels.tif'} was changed after the demo wrote it (edited labels?); "
            "choose another --out (nothing was written)"
        )


def _unchanged_since_demo(out: Path) -> bool:
    """Whether ``out/labels.tif`` still holds the labels its labels.json recorded."""
    import json

    import tifffile

    from ._napari.session import _labels_digest

    try:
        recorded = json.loads((out / "labels.json").read_text()).get("labels_digest")
        if recorded is None:  # written by a version that recorded no digest: nothing to compare
            return True
        return isinstance(recorded, str) and recorded == _labels_digest(tifffile.imread(out / "labels.tif"))
    except Exception:  # unreadable: not what the demo wrote
        return False


def run_headless(args: argparse.Namespace) -> int:
    """Robot clicks on the sample; writes labels.tif, labels.json and overlay.png."""
    import numpy as np

    from ._napari.adapter import PredictionRequest, run_prediction
    from ._napari.planes import ImageGeometry
    from ._napari.sample_data import load_sample
    from ._napari.session import AnnotationSession, SessionError
    from .robot import next_click

    out = Path(args.out)
    _check_out(out)
    image, gt_all = load_sample(args.sample)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4) and args.sample != "nuclei_stack"
    geometry = ImageGeometry(tuple(image.shape), rgb=rgb)
    labels = np.zeros(geometry.spatial_shape, dtype=np.uint32)
    session = AnnotationSession(labels)
    # the plane shown first in napari: the middle slice of a stack
    middle = [s // 2 for s in geometry.spatial_shape]
    plane = geometry.plane_at((geometry.layer_ndim - 2, geometry.layer_ndim - 1), middle)
    plane_image, channel_axis = geometry.plane_image(image, plane)
    gt = plane.view(gt_all)

    handle, warning = _load_handle(args)
    if warning:
        print(warning)
    print(
        f"model: {handle.provenance.get('name')} on {handle.describe()}; sample: {args.sample} {image.shape}"
    )

    settings = {"brs": "off", "structural_integrity": True, "graph_cut": False}
    rows = []
    for oid in _pick_objects(gt, args.objects):
        obj = gt == oid
        pred = np.zeros_like(obj)
        iou, seconds = 0.0, []
        for _ in range(args.clicks):
            click = next_click(obj, pred)
            if click is None:
                break
            session.add_click(click.row, click.col, click.positive, plane)
            req = PredictionRequest(
                0, handle, "demo", plane_image, channel_axis, session.clicks, settings
            )
            res = run_prediction(req)
            if res.error:
                raise ValueError(f"prediction failed: {res.error}")
            seconds.append(res.seconds - res.set_image_seconds)
            pred = res.prob >= 0.5
            iou = float((pred & obj).sum() / max(1, (pred | obj).sum()))
            if iou >= args.iou:
                break
        n = len(session.clicks)
        try:
            result = session.commit(
                pred, model=handle.provenance, settings={**settings, "threshold": 0.5}
            )
            committed = result.id
        except SessionError as e:
            session.clear()
            committed = None
            print(f"  object {oid}: not committed ({e})")
        rows.append((oid, committed, n, iou, float(np.median(seconds)) if seconds else 0.0))

    tif, js = session.save(
        out / "labels",
        image={"name": args.sample, "data_shape": list(image.shape), "written_by": WRITTEN_BY},
    )
    png = out / "overlay.png"
    write_overlay(png, plane_image, plane.view(session.labels), session, plane)
    print(f"{'gt id':>6} {'label':>6} {'clicks':>6} {'IoU':>6} {'s/click':>8}")
    for oid, lab, n, iou, s in rows:
        print(f"{oid:>6} {str(lab):>6} {n:>6} {iou:>6.3f} {s:>8.3f}")
    if rows:
        print(f"mean IoU {np.mean([r[3] for r in rows]):.3f} over {len(rows)} objects")
    print(f"wrote {tif}\nwrote {js}\nwrote {png}")
    return 0


def write_overlay(
    path: Path, image: np.ndarray, labels: np.ndarray, session: AnnotationSession, plane: Plane
) -> None:
    """PNG of the image with coloured labels, their outlines and the clicks of each object."""
    import numpy as np
    from PIL import Image
    from skimage.color import label2rgb
    from skimage.draw import disk
    from skimage.segmentation import find_boundaries

    from .engine.image import prepare_image
    from .files import replacing

    rgb = prepare_image(image, 2 if image.ndim == 3 else None)
    out = label2rgb(labels, image=rgb, alpha=0.35, bg_label=0, image_alpha=1.0)
    out[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    for rec in session.records.values():
        if rec.plane != plane:
            continue
        for c in rec.clicks:
            rr, cc = disk((c.row, c.col), 2.5, shape=labels.shape)
            out[rr, cc] = (0.0, 1.0, 0.0) if c.positive else (1.0, 0.1, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8)).save(tmp)


# --- with a display ----------------------------------------------------------------------------


QT_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")


def has_qt_binding() -> bool:
    """Whether a Qt binding napari can use is installed."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in QT_BINDINGS)


def run_gui(args: argparse.Namespace) -> int:
    """Open napari with the sample image and the dock.

    Raises:
        ValueError: no Qt binding is installed (napari cannot open a window).
    """
    if not has_qt_binding():
        raise ValueError(
            "napari needs a Qt binding to open a window: pip install 'napari-clickseg[gui]' "
            "(PyQt6), or run 'napari-clickseg demo --headless'"
        )
    import napari

    from ._napari.adapter import ENV_ALLOW_UNTRAINED

    if args.allow_untrained:
        os.environ[ENV_ALLOW_UNTRAINED] = "1"
    viewer = napari.Viewer(title="napari-clickseg demo")
    viewer.open_sample("napari-clickseg", args.sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-clickseg", "Click segmentation")
    if args.model != "default":
        if args.model.endswith(".safetensors") or os.sep in args.model:
            widget.load_weights_file(args.model)
        else:
            widget.select_model(args.model)
    napari.run()
    return 0
