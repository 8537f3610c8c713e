"""``napari-clickseg demo`` without a display: robot clicks, labels tif + provenance + overlay."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_clickseg.cli import main


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("NAPARI_CLICKSEG_WEIGHTS", str(empty))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_headless_demo_refuses_untrained_by_default(no_weights, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--allow-untrained" in err and "weights" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sample", ["nuclei_he", "nuclei_stack"])
def test_headless_demo_writes_labels_provenance_and_overlay(no_weights, tmp_path, capsys, sample):
    out = tmp_path / "out"
    code = main(
        [
            "demo",
            "--sample",
            sample,
            "--allow-untrained",
            "--objects",
            "1",
            "--clicks",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "UNTRAINED" in text and str(out / "overlay.png") in text
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == ((5, 256, 256) if sample == "nuclei_stack" else (256, 320))
    doc = json.loads((out / "labels.json").read_text())
    assert doc["format"] == "napari-clickseg-annotations"
    for obj in doc["objects"]:
        assert len(obj["clicks"]) == 1 and obj["model"]["trained"] is False
        assert np.any(labels == obj["id"])
    from PIL import Image

    with Image.open(out / "overlay.png") as im:
        assert im.size == (labels.shape[-1], labels.shape[-2])


def test_demo_rejects_bad_options(no_weights, tmp_path):
    assert main(["demo", "--objects", "0", "--out", str(tmp_path)]) == 2


def test_demo_replaces_its_own_results_but_never_a_users_files(no_weights, tmp_path, capsys):
    argv = ["demo", "--allow-untrained", "--objects", "1", "--clicks", "1", "--device", "cpu"]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out)]) == 0  # the quick start run twice
    # labels edited after the demo wrote them (in Fiji, say) are not replaced
    edited = tifffile.imread(out / "labels.tif")
    edited[:5, :5] = 7
    tifffile.imwrite(out / "labels.tif", edited)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    assert "changed after the demo wrote it" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a demo of a version that recorded no digest is replaced, as it was then
    doc = json.loads((out / "labels.json").read_text())
    del doc["labels_digest"]
    (out / "labels.json").write_text(json.dumps(doc))
    assert main([*argv, "--out", str(out)]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    tifffile.imwrite(mine / "labels.tif", np.full((10, 10), 5, np.uint16))
    (mine / "overlay.png").write_bytes(b"my picture")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    capsys.readouterr()
    assert main([*argv, "--out", str(mine)]) == 2
    assert "not written by an earlier demo" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    # regression: the dock's own save named "labels" was taken for an earlier demo's and replaced
    from napari_clickseg._napari.session import AnnotationSession

    saved = tmp_path / "saved"
    AnnotationSession(np.zeros((10, 10), np.uint16)).save(saved / "labels", image={"name": "nuclei_he"})
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    assert main([*argv, "--out", str(saved)]) == 2
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_gui_demo_without_a_qt_binding_says_how_to_get_one(monkeypatch, capsys):
    # regression: "pip install -e . && napari-clickseg demo" on a desktop ended in napari's
    # ImportError traceback, as nothing installed a Qt binding
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def no_qt(name, *args, **kwargs):
        return None if name in ("PyQt6", "PySide6", "PyQt5", "PySide2") else real_find_spec(name, *args, **kwargs)

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(importlib.util, "find_spec", no_qt)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "napari-clickseg[gui]" in err and "--headless" in err and "Traceback" not in err


# regression (audit 21): a demo that committed nothing passed
def test_headless_demo_with_the_shipped_weights_segments_its_objects(tmp_path, monkeypatch, capsys):
    from napari_clickseg._napari.sample_data import load_sample

    monkeypatch.delenv("NAPARI_CLICKSEG_WEIGHTS", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--objects", "2", "--clicks", "3", "--device", "cpu", "--out", str(out)]) == 0
    labels = tifffile.imread(out / "labels.tif")
    doc = json.loads((out / "labels.json").read_text())
    assert len(doc["objects"]) == 2 and all(o["model"]["trained"] for o in doc["objects"])
    _, gt = load_sample("nuclei_fluorescence")
    for o in doc["objects"]:
        obj = labels == o["id"]
        best = max(((obj & (gt == g)).sum() / (obj | (gt == g)).sum()) for g in np.unique(gt[obj]) if g)
        assert best > 0.7, (o["id"], best)


def test_demo_refuses_zero_objects_for_that_reason(tmp_path, capsys):
    assert main(["demo", "--headless", "--allow-untrained", "--objects", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--objects and --clicks must be at least 1" in capsys.readouterr().err
