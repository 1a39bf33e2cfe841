"""CDFA: ConDSeg: A General Medical Image Segmentation Framework via Contrast-Driven Feature Enhancement. AAAI 2025. https://arxiv.org/abs/2412.08345

Contrast-driven feature aggregation: local k x k attention whose weights come from a foreground
map (window values re-weighted, folded back), then a second pass whose weights come from a
background map, between two pairs of 3x3 Convs. As in the plug-in, the foreground and background
maps come from a stride-1 Haar split of the features themselves: background = the 2x2 mean (the
approximation band), foreground = the rest (the sum of the three detail bands). Keeps channels.

Compared with the authors' code (the plug-in's attention/CDFA.py, ConDSeg's
ContrastDrivenFeatureAggregation with its Haar front end): max abs diff 1e-6 on (2, 16, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


def haar_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-1 Haar bands of x (zero-padded right and bottom): (approximation, sum of the detail bands).

    For the 2x2 cell [[a, b], [c, d]] at each position the approximation is (a+b+c+d)/4 and the three
    detail bands sum to (3a-b-c-d)/4 = a - approximation."""
    padded = F.pad(x, [0, 1, 0, 1])
    background = F.avg_pool2d(padded, 2, stride=1)
    return background, x - background


@register("attention", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 16, 16, 16)})
class CDFA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, kernel_size: int = 3):
        """c: channels (divisible by num_heads). kernel_size: the local attention window (odd)."""
        super().__init__()
        if c % num_heads:
            raise ChannelError(f"CDFA needs channels divisible by num_heads={num_heads}, got {c}",
                               hint="choose num_heads that divides the channels")
        if kernel_size % 2 == 0:
            raise ArgumentError(f"CDFA needs an odd kernel_size, got {kernel_size}")
        self.num_heads, self.kernel_size = num_heads, kernel_size
        self.scale = (c // num_heads) ** -0.5
        window = kernel_size * kernel_size
        self.value = nn.Linear(c, c)
        self.attn_fg = nn.Linear(c, window * window * num_heads)
        self.attn_bg = nn.Linear(c, window * window * num_heads)
        self.proj = nn.Linear(c, c)
        self.input_convs = nn.Sequential(Conv(c, c, 3), Conv(c, c, 3))
        self.output_convs = nn.Sequential(Conv(c, c, 3), Conv(c, c, 3))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, heads, HW, k*k, head_dim): each position's k x k neighbourhood."""
        b, c = x.shape[:2]
        cols = F.unfold(x, self.kernel_size, padding=self.kernel_size // 2)
        return cols.reshape(b, self.num_heads, c // self.num_heads, self.kernel_size ** 2, -1).permute(0, 1, 4, 3, 2)

    def _weights(self, layer: nn.Linear, guide: torch.Tensor) -> torch.Tensor:
        b, c, h, w = guide.shape
        window = self.kernel_size ** 2
        logits = layer(guide.permute(0, 2, 3, 1)).reshape(b, h * w, self.num_heads, window, window)
        return (logits.permute(0, 2, 1, 3, 4) * self.scale).softmax(-1)

    def _aggregate(self, weights: torch.Tensor, windows: torch.Tensor, size) -> torch.Tensor:
        """Re-weight every window, fold the windows back (overlaps add), project: (B, C, H, W)."""
        b, heads, positions, window, head_dim = windows.shape
        cols = (weights @ windows).permute(0, 1, 4, 3, 2).reshape(b, heads * head_dim * window, positions)
        folded = F.fold(cols, size, self.kernel_size, padding=self.kernel_size // 2)
        return self.proj(folded.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_convs(x)
        background, foreground = haar_split(x)
        size = x.shape[-2:]
        value = self.value(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self._aggregate(self._weights(self.attn_fg, foreground), self._windows(value), size)
        x = self._aggregate(self._weights(self.attn_bg, background), self._windows(x), size)
        return self.output_convs(x)
