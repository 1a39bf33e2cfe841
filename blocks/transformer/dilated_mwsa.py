"""DilatedMWSA: Rethinking Transformer-Based Blind-Spot Network for Self-Supervised Image Denoising (TBSN's masked window-based self-attention). AAAI 2025. https://arxiv.org/abs/2404.07846

Each w x w query window attends to an overlapping key window (w + w * overlap_ratio wide, HaloNet
style) with relative-position logits; a fixed mask keeps only keys at odd offsets in both axes, so
the attention mimics a dilated convolution (and never sees the query pixel itself: TBSN's blind
spot). Heads of dim_head channels, 1x1 projection back. Maps are zero-padded to whole windows.
Keeps channels. (TBSN's code names this DilatedOCA; the DEIM plug-in project files it as
DilatedGCSA, see DilatedGCSA here for the channel attention.)
Compared with the authors' code (nagejacob/TBSN network/tbsn.py, DilatedOCA): max abs diff 9e-8 on (2, 32, 8, 8) and (2, 32, 12, 12), windows 8 and 4."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer._attention_parts import pad_to_multiple, window_merge, window_partition


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 2}, "shape": (2, 32, 8, 8)})
class DilatedMWSA(nn.Module):
    def __init__(self, c: int, num_heads: int = 2, window_size: int = 8, overlap_ratio: float = 0.5,
                 dim_head: int = 16, bias: bool = False):
        """window_size: query window side; overlap_ratio: how much wider the key window is (the extra
        width must be even, split over both sides); num_heads x dim_head: the attention width."""
        super().__init__()
        self.window_size = window_size
        self.key_size = window_size + int(window_size * overlap_ratio)
        if (self.key_size - window_size) % 2:
            raise ChannelError(f"DilatedMWSA: key window {self.key_size} minus query window {window_size} must be even",
                               hint="choose window_size * overlap_ratio even")
        self.num_heads, self.dim_head = num_heads, dim_head
        inner = num_heads * dim_head
        self.qkv = nn.Conv2d(c, 3 * inner, 1, bias=bias)
        self.project_out = nn.Conv2d(inner, c, 1, bias=bias)
        scale = dim_head ** -0.5
        self.rel_height = nn.Parameter(torch.randn(2 * self.key_size - 1, dim_head) * scale)
        self.rel_width = nn.Parameter(torch.randn(2 * self.key_size - 1, dim_head) * scale)
        qy, qx = (t.flatten() for t in torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        ky, kx = (t.flatten() for t in torch.meshgrid(torch.arange(self.key_size), torch.arange(self.key_size), indexing="ij"))
        rel_y = ky[None] - qy[:, None] + self.key_size - 1          # (w*w, k*k) indices into the tables
        rel_x = kx[None] - qx[:, None] + self.key_size - 1
        self.register_buffer("rel_y", rel_y, persistent=False)
        self.register_buffer("rel_x", rel_x, persistent=False)
        # keys at an even offset from the query (its own pixel included) are masked out
        self.register_buffer("mask", torch.where((rel_y % 2 == 1) & (rel_x % 2 == 1), 0.0, float("-inf")),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r, kr, heads, d = self.window_size, self.key_size, self.num_heads, self.dim_head
        q, k, v = pad_to_multiple(self.qkv(x), r, r).chunk(3, 1)
        hp, wp = q.shape[-2:]
        q = window_partition(q, r, r)                                             # (B*nW, r*r, inner)
        k, v = (F.unfold(t, kr, padding=(kr - r) // 2, stride=r).reshape(b, heads * d, kr * kr, -1)
                .permute(0, 3, 2, 1).reshape(-1, kr * kr, heads * d) for t in (k, v))
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
        q = q * d ** -0.5
        rel = (torch.einsum("bhqd,qkd->bhqk", q, self.rel_height[self.rel_y])
               + torch.einsum("bhqd,qkd->bhqk", q, self.rel_width[self.rel_x]))
        attn = (q @ k.transpose(-2, -1) + rel + self.mask).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, r * r, heads * d)
        return self.project_out(window_merge(out, r, r, hp, wp)[:, :, :h, :w])
