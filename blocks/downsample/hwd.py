"""HWD: Haar Wavelet Downsampling: A Simple but Effective Downsampling Module for Semantic Segmentation. Pattern Recognition 2023. https://doi.org/10.1016/j.patcog.2023.109819

One Haar level halves the resolution losslessly (C -> 4C sub-bands); a 1x1 conv + BN + ReLU then
learns which of the frequency bands to keep."""
import torch
from torch import nn

from blocks.conv._haar import haar_forward
from blocks.conv.conv import Conv
from blocks.registry import register


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class HWD(nn.Module):
    def __init__(self, c1: int, c2: int, act="relu"):
        super().__init__()
        self.conv = Conv(4 * c1, c2, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # band-major order (all LL, then LH, HL, HH) as the paper concatenates the sub-band maps
        return self.conv(haar_forward(x).transpose(1, 2).flatten(1, 2))
