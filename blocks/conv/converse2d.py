import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


def _otf(psf: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """FFT of a small kernel zero-padded to `size` and rolled so its centre sits at the origin."""
    otf = psf.new_zeros(psf.shape[:-2] + size)
    otf[..., :psf.shape[-2], :psf.shape[-1]] = psf
    otf = torch.roll(otf, (-(psf.shape[-2] // 2), -(psf.shape[-1] // 2)), dims=(-2, -1))
    return torch.fft.fftn(otf, dim=(-2, -1))


def _block_mean(a: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over the scale x scale aliased copies of a spectrum of size (scale*h, scale*w)."""
    *lead, height, width = a.shape
    return a.reshape(*lead, scale, height // scale, scale, width // scale).mean(dim=(-4, -2))


@register("conv", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class Converse2D(nn.Module):
    """Converse2D: Reverse Convolution and Its Applications to Image Restoration. ICCV 2025. https://arxiv.org/abs/2508.09824

    The "converse" operator: a depth-wise reverse convolution solved in closed form in the Fourier
    domain, x = argmin ||k * x (downsampled by s) - y||^2 + lambda ||x - y_up||^2, with a learnable
    kernel k and a learnable per-channel lambda; with scale 1 it keeps the size, with scale s it
    upsamples by s. Keeps channels.
    Compared with the authors' code (cszn/ConverseNet models/util_converse.py Converse2D) on
    (2, 16, 16, 16): max abs diff 0 at scale 1; at scale 2, 2e-11 in float64 (5e-3 in float32 on
    outputs of ~8: the closed form divides by lambda ~ 1e-4, which amplifies summation-order rounding).
    """

    def __init__(self, c: int, k: int = 3, scale: int = 1, padding: int = 2, padding_mode: str = "circular",
                 eps: float = 1e-5):
        """c: channels (kept). k: kernel size. scale: upsampling factor (1 = same size).
        padding, padding_mode: border added before the FFT and cropped after (the authors' defaults).
        eps: floor of the regularisation weight lambda = sigmoid(bias - 9) + eps."""
        super().__init__()
        if padding_mode not in ("circular", "reflect", "replicate", "constant"):
            raise ArgumentError(f"Converse2D padding_mode must be circular, reflect, replicate or constant, got {padding_mode!r}")
        self.scale, self.padding, self.padding_mode, self.eps = scale, padding, padding_mode, eps
        # a positive kernel that sums to one per channel (softmax of a random draw, as the authors)
        self.weight = nn.Parameter(torch.randn(1, c, k * k).softmax(dim=-1).reshape(1, c, k, k))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p = self.scale, self.padding
        if p > 0:
            x = F.pad(x, [p] * 4, mode=self.padding_mode)
        lam = torch.sigmoid(self.bias - 9.0) + self.eps
        h, w = x.shape[-2:]
        zero_filled = x.new_zeros(*x.shape[:2], h * s, w * s)
        zero_filled[..., ::s, ::s] = x
        if s != 1:
            x = F.interpolate(x, scale_factor=s, mode="nearest")
        fk = _otf(self.weight, (h * s, w * s))
        fk_conj = torch.conj(fk)
        fr = fk_conj * torch.fft.fftn(zero_filled, dim=(-2, -1)) + torch.fft.fftn(lam * x, dim=(-2, -1))
        # the Sherman-Morrison-Woodbury step of the closed form (as in USRNet's data term)
        inv = _block_mean(fk * fr, s) / (_block_mean(torch.abs(fk) ** 2, s) + lam)
        fx = (fr - fk_conj * inv.repeat(1, 1, s, s)) / lam
        out = torch.real(torch.fft.ifftn(fx, dim=(-2, -1)))
        if p > 0:
            out = out[..., p * s:-p * s, p * s:-p * s]
        return out
