"""Does each robot click move the mask the way its label asks? A diagnostic for trained weights.

For every object, the robot user (PROTOCOL.md) clicks up to ``--clicks`` times; after
each corrective click the script records whether the mask grew or shrank, and by how much.
A negative click asks for less foreground and a positive one for more, so a model that
answers negative clicks by growing the mask (area up by more than ``--tolerance`` of the
object's area) costs clicks that no threshold or post-processing can give back. Reported
per dataset: the share of positive / negative clicks that moved the area the wrong way and
the median relative area change after each kind.

Usage: python scripts/click_response.py --model hires --data ../shared/data/ph2/val --max-objects 40
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from napari_clickseg.data.io import DataError
from napari_clickseg.engine import Predictor
from napari_clickseg.evaluation.runner import load_eval_set
from napari_clickseg.robot import next_click
from napari_clickseg.weights import WeightsError


def click_response(predictor: Any, dataset: Any, max_objects: int, clicks: int, tolerance: float) -> dict:
    """Wrong-way shares and median area changes of positive and negative corrective clicks.

    ``predictor`` needs ``set_image`` and ``predict`` (a ``Predictor``); ``dataset`` is
    anything ``load_eval_set`` takes (a folder, or a sequence of ``(image, gt)``).
    """
    evalset = load_eval_set(dataset, max_objects=max_objects, seed=0)
    changes: dict[bool, list[float]] = {True: [], False: []}
    current = None
    for img_idx, _, obj_id in evalset.items:
        if img_idx != current:
            predictor.set_image(evalset.get_image(img_idx))
            current = img_idx
        gt, ignore = evalset.get_object(img_idx, obj_id)
        size = float(np.count_nonzero(gt))
        pred = np.zeros(gt.shape, dtype=bool)
        history = []
        for k in range(clicks):
            click = next_click(gt, pred, ignore)
            if click is None:
                break
            history.append(click)
            new = predictor.predict(history, structural_integrity=False) >= 0.5
            if k > 0:
                changes[click.positive].append((np.count_nonzero(new) - np.count_nonzero(pred)) / size)
            pred = new
    out = {"dataset": evalset.name, "objects": len(evalset.items)}
    for positive, name in ((True, "positive"), (False, "negative")):
        d = np.asarray(changes[positive])
        wrong = d < -tolerance if positive else d > tolerance
        out[name] = {
            "clicks": int(d.size),
            "wrong_way": float(wrong.mean()) if d.size else float("nan"),
            "median_area_change": float(np.median(d)) if d.size else float("nan"),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="shipped name or .safetensors file")
    ap.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    ap.add_argument("--max-objects", type=int, default=50)
    ap.add_argument("--clicks", type=int, default=10, help="robot clicks per object")
    ap.add_argument("--tolerance", type=float, default=0.001, help="area change ignored, share of the object")
    args = ap.parse_args()
    if args.clicks < 2:
        ap.error(f"--clicks must be >= 2 (the first click corrects nothing), got {args.clicks}")
    if not args.tolerance >= 0:
        ap.error(f"--tolerance must be >= 0, got {args.tolerance}")
    try:
        predictor = Predictor.from_pretrained(args.model, device="cpu")
        for data in args.data:
            print(json.dumps(click_response(predictor, data, args.max_objects, args.clicks, args.tolerance)))
    except (DataError, WeightsError, ValueError) as e:
        ap.error(str(e))


if __name__ == "__main__":
    main()
