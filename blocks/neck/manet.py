"""MANet: Hyper-YOLO: When Visual Object Detection Meets Hypergraph Computation (mixed aggregation network). TPAMI 2025. https://arxiv.org/abs/2408.04804

A 1x1 conv to 2 * c2 * e channels feeds four parallel paths: a 1x1 conv, a 1x1 / k x k depth-wise /
1x1 conv stack (p times wider), the two halves of the projection, and n bottlenecks chained on the
second half; everything is concatenated and fused by a 1x1 conv to c2. `block` (a nested
`{module: Name, args: {...}}`) replaces the bottleneck with any channel-keeping block, as in C2f.
c1 -> c2 channels.
Compared with the authors' code (iMoonLab/Hyper-YOLO ultralytics/nn/modules/block.py, MANet):
max abs diff 0.0 on (2, 16, 16, 16), n 2, shortcut, p 2, random weights and BN statistics."""
import torch
from torch import nn

from blocks.common import build_inner
from blocks.conv.conv import Conv
from blocks.neck._csp import Bottleneck
from blocks.registry import register


@register("neck", channels="arg0", repeat_arg="n", example={"args": [32, 2, True, 2], "shape": (2, 16, 16, 16)})
class MANet(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, p: float = 1, kernel_size: int = 3,
                 g: int = 1, e: float = 0.5, block=None):
        """n: bottlenecks (a row's repeats); p: width factor of the depth-wise path (Hyper-YOLO uses
        shortcut=True, p=2 with kernel 3 or 5); g: groups of the bottlenecks' second conv."""
        super().__init__()
        self.c = int(c2 * e)
        hidden = int(p * 2 * self.c)
        self.cv_first = Conv(c1, 2 * self.c, 1)
        self.cv_block_1 = Conv(2 * self.c, self.c, 1)
        self.cv_block_2 = nn.Sequential(Conv(2 * self.c, hidden, 1), Conv(hidden, hidden, kernel_size, g=hidden),
                                        Conv(hidden, self.c, 1))
        self.m = nn.ModuleList(build_inner(block, self.c) if block is not None
                               else Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))
        self.cv_final = Conv((4 + n) * self.c, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv_first(x)
        outs = [self.cv_block_1(y), self.cv_block_2(y), *y.chunk(2, 1)]
        for m in self.m:
            outs.append(m(outs[-1]))
        return self.cv_final(torch.cat(outs, 1))
