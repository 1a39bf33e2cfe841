"""MSAM: A Lightweight Semantic Segmentation Network Based on Self-Attention Mechanism and State Space Model for Efficient Urban Scene Segmentation. IEEE TGRS 2025. https://ieeexplore.ieee.org/abstract/document/10969832

Fuses four consecutive pyramid levels at the resolution of one of them (`level`; 2 is the code's
P4 module, 3 its P5 module): finer levels come down through stride-2 depth-wise separable Convs,
coarser ones up through nearest upsampling, each to `c2` channels. A CNN path concatenates them
(1x1 Conv, two residual bottlenecks); an attention path runs one shared channel attention on every
pair of levels (10 pairs) and mixes the ten results with a 1x1 conv; the paths are added.

Compared with the authors' code (the plug-in's featurefusion/MSAM.py, MSAM_P4 and MSAM_P5): max abs
diff 0 for both on [(2, 8, 32, 32), (2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]. Kept as that
code has it: its attention output (batch, rows, channels, columns) is reinterpreted as (batch,
channels, rows, columns) without a transpose, and the bottlenecks' 1x1 Convs are linear (the code
passes the ReLU class where an activation module is expected)."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


def _ds_conv(c1: int, c2: int, s: int = 1, d: int = 1) -> nn.Sequential:
    """Depth-wise separable conv (Ultralytics DSConv): depth-wise 3x3 Conv, then 1x1 Conv."""
    return nn.Sequential(Conv(c1, c1, 3, s, g=c1, d=d), Conv(c1, c2, 1))


class _Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.stage = nn.Sequential(Conv(c, c, 1, act=None), _ds_conv(c, c), Conv(c, c, 1, act=None))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.stage(x))


class _PairAttention(nn.Module):
    """Channel attention per row over the concatenation of two levels; half the channels out."""

    def __init__(self, c: int):
        super().__init__()
        self.dim = c // 2
        self.qkv = _ds_conv(2 * c, 3 * self.dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.qkv(torch.cat((x, y), 1)).reshape(b, 3, self.dim, h, w).permute(1, 0, 3, 2, 4)
        out = (q @ k.transpose(-2, -1)).softmax(-1) @ v                   # (B, H, C, W)
        return out.reshape(b, self.dim, h, w)                              # reinterpreted, as the code does


def _branch(c1: int, c2: int, steps: int) -> nn.Module:
    """Bring a level `steps` octaves finer (> 0) or coarser (< 0) than the target to it, at c2 channels."""
    if steps > 0:
        return nn.Sequential(*(_ds_conv(c1 if i == 0 else c2, c2, s=2) for i in range(steps)))
    if steps < 0:
        return nn.Sequential(nn.Upsample(scale_factor=2 ** -steps), Conv(c1, c2, 1))
    return Conv(c1, c2, 1)


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 8, 32, 32), (2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]})
class MSAM(nn.Module):
    def __init__(self, c_in: list, c2: int, level: int = 2):
        """c_in: channels of four consecutive levels, finest first (e.g. strides 4, 8, 16, 32).
        c2: output channels (even). level: index of the level whose resolution the output has."""
        super().__init__()
        if len(c_in) != 4:
            raise ArgumentError(f"MSAM fuses four consecutive pyramid levels, got {len(c_in)}")
        if c2 % 2:
            raise ChannelError(f"MSAM's attention path works at c2 / 2 channels and needs even c2, got {c2}")
        if not 0 <= level < 4:
            raise ArgumentError(f"MSAM's level indexes one of the four inputs (0-3), got {level}")
        self.branches = nn.ModuleList(_branch(c, c2, level - i) for i, c in enumerate(c_in))
        self.merge = Conv(4 * c2, c2, 1)
        self.bottlenecks = nn.Sequential(_Bottleneck(c2), _Bottleneck(c2))
        self.attention = _PairAttention(c2)
        self.mix = nn.Conv2d(c2 // 2 * 10, c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        finest, fine, coarse, coarsest = (branch(x) for branch, x in zip(self.branches, xs))
        merged = self.bottlenecks(self.merge(torch.cat((coarsest, finest, fine, coarse), 1)))
        levels = (coarsest, coarse, fine, finest)
        pairs = [self.attention(levels[i], levels[j]) for i in range(4) for j in range(i, 4)]
        return self.mix(torch.cat(pairs, 1)) + merged
