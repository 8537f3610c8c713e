"""FCTSFN: fully convolutional two-stream fusion network (Hu et al., Neural Networks 2019).

Kept from the paper:
- two streams: an image stream that sees only the image and an interaction
  stream that sees only the click maps (Euclidean distance, truncated at 255);
- late fusion: a fusion net joins both streams at the deepest level and
  predicts a coarse score map;
- the multi-scale refining net (MSRN): at every scale a 1x1 bottleneck fuses
  the two streams, the results are upsampled to full resolution and summed,
  joined with the upsampled coarse score, and refined at full resolution by
  7x7, 5x5, 3x3, 3x3, 3x3 and 1x1 convolutions.
Differs from the paper:
- the streams run to stride 32 and are fused there by two convolutions; the
  paper's streams stop at stride 16 (VGG's first 10 convolutions) and a
  6-layer fusion net (conv5_1-3, fc6-8) follows, in a stride-8 final network;
- the MSRN's output is added to the upsampled coarse score (a residual), where
  the paper's last refining layer is the output;
- the MSRN's finest fused scale is stride 2 (both streams' first level is
  strided); the paper's also fuses the full-resolution conv1_2 features;
- both nets train together end to end with one loss on the final output
  (``coarse_logits`` is returned but gets no loss of its own), without the
  paper's two stages (the two-stream net first, then the MSRN from scratch on
  the frozen streams, class-balanced) and without its 0.5 dropout after each
  refining layer.
Scaled for CPU: the VGG-16 image stream becomes EfficientNet-Lite0 (ImageNet
init); the interaction stream is a five-level conv net of 16-64 channels; the
full-resolution refining layers are 8 channels wide.

Because the image stream never sees the clicks, its features are computed once
per image (``caches_image_features``): later clicks re-run only the small
interaction stream, the fusion net and the MSRN. f-BRS modulates the fusion
net's output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .backbone import EfficientNetLite0
from .base import ClickSegModel, ModelInputs, upsample_like
from .blocks import ConvBNReLU, ConvStream
from .registry import register_model


@register_model("two_stream")
class TwoStreamFusion(ClickSegModel):
    """FCTSFN two-stream late fusion with the multi-scale refining net."""

    inputs = ModelInputs(encoding="distance", prev_mask=False, first_click=False)
    caches_image_features = True

    def __init__(self, fusion_width: int = 128, msrn_width: int = 8) -> None:
        super().__init__()
        self.image_stream = EfficientNetLite0(in_channels=3)
        self.interaction_stream = ConvStream(self.inputs.click_channels, (16, 24, 32, 48, 64))
        ci, cu = self.image_stream.channels, self.interaction_stream.channels
        self.fusion = nn.Sequential(
            ConvBNReLU(ci[-1] + cu[-1], fusion_width, 3),
            ConvBNReLU(fusion_width, fusion_width, 3),
        )
        self.coarse_score = nn.Conv2d(fusion_width, 1, 1)
        self.bottlenecks = nn.ModuleList(
            nn.Conv2d(a + b, msrn_width, 1) for a, b in zip(ci[:-1], cu[:-1])
        )
        self.deep_bottleneck = nn.Conv2d(fusion_width, msrn_width, 1)
        w = msrn_width
        self.refine = nn.Sequential(
            ConvBNReLU(w + 1, w, 7),
            ConvBNReLU(w, w, 5),
            ConvBNReLU(w, w, 3),
            ConvBNReLU(w, w, 3),
            ConvBNReLU(w, w, 3),
            nn.Conv2d(w, 1, 1),
        )
        self.fbrs_channels = fusion_width

    def encode_image(self, image: Tensor) -> dict[str, Tensor]:
        return {f"img{i}": f for i, f in enumerate(self.image_stream(image))}

    def encode(
        self, image: Tensor, image_feats: dict, click_maps: Tensor, prev_mask: Tensor
    ) -> dict[str, Tensor]:
        inter = self.interaction_stream(click_maps)
        img = [image_feats[f"img{i}"] for i in range(5)]
        x = self.fusion(torch.cat([img[4], upsample_like(inter[4], img[4])], 1))
        enc = {"x": x}
        for i in range(4):
            enc[f"f{i}"] = torch.cat([img[i], upsample_like(inter[i], img[i])], 1)
        return enc

    def decode(self, enc: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        x = enc["x"]
        size = image.shape[-2:]
        coarse = self.coarse_score(x)

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        fused = up(self.deep_bottleneck(x))
        for i, bottleneck in enumerate(self.bottlenecks):
            fused = fused + up(bottleneck(enc[f"f{i}"]))
        coarse_up = up(coarse)
        logits = coarse_up + self.refine(torch.cat([fused, coarse_up], 1))
        return {"logits": logits, "coarse_logits": coarse_up}
