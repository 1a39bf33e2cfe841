"""WaveletPool: Wavelet Pooling for Convolutional Neural Networks. ICLR 2018. https://openreview.net/forum?id=rkhlb8lCZ

Parameter-free 2x downsampling by one Haar level: each channel becomes its four sub-bands
(LL, LH, HL, HH, kept next to each other), so channels grow 4x and nothing is discarded."""
import torch
from torch import nn

from blocks.conv._haar import haar_forward
from blocks.registry import register


@register("downsample", channels=lambda c_in, kwargs: 4 * c_in, example={"shape": (2, 16, 16, 16)})
class WaveletPool(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar_forward(x).flatten(1, 2)
