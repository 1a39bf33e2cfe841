"""LSKBlock: Large Selective Kernel Network for Remote Sensing Object Detection. ICCV 2023. https://arxiv.org/abs/2303.09030

LSKNet's selection unit: a 5x5 and a dilated 7x7 depth-wise conv give two receptive fields, a spatial
gate from their channel mean/max selects between them per pixel, and the result multiplies the input."""
import torch
from torch import nn

from blocks.registry import register


@register("attention", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class LSKBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv0 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.conv_spatial = nn.Conv2d(c, c, 7, padding=9, groups=c, dilation=3)  # receptive field 23
        self.conv1 = nn.Conv2d(c, c // 2, 1)
        self.conv2 = nn.Conv2d(c, c // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.conv0(x)
        large = self.conv_spatial(small)
        small, large = self.conv1(small), self.conv2(large)
        both = torch.cat([small, large], 1)
        pooled = torch.cat([both.mean(1, keepdim=True), both.amax(1, keepdim=True)], 1)
        select = self.conv_squeeze(pooled).sigmoid()
        return x * self.conv(small * select[:, :1] + large * select[:, 1:])
