"""iRMB: Rethinking Mobile Block for Efficient Attention-based Models. ICCV 2023. https://arxiv.org/abs/2301.01146

EMO's inverted residual mobile block: BN, then multi-head self-attention whose values come from a
1x1 expansion (exp_ratio, ReLU), computed inside windows that sample the map on a strided grid (each
window_size x window_size window takes every (H / window_size)-th row and column, so each window spans
the whole map), then a depth-wise conv-BN-SiLU with a residual, a 1x1 projection and the block residual
(when c1 == c2 and stride 1). Output width c2 (channel rule "arg0").
Compared with the authors' code (zhangzjn/EMO model/emo.py iRMB): max abs diff 0 on (2, 32, 14, 14)
and (2, 32, 12, 20) (padded windows)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("backbone", channels="arg0", example={"args": [32], "kwargs": {"dim_head": 16}, "shape": (2, 32, 14, 14)})
class iRMB(nn.Module):  # noqa: N801  (the paper's spelling)
    def __init__(self, c1: int, c2: int, exp_ratio: float = 1.0, dw_k: int = 3, stride: int = 1, dim_head: int = 32,
                 window_size: int = 7, attn: bool = True, qkv_bias: bool = False, act="relu"):
        """c1, c2: input and output channels; exp_ratio: expanded width / c1 (EMO's stages use 2-4);
        dw_k, stride: the depth-wise conv; dim_head: channels per head (must divide c1; the authors'
        class defaults to 64, their EMO models use 16-32); window_size: tokens per window side (<= 0:
        one window over the whole map); attn: False leaves only the 1x1 expansion (an inverted
        residual); qkv_bias: bias of the q/k/v projections; act: activation after the value projection."""
        super().__init__()
        hidden = int(c1 * exp_ratio)
        if attn and c1 % dim_head:
            raise ChannelError(f"iRMB: input channels {c1} are not divisible by dim_head={dim_head}")
        self.attn, self.window_size, self.dim_head = attn, window_size, dim_head
        self.heads = c1 // dim_head if attn else 0
        self.has_skip = c1 == c2 and stride == 1
        self.norm = nn.BatchNorm2d(c1, eps=1e-6)
        self.qk = nn.Conv2d(c1, 2 * c1, 1, bias=qkv_bias) if attn else None
        self.v = nn.Sequential(nn.Conv2d(c1, hidden, 1, bias=qkv_bias), activation(act))
        self.conv_local = Conv(hidden, hidden, dw_k, stride, g=hidden, act="silu")
        self.conv_local.norm.eps = 1e-6
        self.proj = nn.Conv2d(hidden, c2, 1, bias=False)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        win_h, win_w = (self.window_size, self.window_size) if self.window_size > 0 else (height, width)
        pad_b, pad_r = (win_h - height % win_h) % win_h, (win_w - width % win_w) % win_w
        x = F.pad(x, (0, pad_r, 0, pad_b))
        n1, n2 = (height + pad_b) // win_h, (width + pad_r) // win_w
        # strided windows: row i of window (a, b) is map row i * n1 + a
        x = x.reshape(batch, channels, win_h, n1, win_w, n2).permute(0, 3, 5, 1, 2, 4).reshape(-1, channels, win_h, win_w)
        q, k = self.qk(x).reshape(x.shape[0], 2, self.heads, self.dim_head, -1).transpose(3, 4).unbind(1)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.dim_head ** -0.5, dim=-1)
        v = self.v(x)
        v = v.reshape(v.shape[0], self.heads, -1, win_h * win_w).transpose(2, 3)
        y = torch.matmul(attn, v).transpose(2, 3).reshape(batch, n1, n2, -1, win_h, win_w)
        y = y.permute(0, 3, 4, 1, 5, 2).reshape(batch, -1, win_h * n1, win_w * n2)
        return y[:, :, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        y = self._attention(y) if self.attn else self.v(y)
        y = y + self.conv_local(y) if self.has_skip else self.conv_local(y)
        y = self.proj(y)
        return x + y if self.has_skip else y
