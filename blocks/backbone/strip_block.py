"""StripBlock: Strip R-CNN: Large Strip Convolution for Remote Sensing Object Detection. arXiv 2025. https://arxiv.org/abs/2501.03775

The StripNet backbone block: BN, then a strip-convolution attention (1x1 conv, GELU, a gate made of a
depth-wise 5x5 conv followed by depth-wise k1 x k2 and k2 x k1 strip convs and a 1x1 conv, multiplied
with its input, 1x1 conv, plus the normalised input), then BN and an MLP with a depth-wise 3x3 conv;
both branches carry a layer scale and a residual. Keeps channels. (The authors' own `StripBlock` class
is the gate alone; the plug-in name covers the whole block.)
Compared with the authors' code (HVision-NKU/Strip-R-CNN mmrotate/models/backbones/stripnet.py Block):
max abs diff 0 on (2, 32, 16, 16)."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


class StripGate(nn.Module):
    """x * conv1x1(strip_k2xk1(strip_k1xk2(dw5x5(x)))): the large strip-kernel gate (all depth-wise)."""

    def __init__(self, c: int, k1: int, k2: int):
        super().__init__()
        self.conv0 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.strip1 = nn.Conv2d(c, c, (k1, k2), padding=(k1 // 2, k2 // 2), groups=c)
        self.strip2 = nn.Conv2d(c, c, (k2, k1), padding=(k2 // 2, k1 // 2), groups=c)
        self.conv1 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.strip2(self.strip1(self.conv0(x))))


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class StripBlock(nn.Module):
    def __init__(self, c: int, mlp_ratio: float = 4.0, k1: int = 1, k2: int = 19, layer_scale_init: float = 1e-2):
        """c: channels; mlp_ratio: MLP width / c (StripNet stages use 8, 8, 4, 4); k1, k2: the strip
        kernel (1 x 19 and 19 x 1 in the paper); layer_scale_init: initial layer scales."""
        super().__init__()
        if k1 % 2 == 0 or k2 % 2 == 0:
            raise ArgumentError(f"StripBlock needs odd strip kernel sizes, got k1={k1}, k2={k2}")
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1))
        self.norm1 = nn.BatchNorm2d(c)
        self.norm2 = nn.BatchNorm2d(c)
        self.proj_1 = nn.Conv2d(c, c, 1)
        self.act = nn.GELU()
        self.gate = StripGate(c, k1, k2)
        self.proj_2 = nn.Conv2d(c, c, 1)
        hidden = int(c * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden),
                                 nn.GELU(), nn.Conv2d(hidden, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.layer_scale_1 * (self.proj_2(self.gate(self.act(self.proj_1(y)))) + y)
        return x + self.layer_scale_2 * self.mlp(self.norm2(x))
