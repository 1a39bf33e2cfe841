"""SHSA: SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design. CVPR 2024. https://arxiv.org/abs/2401.16456

Single-head attention on a partial slice of the channels (the rest pass untouched), then ReLU and
a 1x1 conv-BN over all channels. Token mixer on (B, C, H, W); keeps channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


@register("transformer", channels="same", example={"args": [], "shape": (2, 32, 8, 8)})
class SHSA(nn.Module):
    def __init__(self, c: int, qk_dim: int = 16, pdim: int | None = None):
        super().__init__()
        self.pdim = pdim or c // 4   # SHViT attends over 1/4 of the channels (e.g. 32 of 128)
        self.qk_dim = qk_dim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, self.pdim)
        self.qkv = Conv(self.pdim, 2 * qk_dim + self.pdim, 1, act=None)
        # SHViT zero-inits this BN inside its residual; here a standalone row keeps BN weight 1
        self.proj = nn.Sequential(nn.ReLU(), Conv(c, c, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attended, passed = x.split([self.pdim, c - self.pdim], 1)
        q, k, v = self.qkv(self.pre_norm(attended)).flatten(2).split([self.qk_dim, self.qk_dim, self.pdim], 1)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(-1)
        attended = (v @ attn.transpose(-2, -1)).reshape(b, self.pdim, h, w)
        return self.proj(torch.cat((attended, passed), 1))
