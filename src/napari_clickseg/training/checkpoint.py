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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        ValueError: missing or unreadable file, with the path in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot load checkpoint {path}: {e}") from None
