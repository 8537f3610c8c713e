"""Build the sparse-field benchmark of docs/training-history.md (session 30).

For 20 fluorescence images of dsb2018/val: a 160-px crop around a random nucleus (``OUT/crop``),
and the same crop set into a 1600-px field of iid samples of the image's own background pixels
more than 6 px from any nucleus (``OUT/field``), so the nuclei cover well under 0.5 % of it.
Both are folder datasets (images/ + labels/) for ``napari-clickseg evaluate``. OUT must be new or
empty (nothing is replaced).

Usage: python scripts/sparse_fields.py OUT [DATA]   (DATA: ../shared/data beside the checkout)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

CROP, FIELD, IMAGES, BACKGROUND_GAP = 160, 1600, 20, 6


def main(out: Path, data: Path) -> None:
    source = data / "dsb2018" / "val" / "images"
    if not source.is_dir():
        sys.exit(f"error: {source} not found (give the data folder as DATA)")
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out} exists and is not empty; choose a new folder")
    rng = np.random.default_rng(0)
    for kind in ("crop", "field"):
        (out / kind / "images").mkdir(parents=True, exist_ok=True)
        (out / kind / "labels").mkdir()
    n = 0
    for f in sorted(source.glob("*.png")):
        img = np.asarray(Image.open(f))
        lab = tifffile.imread(f.parent.parent / "labels" / f"{f.stem}.tif")
        gray = img[..., 0] if img.ndim == 3 else img
        if img.ndim == 3 and not (np.ptp(img[..., :3].astype(int), axis=-1) < 3).all():
            continue  # colour (H&E): not fluorescence
        if np.median(gray) > 40 or lab.max() < 3:
            continue  # brightfield, or too few nuclei
        ys, xs = np.nonzero(lab == rng.choice(np.unique(lab)[1:]))
        h, w = gray.shape
        y0 = int(np.clip(int(ys.mean()) - CROP // 2, 0, h - CROP))
        x0 = int(np.clip(int(xs.mean()) - CROP // 2, 0, w - CROP))
        crop, crop_lab = gray[y0 : y0 + CROP, x0 : x0 + CROP], lab[y0 : y0 + CROP, x0 : x0 + CROP]
        stem = f.stem[:10]
        Image.fromarray(crop).save(out / "crop" / "images" / f"{stem}.png")
        tifffile.imwrite(out / "crop" / "labels" / f"{stem}.tif", crop_lab)
        background = gray[ndimage.distance_transform_edt(lab == 0) > BACKGROUND_GAP]
        field = rng.choice(background, size=(FIELD, FIELD)).astype(gray.dtype)
        field_lab = np.zeros((FIELD, FIELD), lab.dtype)
        fy, fx = rng.integers(0, FIELD - CROP, 2)
        field[fy : fy + CROP, fx : fx + CROP] = crop
        field_lab[fy : fy + CROP, fx : fx + CROP] = crop_lab
        Image.fromarray(field).save(out / "field" / "images" / f"{stem}.png")
        tifffile.imwrite(out / "field" / "labels" / f"{stem}.tif", field_lab)
        n += 1
        if n == IMAGES:
            break
    print(f"{n} images in {out}/crop and {out}/field")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    root = Path(__file__).resolve().parents[1]
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else root.parent / "shared" / "data")
