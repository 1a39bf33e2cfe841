"""MSCB: EMCAD: Efficient Multi-scale Convolutional Attention Decoding for Medical Image Segmentation. CVPR 2024. https://arxiv.org/abs/2405.06880

The multi-scale convolution block: a 1x1 conv-BN-ReLU6 expansion, parallel depth-wise k x k
conv-BN-ReLU6 for each kernel size (summed, or concatenated with add=False; dw_parallel=False feeds
each branch the running sum), a channel shuffle, a 1x1 conv-BN projection, and a residual (through a
1x1 conv when the widths differ) at stride 1. Output width c2 (channel rule "arg0").
Compared with the authors' code (SLDGroup/EMCAD lib/decoders.py MSCB): max abs diff 0 on (2, 16, 16, 16)
for c2 = 16 and c2 = 24."""
import math

import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    return x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(batch, channels, height, width)


@register("backbone", channels="arg0", example={"args": [16], "shape": (2, 16, 16, 16)})
class MSCB(nn.Module):
    def __init__(self, c1: int, c2: int, stride: int = 1, kernel_sizes=(1, 3, 5), expansion_factor: float = 2.0,
                 dw_parallel: bool = True, add: bool = True, act="relu6"):
        """c1, c2: input and output channels; stride: 1 or 2 (the depth-wise convs); kernel_sizes: the
        parallel depth-wise kernels; expansion_factor: expanded width / c1; dw_parallel: False chains the
        branches (each adds the previous output to its input); add: sum the branches (else concatenate);
        act: activation of the expansion and depth-wise convs."""
        super().__init__()
        if stride not in (1, 2):
            raise ArgumentError(f"MSCB stride must be 1 or 2, got {stride}")
        expanded = int(c1 * expansion_factor)
        self.dw_parallel, self.add = dw_parallel, add
        self.pconv1 = Conv(c1, expanded, 1, act=act)
        self.msdc = nn.ModuleList(Conv(expanded, expanded, k, stride, g=expanded, act=act) for k in kernel_sizes)
        combined = expanded if add else expanded * len(kernel_sizes)
        self.shuffle_groups = math.gcd(combined, c2)
        self.pconv2 = Conv(combined, c2, 1, act=None)
        self.skip = stride == 1
        self.shortcut = nn.Conv2d(c1, c2, 1, bias=False) if self.skip and c1 != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pconv1(x)
        outputs = []
        for branch in self.msdc:
            outputs.append(branch(y))
            if not self.dw_parallel:
                y = y + outputs[-1]
        y = sum(outputs) if self.add else torch.cat(outputs, 1)
        y = self.pconv2(channel_shuffle(y, self.shuffle_groups))
        return self.shortcut(x) + y if self.skip else y
