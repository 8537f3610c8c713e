"""Folder datasets: ``DIR/images/`` plus ``DIR/labels/`` (instance maps) or ``DIR/masks/`` (binary).

Images and ground truth are paired by file stem (``images/a.png`` with
``labels/a.tif``). Every file is read, checked and cached in memory when the
dataset is built, so a broken folder fails before training starts, with an
error naming the file.

- ``labels/``: instance maps, 0 = background, every other value one object;
  each object of at least ``min_object_px`` pixels is one sample (a file holding
  only 0, ``ignore_value`` and 255, a mask put in the wrong folder,
  gets a ``MaskInLabels`` warning).
- ``masks/``: one object per file; ``ignore_value`` (default 128, GrabCut's
  unlabelled band) marks pixels excluded from losses and scores; the one other
  non-zero value is the object (a file with several, e.g. an instance map, is
  refused; with ``ignore_value=None`` every non-zero value is the object).

Images are cached as read (validated, (H, W, C), no copy), each with the
``Normalizer`` the engine would fit on it: ``image(i)`` gives a view whose
slices come out normalised (float32 (h, w, 3) in [0, 1]), so training crops
normalise only their own pixels and evaluation hands the predictor the pixels
the napari dock would.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..engine.image import Normalizer, sample_box, validate_image
from .io import IMAGE_SUFFIXES, MIN_OBJECT_PX, DataError, available_cpus, read_array

__all__ = ["FolderDataset", "ObjectRef", "MaskInLabels", "MIN_OBJECT_PX", "IGNORE_LABEL"]


class MaskInLabels(UserWarning):
    """A file in ``labels/`` looks like a mask with an ignore band (0, 128 and one other value)."""

#: value of ignored pixels in the cached target maps
IGNORE_LABEL = -1


@dataclass(frozen=True)
class ObjectRef:
    """One object: image index, its label value in the target map, bounding box and area."""

    image: int
    label: int
    bbox: tuple[int, int, int, int]  # r0, c0, r1, c1 (exclusive)
    area: int


def _list_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in files:
            raise DataError(f"two files with the stem {p.stem!r} in {folder}: {files[p.stem].name}, {p.name}")
        files[p.stem] = p
    return files


def _smallest_int(arr: np.ndarray, path: Path) -> np.ndarray:
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return arr.astype(dt, copy=False)
    raise DataError(f"{path}: label values out of range")


class NormalizedView:
    """An image as the engine normalises it, computed only for the pixels sliced.

    ``view[r0:r1, c0:c1]`` is float32 (h, w, 3) in [0, 1]; ``shape`` is (H, W, 3).
    """

    def __init__(self, raw: np.ndarray, normalizer: Normalizer) -> None:
        self.raw, self.normalizer = raw, normalizer
        self.shape = (*raw.shape[:2], 3)

    def __getitem__(self, box: tuple[slice, slice]) -> np.ndarray:
        if not (isinstance(box, tuple) and len(box) == 2 and all(isinstance(b, slice) for b in box)):
            raise IndexError("a NormalizedView takes two slices (rows, columns)")
        return self.normalizer(self.raw[box])


class FolderDataset:
    """Images with instance labels or binary masks, validated and cached (see module docstring).

    Attributes:
        root: the dataset folder.
        kind: ``"labels"`` or ``"masks"``.
        names: image stems, in sorted order.
        images: the images as read, (H, W, C) in their own dtype.
        normalizers: each image's ``Normalizer`` (fitted as ``prepare_image`` fits it).
        targets: integer maps (H, W): object labels, 0 background, ``IGNORE_LABEL`` ignored.
        objects: every object of at least ``min_object_px`` pixels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        ignore_value: int | None = 128,
        min_object_px: int = MIN_OBJECT_PX,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.ignore_value = ignore_value
        self.min_object_px = int(min_object_px)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        img_dir = self.root / "images"
        lab_dir, mask_dir = self.root / "labels", self.root / "masks"
        if not img_dir.is_dir():
            raise DataError(f"{self.root} has no images/ folder (expected DIR/images + DIR/labels or DIR/masks)")
        if lab_dir.is_dir() and mask_dir.is_dir():
            raise DataError(f"{self.root} has both labels/ and masks/; keep one")
        if lab_dir.is_dir():
            self.kind, gt_dir = "labels", lab_dir
        elif mask_dir.is_dir():
            self.kind, gt_dir = "masks", mask_dir
        else:
            raise DataError(f"{self.root} has no labels/ (instance maps) or masks/ (binary) folder")
        images, gts = _list_files(img_dir), _list_files(gt_dir)
        if not images:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
        missing = sorted(set(images) - set(gts))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(
                f"image {images[missing[0]]} has no {self.kind[:-1]} file in {gt_dir} (same stem){more}"
            )
        orphans = sorted(set(gts) - set(images))
        if orphans:
            raise DataError(f"{gts[orphans[0]]} has no matching image in {img_dir}")

        self.names: list[str] = sorted(images)
        self._files = [(images[n], gts[n]) for n in self.names]
        self.images: list[np.ndarray] = []
        self.normalizers: list[Normalizer] = []
        self.targets: list[np.ndarray] = []
        self.objects: list[ObjectRef] = []
        self.skipped_small = 0
        self._mask_like: list[int] = []

        def load(stem: str) -> tuple[np.ndarray, Normalizer, np.ndarray]:
            img_path, gt_path = images[stem], gts[stem]
            raw = read_array(img_path, palette_colours=True)
            try:
                raw.setflags(write=False)  # shared with every predictor and crop: nobody edits it
                img = validate_image(raw, -1 if raw.ndim == 3 else None)  # read_array gives (H, W, C)
                normalizer = Normalizer.fit(img[sample_box(img.shape)])
            except ValueError as e:
                raise DataError(f"{img_path}: {e}") from None
            gt = read_array(gt_path)
            if gt.ndim == 3:
                if gt.shape[-1] in (3, 4) and np.all(gt[..., :3] == gt[..., :1]):
                    gt = gt[..., 0]  # gray saved as RGB(A)
                else:
                    raise DataError(f"{gt_path}: a {self.kind[:-1]} file must be single-channel, got shape {gt.shape}")
            if gt.shape != img.shape[:2]:
                raise DataError(
                    f"shape mismatch: {img_path} is {img.shape[0]}x{img.shape[1]} but "
                    f"{gt_path} is {gt.shape[0]}x{gt.shape[1]}"
                )
            if not np.issubdtype(gt.dtype, np.integer) and gt.dtype != bool:
                if np.issubdtype(gt.dtype, np.floating) and np.all(np.mod(gt, 1) == 0):
                    gt = gt.astype(np.int64)
                else:
                    raise DataError(f"{gt_path}: {self.kind} must hold integers, got {gt.dtype}")
            return img, normalizer, self._target(gt, gt_path)

        # decoding and percentile scaling release the GIL for much of their time
        n_threads = max(1, min(4, available_cpus()))
        with ThreadPoolExecutor(n_threads) as pool:
            # results come back in order, so the first broken file (sorted) is the one reported
            for i, (img, normalizer, target) in enumerate(pool.map(load, self.names)):
                if progress is not None and i % 100 == 0:
                    progress(f"reading {self.root} {i}/{len(self.names)}")
                self.images.append(img)
                self.normalizers.append(normalizer)
                self.targets.append(target)
                self._add_objects(i, target)
        if mask_like := [self.names[i] for i in self._mask_like]:
            more = f" and {len(mask_like) - 1} more" if len(mask_like) > 1 else ""
            warnings.warn(
                f"{gts[mask_like[0]]}{more}: holds only 0, {self.ignore_value} and 255 (or 65535), like a "
                f"mask whose {self.ignore_value} band means 'ignore'; in labels/ every non-zero value is an "
                f"object, so that band is scored and trained on as one: put such files in masks/",
                MaskInLabels,
                stacklevel=2,
            )
        if not self.objects:
            hint = ""
            if self.kind == "masks" and self.ignore_value is not None and any((t == IGNORE_LABEL).any() for t in self.targets):
                hint = f" (pixels of value {self.ignore_value} mean 'ignore', not object)"
            raise DataError(
                f"{self.root}: no object of at least {self.min_object_px} pixels in any {self.kind[:-1]} file{hint}"
            )

    def _target(self, gt: np.ndarray, path: Path) -> np.ndarray:
        if gt.dtype == np.uint64 and gt.size and gt.max() > np.iinfo(np.int64).max:
            raise DataError(f"{path}: label values above {np.iinfo(np.int64).max} are not supported")
        gt = gt.astype(np.int64)
        if self.kind == "masks":
            ignore = gt == self.ignore_value if self.ignore_value is not None else np.zeros(gt.shape, bool)
            values = np.unique(gt[(gt != 0) & ~ignore]) if self.ignore_value is not None else []
            if len(values) > 1:
                shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
                raise DataError(
                    f"{path}: a mask holds one object, but this file has {len(values)} object values "
                    f"({shown}); put instance label maps in labels/, and save masks losslessly "
                    f"(0, one object value, {self.ignore_value} = ignore)"
                )
            t = (gt != 0).astype(np.int8)
            t[ignore] = IGNORE_LABEL
            return t
        if gt.min() < 0:
            raise DataError(f"{path}: negative label values")
        return _smallest_int(gt, path)

    def _add_objects(self, index: int, target: np.ndarray) -> None:
        """Record the objects of one target map; ``ObjectRef.label`` is the file's own label value.

        Labels are relabelled to consecutive ids first, so memory and time depend on the
        number of objects, not on the largest id (ids up to 2**63 - 1 work).
        """
        values, inverse = np.unique(target, return_inverse=True)
        is_object = values > 0  # 0 is background, IGNORE_LABEL is negative
        if self.kind == "labels" and self.ignore_value is not None and len(values) == 3 and values[0] == 0:
            # 0, the ignore value and a mask's full value (an instance map with ids 128 and 255 is unlikely)
            if sorted({self.ignore_value, 255}) == sorted(values[1:].tolist()) or (
                sorted({self.ignore_value, 65535}) == sorted(values[1:].tolist())
            ):
                self._mask_like.append(index)
        lut = (np.cumsum(is_object) * is_object).astype(np.int32)
        compact = lut[inverse.reshape(target.shape)]
        slices = ndimage.find_objects(compact)
        areas = np.bincount(compact.ravel(), minlength=len(slices) + 1)
        for value, sl, area in zip(values[is_object], slices, areas[1:], strict=True):
            if area < self.min_object_px:
                self.skipped_small += 1
                continue
            bbox = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
            self.objects.append(ObjectRef(index, int(value), bbox, int(area)))

    def __len__(self) -> int:
        """Number of objects (samples)."""
        return len(self.objects)

    def image(self, i: int) -> NormalizedView:
        """Image ``i`` as the engine normalises it, computed for the pixels sliced from it."""
        return NormalizedView(self.images[i], self.normalizers[i])

    def object_masks(self, k: int) -> tuple[NormalizedView, np.ndarray, np.ndarray]:
        """Normalised image view, object mask and ignore mask (H, W) bool of object ``k``."""
        obj = self.objects[k]
        t = self.targets[obj.image]
        return self.image(obj.image), t == obj.label, t == IGNORE_LABEL

    def fingerprint(self) -> str:
        """A digest of the folder's file names and sizes (cheap: nothing is read again), to
        notice a folder whose files changed between two uses."""
        h = hashlib.sha256()
        for img, gt in self._files:
            h.update(f"{img.name}\0{img.stat().st_size}\0{gt.name}\0{gt.stat().st_size}\n".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """Short description for training metadata."""
        return {
            "path": str(self.root),
            "kind": self.kind,
            "images": len(self.names),
            "objects": len(self.objects),
            "skipped_small_objects": self.skipped_small,
        }

