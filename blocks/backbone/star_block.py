"""StarBlock: Rewrite the Stars. CVPR 2024. https://arxiv.org/abs/2403.19967

Depth-wise 7x7 conv, two 1x1 expansions multiplied element-wise (the 'star' operation, ReLU6 on
one branch), 1x1 projection and a second depth-wise 7x7 conv, with a residual; keeps channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("backbone", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class StarBlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: int = 3):
        super().__init__()
        hidden = mlp_ratio * c
        self.dwconv = Conv(c, c, 7, g=c, act=None, bias=True)
        self.f1 = nn.Conv2d(c, hidden, 1)
        self.f2 = nn.Conv2d(c, hidden, 1)
        self.g = Conv(hidden, c, 1, act=None, bias=True)
        self.dwconv2 = nn.Conv2d(c, c, 7, 1, 3, groups=c)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        y = self.act(self.f1(y)) * self.f2(y)
        return x + self.dwconv2(self.g(y))
