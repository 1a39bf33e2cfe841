"""FADC: Frequency-Adaptive Dilated Convolution for Semantic Segmentation. CVPR 2024. https://arxiv.org/abs/2403.05369

A 3x3 deformable conv whose sampling grid is a per-pixel dilation (AdaDR: |offset| scales the 3x3
grid), whose kernel is re-weighted per image in its low- and high-frequency parts (AdaKern), and whose
input is re-balanced across FFT frequency bands (FreqSelect). BN + activation follow, as a Conv.

This is the official code's default configuration (kernel_decompose 'both', FFT band selection with
k_list [2, 4, 8], no low-band attention, replicate padding); the other switches of the official
AdaptiveDilatedConv (DCT kernels, Laplacian/avg-pool bands, 'multifreqband' offsets) are left out.
Like the official layer it supports a 3x3 kernel and groups = 1 only, and its kernel attention
batch-normalises pooled (B, C, 1, 1) features, so training needs a batch of at least 2 per device."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.common import activation, deform_conv2d
from blocks.registry import register


class _FrequencySelection(nn.Module):
    """Splits x into FFT bands (square low-pass masks of 1/k of the spectrum) and re-weights each high
    band per pixel with 2 * sigmoid(conv(x)); zero-initialised, so it starts as the identity."""

    def __init__(self, c: int, k_list=(2, 4, 8)):
        super().__init__()
        self.k_list = k_list
        self.weights = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1) for _ in k_list)
        for conv in self.weights:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
        rest, out = x, 0
        for k, conv in zip(self.k_list, self.weights):
            mask = torch.zeros(h, w, device=x.device, dtype=x.dtype)
            mask[round(h / 2 - h / (2 * k)):round(h / 2 + h / (2 * k)),
                 round(w / 2 - w / (2 * k)):round(w / 2 + w / (2 * k))] = 1.0
            low = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), norm="ortho").real
            out = out + 2 * torch.sigmoid(conv(x)) * (rest - low)
            rest = low
        return out + rest


class _KernelAttention(nn.Module):
    """Per-image input-channel and output-filter gates from the pooled input (OmniAttention with
    kernel size 1 and one kernel)."""

    def __init__(self, c1: int, c2: int, reduction: float = 0.0625, min_channels: int = 16):
        super().__init__()
        hidden = max(int(c1 * reduction), min_channels)
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c1, hidden, 1, bias=False),
                                     nn.BatchNorm2d(hidden), nn.ReLU())
        self.channel = nn.Conv2d(hidden, c1, 1)
        self.filter = nn.Conv2d(hidden, c2, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        z = self.squeeze(x)
        return torch.sigmoid(self.channel(z)).flatten(1), torch.sigmoid(self.filter(z)).flatten(1)


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class FADC(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, d: int = 1, act="silu",
                 deform_groups: int = 1, epsilon: float = 1e-4):
        super().__init__()
        if k != 3:
            raise ArgumentError(f"FADC supports a 3x3 kernel only (its dilation grid is 3x3), got k={k}")
        self.stride, self.dilation, self.deform_groups = s, d, deform_groups
        self.freq_select = _FrequencySelection(c1)
        self.low_attention = _KernelAttention(c1, c2)
        self.high_attention = _KernelAttention(c1, c2)
        self.pad = nn.ReplicationPad2d(1)
        self.dilation_conv = nn.Conv2d(c1, deform_groups, 3, s)
        self.mask_conv = nn.Conv2d(c1, deform_groups * 9, 3, s)
        # start at dilation d everywhere: 1 + |bias| * d = d, and masks at 0.5
        nn.init.zeros_(self.dilation_conv.weight)
        nn.init.constant_(self.dilation_conv.bias, (d - 1) / d + epsilon)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)
        bound = 1 / math.sqrt(c1 * 9)
        self.weight = nn.Parameter(torch.empty(c2, c1, 3, 3).uniform_(-bound, bound))
        grid = torch.tensor([[y, x] for y in (-1, 0, 1) for x in (-1, 0, 1)], dtype=torch.float32)
        self.register_buffer("grid", grid.reshape(1, 1, 18, 1, 1), persistent=False)   # (y, x) per tap
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def _image_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B*c2, c1, 3, 3): the low (kernel mean) and high (residual) parts, each gated per image."""
        low_in, low_out = self.low_attention(x)
        high_in, high_out = self.high_attention(x)
        mean = self.weight.mean(dim=(-2, -1), keepdim=True)
        low = mean * (2 * low_in[:, None, :, None, None]) * (2 * low_out[:, :, None, None, None])
        high = (self.weight - mean) * (2 * high_in[:, None, :, None, None]) * (2 * high_out[:, :, None, None, None])
        return (low + high).flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.freq_select(x)
        b = x.shape[0]
        padded = self.pad(x)
        # a per-pixel dilation r = 1 + offset becomes the offsets (r - 1) * (grid point) of a 3x3 deform conv
        rate = self.dilation_conv(padded).abs() * self.dilation
        h, w = rate.shape[-2:]
        offset = (rate.reshape(b, self.deform_groups, 1, h, w) * self.grid).reshape(1, -1, h, w)
        mask = torch.sigmoid(self.mask_conv(padded)).reshape(1, -1, h, w)
        # the batch folded into groups gives every image its own kernel in one call
        y = deform_conv2d(padded.reshape(1, -1, *padded.shape[-2:]), offset, self._image_kernels(x), None,
                          self.stride, 0, 1, mask)
        return self.act(self.norm(y.reshape(b, -1, h, w)))
