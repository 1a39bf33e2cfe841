"""DRFD: Robust Feature Downsampling Module for Remote-Sensing Visual Tasks. IEEE TGRS 2023. https://doi.org/10.1109/TGRS.2023.3282048

Deep robust feature downsampling: three 2x paths, each normalised, are concatenated and fused by a
1x1 conv: CutD (space-to-depth + 1x1 conv), ConvD (strided depth-wise conv + GELU) and MaxD (max pool)."""
import torch
from torch import nn

from blocks.registry import register
from core.errors import ConfigError


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class DRFD(nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        if c2 % c1:
            raise ConfigError(f"DRFD needs output channels divisible by input channels, got {c1} -> {c2}",
                              hint="its first conv is grouped per input channel; use e.g. c2 = 2 * c1")
        self.cut = nn.Conv2d(4 * c1, c2, 1)
        self.cut_bn = nn.BatchNorm2d(c2)
        self.expand = nn.Conv2d(c1, c2, 3, 1, 1, groups=c1)
        self.conv_down = nn.Conv2d(c2, c2, 3, 2, 1, groups=c2)
        self.conv_act = nn.GELU()
        self.conv_bn = nn.BatchNorm2d(c2)
        self.max_down = nn.MaxPool2d(2, 2)
        self.max_bn = nn.BatchNorm2d(c2)
        self.fusion = nn.Conv2d(3 * c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cut = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        cut = self.cut_bn(self.cut(cut))
        y = self.expand(x)
        conv = self.conv_bn(self.conv_act(self.conv_down(y)))   # GELU before BN, as in the paper's code
        pool = self.max_bn(self.max_down(y))
        return self.fusion(torch.cat((cut, conv, pool), dim=1))
