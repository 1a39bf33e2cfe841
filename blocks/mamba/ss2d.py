"""SS2D: VMamba: Visual State Space Model (2D selective scan). NeurIPS 2024. https://arxiv.org/abs/2401.10166

Projects to an inner width, depth-wise conv + SiLU, then a selective scan along four routes
(row-major, column-major and both reversed) merged back onto the grid, LayerNorm, SiLU(z) gate,
output projection. Token mixer on (B, C, H, W); keeps channels. Pure-PyTorch scan on CPU."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.mamba._scan import route_scan
from blocks.registry import register

ROUTES = 4


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4}, "shape": (2, 16, 8, 8)})
class SS2D(nn.Module):
    def __init__(self, c: int, d_state: int = 16, ssm_ratio: float = 2.0, d_conv: int = 3,
                 dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        inner = int(ssm_ratio * c)
        self.d_state, self.inner = d_state, inner
        self.dt_rank = dt_rank or math.ceil(c / 16)
        self.in_proj = nn.Linear(c, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        self.x_proj_weight = nn.Parameter(torch.empty(ROUTES, self.dt_rank + 2 * d_state, inner))
        nn.init.kaiming_uniform_(self.x_proj_weight, a=math.sqrt(5))     # nn.Linear's default, per route
        bound = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(ROUTES, inner, self.dt_rank).uniform_(-bound, bound))
        dt = torch.exp(torch.rand(ROUTES, inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(ROUTES * inner, 1))
        self.Ds = nn.Parameter(torch.ones(ROUTES * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, c, bias=False)

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, inner, H, W) -> the four routes' outputs summed on the grid, (B, H*W, inner)."""
        return route_scan(x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs,
                          self.Ds).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x, z = self.in_proj(x.permute(0, 2, 3, 1)).chunk(2, -1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.out_norm(self._scan(x)).view(b, h, w, -1) * F.silu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)
