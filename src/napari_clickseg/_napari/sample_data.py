"""Sample images for the napari "Open Sample" menu, the demo and the tests (DSB2018, CC0).

``load_sample`` returns numpy arrays (image and ground-truth instance labels)
without importing napari; the npe2 sample commands wrap them as layer data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SAMPLES",
    "load_sample",
    "make_stack",
    "nuclei_fluorescence",
    "nuclei_he",
    "nuclei_stack",
]

SAMPLE_DIR = Path(__file__).resolve().parent / "samples"
SAMPLES = {
    "nuclei_fluorescence": "fluorescence nuclei, 256x256 gray (DSB2018)",
    "nuclei_he": "H&E histology nuclei, 256x320 RGB (DSB2018)",
    "nuclei_stack": "synthetic 3D stack of 5 shifted fluorescence slices (DSB2018)",
}


def make_stack(
    image: np.ndarray, labels: np.ndarray, depth: int = 5, shift: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A (depth, H, W) stack of copies of ``image`` shifted by ``shift`` px per slice (and labels)."""
    mid = depth // 2
    imgs = [
        np.roll(image, ((z - mid) * shift, (z - mid) * shift), axis=(0, 1)) for z in range(depth)
    ]
    labs = [
        np.roll(labels, ((z - mid) * shift, (z - mid) * shift), axis=(0, 1)) for z in range(depth)
    ]
    return np.stack(imgs), np.stack(labs)


def load_sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Image and ground-truth instance labels of a sample.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    import tifffile
    from PIL import Image

    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; valid: {', '.join(SAMPLES)}")
    base = "nuclei_fluorescence" if name == "nuclei_stack" else name
    with Image.open(SAMPLE_DIR / f"{base}.png") as im:
        image = np.asarray(im).copy()
    labels = tifffile.imread(SAMPLE_DIR / f"{base}_labels.tif")
    if name == "nuclei_stack":
        return make_stack(image, labels)
    return image, labels


def _layer(name: str, title: str, **kwargs: Any) -> list[tuple[Any, dict, str]]:
    image, _ = load_sample(name)
    return [(image, {"name": title, **kwargs}, "image")]


def nuclei_fluorescence() -> list[tuple[Any, dict, str]]:
    """npe2 sample: fluorescence nuclei."""
    return _layer("nuclei_fluorescence", "nuclei (fluorescence)", colormap="gray")


def nuclei_he() -> list[tuple[Any, dict, str]]:
    """npe2 sample: H&E nuclei (RGB)."""
    return _layer("nuclei_he", "nuclei (H&E)", rgb=True)


def nuclei_stack() -> list[tuple[Any, dict, str]]:
    """npe2 sample: synthetic 3D stack (z spacing 2, to show anisotropic scale)."""
    return _layer("nuclei_stack", "nuclei (3D stack)", colormap="gray", scale=(2.0, 1.0, 1.0))
