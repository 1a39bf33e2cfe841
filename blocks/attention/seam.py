"""SEAM: YOLO-FaceV2: A Scale and Occlusion Aware Face Detector (Separated and Enhancement Attention Module). Pattern Recognit. 2024. https://arxiv.org/abs/2208.02019

n depth-wise separable residual units, global average pool, bottleneck MLP + sigmoid, then exp: each
channel is scaled by a weight in [1, e] to emphasise occluded regions' responses; keeps channels."""
import torch
from torch import nn

from blocks.attention._seam import DepthwiseSeparableUnit, ExpChannelHead
from blocks.registry import register


@register("attention", channels="same", example={"args": [1, 16], "shape": (2, 32, 16, 16)})
class SEAM(nn.Module):
    def __init__(self, c: int, n: int = 1, reduction: int = 16):
        super().__init__()
        self.mixer = nn.Sequential(*(DepthwiseSeparableUnit(c) for _ in range(n)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = ExpChannelHead(c, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, self.pool(self.mixer(x)).flatten(1))
