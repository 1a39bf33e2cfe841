"""DPBAttention: CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention (attention with dynamic position bias). ICLR 2022. https://arxiv.org/abs/2108.00154

Multi-head self-attention over all positions of the map, with CrossFormer's dynamic position bias:
an MLP turns each relative offset into a per-head logit bias, so the bias fits any map size. Token
mixer on (B, C, H, W); keeps channels.
Compared with the authors' code (cheerss/CrossFormer models/crossformer.py, Attention with the group
set to the whole map): max abs diff 0.0 on (2, 32, 8, 8)."""
import torch
from torch import nn

from blocks.registry import register
from blocks.transformer._attention_parts import DynamicPosBias, check_heads


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class DPBAttention(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, qkv_bias: bool = True, residual_pos: bool = False):
        """c: channels (at least 16: the bias MLP is c / 16 wide); num_heads must divide c;
        residual_pos: CrossFormer's residual form of the bias MLP (off in its released models)."""
        super().__init__()
        check_heads("DPBAttention", c, num_heads)
        self.num_heads = num_heads
        self.scale = (c // num_heads) ** -0.5
        self.qkv = nn.Linear(c, 3 * c, bias=qkv_bias)
        self.proj = nn.Linear(c, c)
        self.pos = DynamicPosBias(c // 4, num_heads, residual_pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + self.pos(h, w)).softmax(-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)
