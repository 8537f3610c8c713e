"""The "getting to 99%" network (Forte et al.): two streams, previous-mask feedback, guided filter.

Kept from the paper:
- an image stream that receives the image and the clicks;
- an interaction stream that receives the previous mask and the clicks (late
  feedback fusion): six convolutions with LeakyReLU, three of them strided;
- fusion of both streams before pyramid pooling;
- a U-Net decoder with skips from both streams up to full resolution;
- a guided-filter output layer, so the mask edges follow image edges;
- clicks as Gaussians at three scales (sigma 5, 10, 20).
Differs from the paper:
- BatchNorm throughout, not the paper's GroupNorm with weight standardisation
  (which it calls a crucial tweak);
- the image stream stays at stride 32 (the paper dilates it to stride 8), so
  the stride-8 interaction features are average-pooled to stride 32 before
  the fusion;
- the full-resolution decoder step joins the image and the previous mask (the
  paper: the image and the clicks);
- the interaction stream's strided convs are the 1st, 3rd and 5th (the paper:
  2nd, 4th and 5th; the same output strides);
- the output is a sigmoid of logits (the paper clips a 1x1 conv to [0, 1]);
- click-by-click training starts from the sampler's first click (central,
  jittered centre of mass or random), not always the object's centre.
The guided filter's eps is fixed at 1e-2; the shipped weights learned a guide of
low local variance (1e-4 to 2e-3), so the filter acts mostly as a 5x5 smoothing
(the output differs from a plain box blur on 0.1-2.3 % of foreground pixels).
Scaled for CPU: the ResNet-50 image stream becomes EfficientNet-Lite0 (ImageNet
init, click channels start at zero weight); decoder widths 96-16; the guided
filter has a fixed radius and a learned gray guide.
f-BRS modulates the fused features that enter the pyramid pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .backbone import EfficientNetLite0
from .base import ClickSegModel, ModelInputs, upsample_like
from .blocks import ConvBNReLU, ConvStream, GuidedFilter, PyramidPooling
from .registry import register_model


class DecoderStage(nn.Module):
    """Upsample, concatenate skips, two 3x3 convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(cin, cout, 3), ConvBNReLU(cout, cout, 3))

    def forward(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        x = upsample_like(x, skips[0])
        return self.convs(torch.cat([x, *skips], 1))


@register_model("hires")
class HighResFeedback(ClickSegModel):
    """Image stream + previous-mask interaction stream, U-Net to full resolution, guided filter."""

    inputs = ModelInputs(encoding="multiscale", prev_mask=True, first_click=False)

    def __init__(self, head_width: int = 128, widths: tuple[int, ...] = (96, 64, 48, 32, 16)) -> None:
        super().__init__()
        k = self.inputs.click_channels
        self.image_stream = EfficientNetLite0(in_channels=3 + k)
        # six 3x3 convs with LeakyReLU, strided 1st, 3rd and 5th
        self.interaction_stream = ConvStream(1 + k, (16, 32, 64), leaky=True)
        ci, cu = self.image_stream.channels, self.interaction_stream.channels
        self.fbrs_channels = ci[4] + cu[2]
        self.ppm = PyramidPooling(self.fbrs_channels, head_width)
        w16, w8, w4, w2, w1 = widths
        self.up16 = DecoderStage(head_width + ci[3], w16)
        self.up8 = DecoderStage(w16 + ci[2] + cu[2], w8)
        self.up4 = DecoderStage(w8 + ci[1] + cu[1], w4)
        self.up2 = DecoderStage(w4 + ci[0] + cu[0], w2)
        self.up1 = DecoderStage(w2 + 3 + 1, w1)
        self.head = nn.Conv2d(w1, 1, 1)
        self.guided_filter = GuidedFilter(3)

    def encode(
        self, image: Tensor, image_feats: dict, click_maps: Tensor, prev_mask: Tensor
    ) -> dict[str, Tensor]:
        img = self.image_stream(torch.cat([image, click_maps], 1))
        inter = self.interaction_stream(torch.cat([prev_mask, click_maps], 1))
        pooled = F.adaptive_avg_pool2d(inter[2], img[4].shape[-2:])
        enc = {"x": torch.cat([img[4], pooled], 1), "prev_mask": prev_mask}
        enc.update({f"img{i}": img[i] for i in range(4)})
        enc.update({f"int{i}": inter[i] for i in range(3)})
        return enc

    def decode(self, enc: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        y = self.ppm(enc["x"])
        y = self.up16(y, [enc["img3"]])
        y = self.up8(y, [enc["img2"], enc["int2"]])
        y = self.up4(y, [enc["img1"], enc["int1"]])
        y = self.up2(y, [enc["img0"], enc["int0"]])
        y = self.up1(y, [image, enc["prev_mask"]])
        coarse = self.head(y)
        return {"logits": self.guided_filter(coarse, image), "coarse_logits": coarse}
