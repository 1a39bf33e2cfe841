"""DAttention: Vision Transformer with Deformable Attention (DAT). CVPR 2022. https://arxiv.org/abs/2201.00520

An offset network (depth-wise conv, LayerNorm, GELU, 1x1) shifts a grid of reference points per
channel group; keys and values are bilinearly sampled there and every query attends to them.
Position: DAT's depth-wise-conv positional term on the queries (size-free). Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


def _grid(h: int, w: int, start: float, device, dtype) -> torch.Tensor:
    """(h, w, 2) points (y, x) from `start` in steps of 1, normalised by (size - 1) to [-1, 1] as DAT does."""
    ys = torch.linspace(start, h - 1 + start, h, device=device, dtype=dtype) / max(h - 1, 1) * 2 - 1
    xs = torch.linspace(start, w - 1 + start, w, device=device, dtype=dtype) / max(w - 1, 1) * 2 - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4, "n_groups": 2},
                                                   "shape": (2, 32, 8, 8)})
class DAttention(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, n_groups: int = 4, stride: int = 1, ksize: int = 5,
                 offset_range_factor: float = 2.0):
        super().__init__()
        if c % num_heads or num_heads % n_groups:
            raise ArgumentError(f"channels {c} must split into {num_heads} heads and those into {n_groups} groups")
        self.num_heads, self.n_groups, self.offset_range_factor = num_heads, n_groups, offset_range_factor
        self.head_channels, self.group_channels = c // num_heads, c // n_groups
        self.scale = self.head_channels ** -0.5
        pad = ksize // 2 if ksize != stride else 0
        gc = self.group_channels
        self.conv_offset = nn.Sequential(nn.Conv2d(gc, gc, ksize, stride, pad, groups=gc), LayerNorm2d(gc),
                                         nn.GELU(), nn.Conv2d(gc, 2, 1, bias=False))
        self.proj_q, self.proj_k, self.proj_v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))
        self.rpe_table = nn.Conv2d(c, c, 3, 1, 1, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.n_groups
        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(b * g, self.group_channels, h, w))     # (B*g, 2, Hk, Wk)
        hk, wk = offset.shape[2:]
        if self.offset_range_factor >= 0:  # bounded offsets: at most `factor` reference-grid steps
            step = torch.tensor([1.0 / max(hk - 1, 1), 1.0 / max(wk - 1, 1)], device=x.device, dtype=x.dtype)
            offset = offset.tanh() * step.view(1, 2, 1, 1) * self.offset_range_factor
        reference = _grid(hk, wk, 0.5, x.device, x.dtype)
        pos = offset.permute(0, 2, 3, 1) + reference
        if self.offset_range_factor < 0:
            pos = pos.clamp(-1, 1)
        sampled = F.grid_sample(x.reshape(b * g, self.group_channels, h, w), pos[..., (1, 0)],
                                mode="bilinear", align_corners=True).reshape(b, c, 1, hk * wk)
        q = q.reshape(b * self.num_heads, self.head_channels, h * w)
        k = self.proj_k(sampled).reshape(b * self.num_heads, self.head_channels, hk * wk)
        v = self.proj_v(sampled).reshape(b * self.num_heads, self.head_channels, hk * wk)
        attn = (torch.einsum("bcm,bcn->bmn", q, k) * self.scale).softmax(2)
        out = torch.einsum("bmn,bcn->bcm", attn, v)
        out = out + self.rpe_table(q.reshape(b, c, h, w)).reshape(b * self.num_heads, self.head_channels, h * w)
        return self.proj_out(out.reshape(b, c, h, w))
