"""APBottleneck: Pinwheel-shaped Convolution and Scale-based Dynamic Loss for Infrared Small Target Detection. AAAI 2025. https://arxiv.org/abs/2412.16986

The YOLO bottleneck with its first 3x3 conv made pinwheel-shaped by asymmetric padding: one shared
conv runs over four copies of the input, each zero-padded on a different pair of sides (left-top,
right-bottom, right-top, left-bottom), the four quarter-width maps are concatenated and a 3x3 conv
mixes them; residual when c1 == c2. Output width c2 (channel rule "arg0").
Compared with the authors' code (JN-Yang/PConv-SDloss-Data model/APConv.py APBottleneck):
max abs diff 0 on (2, 32, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register

# (left, right, top, bottom) zero padding of the four pinwheel arms for a 3x3 kernel
_ARMS = ((2, 0, 2, 0), (0, 2, 0, 2), (0, 2, 2, 0), (2, 0, 0, 2))


@register("backbone", channels="arg0", example={"args": [32], "shape": (2, 32, 16, 16)})
class APBottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 1.0):
        """c1, c2: input and output channels; shortcut: residual when c1 == c2; g: groups of the mixing
        3x3 conv; e: hidden width as a fraction of c2 (1.0 inside the paper's APC2f; must give a
        multiple of 4, one quarter per pinwheel arm)."""
        super().__init__()
        hidden = int(c2 * e)
        if hidden % 4 or hidden == 0:
            raise ChannelError(f"APBottleneck needs a hidden width divisible by 4 (one quarter per arm), "
                               f"got int({c2} * {e}) = {hidden}", hint="choose c2 and e so that c2 * e is a multiple of 4")
        if hidden % g:
            raise ChannelError(f"APBottleneck: hidden width {hidden} is not divisible by groups g={g}")
        self.arm = Conv(c1, hidden // 4, 3, 1, p=0)  # shared by the four asymmetrically padded copies
        self.mix = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(torch.cat([self.arm(F.pad(x, pad)) for pad in _ARMS], 1))
        return x + y if self.add else y
