"""SimFusion_3in: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's three-level alignment for the injection points: [finer, target, coarser] brought to the
target's size (adaptive average pooling, bilinear upsampling), each to `c2` channels by a 1x1 Conv
+ ReLU where it differs, concatenated and fused by a 1x1 Conv + ReLU. Output: `c2` channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
[(2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [24], "shapes": [(2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]})
class SimFusion_3in(nn.Module):
    def __init__(self, c_in: list, c2: int):
        """c_in: [finer, target, coarser] channels. c2: output channels."""
        super().__init__()
        if len(c_in) != 3:
            raise ArgumentError(f"SimFusion_3in aligns three levels [finer, target, coarser], got {len(c_in)}")
        self.align = nn.ModuleList(Conv(c, c2, 1, act="relu") if c != c2 else nn.Identity() for c in c_in)
        self.fuse = Conv(3 * c2, c2, 1, act="relu")

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        size = xs[1].shape[-2:]
        finer = self.align[0](F.adaptive_avg_pool2d(xs[0], size))
        coarser = self.align[2](F.interpolate(xs[2], size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat((finer, self.align[1](xs[1]), coarser), 1))
