"""Pack the training folders of ../shared/data small enough to travel to a lent GPU machine.

The device tool carries at most 64 MiB (repository included, its ~43 MB of weights too), so images are re-encoded as
JPEG and the natural / dermoscopy images are downscaled; label maps and masks
stay lossless (masks resized with nearest neighbour). The folder layout stays the
``images/`` + ``labels/`` / ``masks/`` one that ``napari-clickseg train`` reads.

Usage: python scripts/pack_training_data.py ../shared/data .gpu/data --archive
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

#: folder -> (scale applied to images and masks, JPEG quality); dsb2018 nuclei are small:
#: kept at full size and high quality; the val folders serve best-on-validation selection
FOLDERS = {
    "dsb2018/train": (1.0, 85), "ph2/train": (0.5, 85), "coco_mval": (0.5, 75),
    "dsb2018/val": (1.0, 85), "ph2/val": (0.5, 85),
}


def check_dst(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse a ``dst`` that overlaps ``src`` (packing would delete the source), or that
    already holds files, unless ``overwrite``."""
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise SystemExit(f"pack_training_data: DST {dst} overlaps SRC {src}; choose a folder outside it")
    if d.exists() and (not d.is_dir() or any(d.iterdir())) and not overwrite:
        raise SystemExit(
            f"pack_training_data: {dst} already exists and is not empty; pass --overwrite to replace "
            "its packed folders"
        )


def pack(src: Path, dst: Path, overwrite: bool = False) -> None:
    """Write the packed copy of every folder in ``FOLDERS`` from ``src`` under ``dst``."""
    check_dst(src, dst, overwrite)
    missing = [name for name in FOLDERS if not (src / name / "images").is_dir()]
    if missing:
        raise SystemExit(f"pack_training_data: no images/ folder in {', '.join(str(src / m) for m in missing)}")
    s, d = src.resolve(), dst.resolve()
    for name in FOLDERS:  # all checked before anything is deleted
        real = (dst / name).resolve()  # a link on the way (dst/dsb2018 -> src/dsb2018) leads elsewhere
        if real != d / name or s == real or s in real.parents or real in s.parents:
            raise SystemExit(f"pack_training_data: {dst / name} leads to {real} (a link?), not a folder of "
                             "DST outside SRC; nothing was deleted")
    for name, (scale, quality) in FOLDERS.items():
        out = dst / name
        if out.exists():
            shutil.rmtree(out)
        (out / "images").mkdir(parents=True)
        sizes: dict[str, tuple[int, int]] = {}
        for img_path in sorted((src / name / "images").iterdir()):
            im = Image.open(img_path)
            im = im.convert("L" if im.mode in ("L", "I;16", "I") else "RGB")
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            sizes[img_path.stem] = size
            if scale != 1.0:
                im = im.resize(size, Image.BICUBIC)
            im.save(out / "images" / f"{img_path.stem}.jpg", quality=quality)
        for kind in ("labels", "masks"):
            if not (src / name / kind).is_dir():
                continue
            (out / kind).mkdir()
            for p in sorted((src / name / kind).iterdir()):
                if scale == 1.0:
                    shutil.copy2(p, out / kind / p.name)
                    continue
                m = Image.open(p)
                m.resize(sizes[p.stem], Image.NEAREST).save(out / kind / f"{p.stem}.png")
        print(
            f"{name}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--archive", action="store_true",
                   help="replace DST by DST.tar.gz (one file: its size is what the device tool counts; "
                        "scripts/gpu_train.sh unpacks it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the packed folders in an existing DST (and an existing DST.tar.gz)")
    a = p.parse_args()
    if a.archive:
        if Path(f"{a.dst}.tar.gz").exists() and not a.overwrite:
            raise SystemExit(f"pack_training_data: {a.dst}.tar.gz exists; pass --overwrite to replace it")
        if a.dst.exists():  # the archive replaces DST: it must hold nothing else
            raise SystemExit(f"pack_training_data: --archive packs into a new folder; {a.dst} exists")
    pack(a.src, a.dst, a.overwrite)
    if a.archive:
        archive = shutil.make_archive(str(a.dst), "gztar", root_dir=a.dst.parent, base_dir=a.dst.name)
        shutil.rmtree(a.dst)
        print(f"{archive}: {Path(archive).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
