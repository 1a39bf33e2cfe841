"""CBAM: Convolutional Block Attention Module. ECCV 2018. https://arxiv.org/abs/1807.06521

A channel gate (shared MLP over the average- and max-pooled vectors, summed, sigmoid) followed by
a spatial gate (7x7 conv + BN over the channel-wise max and mean maps, sigmoid); keeps channels."""
import torch
from torch import nn

from blocks.attention._spatial_gate import SpatialGate
from blocks.registry import register


@register("attention", channels="same", example={"args": [16], "shape": (2, 64, 16, 16)})
class CBAM(nn.Module):
    def __init__(self, c: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, c // reduction)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, c))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(self.avg_pool(x).flatten(1)) + self.mlp(self.max_pool(x).flatten(1))
        x = x * torch.sigmoid(logits)[:, :, None, None]
        return self.spatial(x)
