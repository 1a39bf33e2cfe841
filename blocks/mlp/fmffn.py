"""FMFFN: Frequency-Aware Transformer for Learned Image Compression (FAT's frequency-modulation FFN). ICLR 2024. https://arxiv.org/abs/2310.16387

A 1x1-conv MLP (GELU, ratio 4), then a learned complex filter on the 2-D spectrum of every
non-overlapping window of its output, which re-weights each frequency per channel. Maps whose sides
are not window multiples are reflect-padded and cropped back (FAT needs whole windows). Keeps channels.
Compared with the authors' code (qingshi9974/ICLR2024-FTIC models/flic.py, the FAT block's ffn +
WindowFrequencyModulation): max abs diff 2e-6 on (2, 32, 16, 16), window 8, random weights."""
import torch
from torch import nn

from blocks.common import activation
from blocks.mlp._gated_dconv import PatchFFTFilter
from blocks.registry import register


@register("mlp", channels="same", example={"args": [], "kwargs": {"window_size": 4}, "shape": (2, 32, 8, 8)})
class FMFFN(nn.Module):
    def __init__(self, c: int, mlp_ratio: float = 4.0, window_size: int = 16, act="gelu"):
        """window_size: side of the windows whose spectra are modulated (FAT: twice its attention window, 16)."""
        super().__init__()
        hidden = int(c * mlp_ratio)
        self.ffn = nn.Sequential(nn.Conv2d(c, hidden, 1), activation(act), nn.Conv2d(hidden, c, 1))
        self.modulation = PatchFFTFilter(c, window_size, complex_weight=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modulation(self.ffn(x))
