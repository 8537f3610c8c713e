"""Folder datasets (validation errors, labels and masks) and augmentation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_clickseg.data.augment import AugmentConfig, object_crop
from napari_clickseg.data.folder import IGNORE_LABEL, FolderDataset, MaskInLabels
from napari_clickseg.data.io import DataError, PagesReadAsChannels, read_array


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _disk(shape, centre, radius) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def make_labels_folder(root: Path, n: int = 2, shape=(64, 80), rng=None) -> Path:
    """images/*.png (gray uint8) + labels/*.tif (uint16, two discs and a tiny object)."""
    rng = rng or np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros(shape, np.uint16)
        lab[_disk(shape, (20, 20), 10)] = 3
        lab[_disk(shape, (40, 55), 12)] = 7
        lab[2:5, 70:73] = 9  # 9 px: below the 30 px minimum
        img = (rng.random(shape) * 60 + (lab > 0) * 150).astype(np.uint8)
        _png(root / "images" / f"im{i}.png", img)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "labels" / f"im{i}.tif", lab)
    return root


def make_masks_folder(root: Path, n: int = 2, shape=(60, 60), rng=None) -> Path:
    """images/*.png (RGB) + masks/*.png (255 object, 128 ignored band)."""
    rng = rng or np.random.default_rng(1)
    for i in range(n):
        obj = _disk(shape, (30, 30), 15)
        band = _disk(shape, (30, 30), 17) & ~obj
        m = np.where(obj, 255, np.where(band, 128, 0)).astype(np.uint8)
        img = (rng.random((*shape, 3)) * 80 + obj[..., None] * 120).astype(np.uint8)
        _png(root / "images" / f"m{i}.png", img)
        _png(root / "masks" / f"m{i}.png", m)
    return root


def test_labels_folder(tmp_path):
    ds = FolderDataset(make_labels_folder(tmp_path))
    assert ds.kind == "labels" and ds.names == ["im0", "im1"]
    assert len(ds) == 4 and ds.skipped_small == 2  # two discs per image; tiny objects skipped
    assert {o.label for o in ds.objects} == {3, 7}
    img, mask, ignore = ds.object_masks(0)
    assert img.shape == (64, 80, 3)
    full = img[:, :]
    assert full.shape == (64, 80, 3) and full.dtype == np.float32
    assert 0.0 <= full.min() and full.max() <= 1.0
    assert mask.sum() == ds.objects[0].area and not ignore.any()
    # the raw pixels are kept (no float copy), and a slice is normalised as the whole image is
    assert ds.images[0].dtype == np.uint8 and not ds.images[0].flags.writeable  # shared: read-only
    np.testing.assert_array_equal(img[10:30, 5:50], full[10:30, 5:50])
    from napari_clickseg.engine.image import prepare_image

    np.testing.assert_array_equal(full, prepare_image(ds.images[0], -1))


@pytest.mark.parametrize("big", [2**32 - 1, 2**31 + 7, 5_000_000])
def test_large_label_ids_keep_their_value_and_cost_no_memory(tmp_path, big):
    """Ids near the uint32 limit: no 32 GiB bincount, no object lost to int32 wrap-around."""
    import tracemalloc

    from napari_clickseg.evaluation.runner import load_eval_set

    lab = np.zeros((64, 64), np.uint32)
    lab[5:20, 5:20] = 1
    lab[30:50, 30:50] = big
    _png(tmp_path / "images" / "a.png", (lab > 0).astype(np.uint8) * 200)
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "a.tif", lab)
    tracemalloc.start()
    try:
        ds = FolderDataset(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # independent of the largest id (5e6 ids alone would be 40 MB)
    assert [(o.label, o.area, o.bbox) for o in ds.objects] == [(1, 225, (5, 5, 20, 20)), (big, 400, (30, 30, 50, 50))]
    _, mask, _ = ds.object_masks(1)
    assert mask.sum() == 400
    # evaluation results name the user's own ids
    es = load_eval_set(ds)
    assert [k for _, _, k in es.items] == [1, big]
    assert es.get_object(0, big)[0].sum() == 400


def test_masks_folder_ignore_band(tmp_path):
    ds = FolderDataset(make_masks_folder(tmp_path))
    assert ds.kind == "masks" and len(ds) == 2
    _, mask, ignore = ds.object_masks(1)
    assert ignore.any() and not (mask & ignore).any()
    assert (ds.targets[0] == IGNORE_LABEL).sum() == ignore.sum()
    # ignore value switched off: the band counts as object
    ds2 = FolderDataset(tmp_path, ignore_value=None)
    assert ds2.object_masks(0)[1].sum() == mask.sum() + ignore.sum()


def test_masks_folder_refuses_instance_maps(tmp_path):
    # regression: an instance map in masks/ (cellpose's *_masks.tif are such maps) was read as
    # one object, the union of every instance, with instance 128 taken as "ignore"
    root = make_masks_folder(tmp_path / "inst", n=1)
    lab = np.zeros((60, 60), np.uint16)
    lab[_disk((60, 60), (15, 15), 8)] = 1
    lab[_disk((60, 60), (40, 40), 8)] = 2
    tifffile.imwrite(root / "masks" / "m0.tif", lab)
    (root / "masks" / "m0.png").unlink()
    with pytest.raises(DataError, match=r"m0.tif: .*2 object values \(1, 2\).*labels/"):
        FolderDataset(root)
    # 0/1 masks of any dtype stay one object; without an ignore value every non-zero value is object
    tifffile.imwrite(root / "masks" / "m0.tif", (lab > 0).astype(np.uint16))
    assert len(FolderDataset(root)) == 1
    assert len(FolderDataset(make_masks_folder(tmp_path / "band"), ignore_value=None)) == 2


def test_mask_with_ignore_band_in_labels_warns(tmp_path):
    # a GrabCut-style mask (0, 128 band, 255) saved in labels/ made the band an object, silently
    root = make_masks_folder(tmp_path / "m")
    (root / "masks").rename(root / "labels")
    with pytest.warns(MaskInLabels, match=r"labels/m\d\.png and 1 more: holds only 0, 128 and 255.*masks/"):
        ds = FolderDataset(root)
    assert len(ds) == 4  # still read as asked: band and object of each file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FolderDataset(root, ignore_value=None)  # no ignore value: nothing looks like a band
        FolderDataset(make_masks_folder(tmp_path / "ok"))  # in masks/: as it should be
        inst = make_labels_folder(tmp_path / "inst")  # an instance map with ids 3 and 128: no mask
        lab = tifffile.imread(inst / "labels" / "im0.tif")
        tifffile.imwrite(inst / "labels" / "im0.tif", np.where(lab == 7, 128, np.where(lab == 9, 0, lab)).astype(np.uint16))
        assert len(FolderDataset(inst)) == 4


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="no labels/"):
        (tmp_path / "nogt" / "images").mkdir(parents=True)
        FolderDataset(tmp_path / "nogt")

    root = make_masks_folder(tmp_path / "missing")
    (root / "masks" / "m1.png").unlink()
    with pytest.raises(DataError, match="m1.png has no mask"):
        FolderDataset(root)

    root = make_masks_folder(tmp_path / "shape")
    _png(root / "masks" / "m0.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match=r"shape mismatch: .*m0.png is 60x60 .*m0.png is 10x12"):
        FolderDataset(root)

    root = make_masks_folder(tmp_path / "broken")
    (root / "images" / "m0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*m0.png"):
        FolderDataset(root)

    root = make_masks_folder(tmp_path / "allempty", n=1)
    _png(root / "masks" / "m0.png", np.zeros((60, 60), np.uint8))
    with pytest.raises(DataError, match="no object") as e:
        FolderDataset(root)
    assert "ignore" not in str(e.value)
    all_ignore = np.zeros((60, 60), np.uint8)
    all_ignore[10:40, 10:40] = 128  # the object saved with the ignore value
    _png(root / "masks" / "m0.png", all_ignore)
    with pytest.raises(DataError, match="no object .*pixels of value 128 mean 'ignore'"):
        FolderDataset(root)


def test_read_array_formats(tmp_path):
    a16 = (np.arange(20 * 30).reshape(20, 30) * 50).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a16)
    assert np.array_equal(read_array(tmp_path / "a.tif"), a16)
    multi = np.random.default_rng(0).random((4, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "m.tif", multi, photometric="minisblack")
    assert read_array(tmp_path / "m.tif").shape == (20, 30, 4)


def test_read_array_warns_that_many_unlabelled_pages_become_channels(tmp_path, recwarn):
    """A z-stack saved without axis metadata is read as channels, but not silently."""
    stack = np.random.default_rng(0).integers(0, 255, (12, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "shaped.tif", stack)  # tifffile's own shape metadata: axes Q
    with tifffile.TiffWriter(tmp_path / "pages.tif") as w:  # plain pages: axes I
        for plane in stack:
            w.write(plane, metadata=None)
    for name in ("shaped.tif", "pages.tif"):
        with pytest.warns(PagesReadAsChannels, match=rf"{name}: its 12 pages .* read as 12 channels.*ZYX"):
            assert np.array_equal(read_array(tmp_path / name), np.moveaxis(stack, 0, -1))
    tifffile.imwrite(tmp_path / "four.tif", stack[:4], photometric="minisblack")
    tifffile.imwrite(tmp_path / "c12.tif", stack, imagej=True, metadata={"axes": "CYX"})
    last = np.ascontiguousarray(np.moveaxis(stack, 0, -1)[..., :5])  # (H, W, 5): pages are rows
    tifffile.imwrite(tmp_path / "last.tif", last, photometric="minisblack")
    tifffile.imwrite(tmp_path / "z100.tif", np.zeros((100, 120, 160), np.uint8))
    with pytest.raises(DataError, match=r"z100.tif: 100 pages of 120x160 .*a stack"):
        read_array(tmp_path / "z100.tif")  # not moved: it came back as 160 "channels" before
    for n, side in ((40, 32), (100, 64)):  # no fewer pages than a plane is wide: not moved
        deep = np.zeros((n, side, side), np.uint8)
        tifffile.imwrite(tmp_path / f"deep{n}.tif", deep)
        with pytest.warns(PagesReadAsChannels, match=rf"{n} pages of {side}x{side} .* one {n}x{side} image"):
            assert read_array(tmp_path / f"deep{n}.tif").shape == (n, side, side)
    recwarn.clear()
    read_array(tmp_path / "four.tif"), read_array(tmp_path / "c12.tif")
    assert np.array_equal(read_array(tmp_path / "last.tif"), last)
    # one image of many channels: its pages (rows of 256x16) are far from square
    c16 = np.random.default_rng(1).integers(0, 255, (64, 256, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c16.tif", c16)
    assert np.array_equal(read_array(tmp_path / "c16.tif"), c16)
    # axes written: read as they are, even with fewer rows than channels
    rows = np.ascontiguousarray(c16[:10, :, :])  # (10, 256, 16)
    tifffile.imwrite(tmp_path / "yxc.tif", rows, metadata={"axes": "YXC"})
    assert np.array_equal(read_array(tmp_path / "yxc.tif"), rows)
    assert not [w for w in recwarn if issubclass(w.category, PagesReadAsChannels)]


@pytest.mark.parametrize(("axes", "kind"), [("ZYX", "z-stack"), ("TYX", "time series")])
def test_read_array_refuses_imagej_stacks(tmp_path, axes, kind):
    """A z-stack or time series is not read as a multichannel 2D image."""
    path = tmp_path / f"stack_{axes}.tif"
    tifffile.imwrite(path, np.zeros((5, 20, 30), np.uint8), imagej=True, metadata={"axes": axes})
    with pytest.raises(DataError, match=rf"stack_{axes}\.tif: a {kind} .*one 2D plane per file.*napari"):
        read_array(path)


def test_read_array_refuses_ome_and_hyperstack_z_axes(tmp_path):
    ome = tmp_path / "z.ome.tif"
    tifffile.imwrite(ome, np.zeros((5, 20, 30), np.uint8), metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match=r"z\.ome\.tif: a z-stack"):
        read_array(ome)
    hyper = tmp_path / "tzc.tif"
    tifffile.imwrite(hyper, np.zeros((2, 3, 2, 20, 30), np.uint8), imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(DataError, match=r"tzc\.tif: a time series and z-stack"):
        read_array(hyper)


@pytest.mark.parametrize("shape", [(1, 64, 64), (64, 64, 1)])
def test_label_maps_with_a_length_one_axis_are_read_as_2d(tmp_path, shape):
    # regression: a (64, 64, 1) label TIFF was refused as "must be single-channel"
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lab = np.zeros((64, 64), np.uint16)
    lab[10:40, 10:40] = 3
    tifffile.imwrite(root / "labels" / "a.tif", lab.reshape(shape), photometric="minisblack")
    tifffile.imwrite(root / "images" / "a.tif", (lab * 50).astype(np.uint8).reshape(shape), photometric="minisblack")
    ds = FolderDataset(root)
    assert len(ds.objects) == 1 and ds.targets[0].shape == (64, 64)
    assert read_array(root / "images" / "a.tif").shape == (64, 64)


def test_read_array_keeps_channels_and_single_planes(tmp_path):
    """ImageJ channels, RGB, plain multi-page and one-plane stacks still read as 2D images."""
    chans = np.arange(5 * 20 * 30, dtype=np.uint16).reshape(5, 20, 30)
    tifffile.imwrite(tmp_path / "c.tif", chans, imagej=True, metadata={"axes": "CYX"})
    assert np.array_equal(read_array(tmp_path / "c.tif"), np.moveaxis(chans, 0, -1))
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert np.array_equal(read_array(tmp_path / "rgb.tif"), rgb)
    tifffile.imwrite(tmp_path / "bare.tif", chans, metadata=None)  # no axis metadata at all
    with pytest.warns(PagesReadAsChannels):
        assert read_array(tmp_path / "bare.tif").shape == (20, 30, 5)
    one = chans[:1].astype(np.uint8)
    tifffile.imwrite(tmp_path / "z1.tif", one, imagej=True, metadata={"axes": "ZYX"})
    assert np.array_equal(read_array(tmp_path / "z1.tif"), one[0])


def _png16(path: Path, a: np.ndarray, colour_type: int) -> None:
    """A minimal 16-bit PNG (Pillow writes 16 bits for gray only)."""
    import struct
    import zlib

    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_read_array_refuses_16_bit_colour_png_and_keeps_16_bit_gray(tmp_path):
    # regression: Pillow kept the high bytes of a 16-bit RGB PNG, so a dim image (values
    # 100-900) came back as uint8 with two values
    a = np.full((6, 8, 3), 100, np.uint16)
    a[2:4, 2:5] = 900
    _png16(tmp_path / "rgb.png", a, 2)
    with pytest.raises(DataError, match=r"rgb\.png.*16-bit colour PNG.*TIFF"):
        read_array(tmp_path / "rgb.png")
    _png16(tmp_path / "gray.png", a[..., 0], 0)
    gray = read_array(tmp_path / "gray.png")
    assert gray.dtype == np.uint16 and np.array_equal(gray, a[..., 0])


def test_read_array_drops_the_alpha_of_a_gray_png(tmp_path):
    # regression: a gray + alpha PNG (Pillow mode LA) came back as a 2-channel image
    from PIL import Image

    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    alpha = np.full((6, 8), 255, np.uint8)
    alpha[0, 0] = 0  # not opaque: the alpha is still transparency, not image data
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(tmp_path / "la.png")
    out = read_array(tmp_path / "la.png")
    assert out.dtype == np.uint8 and np.array_equal(out, gray)


def test_read_array_corrupt_tiff_names_the_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\0garbage")  # a TIFF header and nothing readable behind it
    with pytest.raises(DataError, match=r"cannot read .*bad\.tif"):
        read_array(bad)


@pytest.mark.parametrize("seed", range(20))
def test_augmentation_keeps_the_object(tmp_path, seed):
    shape = (300, 400)
    mask = _disk(shape, (20 + seed * 3, 380 - seed), 6 + seed)  # near the border, various sizes
    ignore = _disk(shape, (20 + seed * 3, 380 - seed), 8 + seed) & ~mask
    image = np.random.default_rng(seed).random((*shape, 3)).astype(np.float16)
    rows, cols = np.nonzero(mask)
    bbox = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    cfg = AugmentConfig(crop_size=64)
    img, m, ign, oth, _ = object_crop(image, mask, ignore, bbox, cfg, np.random.default_rng(seed))
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert m.shape == ign.shape == (64, 64) and m.dtype == bool and oth is None
    assert m.sum() >= min(cfg.min_object_px, mask.sum())
    assert 0.0 <= img.min() and img.max() <= 1.0
    # object occupies a substantial part of the crop unless it would need > max_upscale zoom
    assert m.sum() / m.size > 0.005


def test_validation_crop_is_deterministic():
    shape = (100, 100)
    mask = _disk(shape, (50, 50), 10)
    image = np.random.default_rng(0).random((*shape, 3)).astype(np.float32)
    a = object_crop(image, mask, np.zeros(shape, bool), (40, 40, 61, 61), AugmentConfig(crop_size=64),
                    np.random.default_rng(1), augment=False)
    b = object_crop(image, mask, np.zeros(shape, bool), (40, 40, 61, 61), AugmentConfig(crop_size=64),
                    np.random.default_rng(2), augment=False)
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))
    assert a[1][32, 32]  # centred


def test_a_thin_object_survives_its_crop():
    # regression: a 1-px wide, 600-px long object vanished from every crop shrunk to 320 px,
    # and training failed part way with "cannot sample clicks on an empty mask"
    shape = (1024, 1024)
    mask = np.zeros(shape, bool)
    mask[200:800, 500] = True
    image = np.zeros((*shape, 3), np.float32)
    cfg = AugmentConfig(crop_size=320)
    for seed in range(10):
        _, m, _, _, _ = object_crop(image, mask, np.zeros(shape, bool), (200, 500, 800, 501), cfg,
                                 np.random.default_rng(seed), augment=seed % 2 == 0)
        assert m.any(), seed


def test_big_object_in_small_image_is_not_lost_in_padding():
    shape = (120, 200)
    mask = np.zeros(shape, bool)
    mask[10:110, 40:160] = True
    image = np.full((*shape, 3), 0.5, np.float32)
    cfg = AugmentConfig(crop_size=64, color_prob=0.0)
    for seed in range(10):
        img, m, _, _, _ = object_crop(image, mask, np.zeros(shape, bool), (10, 40, 110, 160), cfg,
                                   np.random.default_rng(seed))
        padding = (img == 0).all(-1).mean()
        assert padding < 0.45 and m.mean() > 0.2


# regression (audit 21): a mask rotated against its image passed every test
@pytest.mark.parametrize("seed", range(12))
def test_augmentation_moves_image_and_mask_together(seed):
    from napari_clickseg.data.augment import AugmentConfig, object_crop

    shape = (200, 240)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = ((yy - 90) / 30.0) ** 2 + ((xx - 110) / 14.0) ** 2 <= 1  # an upright ellipse: rotations show
    mask[60:75, 110:140] = True  # and an arm to the right: flips show
    image = np.zeros((*shape, 3), np.float32)
    image[..., 0] = mask  # the image draws the mask
    rows, cols = np.nonzero(mask)
    bbox = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    cfg = AugmentConfig(crop_size=64, color_prob=0.0)
    img, m, _, _, _ = object_crop(image, mask, np.zeros(shape, bool), bbox, cfg, np.random.default_rng(seed))
    np.testing.assert_array_equal(img[..., 0] > 0.5, m)


def test_a_thin_image_with_many_channels_read_from_a_file_is_used_as_read(tmp_path, tiny_weights, capsys):
    # regression (review, session 21): read_array gives (32, 64, 40) for a (40, 32, 64) TIFF,
    # and the engine's channels-first rule then refused its own reader's output
    from napari_clickseg.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", (rng.random((40, 32, 64)) * 1000).astype(np.uint16))
    labels = np.zeros((32, 64), np.uint16)
    labels[8:24, 10:40] = 1
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    with pytest.warns(PagesReadAsChannels):  # 40 pages without axes: read as channels, with a warning
        ds = FolderDataset(tmp_path)
    assert ds.describe()["objects"] == 1
    assert main(["segment", str(tmp_path / "images" / "a.tif"), "--click", "15,20,+", "--model",
                 str(tiny_weights), "--device", "cpu", "-o", str(tmp_path / "out.tif")]) == 0
    assert "read as 40 channels" in capsys.readouterr().err  # the CLI prints the warning as one line
    assert tifffile.imread(tmp_path / "out.tif").shape == (32, 64)



def test_palette_images_give_their_colours_and_palette_labels_their_indices(tmp_path):
    from PIL import Image

    from napari_clickseg.data.io import read_array

    idx = np.zeros((40, 40), np.uint8)
    idx[10:30, 10:30] = 1
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 200, 120, 40] + [0] * 762)
    root = tmp_path / "pal"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    im.save(root / "images" / "a.png")
    im.save(root / "labels" / "a.png")  # a VOC-style palette label map
    assert read_array(root / "labels" / "a.png").shape == (40, 40)
    rgb = read_array(root / "images" / "a.png", palette_colours=True)
    assert rgb.shape == (40, 40, 3) and tuple(rgb[20, 20]) == (200, 120, 40)
    ds = FolderDataset(root)
    assert ds.images[0].shape == (40, 40, 3) and len(ds.objects) == 1
