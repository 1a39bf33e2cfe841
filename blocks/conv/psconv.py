"""PSConv: Pinwheel-shaped Convolution and Scale-based Dynamic Loss for Infrared Small Target Detection. AAAI 2025. https://arxiv.org/abs/2412.16986

Pinwheel-shaped conv: a shared 1xk and a shared kx1 Conv, each run on two asymmetrically padded
copies of the input (four arms pointing in four directions), concatenated and merged by a 2x2 Conv."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register
from core.errors import ConfigError


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class PSConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        if c2 % 4:
            raise ConfigError(f"PSConv needs output channels divisible by 4, got {c2}",
                              hint="its four pinwheel arms each produce c2 / 4 channels")
        # (left, right, top, bottom) padding of each arm; the extra row/column is eaten by the 2x2 merge
        self.pads = [nn.ZeroPad2d(p) for p in ((k, 0, 1, 0), (0, k, 0, 1), (0, 1, k, 0), (1, 0, 0, k))]
        self.horizontal = Conv(c1, c2 // 4, (1, k), s, p=0)
        self.vertical = Conv(c1, c2 // 4, (k, 1), s, p=0)
        self.merge = Conv(c2, c2, 2, 1, p=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arms = (self.horizontal(self.pads[0](x)), self.horizontal(self.pads[1](x)),
                self.vertical(self.pads[2](x)), self.vertical(self.pads[3](x)))
        return self.merge(torch.cat(arms, dim=1))
