import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import StarReLU, activation
from blocks.registry import ChannelError, register


def _frequency_order(rows: int, cols: int) -> torch.Tensor:
    """(2, rows * (cols // 2 + 1)) coordinates of a real 2-D FFT grid, sorted from the lowest
    frequency (Euclidean distance of the normalised frequencies) to the highest."""
    freq = torch.stack(torch.meshgrid(torch.fft.fftfreq(rows), torch.fft.rfftfreq(cols), indexing="ij"), dim=-1)
    order = torch.sort(freq.norm(dim=-1).flatten()).indices  # the authors' (unstable) order among ties
    width = cols // 2 + 1
    return torch.stack((order // width, order % width))


class _KernelModulationGlobal(nn.Module):
    """Global kernel-spatial modulation: input-channel, output-channel, spatial and frequency-group
    (kernel) attentions from the pooled input."""

    def __init__(self, c1: int, c2: int, k: int, kernel_num: int, reduction: float = 0.0625, min_channel: int = 16,
                 att_multi: float = 2.0, temp: float = 1.0):
        super().__init__()
        hidden = max(int(c1 * reduction), min_channel)
        self.k, self.att_multi, self.temp = k, att_multi, temp
        self.fc = nn.Conv2d(c1, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = StarReLU()
        self.channel_fc = nn.Conv2d(hidden, c1, 1)
        self.filter_fc = nn.Conv2d(hidden, c2, 1)
        self.spatial_fc = nn.Conv2d(hidden, k * k, 1) if k > 1 else None
        self.kernel_fc = nn.Conv2d(hidden, kernel_num, 1) if kernel_num > 1 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # every attention but the output-channel one starts (almost) flat, as the authors' init
        for fc in (self.channel_fc, self.spatial_fc, self.kernel_fc):
            if fc is not None:
                nn.init.normal_(fc.weight, std=1e-6)

    def _gate(self, fc: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(fc(z) / self.temp) * self.att_multi

    def forward(self, pooled: torch.Tensor):
        b = pooled.shape[0]
        z = self.relu(self.bn(self.fc(pooled)))
        channel = self._gate(self.channel_fc, z).reshape(b, 1, -1, 1, 1)          # (b, 1, c1, 1, 1)
        filt = self._gate(self.filter_fc, z).reshape(b, -1, 1, 1, 1)              # (b, c2, 1, 1, 1)
        spatial = (self._gate(self.spatial_fc, z).reshape(b, 1, 1, self.k, self.k)
                   if self.spatial_fc is not None else 1.0)
        if self.kernel_fc is None:
            kernel = torch.ones(b, 1, device=pooled.device, dtype=pooled.dtype)
        else:
            logits = self.kernel_fc(z).reshape(b, -1)
            kernel = torch.sigmoid(logits / self.temp) * 2 / logits.shape[1]      # (b, kernel_num)
        return channel, filt, spatial, kernel


class _KernelModulationLocal(nn.Module):
    """Local kernel-spatial modulation: an ECA-style 1-D conv across the pooled input channels
    gives one logit per weight of the kernel (c2 x k x k per input channel)."""

    def __init__(self, c1: int, c2: int, k: int):
        super().__init__()
        size = round(math.log2(c1) / 2 + 0.5) // 2 * 2 + 1
        self.norm = nn.LayerNorm(c1)
        self.conv = nn.Conv1d(1, c2 * k * k, size, padding=(size - 1) // 2, bias=False)
        nn.init.constant_(self.conv.weight, 1e-6)
        self.c2, self.k = c2, k

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        b, c1 = pooled.shape[:2]
        logits = self.conv(self.norm(pooled.reshape(b, 1, c1)))                  # (b, c2*k*k, c1)
        return logits.reshape(b, self.c2, self.k, self.k, c1).permute(0, 1, 4, 2, 3)  # (b, c2, c1, k, k)


class _FrequencyBandModulation(nn.Module):
    """Splits the input into frequency bands (square low-pass masks on its FFT at 1/2, 1/4, 1/8 of
    the band) and reweights each high band with a spatial map predicted by a 3x3 conv."""

    def __init__(self, c: int, bands=(2, 4, 8), kernel: int = 3):
        super().__init__()
        self.bands = tuple(bands)
        self.convs = nn.ModuleList(nn.Conv2d(c, 1, kernel, padding=kernel // 2) for _ in self.bands)
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=1e-6)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, x = x.dtype, x.float()
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x, norm="ortho")
        freq = torch.stack(torch.meshgrid(torch.fft.fftfreq(h, device=x.device), torch.fft.rfftfreq(w, device=x.device),
                                          indexing="ij"), dim=-1).abs().amax(dim=-1)
        rest, out = x, 0
        for band, conv in zip(self.bands, self.convs):
            low = torch.fft.irfft2(spectrum * (freq < 0.5 / band + 1e-8), s=(h, w), norm="ortho")
            out = out + torch.sigmoid(conv(x)) * 2 * (rest - low)
            rest = low
        return (out + rest).to(dtype)


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 32, 16, 16)})
class FDConv(nn.Module):
    """FDConv: Frequency Dynamic Convolution for Dense Image Prediction. CVPR 2025. https://arxiv.org/abs/2503.18783

    Frequency dynamic conv: the kernel is stored as its 2-D Fourier spectrum, split into kernel_num
    disjoint frequency groups that per-image attentions weight (Fourier disjoint weight); global and
    local kernel-spatial modulation rescale every kernel weight per image, and (k = 3) frequency band
    modulation reweights the input's frequency bands spatially. The per-image kernel is applied as a
    grouped conv, then BN and the activation. Output channels = c2.
    Compared with the authors' code (Linwei-Chen/FDConv FDConv_detection/mmdet_custom/FDConv.py,
    mmcv registration dropped, FBM mask cache sized to the input, all attention weights randomised):
    max abs diff 7e-7 on (2, 32, 16, 16) for the conv output (before our BN) in eval mode. The FBM
    masks are computed at the input's size instead of resized from a 64 x 64 cache.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, kernel_num: int = 4, act="silu",
                 bands=(2, 4, 8)):
        """c1, c2: input and output channels. k, s: kernel and stride. kernel_num: frequency groups of
        the kernel spectrum (4 in the paper). act: activation after BN. bands: FBM low-pass cut-offs
        (used for k = 3, as the authors)."""
        super().__init__()
        rows, cols = c2 * k, c1 * k
        order = _frequency_order(rows, cols)
        if order.shape[1] % kernel_num:
            raise ChannelError(f"FDConv {c1}->{c2} (k={k}) has {order.shape[1]} spectrum entries, not divisible by "
                               f"kernel_num={kernel_num}", hint="use even channel counts or another kernel_num")
        self.c1, self.c2, self.k, self.stride, self.kernel_num = c1, c2, k, s, kernel_num
        self.register_buffer("order", order.reshape(2, kernel_num, -1), persistent=False)
        # the spectrum of a default-initialised conv kernel, laid out (c2*k, c1*k) as the authors
        weight = nn.init.kaiming_uniform_(torch.empty(c2, c1, k, k), a=math.sqrt(5))
        spectrum = torch.fft.rfft2(weight.permute(0, 2, 1, 3).reshape(rows, cols), dim=(0, 1))
        self.scale = min(c1, c2) // 2
        self.dft_weight = nn.Parameter(torch.view_as_real(spectrum) / self.scale)
        self.ksm_global = _KernelModulationGlobal(c1, c2, k, kernel_num)
        self.ksm_local = _KernelModulationLocal(c1, c2, k)
        self.fbm = _FrequencyBandModulation(c1, bands) if k == 3 else None
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, c2, c1, k, k) kernels for a batch."""
        b = x.shape[0]
        pooled = F.adaptive_avg_pool2d(x, 1)
        channel, filt, spatial, kernel_att = self.ksm_global(pooled)
        local = torch.sigmoid(self.ksm_local(pooled)) * 2
        rows, cols, k = self.c2 * self.k, self.c1 * self.k, self.k
        groups = self.dft_weight[self.order[0], self.order[1]] * (self.scale * self.kernel_num)   # (kn, n, 2)
        spectrum = x.new_zeros(b, rows, cols // 2 + 1, 2)
        spectrum[:, self.order[0], self.order[1]] = groups[None] * kernel_att[:, :, None, None]
        weight = torch.fft.irfft2(torch.view_as_complex(spectrum), s=(rows, cols), dim=(1, 2))
        weight = weight.reshape(b, self.c2, k, self.c1, k).permute(0, 1, 3, 2, 4)
        return weight * spatial * channel * filt * local

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        weight = self.kernels(x)
        if self.fbm is not None:
            x = self.fbm(x)
        y = F.conv2d(x.reshape(1, b * self.c1, h, w), weight.reshape(b * self.c2, self.c1, self.k, self.k),
                     stride=self.stride, padding=self.k // 2, groups=b)
        return self.act(self.norm(y.reshape(b, self.c2, *y.shape[-2:])))
