"""ADown: YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information. ECCV 2024. https://arxiv.org/abs/2402.13616

2x downsampling: a 2x2 stride-1 average pool, then half the channels through a strided 3x3 Conv and
the other half through a 3x3 max pool and a 1x1 Conv; the halves are concatenated."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class ADown(nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        half = c2 // 2
        self.conv_path = Conv(c1 // 2, half, 3, 2, 1)
        self.pool_path = Conv(c1 - c1 // 2, c2 - half, 1, 1, 0)
        self.split = (c1 // 2, c1 - c1 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2, 1, 0)
        a, b = x.split(self.split, dim=1)
        return torch.cat((self.conv_path(a), self.pool_path(F.max_pool2d(b, 3, 2, 1))), dim=1)
