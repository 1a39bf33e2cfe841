"""EUCB: EMCAD: Efficient Multi-scale Convolutional Attention Decoding for Medical Image Segmentation. CVPR 2024. https://arxiv.org/abs/2405.06880

Efficient up-convolution block: 2x nearest upsampling, a depth-wise 3x3 conv + BN + ReLU, then a
1x1 conv to the output channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("upsample", channels="arg0", example={"args": [16], "shape": (2, 32, 8, 8)})
class EUCB(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, act="relu"):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dw = Conv(c1, c1, k, 1, g=c1, act=act)
        # the paper's channel shuffle runs with groups = channels, which leaves the order unchanged,
        # so it is left out
        self.pw = nn.Conv2d(c1, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(self.up(x)))
