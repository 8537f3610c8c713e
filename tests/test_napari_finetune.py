"""Fine-tuning from the dock, without Qt: export, command line, progress, card."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest
import tifffile

from napari_clickseg._napari.finetune import (
    AnnotatedImage,
    FineTuneSpec,
    export_committed,
    export_for_run,
    result_weights,
    write_card,
)
from napari_clickseg._napari.planes import ImageGeometry, Plane
from napari_clickseg._napari.session import AnnotationSession
from napari_clickseg.data.folder import FolderDataset
from napari_clickseg.data.io import read_array


def one(session, geometry, data, name="image"):
    return [AnnotatedImage(name, session, geometry, data)]


def test_export_committed_planes(tmp_path):
    data = (np.random.default_rng(0).random((3, 2, 32, 40)) * 4000).astype(np.uint16)  # Z, C, Y, X
    g = ImageGeometry(data.shape, channel_axis=1)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    with pytest.raises(ValueError, match="commit"):
        export_committed(one(s, g, data), tmp_path / "d")
    for z, (r, c) in ((0, (10, 10)), (2, (20, 30)), (2, (5, 5))):
        plane = Plane((1, 2), ((0, z),))
        s.add_click(r, c, True, plane)
        mask = np.zeros((32, 40), bool)
        mask[r - 3 : r + 3, c - 3 : c + 3] = True
        s.commit(mask)
    planes, objects, *_ = export_committed(one(s, g, data), tmp_path / "d")
    assert (planes, objects) == (2, 3)
    img = tifffile.imread(tmp_path / "d" / "images" / "image000-plane0001.tif")
    lab = tifffile.imread(tmp_path / "d" / "labels" / "image000-plane0001.tif")
    assert img.shape == (32, 40, 2) and img.dtype == np.uint16
    assert np.array_equal(img[..., 1], data[2, 1]) and set(np.unique(lab)) == {0, 2, 3}


def test_a_failed_export_leaves_no_half_written_data_folder(tmp_path, monkeypatch):
    # regression (audit 21): each export that failed (a full disk) left a partial data folder
    data = np.zeros((32, 40), np.uint16)
    g = ImageGeometry(data.shape)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    s.add_click(10, 10, True, Plane.full_2d())
    mask = np.zeros((32, 40), bool)
    mask[5:15, 5:15] = True
    s.commit(mask)
    real, calls = tifffile.imwrite, []

    def full_disk_on_the_labels(path, *a, **k):
        calls.append(path)
        if "labels" in str(path):
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(tifffile, "imwrite", full_disk_on_the_labels)
    with pytest.raises(OSError, match="No space"):
        export_committed(one(s, g, data), tmp_path / "d")
    assert len(calls) == 2 and not (tmp_path / "d").exists()


def _commit(session, plane, r, c, half=3):
    session.add_click(r, c, True, plane)
    mask = np.zeros(plane.shape_in(session.labels.shape), bool)
    mask[r - half : r + half, c - half : c + half] = True
    return session.commit(mask).id


def test_export_takes_each_slice_once_and_only_the_objects_committed_on_it(tmp_path):
    data = np.random.default_rng(0).random((40, 32, 40)).astype(np.float32)  # Z, Y, X
    g = ImageGeometry(data.shape)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    _commit(s, Plane((1, 2), ((0, 3),)), 10, 10)
    _commit(s, Plane((2, 1), ((0, 3),)), 30, 20)  # the same slice, shown transposed
    _commit(s, Plane((1, 2), ((0, 30),)), 16, 20, half=5)
    xz = _commit(s, Plane((0, 2), ((1, 16),)), 10, 20, half=5)  # crosses the z = 30 object
    planes, objects, *_ = export_committed(one(s, g, data), tmp_path / "d")
    assert (planes, objects) == (3, 4)
    labels = [tifffile.imread(p) for p in sorted((tmp_path / "d" / "labels").glob("*.tif"))]
    assert [sorted(set(np.unique(lab)) - {0}) for lab in labels] == [[xz], [1, 2], [3]]
    with pytest.raises(FileExistsError):  # a folder is never written into twice
        export_committed(one(s, g, data), tmp_path / "d")


def test_export_leaves_out_objects_erased_by_hand_and_their_empty_slices(tmp_path):
    data = np.random.default_rng(0).random((10, 32, 40)).astype(np.float32)  # Z, Y, X
    g = ImageGeometry(data.shape)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    a = _commit(s, Plane((1, 2), ((0, 2),)), 10, 10)
    b = _commit(s, Plane((1, 2), ((0, 5),)), 10, 10)
    c = _commit(s, Plane((1, 2), ((0, 5),)), 20, 30)
    s.labels[:] = 0  # all erased by hand: the records stay until the dock looks
    assert len(s.records) == 3
    with pytest.raises(ValueError, match="no committed objects"):
        export_committed(one(s, g, data), tmp_path / "none")
    s.labels[5, 5:8, 5:8] = b  # 9 pixels of b painted back: fewer than the trainer uses
    with pytest.raises(ValueError, match="at least 30 pixels"):
        export_committed(one(s, g, data), tmp_path / "none")
    s.labels[5, 5:11, 5:11] = b  # b painted back (in part); a and c stay erased
    assert export_committed(one(s, g, data), tmp_path / "d")[:2] == (1, 1)
    (lab,) = [tifffile.imread(p) for p in (tmp_path / "d" / "labels").glob("*.tif")]
    assert set(np.unique(lab)) == {0, b} and a != b != c
    assert not (tmp_path / "none").exists()
    assert len(FolderDataset(tmp_path / "d")) == 1


@pytest.mark.parametrize(
    "shape, channel_axis, plane",
    [
        ((128, 128, 16), 2, Plane.full_2d()),  # many channels: its pages would be rows
        ((20, 32, 128, 128), 1, Plane((0, 2), ((1, 60),))),  # Z, C, Y, X seen on an XZ plane
    ],
)
def test_exported_multichannel_planes_read_back_as_they_are(tmp_path, shape, channel_axis, plane):
    # regression (review 25): a plane with fewer rows than channels came back channels-first
    # (shape mismatch with its labels), and one with 16 channels made the trainer warn about
    # the plugin's own file
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    g = ImageGeometry(data.shape, channel_axis=channel_axis)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    _commit(s, plane, 10, 60, half=5)
    assert export_committed(one(s, g, data), tmp_path / "d")[:2] == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = FolderDataset(tmp_path / "d")
    image, _ = g.plane_image(data, plane)
    assert len(dataset) == 1
    assert np.array_equal(read_array(tmp_path / "d" / "images" / "image000-plane0000.tif"), image)


def test_export_of_a_2d_image_takes_painted_objects_too(tmp_path):
    data = np.zeros((32, 40), np.uint8)
    s = AnnotationSession(np.zeros((32, 40), np.uint16))
    s.labels[2:10, 2:10] = 7  # painted by hand: no record of where it was committed
    assert export_committed(one(s, ImageGeometry(data.shape), data), tmp_path / "d")[:2] == (1, 1)


def test_export_of_a_stack_takes_objects_painted_or_loaded_without_records(tmp_path):
    # regression (audit 25): on a stack only objects with a record were exported, so a labels
    # file loaded without its JSON, or objects painted by hand, gave "nothing to train on"
    data = np.random.default_rng(0).random((6, 32, 40)).astype(np.float32)  # Z, Y, X
    g = ImageGeometry(data.shape)
    s = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    committed = _commit(s, Plane((1, 2), ((0, 1),)), 10, 10)
    s.labels[1, 20:28, 20:28] = 5  # painted on the committed object's slice
    s.labels[4, 2:10, 30:38] = 6  # painted on a slice of its own
    s.labels[0:6, 16, 0:10] = 7  # painted on an XZ plane (y = 16)
    s.labels[2:5, 25:30, 2:8] = 8  # painted in 3D: no plane holds it
    s.labels[2:5, 0:2, 38:40] = 9  # a 12 px dab across three slices: too small (review 26)
    exported = export_committed(one(s, g, data), tmp_path / "d")
    assert exported[:4] == (3, 4, 1, 1)
    found = {}
    for p in sorted((tmp_path / "d" / "labels").glob("*.tif")):
        lab = tifffile.imread(p)
        found[lab.shape] = found.get(lab.shape, []) + [sorted(set(np.unique(lab)) - {0})]
    assert found == {(32, 40): [[committed, 5], [6]], (6, 40): [[7]]}
    only_3d = AnnotationSession(np.zeros(g.spatial_shape, np.uint16))
    only_3d.labels[2:5, 25:30, 2:8] = 1
    with pytest.raises(ValueError, match="1 span several planes"):
        export_committed(one(only_3d, g, data), tmp_path / "none")


def test_export_takes_every_annotated_image(tmp_path):
    gray = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    rgb = (np.random.default_rng(1).random((24, 30, 3)) * 255).astype(np.uint8)
    a = AnnotationSession(np.zeros((32, 40), np.uint16))
    a.labels[2:10, 2:10] = 1
    b = AnnotationSession(np.zeros((24, 30), np.uint16))
    b.labels[5:15, 5:15] = 1
    b.labels[16:22, 16:28] = 2
    blank = AnnotationSession(np.zeros((32, 40), np.uint16))
    blank.labels[30:32, 0:3] = 9  # 6 px: too small to train on, and said so (audit 26)
    images = [
        *one(a, ImageGeometry(gray.shape), gray, "a"),
        *one(blank, ImageGeometry(gray.shape), gray, "blank"),
        *one(b, ImageGeometry(rgb.shape, rgb=True), rgb, "b"),
    ]
    assert export_committed(images, tmp_path / "d") == (2, 3, 0, 1, ("a", "b"))
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == [
        "image000-plane0000.tif", "image002-plane0000.tif"
    ]
    assert np.array_equal(tifffile.imread(tmp_path / "d" / "images" / "image002-plane0000.tif"), rgb)
    assert len(FolderDataset(tmp_path / "d")) == 3


def test_export_writes_only_ids_the_trainer_reads(tmp_path):
    # regression (review 26): negative ids (kept by loading) and uint64 ids past int64 were
    # exported and counted, and the trainer then refused the whole folder
    data = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    s = AnnotationSession(np.zeros((32, 40), np.int32))
    s.labels[2:10, 2:10] = -3
    s.labels[12:20, 2:10] = 4
    assert export_committed(one(s, ImageGeometry(data.shape), data), tmp_path / "neg")[:2] == (1, 1)
    (lab,) = [tifffile.imread(p) for p in (tmp_path / "neg" / "labels").glob("*.tif")]
    assert set(np.unique(lab)) == {0, 4}
    stack = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
    big = AnnotationSession(np.zeros((3, 32, 40), np.uint64))
    big.labels[1, 2:10, 2:10] = 2**64 - 5  # painted, no record: its plane comes from its pixels
    big.labels[1, 12:20, 2:10] = 2
    assert export_committed(one(big, ImageGeometry(stack.shape), stack), tmp_path / "big")[:2] == (1, 2)
    assert len(FolderDataset(tmp_path / "big")) == 2


def test_two_fine_tunes_started_together_get_their_own_folders(tmp_path):
    data = np.zeros((32, 40), np.uint8)
    s = AnnotationSession(np.zeros((32, 40), np.uint16))
    s.labels[2:10, 2:10] = 1
    g = ImageGeometry(data.shape)
    first = export_for_run(one(s, g, data), tmp_path, "image")
    second = export_for_run(one(s, g, data), tmp_path, "image")
    assert len({first[0], first[1], second[0], second[1]}) == 4
    assert not first[0].exists() and first[1].is_dir() and second[1].is_dir()


def test_spec_command_and_progress(tmp_path):
    spec = FineTuneSpec("early", "imagenet", ["a", "b"], str(tmp_path / "run"), minutes=2.0)
    cmd = spec.command()
    assert cmd[:4] == [sys.executable, "-m", "napari_clickseg.cli", "train"]
    assert cmd.count("--data") == 2 and "--minutes" in cmd and "--iterations" not in cmd
    assert int(cmd[cmd.index("--threads") + 1]) >= 1
    assert spec.progress("anything", 60.0) == pytest.approx(0.5)
    it = FineTuneSpec("fca", "x.safetensors", ["a"], "o", iterations=10, model_kwargs={"k": 1})
    assert "--iterations" in it.command() and 'model_kwargs={"k": 1}' in it.command()
    assert it.progress("iteration 4 | loss 0.3 | ...", 0) == pytest.approx(0.4)
    assert it.progress("[val] iteration 4: ...", 0) is None


def test_result_weights_and_card(tmp_path):
    assert result_weights(tmp_path) is None
    (tmp_path / "last.safetensors").write_bytes(b"x")
    assert result_weights(tmp_path).name == "last.safetensors"
    (tmp_path / "best.safetensors").write_bytes(b"y")
    w = result_weights(tmp_path)
    assert w.name == "best.safetensors"
    spec = FineTuneSpec("early", "imagenet", ["d"], str(tmp_path), iterations=3)
    card = write_card(
        w, spec, {"name": "UNTRAINED early"}, {"objects": 4, "planes": 1, "images": ["a", "b"]}, ["done"]
    )
    text = card.read_text()
    assert "4 committed objects" in text and "3 iterations" in text and "done" in text
    assert "image(s) 'a', 'b'" in text


FAKE_TRAINER = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
def stop(*_):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills the checkpoint
    time.sleep(0.5)
    (out / "checkpoint.pt").write_text("ckpt")
    print("stopped: checkpoint written", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
for i in range(1200):
    print(f"iteration {i} | loss 0.1", flush=True)
    time.sleep(0.05)
"""


def fake_command(spec):
    """A stand-in trainer: prints progress, writes a checkpoint on SIGTERM."""
    return [sys.executable, "-c", FAKE_TRAINER, spec.out]


def test_running_trainer_is_cancelled_at_exit(tmp_path, monkeypatch):
    from napari_clickseg._napari import finetune

    monkeypatch.setattr(FineTuneSpec, "command", fake_command)
    proc = finetune.TrainingProcess(FineTuneSpec("early", "imagenet", [], str(tmp_path / "run")))
    assert next(proc.lines()).startswith("iteration 0")
    proc.cancel()  # the dock cancelled it; exit must not signal it again
    time.sleep(0.25)  # the trainer is writing its checkpoint
    finetune.stop_live(timeout=20)  # what Python runs at exit
    assert proc.cancelled and proc.returncode == 0
    assert (tmp_path / "run" / "checkpoint.pt").read_text() == "ckpt"
