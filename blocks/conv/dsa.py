import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register


def strip_sample(x: torch.Tensor, offset: torch.Tensor, k: int) -> torch.Tensor:
    """The deformable strip conv core of DSAN along the width, in pure PyTorch.

    x (B, H, W, G, Cg) channels-last in G groups; offset (B, H, W, G, k). Output (B, H, W, G, Cg):
    for each pixel and group, the sum over the k taps of x linearly interpolated along the row at
    w + (tap - k // 2) + offset, zero outside the row (no kernel weights and no modulation: the
    learnt projections around it do the weighting, as in the authors' CUDA op)."""
    b, h, w, g, cg = x.shape
    taps = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    position = torch.arange(w, device=x.device, dtype=x.dtype)[:, None, None] + taps + offset   # (B, H, W, G, k)
    low = torch.floor(position)
    frac = position - low
    rows = x.permute(0, 1, 3, 2, 4)                                                         # (B, H, G, W, Cg)
    out = 0
    for index, weight in ((low, 1 - frac), (low + 1, frac)):
        valid = (index >= 0) & (index <= w - 1)
        index = index.clamp(0, w - 1).long().permute(0, 1, 3, 2, 4).reshape(b, h, g, w * k, 1)
        picked = torch.gather(rows, 3, index.expand(-1, -1, -1, -1, cg)).reshape(b, h, g, w, k, cg)
        weight = (weight * valid).permute(0, 1, 3, 2, 4).unsqueeze(-1)
        out = out + (picked * weight).sum(4)
    return out.permute(0, 1, 3, 2, 4)


class _StripDeform(nn.Module):
    """One deformable strip conv (DSCNX along the width, DSCNY along the height): offsets from a
    depth-wise strip conv + LayerNorm + GELU + linear map of the guide features."""

    def __init__(self, c: int, k: int, dw_k: int, group: int, vertical: bool, project: bool):
        super().__init__()
        self.k, self.group, self.vertical = k, group, vertical
        size, pad = ((dw_k, 1), ((dw_k - 1) // 2, 0)) if vertical else ((1, dw_k), (0, (dw_k - 1) // 2))
        self.dw_conv = nn.Conv2d(c, c, size, padding=pad, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.offset = nn.Linear(c, group * k)
        nn.init.zeros_(self.offset.weight)  # start as a plain strip sum (authors' init)
        nn.init.zeros_(self.offset.bias)
        self.input_proj = nn.Linear(c, c) if project else nn.Identity()
        if project:
            nn.init.xavier_uniform_(self.input_proj.weight)
            nn.init.zeros_(self.input_proj.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) channels-last; guide (B, C, H, W) the features the offsets come from."""
        x = self.input_proj(x)
        offset = self.offset(F.gelu(self.norm(self.dw_conv(guide).permute(0, 2, 3, 1))))
        b, h, w, c = x.shape
        x = x.reshape(b, h, w, self.group, c // self.group)
        offset = offset.reshape(b, h, w, self.group, self.k)
        if self.vertical:
            out = strip_sample(x.transpose(1, 2), offset.transpose(1, 2), self.k).transpose(1, 2)
        else:
            out = strip_sample(x, offset, self.k)
        return out.reshape(b, h, w, c)


@register("conv", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class DSA(nn.Module):
    """DSA: DSAN: Exploring the Relationship between Deformable Convolution and Spatial Attention. Preprint 2024. https://github.com/MarcYugo/DSAN-Deformable-Spatial-Attention

    Deformable spatial attention: 1x1 conv + GELU, then a depth-wise 5x5 conv feeding two deformable
    strip convs (along the width, then the height; offsets only along the strip, linear
    interpolation, no modulation), a 1x1 conv, a multiplicative gate on the GELU features, a 1x1
    projection and a residual; keeps channels.
    Not compared with the authors' code: their strip-deformable operator (DSCN) exists only as a
    CUDA extension; `strip_sample` is checked against a loop-by-loop transcription of its kernel
    (tests/test_zoo2_conv.py).
    """

    def __init__(self, c: int, k: int = 7, dw_k: int = 7, group: int = 8):
        """c: channels (kept). k: taps of each strip conv. dw_k: strip length of the offset branch.
        group: offset groups (c must divide). Defaults: DSAN-T's stride-16 stage (7, 7, 8)."""
        super().__init__()
        if c % group:
            raise ChannelError(f"DSA needs channels divisible by group={group}, got {c}", hint="change group")
        self.proj_1 = nn.Conv2d(c, c, 1)
        self.conv0 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.strip_x = _StripDeform(c, k, dw_k, group, vertical=False, project=True)
        self.strip_y = _StripDeform(c, k, dw_k, group, vertical=True, project=False)
        self.conv = nn.Conv2d(c, c, 1)
        self.proj_2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = F.gelu(self.proj_1(x))
        guide = self.conv0(u)
        attn = self.strip_y(self.strip_x(guide.permute(0, 2, 3, 1), guide), guide)
        attn = self.conv(attn.permute(0, 3, 1, 2))
        return self.proj_2(u * attn) + x
