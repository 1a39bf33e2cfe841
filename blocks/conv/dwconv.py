"""DWConv: depth-wise convolution + BN + activation. MobileNets, arXiv 2017. https://arxiv.org/abs/1704.04861

A Conv whose groups equal gcd(c1, c2), so each input channel is filtered on its own."""
import math

from blocks.conv.conv import Conv
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [16, 3, 1], "shape": (2, 16, 32, 32)})
class DWConv(Conv):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, d: int = 1, act="silu"):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)
