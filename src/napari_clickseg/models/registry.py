"""Model registry: architectures are found by name, never by import path."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ClickSegModel

_REGISTRY: dict[str, Callable[..., ClickSegModel]] = {}


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator registering a ``ClickSegModel`` subclass under ``name``."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        cls.arch_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _ensure_loaded() -> None:
    # importing the architecture modules registers them
    from . import early, fca, hires, multi_stage, two_stream  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> ClickSegModel:
    """Build a registered model with random weights.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or bad kwargs.
    """
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    try:
        with warnings.catch_warnings():  # a layer with no channels is reported below, clearly
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = _REGISTRY[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:  # unknown names; values torch refuses
        raise ValueError(f"bad arguments for model {name!r}: {e}") from None
    from torch import nn

    empty = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 0 in (m.in_channels, m.out_channels)]
    if empty:  # torch builds these and fails only at the first forward pass
        raise ValueError(f"bad arguments for model {name!r}: {kwargs} give layer {empty[0]} no channels")
    model.arch_kwargs = dict(kwargs)
    return model
