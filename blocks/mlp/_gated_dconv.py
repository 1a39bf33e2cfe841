"""The gated depth-wise conv FFN family (Restormer GDFN, FFTformer DFFN, EVSSM EDFFN) and FFTformer's patch-FFT filter."""
import torch
import torch.nn.functional as F
from torch import nn


class PatchFFTFilter(nn.Module):
    """A learnable per-channel filter on the 2-D spectrum of every non-overlapping p x p patch (FFTformer).

    Maps whose sides are not multiples of p are reflect-padded (replicate when too small to reflect) and
    cropped back, as EVSSM does. The weights start at one: the filter starts as the identity. With
    complex_weight the filter is complex (real and imaginary parts in the last axis; FAT's frequency
    modulation), else real (FFTformer)."""

    def __init__(self, c: int, patch_size: int = 8, complex_weight: bool = False):
        super().__init__()
        self.patch_size, self.complex_weight = patch_size, complex_weight
        shape = (c, 1, 1, patch_size, patch_size // 2 + 1)
        if complex_weight:
            self.weight = nn.Parameter(torch.stack((torch.ones(shape), torch.zeros(shape)), -1))
        else:
            self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        pad_h, pad_w = -h % p, -w % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < h and pad_w < w else "replicate")
        hp, wp = x.shape[2] // p, x.shape[3] // p
        patches = x.reshape(b, c, hp, p, wp, p).transpose(3, 4)  # (B, C, hp, wp, p, p)
        weight = torch.view_as_complex(self.weight) if self.complex_weight else self.weight
        spectrum = torch.fft.rfft2(patches.float()) * weight  # FFTs in fp32: half precision needs 2^n sizes
        patches = torch.fft.irfft2(spectrum, s=(p, p)).to(x.dtype)
        return patches.transpose(3, 4).reshape(b, c, hp * p, wp * p)[:, :, :h, :w]


class GatedDConvFFN(nn.Module):
    """1x1 expand to two hidden halves, 3x3 depth-wise conv, GELU(first) * second, 1x1 project back.

    fft_at: None (Restormer's GDFN), "hidden" (FFTformer's DFFN: patch-FFT filter after the expansion)
    or "output" (EVSSM's EDFFN: the filter on the projected output)."""

    def __init__(self, c: int, ffn_expansion_factor: float, bias: bool, fft_at: str | None = None,
                 patch_size: int = 8):
        super().__init__()
        hidden = int(c * ffn_expansion_factor)
        self.project_in = nn.Conv2d(c, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=bias)
        self.fft_hidden = PatchFFTFilter(hidden * 2, patch_size) if fft_at == "hidden" else nn.Identity()
        self.fft_output = PatchFFTFilter(c, patch_size) if fft_at == "output" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fft_hidden(self.project_in(x))
        x1, x2 = self.dwconv(x).chunk(2, 1)
        return self.fft_output(self.project_out(F.gelu(x1) * x2))
