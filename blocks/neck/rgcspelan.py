"""rgcspelan: RepGhostCSPELAN, the DEIM plug-in project's own CSP-ELAN block (no paper). BiliBili 魔傀面具 DEIM plug-in project, 2025. https://space.bilibili.com/286900343

A 1x1 conv splits into two halves of c2 * e; the second passes a re-parameterisable 3x3 conv
(RepConv, 3x3 + 1x1 branches) narrowing to `scale` of it, then n - 1 3x3 convs and a 1x1 conv, each
output kept (ELAN style); the first half and every kept map are concatenated and fused by a 1x1 conv
to c2. `fuse()` folds the RepConv and BNs. c1 -> c2 channels.
Not compared: there is no paper or public authors' repository; built from the plug-in project's
rgcspelan.py (the layer arrangement above), whose RepConv is Ultralytics' (SiLU, no identity branch)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.conv.rep_conv import RepConv
from blocks.registry import register


@register("neck", channels="arg0", repeat_arg="n", name="rgcspelan",
          example={"args": [32, 2], "shape": (2, 16, 16, 16)})
class RepGhostCSPELAN(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, scale: float = 0.5, e: float = 0.5):
        """n: 3x3 stages on the narrowed path (the RepConv plus n - 1 convs); scale: narrowing of that path
        relative to c2 * e; e: hidden width / c2."""
        super().__init__()
        self.c = int(c2 * e)
        mid = int(self.c * scale)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv3 = RepConv(self.c, mid, 3, act="silu", identity=False)
        self.m = nn.ModuleList(Conv(mid, mid, 3) for _ in range(n - 1))
        self.cv4 = Conv(mid, mid, 1)
        self.cv2 = Conv(self.c + mid * (n + 1), c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.cv1(x).chunk(2, 1)
        outs = [first, self.cv3(second)]
        for m in self.m:
            outs.append(m(outs[-1]))
        outs.append(self.cv4(outs[-1]))
        return self.cv2(torch.cat(outs, 1))
