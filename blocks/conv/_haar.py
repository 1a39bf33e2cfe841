"""The orthonormal 2-D Haar transform (one level) and its inverse, in plain tensor ops.

For each 2x2 cell [[a, b], [c, d]]: LL = (a+b+c+d)/2, LH = (a+b-c-d)/2 (high-pass across rows),
HL = (a-b+c-d)/2 (high-pass across columns), HH = (a-b-c+d)/2. Shared by WTConv, HWD,
WaveletPool and WaveletUnPool."""
import torch


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
