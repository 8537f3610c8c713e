"""Validation during training, for model selection only.

NOT the evaluation protocol of ``PROTOCOL.md``: to stay fast on a CPU it runs
the robot user for ``max_clicks`` clicks (the trainer's default 20) on a fixed,
seeded subset of validation objects, each on a centred crop around the object
resized to the training crop size. Five clicks are not enough: a run whose
later clicks undid earlier work (NoF@90 on 150 dsb2018/val objects 13 -> 36)
scored above the shipped weights at 5 clicks and below them at 20. Numbers
from here choose checkpoints; they must never be reported as benchmark
results (use ``napari-clickseg evaluate``).

Scores: mean IoU after k clicks (k = 1..max_clicks), NoC@85 / NoC@90 capped
at ``max_clicks + 1`` (not reached), and ``score`` = mean of the mIoU curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..clicks import Click, encode_clicks
from ..data.augment import AugmentConfig, object_crop
from ..data.folder import IGNORE_LABEL, FolderDataset
from ..engine.image import standardize
from ..robot import next_click

__all__ = ["ValidationSet", "validate"]


class ValidationSet:
    """A fixed, seeded subset of validation objects as (image, mask, ignore) crops."""

    def __init__(
        self, datasets: Sequence[FolderDataset], n_objects: int, aug: AugmentConfig,
        normalization: dict, seed: int = 0,
    ) -> None:
        refs = [(d, k) for d, ds in enumerate(datasets) for k in range(len(ds))]
        rng = np.random.default_rng([seed, 12345])
        if n_objects and n_objects < len(refs):
            # spread the subset evenly over the folders
            per = [[r for r in refs if r[0] == d] for d in range(len(datasets))]
            for p in per:
                rng.shuffle(p)
            chosen: list[tuple[int, int]] = []
            i = 0
            while len(chosen) < n_objects:
                for p in per:
                    if i < len(p) and len(chosen) < n_objects:
                        chosen.append(p[i])
                i += 1
            refs = sorted(chosen)
        self.refs = refs
        self.images, self.masks, self.ignores = [], [], []
        for d, k in refs:
            ds = datasets[d]
            obj = ds.objects[k]
            t = ds.targets[obj.image]
            img, m, ign, _ = object_crop(
                ds.images[obj.image], t == obj.label, t == IGNORE_LABEL, obj.bbox, aug, rng, augment=False
            )
            self.images.append(standardize(img, normalization).astype(np.float32))
            self.masks.append(m)
            self.ignores.append(ign)

    def __len__(self) -> int:
        return len(self.refs)


def _iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray) -> float:
    valid = ~ignore
    union = ((pred | gt) & valid).sum()
    return float(((pred & gt) & valid).sum() / union) if union else 1.0


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    vset: ValidationSet,
    max_clicks: int = 5,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Robot-user scores on ``vset`` (see module docstring); the model is left in eval mode."""
    model.eval()
    inputs = model.inputs
    ious = np.zeros((len(vset), max_clicks))
    for start in range(0, len(vset), batch_size):
        idx = list(range(start, min(start + batch_size, len(vset))))
        img = torch.from_numpy(np.stack([vset.images[i] for i in idx])).to(device)
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        shape = vset.masks[idx[0]].shape
        clicks: list[list[Click]] = [[] for _ in idx]
        preds = [np.zeros(shape, bool) for _ in idx]
        prev = torch.zeros((len(idx), 1, *shape), device=device)
        feats = None
        if model.caches_image_features:  # late fusion: the image stream runs once per image
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                feats = model.encode_image(img)
        for k in range(max_clicks):
            for j, i in enumerate(idx):
                c = next_click(vset.masks[i], preds[j], vset.ignores[i], order=len(clicks[j]))
                if c is not None:
                    clicks[j].append(c)
            maps = np.stack([
                encode_clicks(cl, shape, inputs.encoding, inputs.first_click) if cl else
                encode_clicks([Click(0, 0, True)], shape, inputs.encoding, inputs.first_click)
                for cl in clicks
            ])
            maps_t = torch.from_numpy(maps).to(device)
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                out = model(img, maps_t, prev if inputs.prev_mask else None, image_feats=feats)
            prob = torch.sigmoid(out["logits"].float())
            prev = prob
            p = (prob[:, 0] >= 0.5).cpu().numpy()
            for j, i in enumerate(idx):
                preds[j] = p[j]
                ious[i, k] = _iou(p[j], vset.masks[i], vset.ignores[i])
    curve = ious.mean(0)
    res: dict[str, float] = {f"iou@{k + 1}": float(curve[k]) for k in range(max_clicks)}
    for thr in (85, 90):
        reached = ious >= thr / 100
        noc = np.where(reached.any(1), reached.argmax(1) + 1, max_clicks + 1)
        res[f"noc@{thr}"] = float(noc.mean())
    res["score"] = float(curve.mean())
    res["objects"] = float(len(vset))
    return res
