"""SimFusion_4in: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's low-stage feature alignment (low-FAM): four levels [P2, P3, P4, P5] brought to P4's size
(adaptive average pooling of the two finer ones, bilinear upsampling of P5) and concatenated.
Output: the sum of the input channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py, the Gold-YOLO Ultralytics
port): max abs diff 0 on [(2, 8, 32, 32), (2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


@register("neck", channels="sum", c_in=False,
          example={"args": [], "shapes": [(2, 8, 32, 32), (2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]})
class SimFusion_4in(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if len(xs) != 4:
            raise ArgumentError(f"SimFusion_4in aligns four levels [P2, P3, P4, P5], got {len(xs)}")
        size = xs[2].shape[-2:]
        return torch.cat((F.adaptive_avg_pool2d(xs[0], size), F.adaptive_avg_pool2d(xs[1], size), xs[2],
                          F.interpolate(xs[3], size=size, mode="bilinear", align_corners=False)), 1)
