"""SPDConv: No More Strided Convolutions or Pooling: A New CNN Building Block for Low-Resolution Images and Small Objects. ECML PKDD 2022. https://arxiv.org/abs/2208.03641

Space-to-depth (each 2x2 cell's four pixels become four channels, nothing is dropped) followed by a
non-strided Conv."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class SPDConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, act="silu"):
        super().__init__()
        self.conv = Conv(4 * c1, c2, k, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the paper's sub-map order: (even row, even col), (odd, even), (even, odd), (odd, odd)
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        return self.conv(x)
