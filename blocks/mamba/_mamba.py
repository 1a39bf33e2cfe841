"""Mamba's initialisations and its 1-D selective state-space mixer (mamba_ssm's `Mamba`, unidirectional),
shared by the zoo's mamba blocks; the scan itself is blocks.mamba._scan."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.mamba._scan import selective_scan


def dt_bias_init(*shape: int, dt_min: float = 0.001, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """softplus^-1 of time steps drawn log-uniformly in [dt_min, dt_max] (Mamba's dt bias)."""
    dt = torch.exp(torch.rand(*shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def a_log_init(rows: int, d_state: int) -> torch.Tensor:
    """S4D-real: A = -(1 .. d_state) for every row, stored as log(-A)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


def dt_proj(rank: int, inner: int) -> nn.Linear:
    """Mamba's dt projection: weights uniform in +-rank^-0.5, bias from dt_bias_init."""
    proj = nn.Linear(rank, inner)
    nn.init.uniform_(proj.weight, -rank ** -0.5, rank ** -0.5)
    with torch.no_grad():
        proj.bias.copy_(dt_bias_init(inner))
    return proj


class Mamba(nn.Module):
    """x (B, L, D) -> (B, L, D): in-projection to x and gate z, causal depth-wise conv1d + SiLU, input-
    dependent dt, B, C, selective scan, times SiLU(z), out-projection (mamba_ssm.Mamba, no cache)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2, dt_rank: int | None = None,
                 conv_bias: bool = True, bias: bool = False):
        super().__init__()
        inner = int(expand * d_model)
        self.d_state, self.dt_rank = d_state, dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=bias)
        self.conv1d = nn.Conv1d(inner, inner, d_conv, padding=d_conv - 1, groups=inner, bias=conv_bias)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = dt_proj(self.dt_rank, inner)
        self.A_log = nn.Parameter(a_log_init(inner, d_state))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        x, z = self.in_proj(x).chunk(2, -1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length])                    # (B, inner, L)
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
        y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2)[:, None], C.transpose(1, 2)[:, None],
                           self.D.float(), self.dt_proj.bias.float())
        return self.out_proj(y.transpose(1, 2) * F.silu(z))
