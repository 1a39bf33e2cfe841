"""SRFD: Robust Feature Downsampling Module for Remote-Sensing Visual Tasks. IEEE TGRS 2023. https://doi.org/10.1109/TGRS.2023.3282048

Shallow robust feature downsampling, the paper's stem (stride 4): a 7x7 conv to c2 / 4 channels,
then two 2x steps; the first concatenates a strided depth-wise conv path with a space-to-depth
(CutD) path, the second adds a max-pool path; each step ends in a 1x1 fusion conv. Output: `c2`.

Compared with the authors' code (the plug-in's stem/SRFD.py, the paper's SRFD): max abs diff 0
on (2, 3, 32, 32)."""
import torch
from torch import nn

from blocks.registry import ChannelError, register


class _CutDown(nn.Module):
    """Space-to-depth (the four pixels of every 2x2 cell stacked on the channels), 1x1 conv, BN."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.Conv2d(4 * c1, c2, 1)
        self.norm = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)
        return self.norm(self.conv(cells))


@register("backbone", channels="arg0", example={"args": [16], "shape": (2, 3, 32, 32)})
class SRFD(nn.Module):
    def __init__(self, c1: int = 3, c2: int = 96):
        """c1: image channels. c2: output channels (divisible by 4)."""
        super().__init__()
        if c2 % 4:
            raise ChannelError(f"SRFD works at c2 / 4 and c2 / 2 channels and needs c2 divisible by 4, got {c2}")
        quarter, half = c2 // 4, c2 // 2
        self.conv_init = nn.Conv2d(c1, quarter, 7, 1, 3)
        # first 2x step: strided depth-wise conv path + CutD path, fused to c2 / 2
        self.expand1 = nn.Conv2d(quarter, half, 3, 1, 1, groups=quarter)
        self.conv_down1 = nn.Conv2d(half, half, 3, 2, 1, groups=half)
        self.conv_norm1 = nn.BatchNorm2d(half)
        self.cut1 = _CutDown(quarter, half)
        self.fusion1 = nn.Conv2d(c2, half, 1)
        # second 2x step: strided depth-wise conv, CutD and max-pool paths, fused to c2
        self.expand2 = nn.Conv2d(half, c2, 3, 1, 1, groups=half)
        self.conv_down2 = nn.Conv2d(c2, c2, 3, 2, 1, groups=c2)
        self.conv_norm2 = nn.BatchNorm2d(c2)
        self.max_down = nn.MaxPool2d(2, 2)
        self.max_norm = nn.BatchNorm2d(c2)
        self.cut2 = _CutDown(half, c2)
        self.fusion2 = nn.Conv2d(3 * c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_init(x)
        x = self.fusion1(torch.cat((self.conv_norm1(self.conv_down1(self.expand1(x))), self.cut1(x)), 1))
        y = self.expand2(x)
        paths = (self.conv_norm2(self.conv_down2(y)), self.cut2(x), self.max_norm(self.max_down(y)))
        return self.fusion2(torch.cat(paths, 1))
