"""LAWDS: Light Adaptive-Weight Downsampling, the DEIM plug-in project's own module. 2025. https://github.com/z1069614715/objectdetection_script/blob/master/cvpr2025-deim-project.md

A strided grouped 3x3 Conv makes four candidate maps; a softmax over four positions of a locally
averaged 1x1 Conv map weights them into one half-size map; a 1x1 Conv sets `c2` channels.

Compared with the authors' code (the plug-in's downsample/lawds.py): max abs diff 0 on (2, 32, 16, 16).

As in that code the four weighted positions of an output pixel (i, j) are (i, j), (i, j + W/2),
(i + H/2, j) and (i + H/2, j + W/2) of the full-size weight map (its einops pattern splits the map
into quadrants, not 2x2 cells); kept as written, since it defines the module."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("downsample", channels="arg0", example={"args": [64], "shape": (2, 32, 16, 16)})
class LAWDS(nn.Module):
    def __init__(self, c1: int, c2: int, group: int = 16):
        """c1: input channels. c2: output channels. group: channels per group of the strided conv
        (its groups = c1 // group must divide c1)."""
        super().__init__()
        groups = c1 // group
        if groups < 1 or c1 % groups:
            raise ChannelError(f"LAWDS groups its strided conv into c1 // group = {groups} groups, "
                               f"which must be at least 1 and divide c1 = {c1}",
                               hint="use a multiple of `group` channels or a smaller `group`")
        self.attention = nn.Sequential(nn.AvgPool2d(3, 1, 1), Conv(c1, c1, 1))
        self.ds_conv = Conv(c1, 4 * c1, 3, 2, g=groups)
        self.proj = Conv(c1, c2, 1) if c1 != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ArgumentError(f"LAWDS needs an even height and width, got {h} x {w}")
        weights = self.attention(x).reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 1, 3, 5, 2, 4)
        weights = weights.reshape(b, c, h // 2, w // 2, 4).softmax(-1)
        candidates = self.ds_conv(x).reshape(b, 4, c, h // 2, w // 2).permute(0, 2, 3, 4, 1)
        return self.proj((candidates * weights).sum(-1))
