"""FCA-Net: interactive segmentation with first-click attention (Lin et al., CVPR 2020).

Kept from the paper:
- a DeepLabv3+ network: ASPP with rates 1 (1x1), 6, 12, 18 and image pooling
  at output stride 16, and a decoder that joins the stride-4 low-level features;
- the first-click attention module: low-level (stride-4) features plus a
  Gaussian of the first click (three times the radius of other clicks), six
  3x3 convolutions with stride 2 at the first and fourth, joined with the
  backbone features before the ASPP;
- an auxiliary output of the attention branch, trained with the first-click
  loss (``aux_logits``); the main output is trained with the click loss.
Scaled for CPU: the ResNet-101 backbone becomes EfficientNet-Lite0 (ImageNet
init, run dilated at stride 16 in its last stages, click channels start at zero
weight); ASPP is 96 channels wide, the attention branch 32-64.
The click maps are Gaussians (sigma 10) for positive and negative clicks
followed by the first-click channel. f-BRS modulates the features entering ASPP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .backbone import EfficientNetLite0
from .base import ClickSegModel, ModelInputs
from .blocks import ASPP, ConvBNReLU
from .registry import register_model


class FirstClickAttention(nn.Module):
    """Six 3x3 convs (stride 2 at the 1st and 4th) on low-level features + first-click map."""

    def __init__(self, cin: int, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        a, b = widths
        self.body = nn.Sequential(
            ConvBNReLU(cin + 1, a, 3, stride=2),
            ConvBNReLU(a, a, 3),
            ConvBNReLU(a, a, 3),
            ConvBNReLU(a, b, 3, stride=2),
            ConvBNReLU(b, b, 3),
            ConvBNReLU(b, b, 3),
        )
        self.out_channels = b

    def forward(self, low: Tensor, first_click: Tensor) -> Tensor:
        fc = F.interpolate(first_click, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([low, fc], 1))


@register_model("fca")
class FirstClickAttentionNet(ClickSegModel):
    """DeepLabv3+ with the FCA-Net first-click attention branch and its auxiliary output."""

    inputs = ModelInputs(encoding="gaussian", prev_mask=False, first_click=True)

    def __init__(self, aspp_width: int = 96, low_width: int = 32) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0(in_channels=3 + 2, output_stride=16)
        c = self.backbone.channels
        self.attention = FirstClickAttention(c[1])
        self.aux_head = nn.Conv2d(self.attention.out_channels, 1, 1)
        self.fbrs_channels = c[4] + self.attention.out_channels
        self.aspp = ASPP(self.fbrs_channels, aspp_width, rates=(6, 12, 18))
        self.low_proj = ConvBNReLU(c[1], low_width, 1)
        self.decoder = nn.Sequential(
            ConvBNReLU(aspp_width + low_width, aspp_width, 3),
            ConvBNReLU(aspp_width, aspp_width, 3),
            nn.Conv2d(aspp_width, 1, 1),
        )

    def encode(
        self, image: Tensor, image_feats: dict, click_maps: Tensor, prev_mask: Tensor
    ) -> dict[str, Tensor]:
        feats = self.backbone(torch.cat([image, click_maps[:, :2]], 1))
        att = self.attention(feats[1], click_maps[:, 2:3])
        att = F.interpolate(att, size=feats[4].shape[-2:], mode="bilinear", align_corners=False)
        return {"x": torch.cat([feats[4], att], 1), "low": feats[1]}

    def decode(self, enc: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        x = enc["x"]
        size = image.shape[-2:]
        low = enc["low"]
        y = F.interpolate(self.aspp(x), size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.decoder(torch.cat([y, self.low_proj(low)], 1))
        logits = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        att = x[:, self.backbone.channels[4]:]
        aux = F.interpolate(self.aux_head(att), size=size, mode="bilinear", align_corners=False)
        return {"logits": logits, "aux_logits": aux}
