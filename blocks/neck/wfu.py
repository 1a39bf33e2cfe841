"""WFU: Efficient Face Super-Resolution via Wavelet-based Feature Enhancement Network. ACM MM 2024. https://arxiv.org/abs/2407.19768

WFEN's wavelet feature upgrade: a Haar split of the large map gives its approximation and details; the
details pass a residual-free two-conv block, the approximation is concatenated with the small map
(half size) and expanded by two 1x1 convs to three bands; the inverse Haar transform of
[processed details, the three new bands] is the fused large-size map; a 1x1 Conv sets `c2`.

Compared with the authors' code (the plug-in's featurefusion/wfu.py): max abs diff 5e-7 on
[(2, 16, 16, 16), (2, 8, 8, 8)]. As there, the processed details go to the approximation slot of the
inverse transform and the new bands to the detail slots."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv._haar import haar_forward, haar_inverse
from blocks.conv.conv import Conv
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 8, 8, 8)]})
class WFU(nn.Module):
    def __init__(self, c_in: list, c2: int):
        """c_in: [large map, small map (half the large map's size)] channels. c2: output channels."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"WFU fuses two inputs [large, small], got {len(c_in)}")
        big, small = c_in
        self.detail_block = nn.Sequential(nn.Conv2d(big, big, 3, padding=1), nn.ReLU(), nn.Conv2d(big, big, 3, padding=1))
        self.band_block = nn.Sequential(nn.Conv2d(big + small, big + small, 1), nn.ReLU(), nn.Conv2d(big + small, 3 * big, 1))
        self.proj = Conv(big, c2, 1) if big != c2 else nn.Identity()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        large, small = xs
        # the authors' Haar bands are ours halved (their filters are +-1/4, ours orthonormal +-1/2)
        ll, lh, hl, hh = (band / 2 for band in haar_forward(large).unbind(2))
        details = self.detail_block(lh + hl + hh)
        h, v, d = self.band_block(torch.cat((small, ll), 1)).chunk(3, 1)
        # their slot order is (approximation, horizontal = HL, vertical = LH, diagonal = HH)
        return self.proj(haar_inverse(torch.stack((details, v, h, d), 2) * 2))
