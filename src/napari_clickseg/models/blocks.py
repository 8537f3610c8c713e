"""Layers shared by several architectures."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ConvBNReLU(nn.Sequential):
    """Conv, BatchNorm, ReLU (or LeakyReLU)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        leaky: bool = False,
        groups: int = 1,
    ) -> None:
        pad = dilation * (kernel // 2)
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.1, inplace=True) if leaky else nn.ReLU(inplace=True),
        )


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling head: pooled context at several bin sizes, concatenated."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        mid = max(cin // len(bins), 16)
        self.bins = bins
        self.stages = nn.ModuleList(ConvBNReLU(cin, mid, 1) for _ in bins)
        self.project = ConvBNReLU(cin + mid * len(bins), cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = [
            F.interpolate(stage(F.adaptive_avg_pool2d(x, b)), (h, w), mode="bilinear", align_corners=False)
            for b, stage in zip(self.bins, self.stages)
        ]
        return self.project(torch.cat([x, *pooled], 1))


class ASPP(nn.Module):
    """DeepLabv3 atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(cin, cout, 1)] + [ConvBNReLU(cin, cout, 3, dilation=r) for r in rates]
        )
        self.pool = ConvBNReLU(cin, cout, 1)
        self.project = ConvBNReLU(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        g = self.pool(F.adaptive_avg_pool2d(x, 1))
        outs.append(g.expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, 1))


class SEResBlock(nn.Module):
    """Basic ResNet block with squeeze-and-excitation (multi-stage fusion branch)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(cout, max(cout // reduction, 4), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(cout // reduction, 4), cout, 1),
            nn.Sigmoid(),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return F.relu(self.skip(x) + y * self.se(y))


def _window_counts(n: int, r: int, device: torch.device) -> Tensor:
    """Pixels of a (2r+1) window that fall inside a length-``n`` axis, per position."""
    i = torch.arange(n, device=device)
    return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).float()


def box_filter(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window, clipped at the borders (the mean of the pixels inside).

    Differences of running sums along each axis (computed in float32): the cost does not
    grow with ``r``, about 10x faster than a 7x7 ``avg_pool2d`` on the CPU.
    """
    k = 2 * r + 1
    h, w = x.shape[-2:]
    c = F.pad(x.float(), (r + 1, r, r + 1, r)).cumsum(-2)
    c = (c[..., k:, :] - c[..., :-k, :]).cumsum(-1)
    c = c[..., k:] - c[..., :-k]
    counts = _window_counts(h, r, x.device)[:, None] * _window_counts(w, r, x.device)[None, :]
    return (c / counts).to(x.dtype)


class GuidedFilter(nn.Module):
    """Differentiable guided filter (He et al.) on a gray guide; the "99%" output layer.

    Filters the input (logit-like map) with the image as guide so edges of the
    output follow image edges at full resolution. ``radius`` and ``eps`` are fixed;
    the guide is a learned 1x1 projection of the image.
    """

    def __init__(self, image_channels: int = 3, radius: int = 2, eps: float = 1e-2) -> None:
        super().__init__()
        self.radius = radius
        self.eps = eps
        self.guide = nn.Sequential(nn.Conv2d(image_channels, 8, 1), nn.ReLU(inplace=True), nn.Conv2d(8, 1, 1))

    def forward(self, p: Tensor, image: Tensor) -> Tensor:
        i = self.guide(image)
        r = self.radius
        mean_i, mean_p, mean_ip, mean_ii = box_filter(torch.cat([i, p, i * p, i * i], 1), r).split(1, 1)
        a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + self.eps)
        b = mean_p - a * mean_i
        mean_a, mean_b = box_filter(torch.cat([a, b], 1), r).split(1, 1)
        return mean_a * i + mean_b


class UNetDecoder(nn.Module):
    """Top-down decoder: upsample, concatenate the skip, two 3x3 convs, level by level.

    Args:
        skip_channels: channels of the skips from shallow to deep, excluding the deepest.
        in_channels: channels of the deepest input.
        widths: output channels of each decoder stage, deep to shallow (one per skip).
    """

    def __init__(self, skip_channels: tuple[int, ...], in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        if len(widths) != len(skip_channels):
            raise ValueError("one decoder width per skip is needed")
        stages = []
        cin = in_channels
        for skip, w in zip(reversed(skip_channels), widths):
            stages.append(nn.Sequential(ConvBNReLU(cin + skip, w, 3), ConvBNReLU(w, w, 3)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin

    def forward(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        for stage, skip in zip(self.stages, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], 1))
        return x


class ConvStream(nn.Module):
    """Small conv net, a stride-2 conv and a 3x3 conv per level; returns every level's features.

    The interaction streams of ``two_stream`` (FCTSFN) and ``hires`` ("99%", LeakyReLU).
    """

    def __init__(self, cin: int, widths: tuple[int, ...], leaky: bool = False) -> None:
        super().__init__()
        stages = []
        for w in widths:
            stages.append(
                nn.Sequential(
                    ConvBNReLU(cin, w, 3, stride=2, leaky=leaky), ConvBNReLU(w, w, 3, leaky=leaky)
                )
            )
            cin = w
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
