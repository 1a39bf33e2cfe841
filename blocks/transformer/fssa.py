"""FSSA: Frequency-Spatial Entanglement Learning for Camouflaged Object Detection (FSEL's frequency-spatial self-attention). ECCV 2024. https://arxiv.org/abs/2409.01686

Sum of two attentions. Frequency: channel attention among the 2-D spectra of the input's channels
(complex logits, softmax on real and imaginary parts), plus a learned gate on the spectrum; the
magnitudes of their inverse FFTs are concatenated and projected. Spatial: multi-scale (3x3 and 5x5
grouped) q, k, v for channel attention, plus a 3x3 / 5x5 local branch, concatenated and projected.
Token mixer on (B, C, H, W); keeps channels. The spectral parts run in float32. As released, the
frequency branch's inverse FFT runs over the (channel-in-head, token) axes of the attention output;
kept as is.
Compared with the authors' code (CSYSI/FSEL FSEL_ECCV_2024/lib/FSEL_modules.py, Attention_F +
Attention_S): max abs diff 0.0 on (2, 32, 8, 8), random weights."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer._attention_parts import channel_attention, check_heads
from blocks.transformer._fsel import gated_spectrum, spectral_gate


class _MultiScaleProjection(nn.Module):
    """1x1 conv, then 3x3 and 5x5 convs grouped in pairs of channels, each to c / 2, concatenated."""

    def __init__(self, c: int, bias: bool):
        super().__init__()
        self.point = nn.Conv2d(c, c, 1)
        self.conv3 = nn.Conv2d(c, c // 2, 3, padding=1, groups=c // 2, bias=bias)
        self.conv5 = nn.Conv2d(c, c // 2, 5, padding=2, groups=c // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.point(x)
        return torch.cat((self.conv3(x), self.conv5(x)), 1)


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class FSSA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, bias: bool = False):
        """c: even, at least 16; num_heads must divide c."""
        super().__init__()
        check_heads("FSSA", c, num_heads)
        if c % 2:
            raise ChannelError(f"FSSA groups channels in pairs; {c} is odd")
        self.num_heads = num_heads
        self.freq_temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.freq_gate = spectral_gate(c, c)
        self.freq_project = nn.Conv2d(2 * c, c, 1, bias=bias)
        self.spatial_temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q, self.k, self.v = (_MultiScaleProjection(c, bias) for _ in range(3))
        self.local3 = nn.Conv2d(c, c // 2, 3, padding=1, groups=c // 2, bias=bias)
        self.local5 = nn.Conv2d(c, c // 2, 5, padding=2, groups=c // 2, bias=bias)
        self.spatial_project = nn.Conv2d(2 * c, c, 1, bias=bias)

    def _frequency(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        spectrum = torch.fft.fft2(x.float()).reshape(b, self.num_heads, c // self.num_heads, h * w)
        qk = F.normalize(spectrum, dim=-1)
        attn = (qk @ qk.transpose(-2, -1)) * self.freq_temperature
        attn = torch.complex(attn.real.softmax(-1), attn.imag.softmax(-1))
        attended = torch.fft.ifft2(attn @ spectrum).abs().reshape(b, c, h, w)
        gated = torch.fft.ifft2(gated_spectrum(x, self.freq_gate)).abs()
        return self.freq_project(torch.cat((attended, gated), 1).to(x.dtype))

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        attended = channel_attention(self.q(x), self.k(x), self.v(x), self.num_heads, self.spatial_temperature)
        return self.spatial_project(torch.cat((attended, self.local3(x), self.local5(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._frequency(x) + self._spatial(x)
