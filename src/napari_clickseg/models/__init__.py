"""Fusion architectures for click-based interactive segmentation, registered by name.

>>> from napari_clickseg.models import list_models, create_model
>>> model = create_model("early")
"""

from .base import ClickSegModel, ModelInputs
from .registry import create_model, list_models, register_model

__all__ = ["ClickSegModel", "ModelInputs", "create_model", "list_models", "register_model"]
