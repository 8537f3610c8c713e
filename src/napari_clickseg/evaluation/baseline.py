"""A classical baseline in the evaluation harness: scikit-image's random walker seeded by clicks.

``RandomWalkerPredictor`` has the engine's predictor interface
(``set_image``, ``predict(clicks, ...) -> float32 probability``, ``info``), so the
runner and the benchmark treat it as one more model, named ``random_walker``.

How clicks become seeds:

- every positive click seeds a disk of foreground (label 1), every negative
  click a disk of background (label 2), radius ``seed_radius`` pixels;
- the random walker runs on a **crop** around the clicks, never on the whole of
  a large image: the bounding box of the clicks, widened by half its size (at
  least ``min_margin`` px) and then to at least ``max_side`` x ``max_side`` pixels
  of full-resolution context where the image allows. A crop with more than
  ``max_side**2`` pixels is downscaled to that many before solving, and the
  probabilities are scaled back; outside the crop the probability is 0. This
  keeps one click near 0.5-1 s on one CPU core whatever the image size
  (the direct solver's time grows faster than linearly with pixels);
- every edge of the crop is a background seed (the object is assumed to lie
  inside the crop; with ``border_background=False`` only crop edges inside the
  image are, and the image border only while there is no other background seed).
  Edge seeds within three seed radii of a positive click are dropped. Without
  a background seed far away the solver is ill-conditioned on noisy images: one
  negative click next to the object can flood the whole image.

``beta`` (edge sensitivity; scikit-image divides it by 10x the image's standard
deviation) was chosen by a sweep on training images, 15 objects each of
dsb2018/train and COCO-MVal (seed 1), 5 robot clicks, AuC over clicks 1-5,
with the crop edges as background seeds:

=====  ==============  ===========
beta   dsb2018/train   COCO-MVal
=====  ==============  ===========
130    0.638           0.528
500    0.694           0.582
2000   0.705           0.601
8000   0.679           0.620
=====  ==============  ===========

2000 is used: above it the differences are within the noise of 30 objects, and
on noisy synthetic blobs (noise sigma 25 on a contrast of 160) IoU after
4 clicks drops from 0.76-0.95 at 2000 to 0.68-0.91 at 20000. (Without the
border seeds, higher betas looked better on this sweep but were unstable.)
GrabCut (the benchmark) was not looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..clicks import Click, as_clicks, validate_clicks
from ..engine.image import prepare_image

__all__ = ["DEFAULT_BETA", "RandomWalkerPredictor"]

DEFAULT_BETA = 2000.0


class RandomWalkerPredictor:
    """Random-walker segmentation from clicks, with the engine's predict interface.

    Args:
        beta: random-walker edge penalty (see scikit-image).
        seed_radius: radius of the seed disk drawn at each click, in full-resolution pixels.
        max_side: the random walker solves on at most ``max_side**2`` pixels.
        min_margin: minimum context around the clicks' bounding box, in pixels.
    """

    name = "random_walker"

    def __init__(
        self,
        beta: float = DEFAULT_BETA,
        seed_radius: float = 3.0,
        max_side: int = 256,
        min_margin: int = 32,
        border_background: bool = True,
    ) -> None:
        self.beta = float(beta)
        self.seed_radius = float(seed_radius)
        self.max_side = int(max_side)
        self.min_margin = int(min_margin)
        self.border_background = bool(border_background)
        self._image: np.ndarray | None = None

    @property
    def info(self) -> dict:
        """What produced the predictions (mirrors ``Predictor.info``)."""
        return {
            "arch": self.name,
            "weights_path": None,
            "weights_sha256": None,
            "device": "cpu",
            "dtype": "float64",
            "params": {
                "beta": self.beta,
                "seed_radius": self.seed_radius,
                "max_side": self.max_side,
                "min_margin": self.min_margin,
                "border_background": self.border_background,
                "mode": "bf (direct sparse solve)",
            },
        }

    def set_image(self, image: np.ndarray, channel_axis: int | None = None) -> None:
        """Prepare ``image`` (any dtype / channels) as the engine does."""
        self._image = prepare_image(image, channel_axis)

    def _crop(self, clicks: Sequence[Click]) -> tuple[int, int, int, int]:
        h, w = self._image.shape[:2]
        rows = [c.row for c in clicks]
        cols = [c.col for c in clicks]
        r0, r1, c0, c1 = min(rows), max(rows), min(cols), max(cols)
        mr = max(self.min_margin, 0.5 * (r1 - r0))
        mc = max(self.min_margin, 0.5 * (c1 - c0))
        r0, r1, c0, c1 = r0 - mr, r1 + mr + 1, c0 - mc, c1 + mc + 1

        def widen(a: float, b: float, size: int) -> tuple[int, int]:
            need = self.max_side - (b - a)
            if need > 0:
                a, b = a - need / 2, b + need / 2
            a, b = int(np.floor(a)), int(np.ceil(b))
            if a < 0:
                a, b = 0, b - a
            if b > size:
                a, b = a - (b - size), size
            return max(0, a), min(size, b)

        r0, r1 = widen(r0, r1, h)
        c0, c1 = widen(c0, c1, w)
        return r0, r1, c0, c1

    def predict(
        self,
        clicks: Sequence,
        brs: str = "off",
        structural_integrity: bool = False,
        graph_cut: bool = False,
        **_: object,
    ) -> np.ndarray:
        """Foreground probability (float32, H x W) from the clicks.

        ``brs`` is accepted for interface compatibility and ignored (it refines
        networks). ``structural_integrity`` and ``graph_cut`` apply the engine's
        post-processing (``engine.postprocess``) to the crop, as for the networks.
        """
        from skimage.segmentation import random_walker
        from skimage.transform import resize

        if self._image is None:
            raise ValueError("call set_image() before predict()")
        clicks = as_clicks(clicks)
        h, w = self._image.shape[:2]
        validate_clicks(clicks, (h, w))
        out = np.zeros((h, w), dtype=np.float32)
        if not any(c.positive for c in clicks):
            return out
        r0, r1, c0, c1 = self._crop(clicks)
        crop = self._image[r0:r1, c0:c1]
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / np.sqrt(ch * cw))
        if scale < 1.0:
            sh, sw = max(2, round(ch * scale)), max(2, round(cw * scale))
            crop = resize(crop, (sh, sw, 3), order=1, anti_aliasing=True, preserve_range=True)
        sh, sw = crop.shape[:2]
        fy, fx = sh / ch, sw / cw

        seeds = np.zeros((sh, sw), dtype=np.int32)
        yy, xx = np.mgrid[0:sh, 0:sw]
        rad = max(1.0, self.seed_radius * min(fy, fx))

        # background prior on crop edges inside the image
        edges = np.zeros((sh, sw), dtype=bool)
        border = self.border_background
        if r0 > 0 or border:
            edges[0, :] = True
        if r1 < h or border:
            edges[-1, :] = True
        if c0 > 0 or border:
            edges[:, 0] = True
        if c1 < w or border:
            edges[:, -1] = True
        if not edges.any() and not any(not c.positive for c in clicks):
            edges[[0, -1], :] = True
            edges[:, [0, -1]] = True
        seeds[edges] = 2
        disks = []
        for c in clicks:
            cy, cx = (c.row - r0 + 0.5) * fy - 0.5, (c.col - c0 + 0.5) * fx - 0.5
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            disk = d2 <= rad**2
            if not disk.any():
                disk[int(np.clip(round(cy), 0, sh - 1)), int(np.clip(round(cx), 0, sw - 1))] = True
            disks.append((disk, c.positive))
            if c.positive:  # no background edge seeds right next to a positive click
                seeds[edges & (d2 <= (3 * rad) ** 2)] = 0
        for disk, positive in disks:  # later clicks override earlier ones
            seeds[disk] = 1 if positive else 2
        if not (seeds == 2).any():
            return out  # nothing tells foreground from background
        import warnings

        if np.ptp(crop) == 0:
            # scikit-image scales beta by the data's spread: a flat crop gives NaN. A checkerboard
            # far below any real contrast leaves every edge weight ~1, i.e. plain diffusion from the seeds
            crop = crop + 1e-6 * ((np.indices(crop.shape[:2]).sum(0) % 2)[..., None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # probability-range warnings of the solver
            prob = random_walker(
                crop,
                seeds,
                beta=self.beta,
                mode="bf",
                channel_axis=-1,
                return_full_prob=True,
            )[0]
        prob = np.clip(prob, 0.0, 1.0).astype(np.float32)
        if scale < 1.0:
            prob = resize(prob, (ch, cw), order=1, preserve_range=True).astype(np.float32)
        if graph_cut or structural_integrity:
            from ..engine import postprocess

            local = [c.shifted(r0, c0) for c in clicks]
            if graph_cut:
                prob = postprocess.graph_cut(prob, self._image[r0:r1, c0:c1], local)
            if structural_integrity:
                prob = postprocess.structural_integrity(prob, local)
        out[r0:r1, c0:c1] = prob
        return out
