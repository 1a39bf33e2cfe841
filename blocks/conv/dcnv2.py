"""DCNv2: Deformable ConvNets v2: More Deformable, Better Results. CVPR 2019. https://arxiv.org/abs/1811.11168

Modulated deformable conv: a zero-initialised conv predicts per-point offsets and sigmoid modulation
masks; torchvision's deform_conv2d (CPU and CUDA) samples and weighs. BN + activation follow, as a Conv."""
import math

import torch
from torch import nn

from blocks.common import activation, autopad, deform_conv2d
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class DCNv2(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, d: int = 1, act="silu",
                 deformable_groups: int = 1):
        super().__init__()
        self.stride, self.padding, self.dilation = s, autopad(k, None, d), d
        self.weight = nn.Parameter(torch.empty(c2, c1 // g, k, k))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_mask = nn.Conv2d(c1, 3 * deformable_groups * k * k, k, s, self.padding, d)
        nn.init.zeros_(self.offset_mask.weight)  # starts as a plain conv: zero offsets, masks 0.5
        nn.init.zeros_(self.offset_mask.bias)
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_y_x, mask = self.offset_mask(x).split([2 * self.offset_mask.out_channels // 3,
                                                      self.offset_mask.out_channels // 3], dim=1)
        y = deform_conv2d(x, offset_y_x, self.weight, None, self.stride, self.padding, self.dilation,
                          torch.sigmoid(mask))
        return self.act(self.norm(y))
