"""Pieces shared by several token mixers: channel ("transposed") attention, window partitioning and
CrossFormer's dynamic position bias."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError


def check_heads(name: str, c: int, heads: int) -> None:
    if heads < 1 or c % heads:
        raise ChannelError(f"{name}: {c} channels do not split into {heads} heads",
                           hint=f"choose num_heads dividing {c}")


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor,
                      act: str = "softmax", top_k: torch.Tensor | None = None) -> torch.Tensor:
    """Attention among the channels of each head (Restormer's MDTA form): q, k L2-normalised over the
    tokens, logits scaled by a learnable temperature, then softmax (optionally over the top_k logits of
    each row only; top_k: (B,) whole numbers, one per image) or ReLU. q, k, v: (B, C, H, W); returns
    (B, C, H, W), channels in head-major order."""
    b, c, h, w = v.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * temperature
    if act == "relu":
        attn = F.relu(attn)
    else:
        if top_k is not None:
            rank = attn.argsort(-1, descending=True).argsort(-1)       # 0 for each row's largest logit
            attn = attn.masked_fill(rank >= top_k.view(b, 1, 1, 1), float("-inf"))
        attn = attn.softmax(-1)
    return (attn @ v).reshape(b, c, h, w)


def pad_to_multiple(x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) map at the bottom and right to multiples of (mh, mw)."""
    return F.pad(x, (0, -x.shape[3] % mw, 0, -x.shape[2] % mh))


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of (wh, ww) -> (B * windows, wh * ww, C), windows row-major."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // wh, wh, w // ww, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, wh * ww, c)


def window_merge(windows: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """Inverse of window_partition: (B * windows, wh * ww, C) -> (B, C, H, W)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(-1, c, h, w)


class DynamicPosBias(nn.Module):
    """CrossFormer's dynamic position bias: an MLP maps every relative offset (dy, dx) of a gh x gw group to
    one bias per head, so one set of weights serves any group size.

    `dim` follows CrossFormer's call (the attention width / 4); the MLP is dim // 4 wide."""

    def __init__(self, dim: int, num_heads: int, residual: bool = False):
        super().__init__()
        pos_dim = dim // 4
        if pos_dim < 1:
            raise ChannelError(f"dynamic position bias needs at least 16 attention channels, got {dim * 4}")
        self.residual = residual
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def forward(self, gh: int, gw: int) -> torch.Tensor:
        """The (heads, gh*gw, gh*gw) bias added to the attention logits of a gh x gw group."""
        device = self.pos_proj.weight.device
        dy, dx = torch.meshgrid(torch.arange(1 - gh, gh, device=device), torch.arange(1 - gw, gw, device=device),
                                indexing="ij")
        offsets = torch.stack((dy, dx), -1).reshape(-1, 2).to(self.pos_proj.weight.dtype)
        pos = self.pos_proj(offsets)
        if self.residual:
            pos = pos + self.pos1(pos)
            pos = self.pos3(pos + self.pos2(pos))
        else:
            pos = self.pos3(self.pos2(self.pos1(pos)))
        ys, xs = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None, :] + gh - 1) * (2 * gw - 1) + (xs[:, None] - xs[None, :] + gw - 1)
        return pos[index].permute(2, 0, 1)
