"""WaveletUnPool: Wavelet Pooling for Convolutional Neural Networks. ICLR 2018. https://openreview.net/forum?id=rkhlb8lCZ

Parameter-free 2x upsampling by the inverse Haar transform: every four channels (LL, LH, HL, HH of
one map, as WaveletPool lays them out) become one map of twice the size, so channels shrink 4x."""
import torch
from torch import nn

from blocks.conv._haar import haar_inverse
from blocks.registry import register
from core.errors import ConfigError


@register("upsample", channels=lambda c_in, kwargs: c_in // 4, example={"shape": (2, 64, 8, 8)})
class WaveletUnPool(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        if c % 4:
            raise ConfigError(f"WaveletUnPool needs input channels divisible by 4, got {c}",
                              hint="feed it 4 sub-bands per output map, e.g. a WaveletPool output")
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return haar_inverse(x.reshape(b, c // 4, 4, h, w))
