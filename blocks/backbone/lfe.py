"""LFE: Efficient Long-Range Attention Network for Image Super-resolution. ECCV 2022. https://arxiv.org/abs/2203.06697

ELAN's local feature extraction module: two shift convolutions with an activation between (the first
expands to exp_ratio x c2). A shift convolution moves four fifths of the channels by one pixel
(left, right, up, down; the last fifth stays) and mixes them with a 1x1 conv, so it sees a 3x3
neighbourhood at 1x1 cost. Output width c2 (channel rule "arg0"); ELAN adds the residual outside it.
The shifts are slices and zero padding, so the FLOP counter (rightly) counts only the 1x1 convs; the
authors' fast variant spends a fixed depth-wise 3x3 conv on them.
Compared with the authors' code (xindongzhang/ELAN models/elan_block.py LFE, 'fast-training-speed'
shift conv): max abs diff 0 on (2, 30, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation
from blocks.registry import register


def shift_channels(x: torch.Tensor, n_div: int = 5) -> torch.Tensor:
    """Shift channel groups of c // n_div by one pixel: left, right, up, down; the rest stay."""
    g = x.shape[1] // n_div
    left, right, up, down, rest = x.split([g, g, g, g, x.shape[1] - 4 * g], 1)
    return torch.cat([F.pad(left[..., 1:], (0, 1)), F.pad(right[..., :-1], (1, 0)),
                      F.pad(up[..., 1:, :], (0, 0, 0, 1)), F.pad(down[..., :-1, :], (0, 0, 1, 0)), rest], 1)


class ShiftConv2d(nn.Module):
    """Channel shift followed by a 1x1 conv."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(c1, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(shift_channels(x))


@register("backbone", channels="arg0", example={"args": [30], "shape": (2, 30, 16, 16)})
class LFE(nn.Module):
    def __init__(self, c1: int, c2: int, exp_ratio: int = 4, act="relu"):
        """c1, c2: input and output channels; exp_ratio: hidden width / c2; act: activation between."""
        super().__init__()
        self.conv0 = ShiftConv2d(c1, c2 * exp_ratio)
        self.act = activation(act)
        self.conv1 = ShiftConv2d(c2 * exp_ratio, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))
