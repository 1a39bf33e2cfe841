"""GatedCNNBlock: MambaOut: Do We Really Need Mamba for Vision? CVPR 2025. https://arxiv.org/abs/2405.07992

Mamba's gated block without the SSM: LayerNorm, one linear to a gate, an identity part and a
depth-wise 7x7 conv part, GELU(gate) * [identity, conv], linear back, residual. Keeps channels."""
import torch
from torch import nn

from blocks.registry import register


@register("mamba", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class GatedCNNBlock(nn.Module):
    def __init__(self, c: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7, conv_ratio: float = 1.0):
        super().__init__()
        hidden = int(expansion_ratio * c)
        conv_channels = int(conv_ratio * c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1 = nn.Linear(c, 2 * hidden)
        self.act = nn.GELU()
        self.split = (hidden, hidden - conv_channels, conv_channels)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size, padding=kernel_size // 2, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        gate, identity, conv = self.fc1(self.norm(x.permute(0, 2, 3, 1))).split(self.split, -1)
        conv = self.conv(conv.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.fc2(self.act(gate) * torch.cat((identity, conv), -1))
        return shortcut + out.permute(0, 3, 1, 2)
