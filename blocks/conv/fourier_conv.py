import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


@register("conv", channels="same", example={"args": [16], "shape": (2, 16, 16, 16)})
class FourierConv(nn.Module):
    """FourierConv: Fourier Convolution Block with Global Receptive Field for MRI Reconstruction. Medical Image Analysis 2025. https://doi.org/10.1016/j.media.2024.103349

    The Fourier convolution block (FCB): a depth-wise convolution with a whole-image kernel, applied
    as a per-channel complex filter on the real FFT of the map; keeps channels (stride 2 keeps every
    second pixel, as the authors).
    The filter is learnt at a reference size; for other sizes its real and imaginary parts are
    resized bilinearly in the frequency domain (the authors fix the input size; GFNet-style resizing
    lets multi-scale detection training use it).
    Not compared with the authors' code: their repository is not in the code store; checked against
    the paper's definition (FCB = spatial circular conv with the kernel the filter describes).
    """

    def __init__(self, c: int, size: int | tuple[int, int] = 20, s: int = 1):
        """c: channels (kept). size: (height, width) the frequency filter is learnt at, e.g. 20 for a
        stride-32 map of a 640 px input. s: stride, 1 or 2."""
        super().__init__()
        if s not in (1, 2):
            raise ArgumentError(f"FourierConv supports stride 1 or 2, got {s}")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.stride = s
        # complex "He" init of the authors: Rayleigh modulus with scale 1 / (4 sqrt(fan_in)), uniform phase
        shape = (1, c, height, width // 2 + 1)
        modulus = torch.sqrt(-2 * torch.log1p(-torch.rand(shape))) / (4 * math.sqrt(c))
        phase = (torch.rand(shape) * 2 - 1) * math.pi
        self.weight_real = nn.Parameter(modulus * torch.cos(phase))
        self.weight_imag = nn.Parameter(modulus * torch.sin(phase))

    def filter(self, height: int, width: int) -> torch.Tensor:
        """The complex filter for a (height, width) map's real FFT."""
        real, imag = self.weight_real, self.weight_imag
        if real.shape[-2:] != (height, width // 2 + 1):
            real = F.interpolate(real, size=(height, width // 2 + 1), mode="bilinear", align_corners=True)
            imag = F.interpolate(imag, size=(height, width // 2 + 1), mode="bilinear", align_corners=True)
        return torch.complex(real, imag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        spectrum = torch.fft.rfftn(x.float(), dim=(-2, -1))
        y = torch.fft.irfftn(spectrum * self.filter(height, width), s=(height, width), dim=(-2, -1)).to(x.dtype)
        return y[..., ::2, ::2] if self.stride == 2 else y
