"""CSPRepLayer: CSP fusion block of RT-DETR's CCFF (DETRs Beat YOLOs on Real-time Object Detection). CVPR 2024. https://arxiv.org/abs/2304.08069

Two 1x1 conv branches; one runs through `num_blocks` RepVggBlocks (or any `block` factory taking
(c_in, c_out)); their sum is projected to c2 by a 1x1 conv when the hidden width differs."""
import functools

import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.encoder.rep_vgg_block import RepVggBlock
from blocks.registry import register


@register("encoder", channels="arg0", repeat_arg="num_blocks", example={"args": [32], "shape": (2, 16, 16, 16)})
class CSPRepLayer(nn.Module):
    def __init__(self, c1: int, c2: int, num_blocks: int = 3, expansion: float = 1.0, bias: bool = False,
                 act="silu", block=None):
        super().__init__()
        hidden = int(c2 * expansion)
        block = block or functools.partial(RepVggBlock, act=act)
        self.conv1 = Conv(c1, hidden, 1, 1, act=act, bias=bias)
        self.conv2 = Conv(c1, hidden, 1, 1, act=act, bias=bias)
        self.bottlenecks = nn.Sequential(*(block(hidden, hidden) for _ in range(num_blocks)))
        self.conv3 = Conv(hidden, c2, 1, 1, act=act, bias=bias) if hidden != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))
