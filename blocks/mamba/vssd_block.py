"""VSSDBlock: VSSD: Vision Mamba with Non-Causal State Space Duality. arXiv 2024. https://arxiv.org/abs/2407.18559

Mamba2 mixer made non-causal (NC-SSD): every token's B (key) and dt-scaled x (value) are summed
into one state per head, read out by each token's C (query), plus the D skip; wrapped as VSSD's
block: depth-wise conv position terms, LayerNorm, NC-SSD, MLP. Linear in H*W; keeps channels."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


class NonCausalSSD(nn.Module):
    """VSSD's Mamba2 with linear-attention duality (one B/C group, positive dA as in the released models)."""

    def __init__(self, c: int, num_heads: int, expand: int = 2, d_state: int = 64, d_conv: int = 3,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.inner, self.d_state, self.num_heads = expand * c, d_state, num_heads
        if self.inner % num_heads:
            raise ArgumentError(f"inner width {self.inner} must split into {num_heads} heads")
        conv_dim = self.inner + 2 * d_state
        self.in_proj = nn.Linear(c, self.inner + conv_dim + num_heads, bias=False)     # z, x, B, C, dt
        self.conv2d = nn.Conv2d(conv_dim, conv_dim, d_conv, padding=(d_conv - 1) // 2, groups=conv_dim)
        dt = torch.exp(torch.rand(num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(num_heads))
        self.norm = nn.LayerNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, c, bias=False)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, length, _ = tokens.shape
        z, xbc, dt = self.in_proj(tokens).split([self.inner, self.inner + 2 * self.d_state, self.num_heads], -1)
        dt = F.softplus(dt + self.dt_bias)                                            # (B, L, heads)
        xbc = F.silu(self.conv2d(xbc.transpose(1, 2).reshape(b, -1, h, w))).flatten(2).transpose(1, 2)
        x, keys, queries = xbc.split([self.inner, self.d_state, self.d_state], -1)
        values = x.view(b, length, self.num_heads, -1).transpose(1, 2)               # (B, heads, L, head_dim)
        weight = (dt * torch.exp(self.A_log)).transpose(1, 2).unsqueeze(-1)          # dt * |A| per token and head
        state = keys.unsqueeze(1).transpose(-2, -1) @ (values * weight)              # (B, heads, d_state, head_dim)
        y = queries.unsqueeze(1) @ state + values * self.D.view(1, -1, 1, 1)
        y = self.norm(y.transpose(1, 2).reshape(b, length, self.inner)) * z
        return self.out_proj(y)


@register("mamba", channels="same", example={"args": [], "kwargs": {"num_heads": 2, "d_state": 8},
                                             "shape": (2, 16, 8, 8)})
class VSSDBlock(nn.Module):
    def __init__(self, c: int, num_heads: int = 4, expand: int = 2, d_state: int = 64, mlp_ratio: float = 4.0):
        super().__init__()
        self.cpe1 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm1 = nn.LayerNorm(c)
        self.attn = NonCausalSSD(c, num_heads, expand, d_state)
        self.cpe2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm2 = nn.LayerNorm(c)
        hidden = int(c * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x + self.cpe1(x)
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm1(tokens), h, w)
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
        x = x + self.cpe2(x)
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)
