"""FSA: Spatial-Frequency Dual Progressive Attention Network For Medical Image Segmentation. BIBM 2024. https://arxiv.org/abs/2406.07952

Frequency-spatial attention of SF-UNet: a learnable complex filter scales the centred low-frequency
box of each channel's spectrum while the other frequencies pass, and a 7x7 spatial gate (channel
mean and max) rescales the input; the two maps are added. Keeps channels.

Compared with the authors' code (the plug-in's attention/FSA.py, as in SF-UNet): max abs diff 0 on
(2, 16, 16, 16) with ratio 4, once their fftshift is limited to the spatial dims: as written it also
rolls the batch and channel dims, so one image's output depends on another image of the batch."""
import torch
from torch import nn

from blocks.registry import register


@register("attention", channels="same", example={"args": [4], "shape": (2, 16, 16, 16)})
class FSA(nn.Module):
    def __init__(self, c: int, ratio: int = 10):
        """c: channels. ratio: half-width of the filtered low-frequency box (the paper's 10; at 640 px
        the stride-32 map is 20 x 20, so the box covers it whole).

        The paper's filter is one weight per frequency of a fixed map size, but only the box's
        weights ever act, so this stores just the 2 ratio x 2 ratio box: the same function at every
        map at least that large, and any input size works (a smaller map uses the box's centre)."""
        super().__init__()
        self.ratio = ratio
        self.filter = nn.Parameter(torch.randn(c, 2 * ratio, 2 * ratio, 2))   # (real, imag), as the paper
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def frequency_filter(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # ortho forward and unnormalised inverse, as the authors' code: the result carries 1/sqrt(h w)
        spectrum = torch.fft.fftshift(torch.fft.fft2(x.float(), norm="ortho"), dim=(-2, -1))
        gain = torch.ones(x.shape[1], h, w, dtype=spectrum.dtype, device=x.device)
        rows = (max(h // 2 - self.ratio, 0), min(h // 2 + self.ratio, h))
        cols = (max(w // 2 - self.ratio, 0), min(w // 2 + self.ratio, w))
        first_row, first_col = rows[0] - (h // 2 - self.ratio), cols[0] - (w // 2 - self.ratio)
        box = self.filter[:, first_row:first_row + rows[1] - rows[0], first_col:first_col + cols[1] - cols[0]]
        gain[:, rows[0]:rows[1], cols[0]:cols[1]] = torch.view_as_complex(box.float().contiguous())
        return torch.fft.ifft2(torch.fft.ifftshift(spectrum * gain, dim=(-2, -1))).real.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return self.frequency_filter(x) + x * torch.sigmoid(self.spatial(pooled))
