"""RepNCSPELAN4: GELAN block of YOLOv9 (Learning What You Want to Learn Using Programmable Gradient Information). ECCV 2024. https://arxiv.org/abs/2402.13616

D-FINE's CCFF fusion block: a 1x1 conv split in two halves; the second half runs through two
(inner block + 3x3 conv) stages; all four pieces are concatenated and projected to c2. The inner
block is pluggable (`inner`, a factory taking (c_in, c_out)); default: CSPRepLayer of n RepVggBlocks
(`csp_type="csp2"`: DEIMv2's split CSP layer). `post_conv=False` drops the two 3x3 convs (DEIMv2's
RepNCSPELAN5)."""
import functools

import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.encoder.csp_rep_layer import CSPRepLayer
from blocks.registry import register


@register("encoder", channels="arg0", example={"args": [32, 32, 16, 1], "shape": (2, 16, 16, 16)})
class RepNCSPELAN4(nn.Module):
    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 3, bias: bool = False, act="silu",
                 inner=None, csp_type: str = "csp", post_conv: bool = True):
        super().__init__()
        if csp_type not in ("csp", "csp2"):
            raise ArgumentError(f"csp_type must be 'csp' or 'csp2', got {csp_type!r}")
        self.c = c3 // 2
        inner = inner or functools.partial(CSPRepLayer, num_blocks=n, expansion=1.0, bias=bias, act=act,
                                           split=csp_type == "csp2")

        def stage(c_in):
            tail = [Conv(c4, c4, 3, 1, act=act, bias=bias)] if post_conv else []
            return nn.Sequential(inner(c_in, c4), *tail)

        self.cv1 = Conv(c1, c3, 1, 1, act=act, bias=bias)
        self.cv2 = stage(c3 // 2)
        self.cv3 = stage(c4)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1, act=act, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))
