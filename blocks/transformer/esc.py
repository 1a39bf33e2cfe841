"""ESC: Emulating Self-attention with Convolution for Efficient Image Super-Resolution. ICCV 2025. https://arxiv.org/abs/2503.06671

The ESC block: LayerNorm and a conv FFN, one window self-attention with a relative position bias
(residual), then conv_blocks rounds of x + ConvAttn(ConvFFN(x)); ConvAttn runs, on the first pdim
channels, a shared 13x13 large-kernel conv (its kernel symmetrised over the 8 flips/rotations, the
authors' geometric re-parameterisation) plus a 3x3 depth-wise dynamic kernel predicted per image,
then a 1x1 conv mixes all channels; LayerNorm, a 3x3 conv and the block residual close it. Keeps
channels. `fuse()` stores the symmetrised kernel (the authors' `convert()`).
The large kernel, which ESC shares across all blocks of the network, belongs to each block here.
Maps are reflect-padded to whole windows; a map smaller than the window uses a window as large as the
map (a slice of the same bias table). The batch-1-only inference path of the authors' dynamic conv
is replaced by their batched training path (the same function).
Compared with the authors' code (dslisleedh/ESC esc/archs/esc_arch.py Block with attn_type='Naive'):
max abs diff 3e-6 on (2, 32, 16, 16) with window 8."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import ChannelError, register


def geometric_ensemble(kernel: torch.Tensor) -> torch.Tensor:
    """The mean of a kernel over its 8 flips and quarter rotations."""
    rotated = torch.rot90(kernel, -1, [2, 3])
    views = [kernel, rotated]
    views += [v.flip(dims) for v in (kernel, rotated) for dims in ([3], [2], [2, 3])]
    return sum(views) / 8


class ConvFFN(nn.Module):
    def __init__(self, c: int, k: int = 3, exp_ratio: float = 2.0):
        super().__init__()
        hidden = int(c * exp_ratio)
        self.proj = nn.Conv2d(c, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, k, 1, k // 2, groups=hidden)
        self.aggr = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.proj(x))
        return self.aggr(F.gelu(self.dwc(x)) + x)


class ConvAttn(nn.Module):
    """Large-kernel conv + per-image dynamic 3x3 depth-wise conv on the first pdim channels, then 1x1."""

    def __init__(self, c: int, pdim: int):
        super().__init__()
        self.pdim = pdim
        self.dwc_proj = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(pdim, pdim // 2, 1), nn.GELU(), nn.Conv2d(pdim // 2, pdim * 9, 1))
        nn.init.zeros_(self.dwc_proj[-1].weight)
        nn.init.zeros_(self.dwc_proj[-1].bias)
        self.aggr = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, lk_filter: torch.Tensor) -> torch.Tensor:
        part, rest = x.split([self.pdim, x.shape[1] - self.pdim], 1)
        batch, _, height, width = part.shape
        dynamic = self.dwc_proj(part).reshape(-1, 1, 3, 3)
        dynamic_out = F.conv2d(part.reshape(1, -1, height, width), dynamic, padding=1, groups=batch * self.pdim)
        part = F.conv2d(part, lk_filter, padding=lk_filter.shape[-1] // 2) + dynamic_out.reshape(batch, self.pdim, height, width)
        return self.aggr(torch.cat([part, rest], 1))


class WindowAttention(nn.Module):
    def __init__(self, c: int, window_size: int, num_heads: int):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.to_qkv = nn.Conv2d(c, 3 * c, 1)
        self.to_out = nn.Conv2d(c, c, 1)
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, (2 * window_size - 1) ** 2) * 0.001)

    def _bias(self, window: int) -> torch.Tensor:
        """(heads, window^2, window^2) bias for a window of side `window` <= window_size."""
        cells = torch.arange(window, device=self.relative_position_bias.device)
        rows, cols = torch.meshgrid(cells, cells, indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        span = 2 * self.window_size - 1
        index = (rows[None] - rows[:, None] + self.window_size - 1) * span + (cols[None] - cols[:, None] + self.window_size - 1)
        return self.relative_position_bias[:, index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, c, height, width = x.shape
        window = min(self.window_size, height, width)
        x = F.pad(x, (0, (-width) % window, 0, (-height) % window), mode="reflect")
        rows, cols = x.shape[2] // window, x.shape[3] // window
        qkv = self.to_qkv(x).reshape(batch, 3, self.num_heads, c // self.num_heads, rows, window, cols, window)
        q, k, v = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, self.num_heads, window * window, -1)
        score = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5 + self._bias(window)
        out = torch.matmul(torch.softmax(score, dim=-1), v)
        out = out.reshape(batch, rows, cols, self.num_heads, window, window, -1).permute(0, 3, 6, 1, 4, 2, 5)
        return self.to_out(out.reshape(batch, c, rows * window, cols * window)[:, :, :height, :width])


@register("transformer", channels="same", example={"kwargs": {"window_size": 8, "conv_blocks": 2}, "shape": (2, 32, 16, 16)})
class ESC(nn.Module):
    def __init__(self, c: int, pdim: int | None = None, kernel_size: int = 13, conv_blocks: int = 5,
                 window_size: int = 32, num_heads: int = 4, exp_ratio: float = 2.0):
        """c: channels; pdim: channels that see the large kernel (default c // 4, ESC's 16 of 64);
        kernel_size: the large kernel; conv_blocks: ConvAttn rounds; window_size, num_heads: the
        attention (heads must divide c); exp_ratio: ConvFFN width / c in the rounds."""
        super().__init__()
        pdim = pdim or c // 4
        if c % num_heads or not 2 <= pdim <= c:
            raise ChannelError(f"ESC: need num_heads | c and 2 <= pdim <= c, got c={c}, num_heads={num_heads}, pdim={pdim}")
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
        nn.init.orthogonal_(self.plk_filter)  # the authors find this important early in training
        self.symmetrised = False
        self.ln_proj = LayerNorm2d(c, eps=1e-6)
        self.proj = ConvFFN(c, 3, 2)
        self.ln_attn = LayerNorm2d(c, eps=1e-6)
        self.attn = WindowAttention(c, window_size, num_heads)
        self.pconvs = nn.ModuleList(ConvAttn(c, pdim) for _ in range(conv_blocks))
        self.convffns = nn.ModuleList(ConvFFN(c, 3, exp_ratio) for _ in range(conv_blocks))
        self.ln_out = LayerNorm2d(c, eps=1e-6)
        self.conv_out = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lk_filter = self.plk_filter if self.symmetrised else geometric_ensemble(self.plk_filter)
        skip = x
        x = self.proj(self.ln_proj(x))
        x = x + self.attn(self.ln_attn(x))
        for pconv, convffn in zip(self.pconvs, self.convffns):
            x = x + pconv(convffn(x), lk_filter)
        return self.conv_out(self.ln_out(x)) + skip

    @torch.no_grad()
    def fuse(self):
        if not self.symmetrised:
            self.plk_filter.copy_(geometric_ensemble(self.plk_filter))
            self.symmetrised = True
