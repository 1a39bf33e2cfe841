"""BiLevelRoutingAttention: BiFormer: Vision Transformer with Bi-Level Routing Attention. CVPR 2023. https://arxiv.org/abs/2303.08810

Coarse level: region-pooled queries and keys pick each region's top-k most related regions;
fine level: tokens attend to the tokens of those regions only; plus a depth-wise conv on V (LCE).
Pure PyTorch (gather-based, as the official nchw version). Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


def _regions(t: torch.Tensor, size: tuple[int, int], heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, regions, tokens per region, head_dim); H, W multiples of size."""
    b, c, h, w = t.shape
    t = t.view(b, heads, c // heads, h // size[0], size[0], w // size[1], size[1])
    return t.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, heads, (h // size[0]) * (w // size[1]), size[0] * size[1], c // heads)


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4, "n_win": 4, "topk": 4},
                                                   "shape": (2, 32, 16, 16)})
class BiLevelRoutingAttention(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, n_win: int = 7, topk: int = 4, side_dwconv: int = 3,
                 qk_scale: float | None = None):
        super().__init__()
        if c % num_heads:
            raise ArgumentError(f"channels {c} must split into {num_heads} heads")
        self.num_heads, self.n_win, self.topk = num_heads, n_win, topk
        self.scale = qk_scale or c ** -0.5   # BiFormer scales by the full width, not the head width
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.lepe = nn.Conv2d(c, c, side_dwconv, 1, side_dwconv // 2, groups=c)
        self.output_linear = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        size = (max(h // self.n_win, 1), max(w // self.n_win, 1))
        q, k, v = self.qkv(x).chunk(3, 1)
        # region level: routing is not trained through (the official code detaches it)
        q_r = F.avg_pool2d(q.detach(), size, ceil_mode=True, count_include_pad=False).flatten(2).transpose(1, 2)
        k_r = F.avg_pool2d(k.detach(), size, ceil_mode=True, count_include_pad=False).flatten(2)
        topk = min(self.topk, k_r.shape[-1])
        routes = torch.topk(q_r @ k_r, topk, dim=-1).indices                      # (B, regions, topk)
        # token level, on maps zero-padded to whole regions
        pad = (0, (size[1] - w % size[1]) % size[1], 0, (size[0] - h % size[0]) % size[0])
        q, k, v_seq = (_regions(F.pad(t, pad), size, self.num_heads) for t in (q, k, v))
        heads, regions, per_region, head_dim = q.shape[1:]
        index = routes[:, None, :, :, None, None].expand(-1, heads, -1, -1, per_region, head_dim)
        gather = lambda t: torch.gather(t.unsqueeze(2).expand(-1, -1, regions, -1, -1, -1), 3, index).flatten(3, 4)
        attn = ((q * self.scale) @ gather(k).transpose(-1, -2)).softmax(-1)
        out = attn @ gather(v_seq)                                                 # (B, heads, regions, per_region, hd)
        ph, pw = h + pad[3], w + pad[1]
        out = out.view(b, heads, ph // size[0], pw // size[1], size[0], size[1], head_dim)
        out = out.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, c, ph, pw)[:, :, :h, :w]
        return self.output_linear(out + self.lepe(v))
