"""MSLA: MSLAU-Net: A Hybird CNN-Transformer Network for Medical Image Segmentation (multi-scale linear attention). arXiv 2025. https://arxiv.org/abs/2505.18823

Channels split in four; each quarter passes a depth-wise conv (3, 5, 7, 9) with residual + ReLU,
then one shared linear attention (softmax over the key channels and over the query tokens, so the
cost is linear in the tokens); the quarters, each scaled by a learned weight, are concatenated and
mixed by a 1x1 conv. Token mixer on (B, C, H, W); keeps channels.
Departs from the released code in one place: it merges the heads with a plain reshape of
(B, heads, N, d), which mixes tokens across heads; here each token keeps its own heads.
Compared with MSLA code carrying the MSLAU-Net README (chuifengbushuang/MSLAU_OPT networks/msla.py,
networks/linear_attention.py; the authors' own repository was not found) at 1 head, where the two
agree: max abs diff 0.0 on (2, 32, 8, 8), random weights."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer._attention_parts import check_heads

KERNELS = (3, 5, 7, 9)


class _LinearAttention(nn.Module):
    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        context = k.softmax(-1).transpose(-2, -1) @ v                        # (B, heads, d, d)
        out = (q.softmax(-2) @ context).transpose(1, 2).reshape(b, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 2}, "shape": (2, 32, 8, 8)})
class MSLA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8):
        """c: a multiple of 4; num_heads must divide c / 4 (the attention runs on each quarter)."""
        super().__init__()
        if c % 4:
            raise ChannelError(f"MSLA splits channels in four; {c} is not a multiple of 4")
        check_heads("MSLA", c // 4, num_heads)
        q = c // 4
        self.dw_convs = nn.ModuleList(nn.Conv2d(q, q, k, padding=k // 2, groups=q) for k in KERNELS)
        self.linear_attention = _LinearAttention(q, num_heads)
        self.final_conv = nn.Conv2d(c, c, 1)
        self.scale_weights = nn.Parameter(torch.ones(len(KERNELS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.linear_attention(F.relu(conv(part) + part)) * weight
                 for part, conv, weight in zip(x.chunk(len(KERNELS), 1), self.dw_convs, self.scale_weights)]
        return self.final_conv(torch.cat(parts, 1))
