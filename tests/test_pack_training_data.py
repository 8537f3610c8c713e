"""scripts/pack_training_data.py: the packed copy that travels to a lent GPU stays a valid training folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from napari_clickseg.data.folder import FolderDataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pack_training_data.py"


def _load():
    spec = importlib.util.spec_from_file_location("pack_training_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _source(root: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    disk = (yy - 30) ** 2 + (xx - 40) ** 2 < 15**2
    (root / "dsb2018/train/images").mkdir(parents=True)
    (root / "dsb2018/train/labels").mkdir()
    Image.fromarray((rng.random((64, 80)) * 255).astype(np.uint8)).save(root / "dsb2018/train/images/a.png")
    tifffile.imwrite(root / "dsb2018/train/labels/a.tif", (disk * 7).astype(np.uint16))
    for name in ("ph2/train", "coco_mval"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(root / name / "images/b.jpg")
        Image.fromarray((disk * 255).astype(np.uint8)).save(root / name / "masks/b.png")


def test_packed_folders_keep_labels_and_scale_masks_with_images(tmp_path):
    _source(tmp_path / "src")
    pack = _load()
    pack.pack(tmp_path / "src", tmp_path / "out")
    dsb = tmp_path / "out/dsb2018/train"
    # instance labels travel untouched; images become JPEG of the same size
    assert np.array_equal(tifffile.imread(dsb / "labels/a.tif"), tifffile.imread(tmp_path / "src/dsb2018/train/labels/a.tif"))
    assert Image.open(dsb / "images/a.jpg").size == (80, 64)
    for name, (scale, _) in pack.FOLDERS.items():
        if name == "dsb2018/train":
            continue
        img = Image.open(tmp_path / "out" / name / "images/b.jpg")
        mask = np.asarray(Image.open(tmp_path / "out" / name / "masks/b.png"))
        assert img.size == (round(80 * scale), round(64 * scale)) == mask.shape[::-1]
        assert set(np.unique(mask)) == {0, 255}  # nearest neighbour: still a binary mask
        assert abs(mask.mean() / 255 - np.pi * 15**2 / (64 * 80)) < 0.02
    for name in pack.FOLDERS:
        assert len(FolderDataset(tmp_path / "out" / name)) == 1
