"""scripts/pack_training_data.py: the packed copy that travels to a lent GPU stays a valid training folder."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_clickseg.data.folder import FolderDataset


def _source(root: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    disk = (yy - 30) ** 2 + (xx - 40) ** 2 < 15**2
    for name in ("dsb2018/train", "dsb2018/val"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "labels").mkdir()
        Image.fromarray((rng.random((64, 80)) * 255).astype(np.uint8)).save(root / name / "images/a.png")
        tifffile.imwrite(root / name / "labels/a.tif", (disk * 7).astype(np.uint16))
    for name in ("ph2/train", "coco_mval", "ph2/val"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(root / name / "images/b.jpg")
        Image.fromarray((disk * 255).astype(np.uint8)).save(root / name / "masks/b.png")


def test_packed_folders_keep_labels_and_scale_masks_with_images(tmp_path, load_script):
    _source(tmp_path / "src")
    pack = load_script("pack_training_data")
    pack.pack(tmp_path / "src", tmp_path / "out")
    for name, (scale, _) in pack.FOLDERS.items():
        out = tmp_path / "out" / name
        if (out / "labels").is_dir():
            # instance labels travel untouched; images become JPEG of the same size
            assert scale == 1.0
            assert np.array_equal(tifffile.imread(out / "labels/a.tif"),
                                  tifffile.imread(tmp_path / "src" / name / "labels/a.tif"))
            assert Image.open(out / "images/a.jpg").size == (80, 64)
            continue
        img = Image.open(out / "images/b.jpg")
        mask = np.asarray(Image.open(out / "masks/b.png"))
        assert img.size == (round(80 * scale), round(64 * scale)) == mask.shape[::-1]
        assert set(np.unique(mask)) == {0, 255}  # nearest neighbour: still a binary mask
        assert abs(mask.mean() / 255 - np.pi * 15**2 / (64 * 80)) < 0.02
    for name in pack.FOLDERS:
        assert len(FolderDataset(tmp_path / "out" / name)) == 1


def test_archive_replaces_the_folder(tmp_path, monkeypatch, load_script):
    _source(tmp_path / "src")
    pack = load_script("pack_training_data")
    monkeypatch.setattr("sys.argv", ["pack", str(tmp_path / "src"), str(tmp_path / "out"), "--archive"])
    pack.main()
    assert not (tmp_path / "out").exists()
    with tarfile.open(tmp_path / "out.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    for name in pack.FOLDERS:
        assert len(FolderDataset(tmp_path / "unpacked/out" / name)) == 1


def test_missing_folder_is_named(tmp_path, load_script):
    _source(tmp_path / "src")
    shutil.rmtree(tmp_path / "src/ph2/val")
    with pytest.raises(SystemExit, match="ph2/val"):
        load_script("pack_training_data").pack(tmp_path / "src", tmp_path / "out")


def test_a_destination_overlapping_the_source_or_holding_files_is_refused(tmp_path, monkeypatch, load_script):
    # regression: "pack S S" deleted every folder of S before reading it
    _source(tmp_path / "src")
    pack = load_script("pack_training_data")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*"))
    for dst in (tmp_path / "src", tmp_path / "src" / "packed", tmp_path):
        with pytest.raises(SystemExit, match="overlaps"):
            pack.pack(tmp_path / "src", dst)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*")) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not empty.*--overwrite"):
        pack.pack(tmp_path / "src", mine)
    monkeypatch.setattr("sys.argv", ["pack", str(tmp_path / "src"), str(mine), "--archive", "--overwrite"])
    with pytest.raises(SystemExit, match="new folder"):
        pack.main()  # --archive would delete the folder and what else it holds
    assert (mine / "notes.txt").read_text() == "keep"
    pack.pack(tmp_path / "src", mine, overwrite=True)  # a re-run into its own folder
    assert (mine / "dsb2018" / "train" / "images" / "a.jpg").is_file()
    (tmp_path / "new.tar.gz").write_bytes(b"an older archive")
    monkeypatch.setattr("sys.argv", ["pack", str(tmp_path / "src"), str(tmp_path / "new"), "--archive"])
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        pack.main()
    assert (tmp_path / "new.tar.gz").read_bytes() == b"an older archive"


def test_a_link_inside_the_destination_never_leads_to_deleting_the_source(tmp_path, load_script):
    # regression (audit 21): DST/dsb2018 linked to SRC/dsb2018, and --overwrite deleted the
    # real SRC/dsb2018/train and /val, then exited 0
    _source(tmp_path / "src")
    pack = load_script("pack_training_data")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*"))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "dsb2018").symlink_to(tmp_path / "src" / "dsb2018")
    with pytest.raises(SystemExit, match="a link.*nothing was deleted"):
        pack.pack(tmp_path / "src", dst, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*")) == before

