"""EFFN: Frequency-Spatial Entanglement Learning for Camouflaged Object Detection (FSEL's entanglement feed-forward network). ECCV 2024. https://arxiv.org/abs/2409.01686

A frequency path (the magnitude of the learned-gated spectrum) and a spatial path (3x3 depth-wise
conv), each self-gated (GELU(x) * x); both, concatenated, pass once more through a gated spectrum
(back to pixels: inverse FFT magnitude) and a grouped 3x3 conv; 1x1 projection of all four. Keeps
channels; the spectral parts run in float32.
Compared with the authors' code (CSYSI/FSEL FSEL_ECCV_2024/lib/FSEL_modules.py, FeedForward):
max abs diff 0.0 on (2, 32, 8, 8), random weights."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register
from blocks.transformer._fsel import gated_spectrum, spectral_gate


@register("mlp", channels="same", example={"args": [], "shape": (2, 32, 8, 8)})
class EFFN(nn.Module):
    def __init__(self, c: int, bias: bool = False):
        """c: at least 16 (the spectral gates squeeze to c / 16). FSEL passes an expansion factor that its
        FFN never uses; there is none here."""
        super().__init__()
        self.dwconv1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=bias)
        self.dwconv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=c, bias=bias)
        self.project_out = nn.Conv2d(4 * c, c, 1, bias=bias)
        self.gate = spectral_gate(c, c)
        self.gate_mixed = spectral_gate(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freq = gated_spectrum(x, self.gate).abs()
        spatial = self.dwconv1(x).float()
        mixed = torch.cat((F.gelu(freq) * freq, F.gelu(spatial) * spatial), 1)
        freq = torch.fft.ifft2(gated_spectrum(mixed, self.gate_mixed)).abs()
        return self.project_out(torch.cat((freq, self.dwconv2(mixed.to(x.dtype)).float()), 1).to(x.dtype))
