"""The dilated, gated spatial step shared by DarkIR's EBlock and DBlock (NAFNet-style)."""
import torch
from torch import nn


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: the first half of the channels times the second half."""
    first, second = x.chunk(2, dim=1)
    return first * second


class DilatedGatedMixer(nn.Module):
    """Sum of depth-wise dilated 3x3 convs on `width` channels, SimpleGate, simplified channel attention
    (pool + 1x1 conv, multiplied in), then a 1x1 conv to `c_out` channels."""

    def __init__(self, width: int, c_out: int, dilations):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d, groups=width) for d in dilations)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width // 2, width // 2, 1))
        self.conv3 = nn.Conv2d(width // 2, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = simple_gate(sum(branch(x) for branch in self.branches))
        return self.conv3(self.sca(z) * z)
