"""CSPRepLayer: CSP fusion block of RT-DETR's CCFF (DETRs Beat YOLOs on Real-time Object Detection). CVPR 2024. https://arxiv.org/abs/2304.08069

Two 1x1 conv branches; one runs through `num_blocks` RepVggBlocks (or any `block` factory taking
(c_in, c_out)); their sum is projected to c2 by a 1x1 conv when the hidden width differs.
`split=True` is DEIMv2's CSPLayer2 (YOLO's RepC3): one 1x1 conv to twice the hidden width, halved."""
import functools

import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.encoder.rep_vgg_block import RepVggBlock
from blocks.registry import register


@register("encoder", channels="arg0", repeat_arg="num_blocks", example={"args": [32], "shape": (2, 16, 16, 16)})
class CSPRepLayer(nn.Module):
    def __init__(self, c1: int, c2: int, num_blocks: int = 3, expansion: float = 1.0, bias: bool = False,
                 act="silu", block=None, split: bool = False):
        super().__init__()
        hidden = int(c2 * expansion)
        block = block or functools.partial(RepVggBlock, act=act)
        self.split = split
        self.conv1 = Conv(c1, 2 * hidden if split else hidden, 1, 1, act=act, bias=bias)
        if not split:
            self.conv2 = Conv(c1, hidden, 1, 1, act=act, bias=bias)
        self.bottlenecks = nn.Sequential(*(block(hidden, hidden) for _ in range(num_blocks)))
        self.conv3 = Conv(hidden, c2, 1, 1, act=act, bias=bias) if hidden != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            shortcut, branch = self.conv1(x).chunk(2, 1)
            return self.conv3(shortcut + self.bottlenecks(branch))
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))
