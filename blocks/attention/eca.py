"""ECA: ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks. CVPR 2020. https://arxiv.org/abs/1910.03151

Global average pool -> 1-D conv across neighbouring channels (kernel adapted to the width) -> sigmoid
channel weights; keeps channels."""
import math

import torch
from torch import nn

from blocks.registry import register


def eca_kernel_size(c: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's adaptive kernel: the odd number nearest above |(log2 C + b) / gamma|."""
    t = int(abs((math.log2(c) + b) / gamma))
    return t if t % 2 else t + 1


@register("attention", channels="same", example={"args": [], "shape": (2, 64, 16, 16)})
class ECA(nn.Module):
    def __init__(self, c: int, k_size: int | None = None, gamma: int = 2, b: int = 1):
        super().__init__()
        k = k_size or eca_kernel_size(c, gamma, b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.pool(x).flatten(1).unsqueeze(1))  # (B, 1, C): channels as a sequence
        return x * torch.sigmoid(y).transpose(1, 2).unsqueeze(-1)
