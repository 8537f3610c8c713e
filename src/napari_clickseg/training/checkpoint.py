"""Training checkpoints: atomic writes, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values: model and optimizer
state dicts, the step, elapsed seconds, the torch RNG state, the best
validation score so far and the config dict. Files are written to a temporary
name and moved into place with ``os.replace``, so an interrupted write never
leaves a broken checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (tmp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: entries every checkpoint written by ``trainer.train`` holds
REQUIRED_KEYS = ("model", "arch_kwargs", "optimizer", "step", "elapsed", "rng")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); the file is only read, never changed.

    Raises:
        ValueError: missing, unreadable, corrupt or foreign file, with the path in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ValueError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception:  # torch's own message advises weights_only=False: never do that here
        state = None
    if not isinstance(state, dict) or not all(k in state for k in REQUIRED_KEYS):
        raise ValueError(f"corrupt or not a napari-clickseg checkpoint: {path} (left unchanged)")
    return state
