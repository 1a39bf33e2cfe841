"""VSSBlock: VMamba: Visual State Space Model (visual state-space block). NeurIPS 2024. https://arxiv.org/abs/2401.10166

x + SS2D(LN(x)), then x + MLP(LN(x)) (GELU, ratio 4) as in VMamba's released models; LayerNorm
over channels of (B, C, H, W) maps. Keeps channels."""
import torch
from torch import nn

from blocks.mamba.ss2d import SS2D
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4}, "shape": (2, 16, 8, 8)})
class VSSBlock(nn.Module):
    def __init__(self, c: int, d_state: int = 16, ssm_ratio: float = 2.0, d_conv: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm = LayerNorm2d(c)
        self.op = SS2D(c, d_state, ssm_ratio, d_conv)
        hidden = int(c * mlp_ratio)
        self.norm2 = LayerNorm2d(c) if mlp_ratio > 0 else None
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.GELU(), nn.Conv2d(hidden, c, 1)) if mlp_ratio > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.op(self.norm(x))
        return x if self.mlp is None else x + self.mlp(self.norm2(x))
