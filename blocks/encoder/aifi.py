"""AIFI: Attention-based Intra-scale Feature Interaction (DETRs Beat YOLOs on Real-time Object Detection). CVPR 2024. https://arxiv.org/abs/2304.08069

Transformer encoder layers (post-norm self-attention + FFN) over one feature map's flattened
pixels with a fixed 2-D sin-cos position embedding; keeps channels and size. The embedding is
computed for any input size and cached for `eval_spatial_size` / `stride`."""
from __future__ import annotations

import torch
from torch import nn

from core.errors import ArgumentError
from blocks.common import activation
from blocks.registry import register


def sincos_pos_embed_2d(width: int, height: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """[1, height*width, dim] embedding: sin/cos of the x index, then of the y index, at dim/4
    geometrically spaced frequencies each. Positions run x-major (index = x * height + y), as in
    the official RT-DETR/D-FINE code, so official weights see the embedding they were trained with."""
    if dim % 4:
        raise ArgumentError(f"the 2-D sin-cos position embedding needs channels divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(torch.arange(width, dtype=torch.float32),
                                    torch.arange(height, dtype=torch.float32), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_w = grid_w.flatten()[:, None] @ omega[None]
    out_h = grid_h.flatten()[:, None] @ omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer; attribute names as in RT-DETR/D-FINE (self_attn, linear1/2, norm1/2)."""

    def __init__(self, dim: int, nhead: int, dim_feedforward: int, dropout: float, act):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nhead, dropout, batch_first=True)
        self.self_attn.counted_with_weights = True  # the official AIFI returns the weights; ours fuses
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation(act)

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        q = k = src + pos_embed
        attended, _ = self.self_attn(q, k, value=src, need_weights=False)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


@register("encoder", channels="same", example={"args": [4, 64], "shape": (2, 32, 8, 8)})
class AIFI(nn.Module):
    def __init__(self, c1: int, nhead: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0,
                 act="gelu", num_layers: int = 1, pe_temperature: float = 10000.0, stride: int = 32,
                 eval_spatial_size=None):
        super().__init__()
        self.dim, self.pe_temperature = c1, pe_temperature
        self.layers = nn.ModuleList(TransformerEncoderLayer(c1, nhead, dim_feedforward, dropout, act)
                                    for _ in range(num_layers))
        self.cached_hw = None
        if eval_spatial_size:
            self.cached_hw = (eval_spatial_size[0] // stride, eval_spatial_size[1] // stride)
            pos = sincos_pos_embed_2d(self.cached_hw[1], self.cached_hw[0], c1, pe_temperature)
            self.register_buffer("pos_embed", pos, persistent=False)

    def position_embedding(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        if not self.training and self.cached_hw == (height, width):
            return self.pos_embed
        return sincos_pos_embed_2d(width, height, self.dim, self.pe_temperature).to(like.device, like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        src = x.flatten(2).permute(0, 2, 1)
        pos = self.position_embedding(height, width, src)
        for layer in self.layers:
            src = layer(src, pos)
        return src.permute(0, 2, 1).reshape(batch, channels, height, width).contiguous()
