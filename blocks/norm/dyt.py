"""DyT: Transformers without Normalization (Dynamic Tanh). CVPR 2025. https://arxiv.org/abs/2503.10622

A drop-in replacement for a norm layer: weight * tanh(alpha * x) + bias, with one learnable scalar
alpha (init 0.5) and per-channel affine; channels at dim 1 of a (B, C, H, W) map unless
channels_last, and always last for (B, N, C) tokens."""
import torch
from torch import nn

from blocks.registry import register


@register("norm", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class DyT(nn.Module):
    def __init__(self, c: int, alpha_init: float = 0.5, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.alpha * x)
        if self.channels_last or x.dim() < 4:
            return x * self.weight + self.bias
        return x * self.weight[:, None, None] + self.bias[:, None, None]
