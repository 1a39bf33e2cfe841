"""PST: Pyramid Sparse Transformer: Enhancing Multi-Scale Feature Fusion with Dynamic Token Selection. arXiv 2025. https://arxiv.org/abs/2505.12772

Fuses a map with the next coarser level (half its size): both are projected to `e * c2` channels,
then `n` blocks each add cross-attention (queries from the map, keys and values from the coarse
level, plus a depth-wise 7x7 positional term on the values) and a 1x1 MLP; the projected map and
every block's output are concatenated and mixed by a 1x1 Conv to `c2`. With `k` > 0 each block also
attends to the fine-level 2x2 cells under the k coarse tokens that draw the most attention, gated
against the coarse result (the paper's sparse refinement).

Compared with the authors' code (the plug-in's featurefusion/PST.py, the paper's PST): max abs diff
0 on [(2, 32, 16, 16), (2, 48, 8, 8)] with n = 2, for k = 0 and for k = 2 (eval mode, their Gumbel
noise removed). Their token choice draws Gumbel noise in every mode; here it is drawn only
in training, so inference is deterministic (the selection weights are otherwise unused)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register

_HEAD_DIM = 32


class _PyramidSparseAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, topk: int):
        super().__init__()
        self.num_heads, self.head_dim, self.topk = num_heads, dim // num_heads, topk
        self.q = Conv(dim, dim, 1, act=None)
        self.kv = Conv(dim, 2 * dim, 1, act=None)
        self.proj = Conv(dim, dim, 1, act=None)
        self.pe = Conv(dim, dim, 7, 1, 3, g=dim, act=None)
        self.gate = nn.Conv1d(2 * self.head_dim, self.head_dim, 1) if topk > 0 else None

    def _heads(self, t: torch.Tensor, width: int) -> torch.Tensor:
        """(B, heads * width, H, W) -> (B, heads, HW, width)."""
        return t.reshape(t.shape[0], self.num_heads, width, -1).transpose(2, 3)

    def forward(self, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        h_up, w_up = upper.shape[-2:]
        q = self._heads(self.q(x), self.head_dim)
        k, v = self._heads(self.kv(upper), 2 * self.head_dim).split(self.head_dim, -1)
        similarity = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
        out = similarity.softmax(-1) @ v
        if 0 < self.topk <= h_up * w_up:
            out = self._refine(x, q, similarity, out, (h_up, w_up))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        positional = self.pe(v.transpose(2, 3).reshape(b, c, h_up, w_up))
        return self.proj(out + F.interpolate(positional, size=(h, w), mode="bilinear", align_corners=False))

    def _refine(self, x, q, similarity, coarse, upper_size):
        """Attend to the fine 2x2 cells under the top-k coarse tokens; gate against the coarse output."""
        b, c, h, w = x.shape
        h_up, w_up = upper_size
        if (h, w) != (2 * h_up, 2 * w_up):
            raise ArgumentError(f"PST's sparse refinement needs the map at twice the coarse size, got {h}x{w} and {h_up}x{w_up}")
        scores = similarity.mean(2)                                   # (B, heads, h_up * w_up)
        if self.training:   # Gumbel noise makes the selection stochastic while training (the paper's)
            scores = scores - torch.empty_like(scores).exponential_().log()
        chosen = scores.topk(self.topk, dim=-1).indices
        rows, cols = (chosen // w_up) * 2, (chosen % w_up) * 2
        cells = torch.cat([(rows + dy) * w + cols + dx for dy in (0, 1) for dx in (0, 1)], -1)
        fine_k, fine_v = self._heads(self.kv(x), 2 * self.head_dim).split(self.head_dim, -1)
        index = cells.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)
        fine_k, fine_v = fine_k.gather(2, index), fine_v.gather(2, index)
        refined = (q @ fine_k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1) @ fine_v
        both = torch.cat((coarse, refined), -1).reshape(b * self.num_heads, h * w, -1).transpose(1, 2)
        gate = torch.sigmoid(self.gate(both)).transpose(1, 2).reshape_as(coarse)
        return gate * refined + (1 - gate) * coarse


class _PSTBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, topk: int):
        super().__init__()
        self.attn = _PyramidSparseAttention(dim, dim // _HEAD_DIM, topk)
        self.mlp = nn.Sequential(Conv(dim, int(dim * mlp_ratio), 1), Conv(int(dim * mlp_ratio), dim, 1, act=None))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):   # the paper's truncated-normal init
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, upper)
        return x + self.mlp(x)


@register("neck", channels="arg0", repeat_arg="n",
          example={"args": [64], "shapes": [(2, 32, 16, 16), (2, 48, 8, 8)]})
class PST(nn.Module):
    def __init__(self, c_in: list, c2: int, n: int = 1, mlp_ratio: float = 2.0, e: float = 0.5, k: int = 0):
        """c_in: [map, coarser level] channels. c2: output channels; int(c2 * e) must be a multiple of 32
        (one attention head per 32 channels). n: blocks. k: coarse tokens refined at the fine level
        (0: coarse attention only, the paper's training setting)."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"PST fuses two inputs [map, coarser level], got {len(c_in)}")
        hidden = int(c2 * e)
        if hidden % _HEAD_DIM or hidden == 0:
            raise ChannelError(f"PST needs int(c2 * e) to be a multiple of {_HEAD_DIM}, got {hidden} (c2={c2}, e={e})",
                               hint="choose c2 and e so that c2 * e is 32, 64, 96, ...")
        self.cv1 = Conv(c_in[0], hidden, 1)
        self.cv_up = Conv(c_in[1], hidden, 1)
        self.cv2 = Conv((1 + n) * hidden, c2, 1)
        self.blocks = nn.ModuleList(_PSTBlock(hidden, mlp_ratio, k) for _ in range(n))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        upper = self.cv_up(xs[1])
        outs = [self.cv1(xs[0])]
        for block in self.blocks:
            outs.append(block(outs[-1], upper))
        return self.cv2(torch.cat(outs, 1))
