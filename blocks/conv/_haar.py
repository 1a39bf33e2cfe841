"""The orthonormal 2-D Haar transform (one level) and its inverse, in plain tensor ops, and WTConv's sub-band path.

For each 2x2 cell [[a, b], [c, d]]: LL = (a+b+c+d)/2, LH = (a+b-c-d)/2 (high-pass across rows),
HL = (a-b+c-d)/2 (high-pass across columns), HH = (a-b-c+d)/2. Shared by WTConv, HWD,
WaveletPool, WaveletUnPool and MobileMamba."""
import torch
import torch.nn.functional as F


def haar_forward(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with even H, W -> (B, C, 4, H/2, W/2) holding LL, LH, HL, HH."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.stack((a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d), dim=2) * 0.5


def haar_inverse(bands: torch.Tensor) -> torch.Tensor:
    """(B, C, 4, h, w) holding LL, LH, HL, HH -> (B, C, 2h, 2w); exact inverse of haar_forward."""
    ll, lh, hl, hh = bands.unbind(dim=2)
    a, b = ll + lh + hl + hh, ll + lh - hl - hh
    c, d = ll - lh + hl - hh, ll - lh - hl + hh
    top = torch.stack((a, b), dim=-1).flatten(-2)       # interleave columns
    bottom = torch.stack((c, d), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2) * 0.5   # interleave rows


def wavelet_band_path(x: torch.Tensor, band_convs, band_scales) -> torch.Tensor:
    """WTConv's cascade: per level, Haar bands of the low band so far (odd sides zero-padded), each level's
    bands through its depth-wise conv and scale; summed back through the inverse transforms (B, C, H, W)."""
    filtered, sizes = [], []
    low = x
    for conv, scale in zip(band_convs, band_scales):
        height, width = low.shape[-2:]
        sizes.append((height, width))
        low = F.pad(low, (0, width % 2, 0, height % 2))
        bands = haar_forward(low)                                   # (B, C, 4, h, w)
        low = bands[:, :, 0]
        b, c, _, h, w = bands.shape
        filtered.append((scale * conv(bands.reshape(b, 4 * c, h, w))).reshape(b, c, 4, h, w))
    recon = torch.zeros_like(filtered[-1][:, :, 0])
    for bands, (height, width) in zip(reversed(filtered), reversed(sizes)):
        bands = torch.cat(((bands[:, :, 0] + recon).unsqueeze(2), bands[:, :, 1:]), dim=2)
        recon = haar_inverse(bands)[..., :height, :width]
    return recon
