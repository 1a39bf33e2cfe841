"""CascadedGroupAttention: EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention. CVPR 2023. https://arxiv.org/abs/2305.07027

Each head sees its own channel split plus the previous head's output (a cascade), with a depth-wise
conv on the queries and learned relative-position biases, inside local windows (EfficientViT's
LocalWindowAttention; the map is zero-padded to whole windows). Keeps channels."""
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


@register("transformer", channels="same", example={"args": [], "kwargs": {"window_resolution": 4},
                                                   "shape": (2, 32, 8, 8)})
class CascadedGroupAttention(nn.Module):
    def __init__(self, c: int, key_dim: int = 16, num_heads: int = 4, window_resolution: int = 7,
                 kernels=(5, 5, 5, 5)):
        super().__init__()
        if c % num_heads or len(kernels) < num_heads:
            raise ArgumentError(f"channels {c} must split into {num_heads} heads, with one q-kernel per head")
        self.num_heads, self.key_dim, self.window = num_heads, key_dim, window_resolution
        self.d = c // num_heads              # EfficientViT's attn_ratio = c / (key_dim * num_heads)
        self.scale = key_dim ** -0.5
        self.qkvs = nn.ModuleList(Conv(self.d, 2 * key_dim + self.d, 1, act=None) for _ in range(num_heads))
        self.dws = nn.ModuleList(Conv(key_dim, key_dim, kernels[i], g=key_dim, act=None) for i in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), Conv(self.d * num_heads, c, 1, act=None))
        points = list(itertools.product(range(window_resolution), range(window_resolution)))
        offsets, indices = {}, []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                indices.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(indices).view(len(points), len(points)),
                             persistent=False)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        biases = self.attention_biases[:, self.attention_bias_idxs]
        outputs, feat = [], None
        for i, (chunk, qkv, dw) in enumerate(zip(x.chunk(self.num_heads, 1), self.qkvs, self.dws)):
            feat = chunk if feat is None else feat + chunk
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.d], 1)
            q, k, v = dw(q).flatten(2), k.flatten(2), v.flatten(2)
            attn = ((q.transpose(-2, -1) @ k) * self.scale + biases[i]).softmax(-1)
            feat = (v @ attn.transpose(-2, -1)).view(b, self.d, h, w)
            outputs.append(feat)
        return self.proj(torch.cat(outputs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.window
        pad_b, pad_r = (r - h % r) % r, (r - w % r) % r
        x = F.pad(x, (0, pad_r, 0, pad_b))
        nh, nw = x.shape[2] // r, x.shape[3] // r
        windows = x.view(b, c, nh, r, nw, r).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, r, r)
        out = self._attend(windows).view(b, nh, nw, c, r, r).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * r, nw * r)
        return out[:, :, :h, :w]
