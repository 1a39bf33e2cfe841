"""LEGM: Depth Information Assisted Collaborative Mutual Promotion Network for Single Image Dehazing. CVPR 2024. https://arxiv.org/abs/2403.01105

One block of DCMPNet's local-feature-enhanced global modelling (LEGM) stage, the DehazeFormer block:
a rescale norm (LayerNorm over C, H, W whose mean and std also predict a per-channel re-scale and
re-bias), then a 1x1 value projection feeding both a window self-attention (queries and keys from a
1x1 projection, a relative-position bias predicted by an MLP from log-scaled offsets, optionally
shifted windows) and a depth-wise 5x5 conv, summed and projected; the re-scale/re-bias undo the norm
and a residual is added; then a 1x1 ReLU MLP with a residual. Keeps channels.
Maps are reflect-padded to whole windows, as in the authors' code; a map smaller than the window uses
a window as large as the map (the MLP bias takes any offset), and the reflect-padded 5x5 conv
replicates the border of maps under 3 px, where the authors' code fails.
Compared with the authors' code (zhoushen1/DCMPNet models/DIACMPN.py TB with use_attn=True,
conv_type='DWConv', norm_layer=LayNormal): max abs diff 2e-6 on (2, 32, 16, 16) and (2, 32, 12, 20),
unshifted and shifted."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register


def log_relative_positions(window: int, device=None) -> torch.Tensor:
    """(window^2, window^2, 2) offsets between the cells of a window, as sign(d) * log(1 + |d|)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window, device=device), torch.arange(window, device=device),
                                        indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(offsets) * torch.log1p(offsets.abs())


class RescaleNorm(nn.Module):
    """LayerNorm over (C, H, W); also returns rescale = conv(std) and rebias = conv(mean) per channel."""

    def __init__(self, c: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.meta1 = nn.Conv2d(1, c, 1)
        self.meta2 = nn.Conv2d(1, c, 1)
        nn.init.trunc_normal_(self.meta1.weight, std=0.02)
        nn.init.constant_(self.meta1.bias, 1.0)  # rescale starts near 1
        nn.init.trunc_normal_(self.meta2.weight, std=0.02)
        nn.init.zeros_(self.meta2.bias)

    def forward(self, x: torch.Tensor):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        return (x - mean) / std * self.weight + self.bias, self.meta1(std), self.meta2(mean)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows with an MLP-predicted relative position bias."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, (c // num_heads) ** -0.5
        self.meta = nn.Sequential(nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, num_heads))

    def forward(self, qkv: torch.Tensor, window: int) -> torch.Tensor:
        windows, tokens, _ = qkv.shape
        q, k, v = qkv.reshape(windows, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.meta(log_relative_positions(window, qkv.device)).permute(2, 0, 1)
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)) + bias, dim=-1)
        return torch.matmul(attn, v).transpose(1, 2).reshape(windows, tokens, -1)


@register("transformer", channels="same", example={"kwargs": {"window_size": 4}, "shape": (2, 32, 16, 16)})
class LEGM(nn.Module):
    def __init__(self, c: int, num_heads: int = 4, window_size: int = 8, shift: bool = False, mlp_ratio: float = 4.0):
        """c: channels; num_heads: attention heads (must divide c); window_size: attention window side;
        shift: shift the windows by half a window (the odd blocks of a LEGM stage); mlp_ratio: MLP width / c."""
        super().__init__()
        if c % num_heads:
            raise ChannelError(f"LEGM: channels {c} are not divisible by num_heads={num_heads}")
        self.window_size, self.shift = window_size, shift
        self.norm = RescaleNorm(c)
        self.conv = nn.Conv2d(c, c, 5, groups=c)  # reflect-padded in forward
        self.v = nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.qk = nn.Conv2d(c, 2 * c, 1)
        self.attn = WindowAttention(c, num_heads)
        self.mlp = nn.Sequential(nn.Conv2d(c, int(c * mlp_ratio), 1), nn.ReLU(), nn.Conv2d(int(c * mlp_ratio), c, 1))

    def _window_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = qkv.shape
        window = min(self.window_size, height, width)
        shift = window // 2 if self.shift else 0
        pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
        if shift:
            qkv = F.pad(qkv, (shift, (window - shift + pad_w) % window, shift, (window - shift + pad_h) % window), mode="reflect")
        else:
            qkv = F.pad(qkv, (0, pad_w, 0, pad_h), mode="reflect")
        rows, cols = qkv.shape[2] // window, qkv.shape[3] // window
        tokens = qkv.reshape(batch, channels, rows, window, cols, window).permute(0, 2, 4, 3, 5, 1)
        out = self.attn(tokens.reshape(-1, window * window, channels), window)
        out = out.reshape(batch, rows, cols, window, window, -1).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(batch, -1, rows * window, cols * window)
        return out[:, :, shift:shift + height, shift:shift + width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, rescale, rebias = self.norm(x)
        v = self.v(y)
        attended = self._window_attention(torch.cat([self.qk(y), v], 1))
        # reflect padding needs more than 2 pixels; smaller maps replicate their border instead
        mode = "reflect" if min(v.shape[2:]) > 2 else "replicate"
        x = x + self.proj(self.conv(F.pad(v, (2, 2, 2, 2), mode=mode)) + attended) * rescale + rebias
        return x + self.mlp(x)
