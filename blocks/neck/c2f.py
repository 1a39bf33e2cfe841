"""C2f: CSP bottleneck with two convs and every stage's output kept. Ultralytics YOLOv8, 2023. https://github.com/ultralytics/ultralytics

Splits a 1x1 projection in two, runs n inner blocks on one half, concatenates all intermediate maps.
`block` (a nested `{module: Name, args: {...}}`) replaces the default 3x3 bottleneck with any
channel-keeping block."""
import torch
from torch import nn

from blocks.common import build_inner
from blocks.conv.conv import Conv
from blocks.neck._csp import Bottleneck
from blocks.registry import register


@register("neck", channels="arg0", repeat_arg="n", example={"args": [32, 2, True], "shape": (2, 16, 16, 16)})
class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 block=None):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(self._inner(block, shortcut, g) for _ in range(n))

    def _inner(self, block, shortcut, g):
        if block is not None:
            return build_inner(block, self.c)
        return Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))
