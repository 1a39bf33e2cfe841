"""KANConv: KAN: Kolmogorov-Arnold Networks. ICLR 2025. https://arxiv.org/abs/2404.19756

A convolutional KAN layer with the paper's B-spline basis: every input value x enters each output
through a learnable function phi(x) = w_b silu(x) + sum_i c_i B_i(x) (order-`spline_order` B-splines on
`grid_size` uniform intervals of `grid_range`, extended by `spline_order` knots each side), and a
k x k window sums those functions. Written as two convs: one over silu(x), one over the C * (G + k)
basis maps. k=1 is the plain KAN layer applied at every pixel. Pure PyTorch; keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register


@register("mlp", channels="same", example={"args": [3], "shape": (2, 16, 16, 16)})
class KANConv(nn.Module):
    def __init__(self, c: int, k: int = 1, grid_size: int = 5, spline_order: int = 3,
                 grid_range=(-1.0, 1.0), noise_scale: float = 0.1):
        super().__init__()
        lo, hi = grid_range
        step = (hi - lo) / grid_size
        knots = lo + step * torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32)
        self.register_buffer("knots", knots)
        self.spline_order = spline_order
        self.base = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.spline = nn.Conv2d(c * (grid_size + spline_order), c, k, padding=k // 2, bias=False)
        # splines start as small noise around zero, so the layer starts near its silu base (as in pykan)
        nn.init.normal_(self.spline.weight, std=noise_scale / (c * k * k) ** 0.5)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """B-spline values by the Cox-de Boor recursion: (B, C, H, W) -> (B, C, G + k, H, W)."""
        t = self.knots.to(x.dtype).view(-1, 1, 1)
        x = x.unsqueeze(2)
        bases = ((x >= t[:-1]) & (x < t[1:])).to(x.dtype)
        for p in range(1, self.spline_order + 1):
            left = (x - t[:-(p + 1)]) / (t[p:-1] - t[:-(p + 1)]) * bases[:, :, :-1]
            right = (t[p + 1:] - x) / (t[p + 1:] - t[1:-p]) * bases[:, :, 1:]
            bases = left + right
        return bases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(F.silu(x)) + self.spline(self.basis(x).flatten(1, 2))
