"""ConvolutionalGLU: TransNeXt: Robust Foveal Visual Perception for Vision Transformers. CVPR 2024. https://arxiv.org/abs/2311.17132

A GLU whose gate branch passes a 3x3 depth-wise conv + GELU (channel attention from the nearest
neighbours); hidden width is 2/3 of `hidden_features` so the cost matches a plain MLP; keeps channels.
Linear layers are 1x1 convs on (B, C, H, W) maps."""
import torch
from torch import nn

from blocks.common import activation
from blocks.registry import register


@register("mlp", channels="same", example={"args": [64], "shape": (2, 32, 16, 16)})
class ConvolutionalGLU(nn.Module):
    def __init__(self, c: int, hidden_features: int | None = None, act="gelu"):
        super().__init__()
        hidden = int(2 * (hidden_features or c) / 3)
        self.fc1 = nn.Conv2d(c, hidden * 2, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = activation(act)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, value = self.fc1(x).chunk(2, 1)
        return self.fc2(self.act(self.dwconv(x)) * value)
