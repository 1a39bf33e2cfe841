import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.common import fuse_conv_bn
from blocks.registry import register


@register("conv", channels="same", example={"args": [7, 3], "shape": (2, 16, 16, 16)})
class ShiftwiseConv(nn.Module):
    """ShiftwiseConv: ShiftwiseConv: Small Convolutional Kernel with Large Kernel Effect. CVPR 2025. https://arxiv.org/abs/2401.12736

    Shift-wise conv: one depth-wise small-kernel conv produces ceil(K / k) outputs per channel;
    shifting them by multiples of k along the width (and, with other weights, along the height) and
    summing reproduces a K-long strip kernel in each direction without a large kernel. Each
    direction has its own sigmoid channel-slice masks and BN; a small depth-wise conv + BN is added.
    Keeps channels. `fuse()` folds the BNs into the masks and the small conv.
    Compared with the authors' code (lidc54/shift-wiseConv models/SLaK_pw_wt.py LoRAConvsByWeight
    inside ReparamLargeKernelConv with Decom=True, the pure-PyTorch form): max abs diff 0 on
    (2, 16, 16, 16) for K = 7, 11, 13 (k = 3) in eval mode. The CUDA multi-path "ghost" variant of their
    SW_v2 backbone is not reproduced.
    """

    def __init__(self, c: int, big_kernel: int = 13, small_kernel: int = 3):
        """c: channels (kept). big_kernel: the strip length K it emulates (13 in the last stage of
        the SW models). small_kernel: the real conv's kernel k (3 in the paper)."""
        super().__init__()
        if small_kernel % 2 == 0 or big_kernel <= small_kernel:
            raise ArgumentError(f"ShiftwiseConv needs an odd small kernel smaller than the big one, got "
                             f"{small_kernel} and {big_kernel}")
        self.big, self.small_k = big_kernel, small_kernel
        self.slices = math.ceil(big_kernel / small_kernel)
        self.split = nn.Conv2d(c, c * self.slices, small_kernel, groups=c, bias=False)
        self.mask_h = nn.Parameter(torch.empty(c, self.slices).uniform_(-1, 1))
        self.mask_v = nn.Parameter(torch.empty(c, self.slices).uniform_(-1, 1))
        self.norm_h = nn.BatchNorm2d(c)
        self.norm_v = nn.BatchNorm2d(c)
        self.small = nn.Conv2d(c, c, small_kernel, padding=small_kernel // 2, groups=c, bias=False)
        self.small_norm = nn.BatchNorm2d(c)
        self.masks_are_sigmoid = True   # False after fuse(), when the masks hold the folded BN scale

    def _masks(self):
        if self.masks_are_sigmoid:
            return torch.sigmoid(self.mask_h), torch.sigmoid(self.mask_v)
        return self.mask_h, self.mask_v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, n = self.small_k, self.slices
        # slice i covers offsets [-(K//2) + i*k, -(K//2) + i*k + k) of the strip (the last slice may
        # reach past K//2 when k does not divide K, as in the authors' layout); pad once, so that
        # slice i of a direction is the window starting at i*k of one zero-padded conv output
        before, after = self.big // 2, n * k - 1 - self.big // 2
        z = self.split(F.pad(x, (before, after, before, after)))
        z = z.reshape(b, c, n, *z.shape[-2:])
        centre = before - k // 2
        mask_h, mask_v = self._masks()
        horizontal = sum(mask_h[:, i, None, None] * z[:, :, i, centre:centre + h, i * k:i * k + w] for i in range(n))
        vertical = sum(mask_v[:, i, None, None] * z[:, :, i, i * k:i * k + h, centre:centre + w] for i in range(n))
        return self.norm_h(horizontal) + self.norm_v(vertical) + self.small_norm(self.small(x))

    @torch.no_grad()
    def fuse(self):
        # the shift structure is the efficient form, so it stays; only the BNs are folded
        if not self.masks_are_sigmoid:
            return
        shift = 0
        for mask, norm in ((self.mask_h, self.norm_h), (self.mask_v, self.norm_v)):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            mask.copy_(torch.sigmoid(mask) * scale[:, None])
            shift = shift + norm.bias - norm.running_mean * scale
        self.small = fuse_conv_bn(self.small, self.small_norm)
        self.small.bias.add_(shift)
        self.norm_h, self.norm_v, self.small_norm = nn.Identity(), nn.Identity(), nn.Identity()
        self.masks_are_sigmoid = False
