"""FMB: SMFANet: A Lightweight Self-Modulation Feature Aggregation Network for Efficient Image Super-Resolution. ECCV 2024. https://www.ecva.net/papers/eccv_2024/papers_ECCV/papers/06713.pdf

SMFANet's feature modulation block: self-modulation feature aggregation (SMFA: a 1x1 conv splits the
L2-normalised input in two; one half is max-pooled 8x, depth-wise 3x3 conv'd, mixed with its
spatial variance, 1x1 conv + GELU and upsampled into a gate for itself (non-local branch); the other
goes through a local detail MLP (depth-wise 3x3, 1x1, GELU, 1x1); summed and projected), then a
partial convolution FFN (PCFN: 1x1 expansion, GELU, a 3x3 conv on the first quarter of the hidden
channels, 1x1 back), each on the channel-L2-normalised input with a residual. Keeps channels.
The pooled grid is at least 1 x 1 (the authors' code fails on maps under 8 px).
Compared with the authors' code (Zheng-MJ/SMFANet basicsr/archs/SMFANet_arch.py FMB): max abs diff 0
on (2, 32, 16, 16) and (2, 32, 20, 12)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register


class SMFA(nn.Module):
    """Self-modulation feature aggregation: a pooled, variance-aware gate beside a local detail MLP."""

    def __init__(self, c: int, down_scale: int = 8):
        super().__init__()
        self.down_scale = down_scale
        self.linear_0 = nn.Conv2d(c, 2 * c, 1)
        self.linear_1 = nn.Conv2d(c, c, 1)
        self.linear_2 = nn.Conv2d(c, c, 1)
        self.lde = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 1, 1, groups=c), nn.Conv2d(2 * c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))
        self.dw_conv = nn.Conv2d(c, c, 3, 1, 1, groups=c)
        self.gelu = nn.GELU()
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1))
        self.belt = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        height, width = f.shape[2:]
        y, x = self.linear_0(f).chunk(2, dim=1)
        pooled = F.adaptive_max_pool2d(x, (max(1, height // self.down_scale), max(1, width // self.down_scale)))
        gate = self.gelu(self.linear_1(self.dw_conv(pooled) * self.alpha + torch.var(x, dim=(-2, -1), keepdim=True) * self.belt))
        return self.linear_2(x * F.interpolate(gate, size=(height, width), mode="nearest") + self.lde(y))


class PCFN(nn.Module):
    """Partial convolution FFN: only the first p_rate of the hidden channels see a 3x3 conv."""

    def __init__(self, c: int, growth_rate: float = 2.0, p_rate: float = 0.25):
        super().__init__()
        hidden = int(c * growth_rate)
        self.p_dim = int(hidden * p_rate)
        self.conv_0 = nn.Conv2d(c, hidden, 1)
        self.conv_1 = nn.Conv2d(self.p_dim, self.p_dim, 3, 1, 1)
        self.act = nn.GELU()
        self.conv_2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv_0(x))
        part, rest = x.split([self.p_dim, x.shape[1] - self.p_dim], 1)
        return self.conv_2(torch.cat([self.act(self.conv_1(part)), rest], 1))


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class FMB(nn.Module):
    def __init__(self, c: int, ffn_scale: float = 2.0):
        """c: channels; ffn_scale: PCFN hidden width / c."""
        super().__init__()
        self.smfa = SMFA(c)
        self.pcfn = PCFN(c, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.smfa(F.normalize(x))
        return x + self.pcfn(F.normalize(x))
