"""Early fusion: the papers' common baseline (iFCN, Xu et al. 2016; FCTSFN's EF variant).

The image and the click maps are concatenated at the input of one network.
Kept: single stream, Euclidean distance maps truncated at 255 as the click
encoding. Scaled: the VGG/FCN-8s backbone is replaced by EfficientNet-Lite0
(ImageNet-initialised, the click channels start at zero weight) with a light
U-Net decoder to stride 4 and bilinear upsampling to full resolution.
f-BRS modulates the deepest backbone features (stride 32, 320 channels).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .backbone import EfficientNetLite0
from .base import ClickSegModel, ModelInputs
from .blocks import UNetDecoder
from .registry import register_model


@register_model("early")
class EarlyFusion(ClickSegModel):
    """Image and click maps concatenated at the input of one EfficientNet-Lite0 U-Net."""

    inputs = ModelInputs(encoding="distance", prev_mask=False, first_click=False)

    def __init__(self, decoder_width: int = 48) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0(in_channels=3 + self.inputs.click_channels)
        c = self.backbone.channels
        d = decoder_width
        self.decoder = UNetDecoder(c[1:4], c[4], (2 * d, d, d))
        self.head = nn.Conv2d(d, 1, 1)
        self.fbrs_channels = c[4]

    def encode(self, image: Tensor, image_feats: dict, click_maps: Tensor, prev_mask: Tensor) -> dict:
        import torch

        feats = self.backbone(torch.cat([image, click_maps], 1))
        return {"x": feats[4], "s4": feats[1], "s8": feats[2], "s16": feats[3]}

    def decode(self, enc: dict, image: Tensor) -> dict:
        y = self.decoder(enc["x"], [enc["s4"], enc["s8"], enc["s16"]])
        logits = F.interpolate(self.head(y), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits}
