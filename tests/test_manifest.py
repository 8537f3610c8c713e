"""The npe2 manifest is valid and importing the package stays cheap (no napari, Qt or torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("napari", "torch", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def test_npe2_validate_cli():
    npe2 = pytest.importorskip("npe2")
    del npe2
    code = "from npe2.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "validate", "napari-clickseg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in (r.stdout + r.stderr).lower()


def test_manifest_contributions_resolve():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-clickseg")
    assert pm.name == "napari-clickseg"
    pm.validate_imports()  # every python_name imports
    assert [w.display_name for w in pm.contributions.widgets] == ["Click segmentation"]
    keys = {s.key for s in pm.contributions.sample_data}
    assert keys == {"nuclei_fluorescence", "nuclei_he", "nuclei_stack"}


@pytest.mark.parametrize(
    "module",
    [
        "napari_clickseg",
        "napari_clickseg._napari",
        "napari_clickseg._napari.session",
        "napari_clickseg._napari.planes",
        "napari_clickseg._napari.sample_data",
        "napari_clickseg._napari.adapter",
        "napari_clickseg._napari.finetune",
        "napari_clickseg.demo",
    ],
)
def test_import_is_light(module):
    code = (
        f"import sys, {module}; "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing {module} imported {r.stdout.strip()}"


def test_sample_data_commands():
    from napari_clickseg._napari import sample_data

    ((img, meta, kind),) = sample_data.nuclei_fluorescence()
    assert kind == "image" and img.shape == (256, 256) and img.dtype == np.uint8
    ((img, meta, kind),) = sample_data.nuclei_he()
    assert img.shape == (256, 320, 3) and meta["rgb"] is True
    ((img, meta, kind),) = sample_data.nuclei_stack()
    assert img.shape == (5, 256, 256) and meta["scale"] == (2.0, 1.0, 1.0)
    image, labels = sample_data.load_sample("nuclei_he")
    assert labels.shape == image.shape[:2] and labels.max() > 50
    with pytest.raises(ValueError, match="valid"):
        sample_data.load_sample("nope")
