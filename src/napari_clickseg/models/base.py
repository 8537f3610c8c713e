"""The contract every architecture fulfils, so the engine and trainer need no special cases.

A forward pass is split in three parts:

1. ``encode_image(image)``: features that depend on the image only. The engine
   caches them per image (late-fusion models put their whole image stream here;
   early-fusion models return ``{}``).
2. ``encode(image, image_feats, click_maps, prev_mask)``: everything up to the
   head. The returned dict holds ``"x"``, the inner feature map whose channels
   f-BRS rescales and shifts, and whatever else the head needs (skips).
3. ``decode(enc, image)``: the head; returns ``"logits"`` (B, 1, H, W) at the
   input resolution and optionally auxiliary outputs (``"aux_logits"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ..clicks import encoding_channels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs besides the RGB image.

    Attributes:
        encoding: click encoding name (see ``napari_clickseg.clicks.ENCODINGS``).
        prev_mask: the model takes the previous prediction (probability) as input.
        first_click: the click maps end with the FCA-Net first-click channel.
    """

    encoding: str = "distance"
    prev_mask: bool = False
    first_click: bool = False

    @property
    def click_channels(self) -> int:
        """Channels of the click maps the model expects."""
        return encoding_channels(self.encoding, self.first_click)


class ClickSegModel(nn.Module):
    """Base class of all registered architectures (see module docstring)."""

    arch_name: ClassVar[str] = ""
    inputs: ClassVar[ModelInputs] = ModelInputs()
    #: True when ``encode_image`` does real work that can be reused across clicks.
    caches_image_features: ClassVar[bool] = False
    #: Height and width of inputs must be multiples of this.
    size_divisor: ClassVar[int] = 32

    arch_kwargs: dict[str, Any]
    #: Channels of ``encode(...)["x"]`` (what f-BRS scales and shifts); set in ``__init__``.
    fbrs_channels: int

    def __init__(self) -> None:
        super().__init__()
        self.arch_kwargs = {}

    @property
    def normalization(self) -> dict[str, tuple[float, ...]]:
        """Per-channel mean and std applied to images scaled to [0, 1]."""
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}

    def encode_image(self, image: Tensor) -> dict[str, Tensor]:
        """Click-independent image features (cached by the engine)."""
        return {}

    def encode(
        self,
        image: Tensor,
        image_feats: dict[str, Tensor],
        click_maps: Tensor,
        prev_mask: Tensor,
    ) -> dict[str, Tensor]:
        """Features up to the head; must hold ``"x"`` (the f-BRS modulation point)."""
        raise NotImplementedError

    def decode(self, enc: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        """Head: ``{"logits": (B, 1, H, W), ...}`` at the resolution of ``image``."""
        raise NotImplementedError

    def forward(
        self,
        image: Tensor,
        click_maps: Tensor,
        prev_mask: Tensor | None = None,
        image_feats: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Full pass.

        Args:
            image: normalised image (B, 3, H, W), H and W multiples of ``size_divisor``.
            click_maps: (B, inputs.click_channels, H, W) maps in [0, 1].
            prev_mask: (B, 1, H, W) previous probability; zeros when None.
            image_feats: cached output of ``encode_image`` for this image.
        """
        if prev_mask is None:
            prev_mask = image.new_zeros((image.shape[0], 1, *image.shape[-2:]))
        if image_feats is None:
            image_feats = self.encode_image(image)
        return self.decode(self.encode(image, image_feats, click_maps, prev_mask), image)

    def imagenet_backbones(self) -> list[nn.Module]:
        """Backbones that can start from ImageNet weights (``load_imagenet``)."""
        return [m for m in self.modules() if hasattr(m, "load_imagenet") and m is not self]

    def load_imagenet(self) -> int:
        """Initialise every ImageNet-capable backbone; returns how many were loaded."""
        backbones = self.imagenet_backbones()
        for b in backbones:
            b.load_imagenet()
        return len(backbones)



def upsample_like(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref``."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)

