"""CARAFE: CARAFE: Content-Aware ReAssembly of FEatures. ICCV 2019. https://arxiv.org/abs/1905.02188

Content-aware upsampling: a kernel prediction module (1x1 channel compressor, 3x3 content encoder,
pixel shuffle, softmax) gives each output pixel its own k_up x k_up kernel, which reassembles the
neighbourhood of its source pixel. Pure-PyTorch unfold path; keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register
from core.errors import ConfigError


@register("upsample", channels="same", example={"args": [], "kwargs": {"compressed": 16}, "shape": (2, 16, 8, 8)})
class CARAFE(nn.Module):
    def __init__(self, c: int, scale: int = 2, up_kernel: int = 5, up_groups: int = 1, encoder_kernel: int = 3,
                 encoder_dilation: int = 1, compressed: int = 64):
        super().__init__()
        if c % up_groups:
            raise ConfigError(f"CARAFE: channels {c} must divide by up_groups {up_groups}")
        self.scale, self.up_kernel, self.up_groups = scale, up_kernel, up_groups
        self.compressor = nn.Conv2d(c, compressed, 1)
        self.encoder = nn.Conv2d(compressed, up_kernel * up_kernel * up_groups * scale * scale, encoder_kernel,
                                 padding=(encoder_kernel - 1) * encoder_dilation // 2, dilation=encoder_dilation)
        nn.init.xavier_uniform_(self.compressor.weight)
        nn.init.zeros_(self.compressor.bias)
        nn.init.normal_(self.encoder.weight, std=0.001)  # near-uniform kernels at the start
        nn.init.zeros_(self.encoder.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, k, g = self.scale, self.up_kernel, self.up_groups
        # encoder channel (group, kernel tap, sub-row, sub-col) is what pixel_shuffle would place at
        # output pixel (s*i + sub-row, s*j + sub-col); the softmax runs over the k*k taps
        kernels = self.encoder(self.compressor(x)).reshape(b, g, k * k, s, s, h, w).softmax(dim=2)
        neighbours = F.unfold(x, k, padding=k // 2).reshape(b, g, c // g, k * k, h, w)
        out = torch.einsum("bgcthw,bgtpqhw->bgchpwq", neighbours, kernels)
        return out.reshape(b, c, s * h, s * w)
