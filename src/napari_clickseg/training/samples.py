"""Training samples: object crops with initial clicks, deterministic in (seed, sample index).

Sample ``g`` (a global counter over the whole run: step * world_size * batch
+ rank * batch + i) is drawn from a generator seeded with ``(seed, g)``, so a
resumed or distributed run sees exactly the samples an uninterrupted one
would, with no data-loader state to save.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..clicks import encode_clicks
from ..data.augment import AugmentConfig, object_crop
from ..data.folder import FolderDataset
from ..engine.image import standardize
from .sampling import ClickSamplingConfig, clicks_to_array, sample_clicks

__all__ = ["ClickSamples", "GlobalIndexSampler", "pick_object"]


def pick_object(
    datasets: Sequence[FolderDataset], rng: np.random.Generator, balance: str = "dataset"
) -> tuple[int, int]:
    """(dataset index, object index): each folder equally often, or each object equally often."""
    sizes = np.array([len(d) for d in datasets], dtype=float)
    p = np.full(len(datasets), 1.0 / len(datasets)) if balance == "dataset" else sizes / sizes.sum()
    d = int(rng.choice(len(datasets), p=p))
    return d, int(rng.integers(len(datasets[d])))


class ClickSamples(torch.utils.data.Dataset):
    """Map-style dataset over global sample indices (see module docstring)."""

    def __init__(
        self,
        datasets: Sequence[FolderDataset],
        aug: AugmentConfig,
        clicks: ClickSamplingConfig,
        encoding: str,
        first_click: bool,
        normalization: dict,
        seed: int,
        balance: str = "dataset",
    ) -> None:
        self.datasets = list(datasets)
        self.aug = aug
        self.clicks = clicks
        self.encoding = encoding
        self.first_click = first_click
        self.normalization = normalization
        self.seed = int(seed)
        self.balance = balance

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, g: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(g)])
        d, k = pick_object(self.datasets, rng, self.balance)
        ds = self.datasets[d]
        obj = ds.objects[k]
        view, mask, ignore = ds.object_masks(k)
        # other instances: Xu et al.'s negative clicks on neighbouring objects
        others = (ds.targets[obj.image] > 0) & ~mask if ds.kind == "labels" else None
        img, m, ign, oth, inside = object_crop(view, mask, ignore, obj.bbox, self.aug, rng, others=others)
        no_click = ign | ~inside  # ignored pixels and the crop's padding: the loss still sees the padding
        clicks = sample_clicks(m, no_click, rng, self.clicks, oth)
        maps = encode_clicks(clicks, m.shape, self.encoding, self.first_click)
        return {
            "image": standardize(img, self.normalization).astype(np.float32),
            "mask": m,
            "ignore": ign,
            "no_click": no_click,
            "click_maps": maps,
            "clicks": clicks_to_array(clicks, self.clicks.max_clicks),
        }


class GlobalIndexSampler(torch.utils.data.Sampler):
    """Yields the global sample indices of one rank from ``start_step`` on, forever."""

    def __init__(self, start_step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start_step, self.batch_size = int(start_step), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            step += 1

    def __len__(self) -> int:
        return 2**62
