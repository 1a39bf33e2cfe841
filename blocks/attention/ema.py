"""EMA: Efficient Multi-Scale Attention Module with Cross-Spatial Learning. ICASSP 2023. https://arxiv.org/abs/2305.13563

Splits channels into groups; a 1x1 branch (coordinate-style H and W gates + GroupNorm) and a 3x3
branch weight each other through cross-spatial softmax attention; keeps channels."""
import torch
from torch import nn

from blocks.registry import ChannelError, register


@register("attention", channels="same", example={"args": [8], "shape": (2, 64, 16, 16)})
class EMA(nn.Module):
    def __init__(self, c: int, factor: int = 32):
        super().__init__()
        if c % factor:
            raise ChannelError(f"EMA needs channels divisible by factor={factor}, got {c}",
                               hint="choose a factor that divides the input channels")
        self.groups = factor
        cg = c // factor
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        strips = self.conv1x1(torch.cat([self.pool_h(g), self.pool_w(g).transpose(2, 3)], 2))
        gate_h, gate_w = strips.split([h, w], 2)
        branch1 = self.norm(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        branch3 = self.conv3x3(g)
        # each branch's pooled channel descriptor (softmax over channels) weights the other branch's pixels
        query1 = self.pool(branch1).flatten(1).softmax(-1).unsqueeze(1)  # (BG, 1, C/G)
        query3 = self.pool(branch3).flatten(1).softmax(-1).unsqueeze(1)
        weights = torch.matmul(query1, branch3.flatten(2)) + torch.matmul(query3, branch1.flatten(2))
        return (g * weights.reshape(b * self.groups, 1, h, w).sigmoid()).reshape(b, c, h, w)
