"""MaIR: MaIR: A Locality- and Continuity-Preserving Mamba for Image Restoration (its visual Mamba mixer, VMM). CVPR 2025. https://arxiv.org/abs/2412.20066

In-projection to x and gate z, 3x3 depth-wise conv + SiLU, then selective scans along four nested
S-shaped routes (NSS: the map cut into vertical stripes scan_len wide, each stripe scanned in a
snake, consecutive stripes joined end to end; on the map, its 180-degree rotation, and both
transposed); sequence shuffle attention (SSA) weighs the four routes per channel from their pooled
outputs before they are summed; LayerNorm, SiLU(z) gate, out-projection. Token mixer on (B, C, H, W);
keeps channels. MaIR alternates this with a variant whose stripes are shifted by half a stripe; that
variant is not offered. Pure-PyTorch scan on CPU (mamba_ssm's kernel on CUDA when installed).
Compared with the authors' code (XLearning-SCU/2025-CVPR-MaIR basicsr/archs/mair_arch.py, VMM with
shift_scanf_util's scan ids, scan via mamba_ssm's selective_scan_ref): max abs diff 1.5e-7 on
(2, 32, 8, 8) and (2, 32, 6, 10)."""
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.mamba._mamba import a_log_init, dt_bias_init
from blocks.mamba._scan import selective_scan
from blocks.registry import register

ROUTES = 4


def _nested_s_scan(grid: torch.Tensor, s: int) -> torch.Tensor:
    """Raster indices of an (H, W) grid in nested-S order: stripes s wide, each a snake (odd stripes run
    bottom-up, odd rows right-to-left), then a trailing narrower stripe (its odd rows reversed)."""
    h, w = grid.shape
    grid = grid.clone()
    full, rest = w // s, w % s
    for i in range(1, full + 1, 2):        # as MaIR does, this also reaches an odd-numbered trailing stripe
        grid[:, i * s:(i + 1) * s] = grid[:, i * s:(i + 1) * s].flip(0)
    for k in range(full):
        grid[1::2, k * s:(k + 1) * s] = grid[1::2, k * s:(k + 1) * s].flip(1)
    parts = [grid[:, k * s:(k + 1) * s].reshape(-1) for k in range(full)]
    if rest:
        last = grid[:, w - rest:].clone()
        last[1::2] = last[1::2].flip(1)
        parts.append(last.reshape(-1))
    return torch.cat(parts)


@functools.lru_cache(maxsize=16)
def nss_routes(h: int, w: int, scan_len: int) -> torch.Tensor:
    """(4, h*w) raster indices of the four NSS routes: map, map rotated 180 degrees, and their transposes."""
    grid = torch.arange(h * w).reshape(h, w)
    rotated = grid.flip(0, 1)
    return torch.stack([_nested_s_scan(g, scan_len) for g in (grid, rotated, grid.t(), rotated.t())])


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4, "scan_len": 4}, "shape": (2, 32, 8, 8)})
class MaIR(nn.Module):
    def __init__(self, c: int, d_state: int = 16, ssm_ratio: float = 1.5, d_conv: int = 3, scan_len: int = 8,
                 bias: bool = False, conv_bias: bool = True):
        """ssm_ratio: scan width / c; scan_len: stripe width of the nested S scan (MaIR: 16 state, 1.5, 3, 8)."""
        super().__init__()
        inner = int(ssm_ratio * c)
        self.d_state, self.scan_len = d_state, scan_len
        self.dt_rank = math.ceil(c / 16)
        self.in_proj = nn.Linear(c, 2 * inner, bias=bias)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner, bias=conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(ROUTES, self.dt_rank + 2 * d_state, inner))
        nn.init.kaiming_uniform_(self.x_proj_weight, a=math.sqrt(5))          # nn.Linear's default, per route
        bound = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(ROUTES, inner, self.dt_rank).uniform_(-bound, bound))
        self.dt_projs_bias = nn.Parameter(dt_bias_init(ROUTES, inner))
        self.A_logs = nn.Parameter(a_log_init(ROUTES * inner, d_state))
        self.Ds = nn.Parameter(torch.ones(ROUTES * inner))
        self.route_gate = nn.Conv2d(ROUTES * inner, ROUTES * inner, 1, groups=inner)  # SSA: per channel, over routes
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, c, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        length = h * w
        x, z = self.in_proj(x.permute(0, 2, 3, 1)).chunk(2, -1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2))).flatten(2)                  # (B, inner, L)
        d = x.shape[1]
        routes_ids = nss_routes(h, w, self.scan_len).to(x.device)
        routes = x[:, :, routes_ids].transpose(1, 2)                               # (B, 4, inner, L)
        proj = torch.einsum("bkdl,kcd->bkcl", routes, self.x_proj_weight)
        dts, Bs, Cs = proj.split([self.dt_rank, self.d_state, self.d_state], 2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(routes.reshape(b, -1, length).float(), dts.reshape(b, -1, length).float(),
                           -torch.exp(self.A_logs.float()), Bs.float(), Cs.float(), self.Ds.float(),
                           self.dt_projs_bias.flatten().float()).view(b, ROUTES, d, length)
        y = y.gather(-1, torch.argsort(routes_ids, -1)[None, :, None].expand_as(y))  # back to raster order
        pooled = y.mean(-1).transpose(1, 2).reshape(b, ROUTES * d, 1, 1)          # channel-major: (d, route)
        gate = torch.sigmoid(self.route_gate(pooled)).view(b, d, ROUTES).transpose(1, 2)
        y = (y * gate[..., None]).sum(1).transpose(1, 2).reshape(b, h, w, d)
        y = self.out_norm(y.to(z.dtype)) * F.silu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)
