"""EUCB_SC: EMCAD: Efficient Multi-scale Convolutional Attention Decoding for Medical Image Segmentation. CVPR 2024. https://arxiv.org/abs/2405.06880

EUCB (2x nearest upsampling, depth-wise 3x3 Conv, 1x1 conv) with the shift channel mix (SCM) of
BHViT (CVPR 2025, https://arxiv.org/abs/2503.02394) before the 1x1 conv: the channel quarters are
rolled circularly by +s / -s rows and +s / -s columns, so each output mixes four neighbours at no
parameter cost. Output: `c2` channels.

Compared with the authors' code (the plug-in's upsample/eucb_sc.py): max abs diff 0 on (2, 32, 8, 8)
with c2 = c1 (theirs keeps the channels)."""
import torch

from blocks.registry import ChannelError, register
from blocks.upsample.eucb import EUCB


def shift_channel_mix(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll the four channel quarters by (+shift rows, -shift rows, +shift cols, -shift cols), circularly."""
    down, up, right, left = x.chunk(4, dim=1)
    return torch.cat((down.roll(shift, 2), up.roll(-shift, 2), right.roll(shift, 3), left.roll(-shift, 3)), 1)


@register("upsample", channels="arg0", example={"args": [16], "shape": (2, 32, 8, 8)})
class EUCB_SC(EUCB):
    def __init__(self, c1: int, c2: int, k: int = 3, shift: int = 1, act="relu"):
        """c1: input channels (divisible by 4, for the four shifted quarters). c2: output channels.
        k: depth-wise kernel. shift: rows/columns each quarter is rolled by."""
        if c1 % 4:
            raise ChannelError(f"EUCB_SC shifts four channel quarters and needs channels divisible by 4, got {c1}")
        super().__init__(c1, c2, k, act)
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(shift_channel_mix(self.dw(self.up(x)), self.shift))
