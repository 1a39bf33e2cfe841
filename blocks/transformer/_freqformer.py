"""FreqFormer's (IJCAI 2024) interaction branches, shared by its two attentions (CTA, SFA)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError


def check_width(name: str, c: int) -> None:
    if c < 12:
        raise ChannelError(f"{name} needs at least 12 channels (its projections are c / 12 wide), got {c}")


class ChannelProjection(nn.Module):
    """C-Map: 1x1 to c/6, times its global average (1x1) and a large-kernel depth-wise branch
    (3x3, then 7x7 dilation 3, then 1x1), 1x1 back to c."""

    def __init__(self, c: int):
        super().__init__()
        mid = c // 6
        self.pro_in = nn.Conv2d(c, mid, 1)
        self.CI1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, mid, 1))
        self.CI2 = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, groups=mid),
                                 nn.Conv2d(mid, mid, 7, padding=9, dilation=3, groups=mid), nn.Conv2d(mid, mid, 1))
        self.pro_out = nn.Conv2d(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pro_in(x)
        return self.pro_out(x * self.CI1(x) * self.CI2(x))


class SpatialProjection(nn.Module):
    """S-Map: 1x1 to two halves of c/12, 3x3 depth-wise, GELU(first) * second, 1x1 back to c.

    FreqFormer's code widens to c // 6, which only splits evenly when c // 6 is even (its c = 60);
    2 * (c // 12) is the same there and splits for any c (e.g. 128)."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 12
        self.pro_in = nn.Conv2d(c, 2 * half, 1)
        self.dwconv = nn.Conv2d(2 * half, 2 * half, 3, padding=1, groups=2 * half)
        self.pro_out = nn.Conv2d(half, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.pro_in(x)).chunk(2, 1)
        return self.pro_out(F.gelu(x1) * x2)


class FrequencyProjection(nn.Module):
    """High-frequency branch: 1x1 to c/2, GELU on one half, 3x3 max-pool + 1x1 + GELU on the other,
    1x1 back, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(c, c // 2, 1)
        self.res_2 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c // 4, c // 4, 1), nn.GELU())
        self.conv_out = nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv_1(x).chunk(2, 1)
        return self.conv_out(torch.cat((F.gelu(x1), self.res_2(x2)), 1)) + x
