"""PyramidPoolAgg: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's high-stage feature alignment (high-FAM): every input is average-pooled to the last
(coarsest) input's size divided by `stride` (rounded up), concatenated and mixed by a 1x1 Conv to
`c2` channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
[(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4)]."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [32, 2], "shapes": [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4)]})
class PyramidPoolAgg(nn.Module):
    def __init__(self, c_in: list, c2: int, stride: int = 2):
        """c_in: the inputs' channels, finest first. c2: output channels. stride: extra reduction
        below the last input's size (Gold-YOLO's 2: the P5 map pooled to stride 64)."""
        super().__init__()
        if not isinstance(c_in, (list, tuple)):
            raise ArgumentError("PyramidPoolAgg needs a list of inputs (`from` must be a list)")
        self.stride = stride
        self.conv = Conv(sum(c_in), c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        h, w = xs[-1].shape[-2:]
        size = ((h - 1) // self.stride + 1, (w - 1) // self.stride + 1)
        return self.conv(torch.cat([F.adaptive_avg_pool2d(x, size) for x in xs], 1))
