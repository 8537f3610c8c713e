"""Training checkpoints: atomic writes, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values: model and optimizer
state dicts, the step, elapsed seconds, the torch RNG state, the best
validation score so far and the config dict. Files are written to a temporary
name and moved into place with ``os.replace``, so an interrupted write never
leaves a broken checkpoint (``files.replacing``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..files import replacing

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (``files.replacing``).

    Raises:
        OSError: it could not be written (the earlier checkpoint is kept, no partial file left).
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as e:  # torch's writer reports a full disk as "unexpected pos ..."
        raise OSError(f"cannot write checkpoint {path} (is the disk full?); the earlier one is kept: {e}") from None


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
