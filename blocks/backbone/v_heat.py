"""vHeat: vHeat: Building Vision Models upon Heat Conduction. CVPR 2025. https://arxiv.org/abs/2405.16555

The vHeat block: the heat conduction operator (HCO) treats features as temperatures and lets them
diffuse for a learned time: depth-wise 3x3 conv, a linear to (u, z), the 2-D DCT of u (the solution
basis of the heat equation with zero-flux borders), each frequency (n, m) damped by
exp(-[(n pi / H)^2 + (m pi / W)^2])^k with k = ReLU(linear(frequency embedding)) per channel, the
inverse DCT, LayerNorm, a SiLU(z) gate and a linear; then a 1x1 GELU MLP. Post-norm (LayerNorm after
each branch) residuals, as the released models use. Keeps channels.
The frequency embedding is stored on a res x res grid and resized bicubically to other map sizes, as
the authors' detection backbone does. The DCT and inverse DCT are pure PyTorch einsums with the
orthonormal cosine basis, so the FLOP counter sees them (4 H W C (H + W) per block); only the
O(H W C) decay power and the basis construction go uncounted.
Compared with the authors' code (MzeroMiko/vHeat detection/vHeat/vHeat.py HeatBlock with LayerNorm2d,
post_norm=True, and the frequency-embedding resize of detection/model.py): max abs diff 0 on
(2, 32, 14, 14) and (2, 32, 12, 20)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


def dct_basis(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n_freq, n_pos): X = D x, and x = D^T X inverts it."""
    positions = (torch.arange(n, device=device, dtype=dtype) + 0.5) / n
    freqs = torch.arange(n, device=device, dtype=dtype)[:, None]
    basis = torch.cos(freqs * positions * math.pi) * math.sqrt(2 / n)
    basis[0] = basis[0] / math.sqrt(2)
    return basis


def heat_decay(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """exp(-[(n pi / H)^2 + (m pi / W)^2]) for every frequency (n, m): one unit of conduction time."""
    n = torch.linspace(0, math.pi, height + 1, device=device, dtype=dtype)[:height, None]
    m = torch.linspace(0, math.pi, width + 1, device=device, dtype=dtype)[None, :width]
    return torch.exp(-(n ** 2 + m ** 2))


class HeatConduction(nn.Module):
    """The heat conduction operator (Heat2D) on a (B, C, H, W) map with a (H, W, C) frequency embedding."""

    def __init__(self, c: int):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.linear = nn.Linear(c, 2 * c)
        self.out_norm = nn.LayerNorm(c)
        self.out_linear = nn.Linear(c, c)
        self.to_k = nn.Sequential(nn.Linear(c, c), nn.ReLU())

    def forward(self, x: torch.Tensor, freq_embed: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        u, z = self.linear(self.dwconv(x).permute(0, 2, 3, 1)).chunk(2, dim=-1)  # (B, H, W, C) each
        basis_h = dct_basis(height, x.device, u.dtype)
        basis_w = dct_basis(width, x.device, u.dtype)
        spectrum = torch.einsum("nh,bhwc->bnwc", basis_h, u)
        spectrum = torch.einsum("mw,bnwc->bnmc", basis_w, spectrum)
        decay = torch.pow(heat_decay(height, width, x.device, u.dtype)[:, :, None], self.to_k(freq_embed))
        spectrum = torch.einsum("bnmc,nmc->bnmc", spectrum, decay)
        u = torch.einsum("nh,bnmc->bhmc", basis_h, spectrum)
        u = torch.einsum("mw,bhmc->bhwc", basis_w, u)
        return self.out_linear(self.out_norm(u) * F.silu(z)).permute(0, 3, 1, 2)


@register("backbone", channels="same", example={"kwargs": {"res": 16}, "shape": (2, 32, 16, 16)})
class vHeat(nn.Module):  # noqa: N801  (the paper's spelling)
    def __init__(self, c: int, res: int = 14, mlp_ratio: float = 4.0, post_norm: bool = True):
        """c: channels; res: side of the stored frequency-embedding grid (the map size it was trained
        at; 14 for the stride-16 stage at 224 px); mlp_ratio: MLP width / c (0 = no MLP branch);
        post_norm: LayerNorm after each branch (the released models) rather than before."""
        super().__init__()
        self.post_norm = post_norm
        self.freq_embed = nn.Parameter(torch.zeros(res, res, c))
        nn.init.trunc_normal_(self.freq_embed, std=0.02)
        self.norm1 = LayerNorm2d(c)
        self.op = HeatConduction(c)
        hidden = int(c * mlp_ratio)
        self.norm2 = LayerNorm2d(c) if hidden else None
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.GELU(), nn.Conv2d(hidden, c, 1)) if hidden else None

    def _freq_embed(self, height: int, width: int) -> torch.Tensor:
        embed = self.freq_embed
        if embed.shape[:2] != (height, width):
            embed = F.interpolate(embed.permute(2, 0, 1)[None], size=(height, width), mode="bicubic")[0].permute(1, 2, 0)
        return embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = self._freq_embed(*x.shape[2:])
        if self.post_norm:
            x = x + self.norm1(self.op(x, embed))
            return x if self.mlp is None else x + self.norm2(self.mlp(x))
        x = x + self.op(self.norm1(x), embed)
        return x if self.mlp is None else x + self.mlp(self.norm2(x))
