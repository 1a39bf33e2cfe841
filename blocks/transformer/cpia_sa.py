"""CPIA_SA: Cross Paradigm Representation and Alignment Transformer for Image Deraining (CPRAformer's cross-paradigm attention). ACM MM 2025. https://arxiv.org/abs/2504.16455

A 1x1 conv splits the map into two halves. Channel paradigm (SPC-SA): channel attention per head
keeping only each row's top-k logits, k set per input by a learned gate (the share of channels kept).
Spatial paradigm (SPR-SA): depth-wise 3x3 + 1x1 expansion re-weighted by a channel softmax, GELU,
1x1 back. The two cross-gate (the attention's pooled channel map gates the spatial half, the spatial
half's pixel map gates the attention), are concatenated and projected, then a learned per-channel
scale on the real and imaginary parts of the spectrum (FFT, 1x1 depth-wise, inverse FFT). Token
mixer on (B, C, H, W); keeps channels. The gate's k is a whole number, so no gradient reaches the
gate (as in the released code); the released code takes one k from the mean over the whole batch, here
each image gets its own. Its BNs on pooled maps need batch > 1 in training.
Not compared: the authors' repository is not in the stored index; built from the paper's figure and
the DEIM plug-in project's CPIA_SA file. The released form computes the same attention output four
times with four learned scales; here it is computed once, scaled by their sum (same function)."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer._attention_parts import channel_attention, check_heads


class _SpatialRefinement(nn.Module):
    """SPR-SA: 3x3 depth-wise to 2x width, 1x1, channel-softmax re-weighting, GELU, 1x1 back."""

    def __init__(self, c: int, growth_rate: float = 2.0):
        super().__init__()
        hidden = int(c * growth_rate)
        self.expand = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1, groups=c), nn.Conv2d(hidden, hidden, 1))
        self.project = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)
        x = x * x.mean((2, 3), keepdim=True).softmax(1)
        return self.project(F.gelu(x))


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class CPIA_SA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, bias: bool = False):
        """c: even, at least 16; num_heads must divide c / 2 (the channel half)."""
        super().__init__()
        if c % 2 or c < 16:
            raise ChannelError(f"CPIA_SA needs an even channel count of at least 16, got {c}")
        half = c // 2
        check_heads("CPIA_SA", half, num_heads)
        self.num_heads = num_heads
        self.split = nn.Conv2d(c, c, 1)
        self.spatial = _SpatialRefinement(half)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(half, 3 * half, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * half, 3 * half, 3, padding=1, groups=3 * half, bias=bias)
        self.keep_gate = nn.Sequential(nn.Conv2d(half, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, 1, 1), nn.Sigmoid())
        self.branch_scales = nn.Parameter(torch.full((4,), 0.2))
        self.channel_interaction = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(half, c // 8, 1),
                                                 nn.BatchNorm2d(c // 8), nn.GELU(), nn.Conv2d(c // 8, half, 1))
        self.spatial_interaction = nn.Sequential(nn.Conv2d(half, c // 16, 1), nn.BatchNorm2d(c // 16), nn.GELU(),
                                                 nn.Conv2d(c // 16, 1, 1))
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)
        self.spectral_scale = nn.Conv2d(2 * c, 2 * c, 1, groups=2 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial, channel = self.split(x).chunk(2, 1)
        spatial = self.spatial(spatial)
        q, k, v = self.qkv_dwconv(self.qkv(channel)).chunk(3, 1)
        per_head = channel.shape[1] // self.num_heads
        # the share of channels kept, per image (a whole number: no gradient reaches the gate, as released)
        keep = (per_head * self.keep_gate(channel).mean((1, 2, 3))).long().clamp(1, per_head)
        attended = channel_attention(q, k, v, self.num_heads, self.temperature, top_k=keep) * self.branch_scales.sum()
        mixed = torch.cat((attended * torch.sigmoid(self.spatial_interaction(spatial)),
                           spatial * torch.sigmoid(self.channel_interaction(attended))), 1)
        out = self.project_out(mixed)
        spectrum = torch.fft.fft2(out.float())
        real, imag = self.spectral_scale(torch.cat((spectrum.real, spectrum.imag), 1).to(out.dtype)).float().chunk(2, 1)
        return torch.fft.ifft2(torch.complex(real, imag)).real.to(x.dtype)
