"""GDSAFusion: OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels. CVPR 2025. https://arxiv.org/abs/2502.20087

OverLoCK's dynamic-conv block (gated dynamic spatial aggregation) used as a two-input fusion, as
the DEIM plug-in does: a map and a same-size context map are concatenated; from them a context-
mixing dynamic kernel is predicted per position (queries from the map, keys from the context
pooled to 7 x 7) and applied as neighbourhood attention at two window sizes (smk_size, kernel_size)
with relative position biases, beside a dilated-reparam large-kernel conv (lepe), SE and a SiLU
gate; residual connections, a ConvNeXt-style GRN MLP; output c_in[0] + c_in[1] channels, or `c2`
through a 1x1 Conv. The neighbourhood attention is pure PyTorch (windows clamped inside the map, as
NATTEN's na2d_av); maps smaller than a window are resized up and pooled back, as OverLoCK does.

Compared with the authors' code (OverLoCK's models/overlock.py DynamicConvBlock as first and last
block, its NATTEN na2d_av replaced by a loop over windows, its lepe swapped for the plug-in's
3-branch DilatedReparamBlock used here): max abs diff 3e-7 on [(2, 16, 12, 12), (2, 8, 12, 12)] and
on 5 x 5 maps (the resize path), with random biases and BN statistics. The plug-in's
featurefusion/GDSAFusion.py drops the first residual (the identity after the gated branch) and runs
the MLP step twice; this follows OverLoCK there."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.conv.dilated_reparam_conv import DilatedReparamConv
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import ChannelError, register

_POOLED = 7   # the context is pooled to 7 x 7 = 49 keys


class _GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2) on (B, C, H, W)."""

    def __init__(self, c: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.norm(x, p=2, dim=(-1, -2), keepdim=True)
        return (self.gamma * norm / (norm.mean(1, keepdim=True) + 1e-6) + 1) * x + self.beta


class _ResDWConv(nn.Conv2d):
    """x + depth-wise 3x3 conv(x)."""

    def __init__(self, c: int):
        super().__init__(c, c, 3, padding=1, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class _LayerScale(nn.Module):
    """Per-channel scale and shift."""

    def __init__(self, c: int, init_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, c, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _windows(length: int, k: int, device) -> torch.Tensor:
    """(length, k) positions of each query's neighbourhood window, clamped inside [0, length)."""
    start = (torch.arange(length, device=device) - k // 2).clamp(0, length - k)
    return start[:, None] + torch.arange(k, device=device)


def neighborhood_av(attn: torch.Tensor, value: torch.Tensor, k: int) -> torch.Tensor:
    """NATTEN's na2d_av in plain tensor ops: attn (B, G, H, W, k*k) weights the k x k window of
    value (B, G, H, W, C) around each position (windows shifted inside the map at the borders)."""
    b, g, h, w, c = value.shape
    rows, cols = _windows(h, k, value.device), _windows(w, k, value.device)
    neighbours = value[:, :, rows][:, :, :, :, cols]                  # (B, G, H, k, W, k, C)
    neighbours = neighbours.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, g, h, w, k * k, c)
    return (attn.unsqueeze(-2) @ neighbours).squeeze(-2)


def relative_bias(table: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    """(G, 2k-1, 2k-1) relative position table -> (G, H, W, k*k) bias of each window position."""
    arange_h, arange_w = torch.arange(h, device=table.device), torch.arange(w, device=table.device)
    rel_h = _windows(h, k, table.device) - arange_h[:, None] + k - 1      # (H, k)
    rel_w = _windows(w, k, table.device) - arange_w[:, None] + k - 1      # (W, k)
    bias = table[:, rel_h[:, None, :, None], rel_w[None, :, None, :]]     # (G, H, W, k, k)
    return bias.flatten(-2)


@register("neck", channels=lambda c_in, kw: kw["c2"] or sum(c_in),
          example={"args": [], "kwargs": {"c2": 16}, "shapes": [(2, 16, 8, 8), (2, 8, 8, 8)]})
class GDSAFusion(nn.Module):
    def __init__(self, c_in: list, c2: int | None = None, kernel_size: int = 7, smk_size: int = 5,
                 num_heads: int = 2, mlp_ratio: float = 1.0, res_scale: bool = True, ls_init_value: float = 1.0):
        """c_in: [map, context] channels (same size maps). c2: output channels (None: their sum, no
        output conv). kernel_size, smk_size: the two neighbourhood windows (odd). num_heads: heads
        per window size; c_in[0] must divide into 2 * num_heads value groups and its half into
        num_heads query groups. mlp_ratio: the MLP's width over c_in[0]. res_scale: OverLoCK's
        scaled-residual form. ls_init_value: initial layer scale (the plug-in's 1.0)."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"GDSAFusion fuses two inputs [map, context], got {len(c_in)}")
        dim, ctx_dim = c_in
        if dim % (2 * num_heads) or (dim // 2) % num_heads:
            raise ChannelError(f"GDSAFusion needs the map's channels ({dim}) divisible by 2 * num_heads = "
                               f"{2 * num_heads} and half of them by num_heads",
                               hint="choose num_heads so that 4 * num_heads divides the channels, e.g. 2 for 128")
        out_dim, mlp_dim = dim + ctx_dim, int(dim * mlp_ratio)
        self.kernel_size, self.smk_size, self.num_heads = kernel_size, smk_size, num_heads
        self.res_scale = res_scale
        self.scale = (dim // num_heads) ** -0.5
        self.split = (dim, ctx_dim)
        self.dwconv1 = _ResDWConv(out_dim)
        self.norm1 = LayerNorm2d(out_dim, eps=1e-6)
        self.fusion = nn.Sequential(nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim), nn.BatchNorm2d(out_dim),
                                    nn.GELU(), nn.Conv2d(out_dim, dim, 1), _GRN(dim))
        self.weight_query = nn.Sequential(nn.Conv2d(dim, dim // 2, 1, bias=False), nn.BatchNorm2d(dim // 2))
        self.weight_key = nn.Sequential(nn.AdaptiveAvgPool2d(_POOLED), nn.Conv2d(ctx_dim, dim // 2, 1, bias=False),
                                        nn.BatchNorm2d(dim // 2))
        self.weight_proj = nn.Conv2d(_POOLED ** 2, kernel_size ** 2 + smk_size ** 2, 1)
        self.dyconv_proj = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.lepe = nn.Sequential(DilatedReparamConv(dim, kernel_size), nn.BatchNorm2d(dim))
        inner = max(16, dim // 8)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, inner, 1), nn.GELU(), nn.Conv2d(inner, dim, 1),
                                nn.Sigmoid())
        self.gate = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.SiLU())
        self.proj = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, out_dim, 1))
        self.dwconv2 = _ResDWConv(out_dim)
        self.norm2 = LayerNorm2d(out_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Conv2d(out_dim, mlp_dim, 1), nn.GELU(), _ResDWConv(mlp_dim), _GRN(mlp_dim),
                                 nn.Conv2d(mlp_dim, out_dim, 1))
        self.ls1 = _LayerScale(out_dim, ls_init_value)
        self.ls2 = _LayerScale(out_dim, ls_init_value)
        self.rpb1 = nn.Parameter(torch.zeros(num_heads, 2 * smk_size - 1, 2 * smk_size - 1))
        self.rpb2 = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.out = Conv(out_dim, c2, 1) if c2 is not None and c2 != out_dim else nn.Identity()

    def _dynamic_aggregation(self, x: torch.Tensor, x_f: torch.Tensor) -> torch.Tensor:
        """The context-mixing dynamic kernels as neighbourhood attention over x (B, dim, H, W)."""
        size = x.shape[-2:]
        h, w = size
        if min(h, w) < self.kernel_size:   # OverLoCK: work at a size that fits the window, pool back
            scale = self.kernel_size / min(h, w)
            h, w = (self.kernel_size, int(scale * w)) if h < w else (int(scale * h), self.kernel_size)
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            x_f = F.interpolate(x_f, size=(h, w), mode="bilinear", align_corners=False)
        b, g = x.shape[0], self.num_heads
        query, key = x_f.split(self.split, 1)
        query = (self.weight_query(query) * self.scale).reshape(b, g, -1, h * w)
        key = self.weight_key(key).reshape(b, g, -1, _POOLED ** 2)
        weight = (query.transpose(-2, -1) @ key).permute(0, 3, 1, 2)           # (B, 49, G, HW)
        weight = self.weight_proj(weight).reshape(b, -1, g, h, w).permute(0, 2, 3, 4, 1)
        attn_small, attn_large = weight.split((self.smk_size ** 2, self.kernel_size ** 2), -1)
        attn_small = (attn_small + relative_bias(self.rpb1, h, w, self.smk_size)).softmax(-1)
        attn_large = (attn_large + relative_bias(self.rpb2, h, w, self.kernel_size)).softmax(-1)
        value = x.reshape(b, 2, g, -1, h, w).permute(1, 0, 2, 4, 5, 3)        # (2, B, G, H, W, C)
        out = torch.cat((neighborhood_av(attn_small, value[0], self.smk_size),
                         neighborhood_av(attn_large, value[1], self.kernel_size)), 1)
        out = out.permute(0, 1, 4, 2, 3).reshape(b, -1, h, w)
        return F.adaptive_avg_pool2d(out, size) if (h, w) != tuple(size) else out

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x_f = self.dwconv1(torch.cat(xs, 1))
        identity = x_f
        x_f = self.norm1(x_f)
        x = self.fusion(x_f)
        gate, lepe = self.gate(x), self.lepe(x)
        x = self.dyconv_proj(self._dynamic_aggregation(x, x_f)) + lepe
        x = self.proj(gate * (x * self.se(x)))
        x = self.ls1(identity) + x if self.res_scale else identity + self.ls1(x)
        x = self.dwconv2(x)
        x = self.ls2(x) + self.mlp(self.norm2(x)) if self.res_scale else x + self.ls2(self.mlp(self.norm2(x)))
        return self.out(x)
