"""RSA: Efficient Face Super-Resolution via Wavelet-based Feature Enhancement Network (WFEN's regional self-attention). ACM MM 2024. https://arxiv.org/abs/2407.19768

1x1 + 3x3 depth-wise q, k, v, then inside each w x w window a channel-by-channel attention (q, k
L2-normalised over channels, ReLU, one learnable temperature); with shift=True the map is rolled by
half a window first and rolled back after, 1x1 projection. The q, k, v maps are zero-padded to whole
windows (zero pixels add nothing to a window's channel map) and cropped back. Keeps channels.
Compared with the authors' code (PRIS-CV/WFEN models/arch/wfen.py, RSA): max abs diff 0.0 (random weights, shifted and not) on (2, 32, 8, 8)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register
from blocks.transformer._attention_parts import pad_to_multiple, window_merge, window_partition


@register("transformer", channels="same", example={"args": [], "shape": (2, 32, 8, 8)})
class RSA(nn.Module):
    def __init__(self, c: int, window_size: int = 4, shift: bool = True, bias: bool = False):
        """window_size: side of the square windows (WFEN uses 8, 4, 2 by level); shift: roll by half a window."""
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.window_size
        if self.shift:
            x = torch.roll(x, (-(r // 2), -(r // 2)), (2, 3))
        qkv = pad_to_multiple(self.qkv_dwconv(self.qkv(x)), r, r)
        hp, wp = qkv.shape[-2:]
        q, k, v = (window_partition(t, r, r) for t in qkv.chunk(3, 1))          # (B*windows, r*r, C)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = F.relu((q.transpose(1, 2) @ k) * self.temperature)                 # (B*windows, C, C)
        out = window_merge(v @ attn, r, r, hp, wp)[:, :, :h, :w]
        if self.shift:
            out = torch.roll(out, (r // 2, r // 2), (2, 3))
        return self.project_out(out)
