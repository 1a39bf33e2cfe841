"""Conv: convolution, batch norm, activation. Standard building unit (Ultralytics/RT-DETR ConvNormLayer).

The conv has no bias while BN follows; `fuse()` folds BN into the conv for deployment."""
import torch
from torch import nn

from blocks.common import act_in_place, activation, autopad, fuse_conv_bn
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 32, 32)})
class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act="silu", bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), dilation=d, groups=g, bias=bias)
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def fuse(self):
        act_in_place(self.act)
        if isinstance(self.norm, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.norm)
            self.norm = nn.Identity()
