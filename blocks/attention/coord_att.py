"""CoordAtt: Coordinate Attention for Efficient Mobile Network Design. CVPR 2021. https://arxiv.org/abs/2103.02907

Pools along H and along W separately, mixes both strips with a shared 1x1 conv + BN + h-swish, and
gates the input with one sigmoid map per direction; keeps channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("attention", channels="same", example={"args": [], "shape": (2, 64, 16, 16)})
class CoordAtt(nn.Module):
    def __init__(self, c: int, reduction: int = 32):
        super().__init__()
        hidden = max(8, c // reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv = Conv(c, hidden, 1, act="hardswish", bias=True)
        self.conv_h = nn.Conv2d(hidden, c, 1)
        self.conv_w = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        strips = torch.cat([self.pool_h(x), self.pool_w(x).transpose(2, 3)], 2)  # (B, C, H + W, 1)
        y_h, y_w = self.conv(strips).split([h, w], 2)
        return x * torch.sigmoid(self.conv_h(y_h)) * torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))
