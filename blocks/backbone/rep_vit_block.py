"""RepViTBlock: RepViT: Revisiting Mobile CNN From ViT Perspective. CVPR 2024. https://arxiv.org/abs/2307.09283

Token mixer: re-parameterisable depth-wise 3x3 (3x3 + 1x1 + identity, then BN) with optional
squeeze-excite; channel mixer: residual 1x1 FFN. `fuse()` merges the mixer into one 3x3 conv."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import fuse_conv_bn
from blocks.conv.conv import Conv
from blocks.registry import register


def _make_divisible(v: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


class RepVGGDW(nn.Module):
    """BN(dw3x3-BN(x) + dw1x1(x) + x); fuse() turns it into a single depth-wise 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = Conv(c, c, 3, g=c, act=None)
        self.conv1 = nn.Conv2d(c, c, 1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.fused = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def fuse(self):
        self.conv.fuse()
        conv3 = self.conv.conv
        identity = torch.zeros_like(conv3.weight)
        identity[:, 0, 1, 1] = 1.0
        merged = nn.Conv2d(conv3.in_channels, conv3.out_channels, 3, 1, 1, groups=conv3.groups, bias=True)
        merged.to(conv3.weight.device, conv3.weight.dtype)
        merged.weight.copy_(conv3.weight + F.pad(self.conv1.weight, [1, 1, 1, 1]) + identity)
        merged.bias.copy_(conv3.bias + self.conv1.bias)
        self.fused = fuse_conv_bn(merged, self.bn)
        del self.conv, self.conv1, self.bn


class SqueezeExcite(nn.Module):
    """Channel gate from global average pooling (timm's SqueezeExcite, rd_ratio 0.25, divisor 8)."""

    def __init__(self, c: int, rd_ratio: float = 0.25):
        super().__init__()
        reduced = _make_divisible(c * rd_ratio, 8)
        self.reduce = nn.Conv2d(c, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


@register("backbone", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class RepViTBlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: int = 2, use_se: bool = True, use_hs: bool = True):
        super().__init__()
        hidden = mlp_ratio * c
        self.token_mixer = nn.Sequential(RepVGGDW(c), SqueezeExcite(c) if use_se else nn.Identity())
        self.channel_mixer = nn.Sequential(Conv(c, hidden, 1, act="gelu" if use_hs else "relu"),
                                           Conv(hidden, c, 1, act=None))
        nn.init.zeros_(self.channel_mixer[1].norm.weight)  # the FFN residual starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.channel_mixer(x)
