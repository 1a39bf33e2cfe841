"""AdvPoolFusion: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's pooled concatenation for the high-stage injection points: the first input is
average-pooled to the second's size and the two are concatenated. Output: the sum of the input
channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
[(2, 8, 16, 16), (2, 16, 8, 8)]."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register


@register("neck", channels="sum", c_in=False, inputs=(2,), example={"args": [], "shapes": [(2, 8, 16, 16), (2, 16, 8, 8)]})
class AdvPoolFusion(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        first, second = xs
        return torch.cat((F.adaptive_avg_pool2d(first, second.shape[-2:]), second), 1)
