"""GAM: Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions. arXiv 2021. https://arxiv.org/abs/2112.05561

Channel gate from a two-layer MLP applied per position (3-D permutation, no pooling), then a spatial
gate from two 7x7 conv + BN layers (reduction `rate`), both through a sigmoid; keeps channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("attention", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class GAM(nn.Module):
    def __init__(self, c: int, rate: int = 4):
        super().__init__()
        hidden = max(1, c // rate)
        self.channel_mlp = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, c))
        self.spatial = nn.Sequential(Conv(c, hidden, 7, act="relu", bias=True), Conv(hidden, c, 7, act=None, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_logits = self.channel_mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x * torch.sigmoid(channel_logits)
        return x * torch.sigmoid(self.spatial(x))
