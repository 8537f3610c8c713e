"""Multi-stage fusion (Majumder et al., "one click" interactive segmentation).

Kept from the paper:
- early fusion: the click guidance (Gaussian maps, sigma 10) enters with the
  image at the input of the backbone;
- a light SE-ResNet fusion branch (7x7 stride-2 init block, three SE-ResNet
  blocks, the last one downsampling) whose output is concatenated to the deep
  backbone features, re-injecting the guidance deep in the network, before a
  pyramid pooling head.
Differs from the paper: the branch sees the guidance maps alone, not the
image plus guidance (the paper's h x w x 4 input, Sec. 3.2); the image
reaches the network through the backbone only; its init block max-pools 3x3
(the paper 2x2) and its SE blocks reduce by 4 (the paper 16).
Scaled for CPU: the ResNet/DeepLab backbone becomes EfficientNet-Lite0
(ImageNet init, guidance channels start at zero weight); the branch is
16-64 channels wide and is pooled to the backbone's stride-32 grid; a light
decoder with the stride-4 and stride-8 skips restores detail.
f-BRS modulates the concatenated features that enter the pyramid pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .backbone import EfficientNetLite0
from .base import ClickSegModel, ModelInputs
from .blocks import ConvBNReLU, PyramidPooling, SEResBlock, UNetDecoder
from .registry import register_model


class SEFusionBranch(nn.Module):
    """7x7 stride-2 init block and three SE-ResNet blocks, the last downsampling."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        self.init = nn.Sequential(ConvBNReLU(cin, widths[0], 7, stride=2), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(
            SEResBlock(widths[0], widths[1]),
            SEResBlock(widths[1], widths[2]),
            SEResBlock(widths[2], widths[3], stride=2),
        )
        self.out_channels = widths[3]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.init(x))


@register_model("multi_stage")
class MultiStageFusion(ClickSegModel):
    """Early fusion plus an SE-ResNet guidance branch fused before pyramid pooling."""

    inputs = ModelInputs(encoding="gaussian", prev_mask=False, first_click=False)

    def __init__(self, head_width: int = 128, decoder_width: int = 48) -> None:
        super().__init__()
        k = self.inputs.click_channels
        self.backbone = EfficientNetLite0(in_channels=3 + k)
        self.branch = SEFusionBranch(k)
        c = self.backbone.channels
        self.fbrs_channels = c[4] + self.branch.out_channels
        self.ppm = PyramidPooling(self.fbrs_channels, head_width)
        d = decoder_width
        self.decoder = UNetDecoder((c[1], c[2]), head_width, (d, d))
        self.head = nn.Conv2d(d, 1, 1)

    def encode(
        self, image: Tensor, image_feats: dict, click_maps: Tensor, prev_mask: Tensor
    ) -> dict[str, Tensor]:
        feats = self.backbone(torch.cat([image, click_maps], 1))
        guide = F.adaptive_avg_pool2d(self.branch(click_maps), feats[4].shape[-2:])
        return {"x": torch.cat([feats[4], guide], 1), "s4": feats[1], "s8": feats[2]}

    def decode(self, enc: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        y = self.decoder(self.ppm(enc["x"]), [enc["s4"], enc["s8"]])
        logits = F.interpolate(self.head(y), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits}
