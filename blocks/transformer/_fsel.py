"""FSEL's (ECCV 2024) learned spectral gate, shared by its attention (FSSA) and feed-forward (EFFN) blocks."""
import torch
from torch import nn

from blocks.registry import ChannelError


def spectral_gate(c_in: int, c: int) -> nn.Sequential:
    """Per-frequency, per-channel gate in (0, 1) computed from the real part of a spectrum:
    1x1 to c / 16, BN, ReLU, 1x1 back, sigmoid."""
    if c < 16:
        raise ChannelError(f"FSEL's spectral gate squeezes to channels / 16; {c} channels is too few",
                           hint="use at least 16 channels")
    return nn.Sequential(nn.Conv2d(c_in, c // 16, 1), nn.BatchNorm2d(c // 16), nn.ReLU(),
                         nn.Conv2d(c // 16, c_in, 1), nn.Sigmoid())


def gated_spectrum(x: torch.Tensor, gate: nn.Module) -> torch.Tensor:
    """fft2(x) scaled by gate(Re fft2(x)), in float32 (half-precision FFTs need power-of-two sides)."""
    spectrum = torch.fft.fft2(x.float())
    return gate(spectrum.real) * spectrum
