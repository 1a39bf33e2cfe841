"""GhostConv: GhostNet: More Features from Cheap Operations. CVPR 2020. https://arxiv.org/abs/1911.11907

The Ghost module: a primary Conv makes c2/ratio intrinsic maps, a cheap depth-wise Conv makes the
remaining "ghost" maps from them, and both are concatenated (trimmed to c2)."""
import math

import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 1, 2], "shape": (2, 16, 16, 16)})
class GhostConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, ratio: int = 2, dw_k: int = 3, act="relu"):
        super().__init__()
        self.c2 = c2
        intrinsic = math.ceil(c2 / ratio)
        self.primary = Conv(c1, intrinsic, k, s, act=act)
        self.cheap = Conv(intrinsic, intrinsic * (ratio - 1), dw_k, 1, g=intrinsic, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat((y, self.cheap(y)), dim=1)[:, :self.c2]
