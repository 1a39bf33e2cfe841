"""Pieces shared by the CSP containers (C2f, C3k2, C3): the YOLO bottleneck and the C3k stack."""
import torch
from torch import nn

from blocks.common import build_inner
from blocks.conv.conv import Conv


class Bottleneck(nn.Module):
    """Two convs (k1, then k2 grouped) with an optional residual when widths agree (YOLOv5/v8)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k=(3, 3), e: float = 0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3k(nn.Module):
    """C3 with a k x k bottleneck stack (YOLO11): two 1x1 branches, one through n inner blocks.

    k: the bottlenecks' kernel, an int (k x k then k x k) or a pair (YOLOv5's C3 uses (1, 3))."""

    def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 k: int | tuple[int, int] = 3, block=None):
        super().__init__()
        hidden = int(c2 * e)
        kernels = (k, k) if isinstance(k, int) else tuple(k)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(build_inner(block, hidden) if block is not None
                                 else Bottleneck(hidden, hidden, shortcut, g, k=kernels, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))
