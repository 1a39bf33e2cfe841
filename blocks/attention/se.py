"""SE: Squeeze-and-Excitation Networks. CVPR 2018. https://arxiv.org/abs/1709.01507

Global average pool -> bottleneck MLP (ReLU) -> sigmoid, which rescales each channel; keeps channels."""
import torch
from torch import nn

from blocks.registry import register


@register("attention", channels="same", example={"args": [16], "shape": (2, 64, 16, 16)})
class SE(nn.Module):
    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, c // reduction)  # at least one unit for narrow layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))
